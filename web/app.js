// Live dashboard for the hub: one WebSocket, history on connect, bounded charts.
// ES modules, no build step, under CSP default-src 'self'. By concern:
//   state.js       constants and the one state object
//   format.js      number formatting, DOM helpers (textContent only)
//   connection.js  token auth, the socket, backoff, watchdog
//   stream.js      which snapshots to accept: seq, epoch, hub restarts
//   charts.js      chart points (the hub's, as sent) and uPlot drawing
//   panels.js      the header and sections; alerts.js, health.js the Alerts and Health panels,
//                  status.js the Health panel's status table (uptime, p95, certificates)
//   actions.js     what the token may do (/api/me); silence, expire, mute and unmute controls
//   banner.js      the stale banner; view.js the kiosk view (`/?kiosk`)
//   anomaly.js     the bookings-anomaly banner; slo.js the booking API's SLO figures

import { chartSeries, initCharts, plottedTimes, seriesLengths } from "./charts.js";
import { start } from "./connection.js";
import { $ } from "./format.js";
import { state } from "./state.js";
import { VIEW, applyView } from "./view.js";

// Read-only view for tests and curious operators (no way to change state through it).
Object.defineProperty(window, "hubDebug", {
  value: Object.freeze({
    get lastSeq() { return state.lastSeq; },
    get epoch() { return state.epoch; },
    get points() { return state.points.length; },
    get conn() { return $("conn-state").dataset.state; },
    get interval() { return state.interval; },
    get connects() { return state.connects; },
    get restarts() { return state.restarts; },
    get attempt() { return state.attempt; },
    get firstBatch() { return state.firstBatch; },
    get view() { return VIEW; },
    get retries() { return state.retries; },
    // What /api/me allowed (null: no controls), once it was asked (undefined before).
    get me() { return state.meChecked ? (state.me && JSON.parse(JSON.stringify(state.me))) : undefined; },
    get lastDataAt() { return state.last ? state.lastAt : null; },
    seqs() { return state.points.map((p) => p.seq); },
    seriesLengths,
    plottedTimes,
    chartData: chartSeries,
  }),
});

applyView();
initCharts();
start();
