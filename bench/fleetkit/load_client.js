#!/usr/bin/env node
// Fleet fan-out load client: COUNT WebSocket connections to URL, with or without
// permessage-deflate, that only count what they receive (no JSON parsing: a 1.5 MB frame per
// client per tick would make the client, not the hub, the bottleneck). Runner protocol
// (JSON lines): out {"event":"ready",...} once every connect settled;
// in {"cmd":"status"} -> out {"event":"status","open":n,"min_seq":s,"max_seq":s,"bytes":n,"closed":n};
// in {"cmd":"exit"} closes everything.
'use strict';

const readline = require('readline');
const WebSocket = require('ws');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const url = option('url', 'ws://127.0.0.1:8080/ws');
const count = Number(option('count', '100'));
const concurrency = Number(option('concurrency', '50'));
const deflate = option('deflate', '0') === '1';

const clients = [];
let settled = 0; let connected = 0; let failed = 0; let closed = 0; let ready = false;
let payloadBytes = 0; let compressedSeen = 0;
const errors = [];
const closeCodes = {};
const SEQ = /"seq":(\d+)/;

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

function openOne(index) {
  const c = { open: false, maxSeq: -1 };
  clients[index] = c;
  const ws = new WebSocket(url, { perMessageDeflate: deflate ? { clientNoContextTakeover: true } : false,
    skipUTF8Validation: true, handshakeTimeout: 60000, maxPayload: 256 * 1024 * 1024 });
  c.ws = ws;
  let done = false;
  const settle = (ok, why) => {
    if (done) return;
    done = true; settled += 1;
    if (ok) connected += 1; else { failed += 1; if (errors.length < 5) errors.push(String(why)); }
    next();
  };
  ws.on('upgrade', (res) => {
    if (deflate && !/permessage-deflate/.test(res.headers['sec-websocket-extensions'] || '')) {
      errors.push('server did not accept permessage-deflate');
    }
    if ((res.headers['sec-websocket-extensions'] || '').includes('permessage-deflate')) compressedSeen += 1;
  });
  ws.on('open', () => { c.open = true; settle(true); });
  ws.on('message', (data) => {
    payloadBytes += data.length;
    const m = SEQ.exec(data.subarray(0, 120).toString('latin1'));
    if (m) { const s = Number(m[1]); if (s > c.maxSeq) c.maxSeq = s; }
  });
  ws.on('error', (err) => settle(false, err.message));
  ws.on('close', (code) => {
    settle(false, `closed ${code} before open`);
    if (c.open) { c.open = false; closed += 1; closeCodes[code] = (closeCodes[code] || 0) + 1; }
  });
}

let nextIndex = 0;
function next() {
  if (settled === count && !ready) {
    ready = true;
    emit({ event: 'ready', connected, failed, errors, deflate_negotiated: compressedSeen });
    return;
  }
  while (nextIndex < count && nextIndex - settled < concurrency) { openOne(nextIndex); nextIndex += 1; }
}

function status() {
  let minSeq = Infinity; let maxSeq = -1; let open = 0;
  for (const c of clients) {
    if (!c || !c.open) continue;
    open += 1;
    if (c.maxSeq < minSeq) minSeq = c.maxSeq;
    if (c.maxSeq > maxSeq) maxSeq = c.maxSeq;
  }
  return { event: 'status', open, min_seq: open ? minSeq : -1, max_seq: maxSeq, bytes: payloadBytes,
    closed, close_codes: closeCodes };
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let cmd;
  try { cmd = JSON.parse(line); } catch (err) { return; }
  if (cmd.cmd === 'status') emit(status());
  else if (cmd.cmd === 'exit') shutdown();
});
rl.on('close', shutdown);

function shutdown() {
  for (const c of clients) if (c && c.ws) c.ws.terminate();
  process.exit(0);
}

if (count === 0) { ready = true; emit({ event: 'ready', connected: 0, failed: 0, errors, deflate_negotiated: 0 }); } else next();
