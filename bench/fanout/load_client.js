#!/usr/bin/env node
// Fan-out load client: opens COUNT WebSocket connections to URL and records, for every
// metrics_update each connection receives, the delay from the message's `timestamp` to the
// moment the message event fired here. Driven by the runner over stdin/stdout (JSON lines):
//
//   out {"event":"ready","connected":n,"failed":n,"errors":[...]}   once every connect settled
//   in  {"cmd":"status"}            out {"event":"status","min_seq":s,"max_seq":s,"last_arrival":ms,"busy":b,...}
//   in  {"cmd":"report","from":a,"to":b}   out {"event":"report","delays":{"seq":[ms,...]},"bytes":{"seq":n},"missing":n,...}
//   in  {"cmd":"exit"}              closes every connection and exits
//
// The message handler only stamps the time and queues the raw frame: parsing waits until no
// message has arrived for --quiet-ms, so measuring one client does not delay the next one.
'use strict';

const { performance } = require('perf_hooks');
const readline = require('readline');
const WebSocket = require('ws');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const url = option('url', 'ws://127.0.0.1:8080/');
const count = Number(option('count', '100'));
const concurrency = Number(option('concurrency', '200'));
const quietMs = Number(option('quiet-ms', '100'));

const clients = []; // { ws, maxSeq, seqs: Set }
let connected = 0;
let failed = 0;
let settled = 0;
let closedAfterReady = 0;
let ready = false;
const errors = [];
const closeCodes = {};

// Pending frames: parallel arrays keep the hot path to a few pushes.
let pendClient = [];
let pendTime = [];
let pendData = [];
let lastArrival = 0;
let frameBytes = 0;
let received = 0;
const delaysBySeq = new Map(); // seq -> number[]
const bytesBySeq = new Map(); // seq -> frame length (the same for every client)
const spanBySeq = new Map(); // seq -> [first arrival, last arrival] (wall ms)

function wallNow() {
  return performance.timeOrigin + performance.now();
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function processPending() {
  const n = pendClient.length;
  if (n === 0) return;
  const cs = pendClient; const ts = pendTime; const ds = pendData;
  pendClient = []; pendTime = []; pendData = [];
  for (let i = 0; i < n; i += 1) {
    let msg;
    try {
      msg = JSON.parse(ds[i].toString());
    } catch (err) {
      continue;
    }
    if (msg.type !== 'metrics_update' || typeof msg.seq !== 'number') continue;
    const c = clients[cs[i]];
    c.seqs.add(msg.seq);
    if (msg.seq > c.maxSeq) c.maxSeq = msg.seq;
    frameBytes = ds[i].length;
    if (!bytesBySeq.has(msg.seq)) bytesBySeq.set(msg.seq, frameBytes);
    const span = spanBySeq.get(msg.seq);
    if (span === undefined) spanBySeq.set(msg.seq, [ts[i], ts[i]]);
    else { if (ts[i] < span[0]) span[0] = ts[i]; if (ts[i] > span[1]) span[1] = ts[i]; }
    let list = delaysBySeq.get(msg.seq);
    if (list === undefined) { list = []; delaysBySeq.set(msg.seq, list); }
    list.push(Math.round((ts[i] - Date.parse(msg.timestamp)) * 100) / 100);
  }
}

function quiet() {
  return wallNow() - lastArrival >= quietMs;
}

setInterval(() => {
  if (pendClient.length && quiet()) processPending();
}, 20);

function openOne(index) {
  const c = { ws: null, maxSeq: -1, seqs: new Set(), open: false, everOpen: false };
  clients[index] = c;
  const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: 60000 });
  c.ws = ws;
  let done = false;
  const settle = (ok, why) => {
    if (done) return;
    done = true;
    settled += 1;
    if (ok) connected += 1; else { failed += 1; if (errors.length < 5) errors.push(String(why)); }
    next();
  };
  ws.on('open', () => { c.open = true; c.everOpen = true; settle(true); });
  ws.on('message', (data) => {
    lastArrival = wallNow();
    pendClient.push(index); pendTime.push(lastArrival); pendData.push(data);
    received += 1;
  });
  ws.on('error', (err) => settle(false, err.message));
  ws.on('close', (code) => {
    settle(false, `closed ${code} before open`);
    if (c.open) {
      c.open = false;
      if (ready) closedAfterReady += 1;
      closeCodes[code] = (closeCodes[code] || 0) + 1;
    }
  });
}

let nextIndex = 0;
function next() {
  if (settled === count && !ready) {
    ready = true;
    emit({ event: 'ready', connected, failed, errors });
    return;
  }
  while (nextIndex < count && nextIndex - settled < concurrency) {
    openOne(nextIndex);
    nextIndex += 1;
  }
}

function status() {
  const busy = pendClient.length > 0 && !quiet();
  if (!busy) processPending();
  let minSeq = Infinity; let maxSeq = -1; let open = 0;
  for (const c of clients) {
    if (!c || !c.open) continue;
    open += 1;
    if (c.maxSeq < minSeq) minSeq = c.maxSeq;
    if (c.maxSeq > maxSeq) maxSeq = c.maxSeq;
  }
  const span = spanBySeq.get(maxSeq) || [0, 0];
  return { event: 'status', busy, open, min_seq: open ? minSeq : -1, max_seq: maxSeq,
    last_arrival: lastArrival, first_arrival_max_seq: span[0], last_arrival_max_seq: span[1], received, closed: closedAfterReady, close_codes: closeCodes };
}

function report(from, to) {
  processPending();
  const delays = {};
  const bytes = {};
  for (let s = from; s <= to; s += 1) {
    delays[s] = delaysBySeq.get(s) || [];
    if (bytesBySeq.has(s)) bytes[s] = bytesBySeq.get(s);
  }
  let missing = 0; let clientsMissing = 0;
  for (const c of clients) {
    if (!c || !c.everOpen) continue; // never connected: counted as `failed`, not as missing
    let got = 0;
    for (let s = from; s <= to; s += 1) if (c.seqs.has(s)) got += 1;
    const miss = to - from + 1 - got;
    missing += miss;
    if (miss) clientsMissing += 1;
  }
  return { event: 'report', from, to, delays, bytes, missing, clients_missing: clientsMissing,
    closed: closedAfterReady, close_codes: closeCodes, frame_bytes: frameBytes, received };
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let cmd;
  try { cmd = JSON.parse(line); } catch (err) { return; }
  if (cmd.cmd === 'status') emit(status());
  else if (cmd.cmd === 'report') emit(report(cmd.from, cmd.to));
  else if (cmd.cmd === 'exit') shutdown();
});
rl.on('close', shutdown);

function shutdown() {
  for (const c of clients) if (c && c.ws) c.ws.terminate();
  process.exit(0);
}

if (count === 0) { ready = true; emit({ event: 'ready', connected: 0, failed: 0, errors }); } else next();
