#!/usr/bin/env node
// The seed's RealTimeMonitoring broadcast loop, reproduced for the fan-out benchmark.
//
// Same as the seed: a ws WebSocket.Server, a Set of clients, a fresh message sent on connect,
// and every INTERVAL ms one JSON.stringify of a metrics_update followed by client.send(message)
// for each OPEN client. Differences, all needed to compare it with the hub: `seq` and `sources`
// are in the message (the hub's contract), the payload comes from a file instead of Prometheus
// and MongoDB (so both servers send the same bytes), and the port and interval are settable.
// permessage-deflate stays off (the ws server default), as in the seed.
//
// Usage: node seed_ws_server.js [--port P] [--interval-ms MS] [--payload FILE] [--host H]
//   env: SEED_PORT, SEED_INTERVAL_MS, SEED_PAYLOAD, SEED_HOST
//   FILE holds {"data": {...}, "sources": {...}}; without it a small built-in payload is used.
'use strict';

const fs = require('fs');
const WebSocket = require('ws');

function option(name, envName, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (process.env[envName]) return process.env[envName];
  return fallback;
}

const port = Number(option('port', 'SEED_PORT', '8080'));
const host = option('host', 'SEED_HOST', '127.0.0.1');
const intervalMs = Number(option('interval-ms', 'SEED_INTERVAL_MS', '10000'));
const payloadFile = option('payload', 'SEED_PAYLOAD', '');

const parts = payloadFile
  ? JSON.parse(fs.readFileSync(payloadFile, 'utf8'))
  : { data: { system: null, application: {}, business: null, alerts: null }, sources: {} };
const startedAt = Date.now();

class RealTimeMonitoring {
  constructor() {
    this.seq = 0;
    this.clients = new Set();
    this.wss = new WebSocket.Server({ host, port, perMessageDeflate: false });
    this.setupWebSocketServer();
    this.wss.on('listening', () => {
      // The runner waits for this line before it connects anyone.
      console.log(JSON.stringify({ event: 'listening', port: this.wss.address().port, pid: process.pid }));
      this.startMetricsCollection();
    });
  }

  setupWebSocketServer() {
    this.wss.on('connection', (ws) => {
      this.clients.add(ws);
      this.sendMetricsToClient(ws);
      ws.on('close', () => {
        this.clients.delete(ws);
      });
      ws.on('error', () => {
        this.clients.delete(ws);
      });
    });
  }

  collectCurrentMetrics() {
    // The seed awaited Prometheus and MongoDB here; the benchmark measures fan-out, so the
    // collected data is the fixed payload with the seed's live application fields refreshed.
    const data = parts.data;
    if (data.application && typeof data.application === 'object') {
      data.application.activeConnections = this.clients.size;
      data.application.uptime = (Date.now() - startedAt) / 1000;
    }
    return data;
  }

  message() {
    return JSON.stringify({
      type: 'metrics_update',
      seq: this.seq,
      timestamp: new Date().toISOString(),
      data: this.collectCurrentMetrics(),
      sources: parts.sources,
    });
  }

  sendMetricsToClient(ws) {
    ws.send(this.message());
  }

  broadcastMetrics() {
    this.seq += 1;
    const message = this.message();
    this.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN) {
        client.send(message);
      }
    });
  }

  startMetricsCollection() {
    setInterval(() => {
      this.broadcastMetrics();
    }, intervalMs);
  }
}

const monitoring = new RealTimeMonitoring();
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    monitoring.wss.close();
    process.exit(0);
  });
}
