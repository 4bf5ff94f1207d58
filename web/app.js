// Live dashboard for the hub: one WebSocket, history on connect, bounded charts.
// Plain ES2020, no build step. Every piece of server data reaches the DOM through
// textContent / DOM APIs only (the page runs under CSP default-src 'self').
"use strict";

(() => {
  const MAX_POINTS = 360;          // chart window: 1 h at the default 10 s interval
  const DEFAULT_INTERVAL = 10;     // seconds, until two consecutive snapshots tell us better
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_CAP_MS = 30000;
  const MAX_SERIES = 8;            // lines per chart; more jobs than this are ranked and cut
  const MAX_LIST = 50;             // rows per target / alert list
  const WATCHDOG_MIN_S = 20;       // never replace a silent socket sooner than this
  const PING_AFTER_S = 5;          // ask a silent socket for a pong at most this often
  const TOKEN_KEY = "hub.token";
  const SOURCES = ["process", "prometheus", "business"];
  // RFC 7230 tchar: what may travel in Sec-WebSocket-Protocol.
  const TOKEN_RE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

  const $ = (id) => document.getElementById(id);

  const state = {
    points: [],          // derived chart points, oldest first, at most MAX_POINTS
    lastSeq: 0,          // highest seq accepted in the current server epoch
    last: null,          // latest accepted snapshot
    lastAt: 0,           // performance.now() when the latest snapshot arrived
    lastMsgAt: 0,        // performance.now() of the current socket's latest message (any type)
    pingAt: 0,           // performance.now() of the last application-level ping
    interval: DEFAULT_INTERVAL,
    ws: null,
    fresh: false,        // true until the current connection delivered its first snapshot
    socketData: false,   // the current socket delivered a message
    conn: "connecting",
    attempt: 0,          // consecutive failed connection attempts (backoff exponent)
    retryTimer: 0,
    connects: 0,         // sockets that delivered data (1 + successful reconnects)
    restarts: 0,         // server restarts detected (seq went backwards)
    prompted: false,     // the automatic token prompt is shown at most once per page
    token: loadToken(),
    dirty: false,        // charts need a redraw once the tab is visible again
    firstBatch: 0,       // snapshots in the page's first non-empty message (the history)
  };

  // ------------------------------------------------------------------ auth

  function loadToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function saveToken(token) {
    state.token = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: keep the token for this page only */ }
  }

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function askToken() {
    const entered = window.prompt("This hub needs an access token:");
    if (entered === null) return false;
    const token = entered.trim();
    if (!TOKEN_RE.test(token)) {
      showAuth("That token contains characters that cannot be sent; check it and try again.");
      return false;
    }
    saveToken(token);
    return true;
  }

  function showAuth(message) {
    $("auth-msg").textContent = message;
    $("auth").hidden = false;
    setConn("unauthorized");
  }

  // Resolve to true when the WebSocket may be tried (the probe cannot tell a
  // refused upgrade from a dead server, so only a clear 401 stops us).
  async function probeAuth() {
    let res;
    try {
      res = await fetch("api/metrics/snapshot", { headers: authHeaders(), cache: "no-store" });
    } catch (e) {
      return true;   // network error: let the socket attempt fail and back off
    }
    if (res.status !== 401) {
      $("auth").hidden = true;
      return true;
    }
    if (state.token) saveToken("");   // rejected: forget it
    if (!state.prompted) {
      state.prompted = true;
      if (askToken()) return probeAuth();
    }
    if ($("auth").hidden) showAuth("This hub needs an access token.");
    else setConn("unauthorized");
    return false;
  }

  $("auth-btn").addEventListener("click", () => {
    if (!askToken()) return;
    $("auth").hidden = true;
    state.attempt = 0;
    reconnect();
  });

  // ------------------------------------------------------------------ connection

  function wsUrl(history) {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "?history=" + history;
    return url.href;
  }

  // After a gap, ask only for what was missed (plus a margin); the first load asks for all.
  function historyCount() {
    if (!state.last) return MAX_POINTS;
    const gap = (performance.now() - state.lastAt) / 1000;
    return Math.max(2, Math.min(MAX_POINTS, Math.ceil(gap / state.interval) + 2));
  }

  function openSocket() {
    clearTimeout(state.retryTimer);
    if (state.ws) return;
    let ws;
    try {
      ws = state.token
        ? new WebSocket(wsUrl(historyCount()), ["hub.v1", "bearer." + state.token])
        : new WebSocket(wsUrl(historyCount()));
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    state.fresh = true;
    state.socketData = false;
    state.lastMsgAt = performance.now();
    state.pingAt = 0;
    ws.onmessage = (ev) => { if (state.ws === ws) onMessage(ev.data); };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      scheduleReconnect();
    };
    ws.onerror = () => { /* a close event always follows */ };
  }

  function scheduleReconnect() {
    clearTimeout(state.retryTimer);
    if (!navigator.onLine) {
      setConn("offline");   // the 'online' event resumes
      return;
    }
    setConn("reconnecting");
    // Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)).
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
    state.attempt = Math.min(state.attempt + 1, 15);
    state.retryTimer = setTimeout(reconnect, Math.random() * ceiling);
  }

  async function reconnect() {
    clearTimeout(state.retryTimer);
    if (state.ws) return;
    if (await probeAuth()) openSocket();
  }

  // Drop the current socket and connect again at once (history backfills the gap).
  function forceReconnect() {
    const old = state.ws;
    if (old) {
      state.ws = null;
      old.onclose = null;
      old.onmessage = null;
      try { old.close(4000, "client reconnect"); } catch (e) { /* already closing */ }
    }
    state.attempt = 0;
    reconnect();
  }

  // Seconds since the current socket last said anything (data, history or pong).
  function silentFor() {
    return (performance.now() - state.lastMsgAt) / 1000;
  }

  window.addEventListener("online", () => {
    state.attempt = 0;
    // After a network change the old TCP connection may be dead without any close event.
    if (state.ws && silentFor() > 1.5 * state.interval) forceReconnect();
    else if (!state.ws) reconnect();
    else updateBadge();
  });
  window.addEventListener("offline", updateBadge);

  // ------------------------------------------------------------------ messages

  function onMessage(text) {
    state.lastMsgAt = performance.now();
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "history") {
      ingest(Array.isArray(msg.items) ? msg.items : []);
    } else if (msg.type === "metrics_update") {
      ingest([msg]);
    } else {
      return;   // pong, subscribed, error: nothing to show
    }
    if (!state.socketData) {
      // Data is flowing: that, not the bare open, counts as a successful connection
      // (a hub that accepts and drops at once must not reset the backoff).
      state.socketData = true;
      state.connects += 1;
      state.attempt = 0;
      setConn("live");
    }
  }

  function isSnapshot(s) {
    return s && typeof s === "object" && Number.isFinite(s.seq) && typeof s.timestamp === "string";
  }

  // Accept snapshots newer than the last seen seq. The first batch of a connection
  // also checks whether the hub restarted (its seq starts again at 1).
  function ingest(batch) {
    const items = batch.filter(isSnapshot);
    if (items.length === 0) return;
    if (state.firstBatch === 0) state.firstBatch = items.length;
    if (state.fresh) {
      state.fresh = false;
      const newest = items[items.length - 1];
      const same = items.find((s) => s.seq === state.lastSeq);
      const restarted = state.last && (newest.seq < state.lastSeq ||
        (same && same.timestamp !== state.last.timestamp));
      if (restarted) {
        state.restarts += 1;
        state.lastSeq = 0;
      }
    }
    let accepted = 0;
    for (const snap of items) {
      if (snap.seq <= state.lastSeq) continue;
      state.lastSeq = snap.seq;
      state.last = snap;
      addPoint(derive(snap));
      accepted += 1;
    }
    if (accepted === 0) return;
    state.lastAt = performance.now();
    estimateInterval();
    render(state.last);
    updateBadge();
    drawCharts();
  }

  function addPoint(p) {
    if (!Number.isFinite(p.t)) return;
    const pts = state.points;
    // x must increase for uPlot; after a hub restart older-epoch points may overlap.
    while (pts.length && pts[pts.length - 1].t >= p.t) pts.pop();
    pts.push(p);
    if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
  }

  function estimateInterval() {
    const pts = state.points;
    const gaps = [];
    for (let i = pts.length - 1; i > 0 && gaps.length < 10; i--) {
      if (pts[i].seq === pts[i - 1].seq + 1) gaps.push(pts[i].t - pts[i - 1].t);
    }
    if (gaps.length === 0) return;
    gaps.sort((a, b) => a - b);
    const median = gaps[Math.floor(gaps.length / 2)];
    if (median > 0) state.interval = median;
  }

  function num(v) {
    const n = typeof v === "number" ? v : parseFloat(v);
    return Number.isFinite(n) ? n : null;
  }

  function seriesName(metric) {
    if (!metric || typeof metric !== "object") return "all";
    return String(metric.job || metric.instance || metric.__name__ || "all");
  }

  // Prometheus result list -> {job: value}, summed (rates) or max (quantiles).
  function byJob(result, how) {
    if (!Array.isArray(result)) return null;
    const out = {};
    for (const item of result) {
      const v = num(item && Array.isArray(item.value) ? item.value[1] : null);
      if (v === null) continue;
      const k = seriesName(item.metric);
      out[k] = k in out ? (how === "sum" ? out[k] + v : Math.max(out[k], v)) : v;
    }
    return out;
  }

  function derive(snap) {
    const d = snap.data || {};
    const sys = d.system, app = d.application, biz = d.business;
    const appts = biz && biz.appointments ? biz.appointments : null;
    return {
      seq: snap.seq,
      t: Date.parse(snap.timestamp) / 1000,
      rate: sys ? byJob(sys.requestRate, "sum") : null,
      p95: sys ? byJob(sys.responseTime, "max") : null,
      rss: app && app.memoryUsage ? num(app.memoryUsage.rss) : null,
      cpu: app ? num(app.cpuPercent) : null,
      conns: app ? num(app.activeConnections) : null,
      appts: appts ? num(appts.total) : null,
    };
  }

  // ------------------------------------------------------------------ formatting

  const MIB = 1024 * 1024;

  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    if (n >= 1024 * MIB) return (n / 1024 / MIB).toFixed(2) + " GiB";
    return (n / MIB).toFixed(1) + " MiB";
  }

  function fmtFixed(n, digits, unit) {
    if (n === null || n === undefined || !Number.isFinite(n)) return "–";
    return n.toFixed(digits) + (unit || "");
  }

  function fmtLatency(sec) {
    if (sec === null || sec === undefined || !Number.isFinite(sec)) return "–";
    return sec < 1 ? Math.round(sec * 1000) + " ms" : sec.toFixed(2) + " s";
  }

  function fmtDuration(sec) {
    if (sec === null || sec === undefined || !Number.isFinite(sec)) return "–";
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return sec + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " min " + (sec % 60) + " s";
    if (sec < 86400) return Math.floor(sec / 3600) + " h " + Math.floor((sec % 3600) / 60) + " min";
    return Math.floor(sec / 86400) + " d " + Math.floor((sec % 86400) / 3600) + " h";
  }

  function fmtAgo(sec) {
    if (sec < 1.5) return "just now";
    return fmtDuration(sec) + " ago";
  }

  function fmtCount(n) {
    return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US");
  }

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // Set a value's text, and its raw number in data-raw (for tests and tooling).
  function setValue(id, text, raw) {
    const e = $(id);
    e.textContent = text;
    e.dataset.raw = raw === null || raw === undefined ? "" : String(raw);
  }

  function setBadge(e, status) {
    const s = String(status || "unknown");
    e.className = "badge st-" + s.replace(/[^a-z]/g, "");
    e.textContent = s;
  }

  // A section with no data says so, with the reason its source gave.
  function sectionState(sectionId, key, snap) {
    const sec = $(sectionId);
    const p = sec.querySelector(".nodata");
    const data = snap.data || {};
    const value = data[key];
    const missing = value === null || value === undefined;
    sec.classList.toggle("empty", missing);
    p.hidden = !missing;
    if (missing) {
      const srcName = sec.dataset.source;
      const src = snap.sources && snap.sources[srcName];
      let quiet = false;
      if (!(key in data)) {
        // The hub filters sections by the token's topics: absent means not allowed, not failed.
        p.textContent = "no data — " + key + " is not included for this access token";
        quiet = true;
      } else {
        p.textContent = "no data — " + srcName + ": " + (src ? (src.error || src.status) : "not reported");
        quiet = !!src && src.status === "disabled";
      }
      p.classList.toggle("quiet", quiet);
    }
    return !missing;
  }

  // ------------------------------------------------------------------ rendering

  function render(snap) {
    const d = snap.data || {};
    $("conn-seq").textContent = "seq " + snap.seq;
    $("conn-seq").dataset.raw = String(snap.seq);
    renderSources(snap.sources || {});
    renderSystem(d.system, snap);
    renderApplication(d.application, snap);
    renderBusiness(d.business, snap);
    renderAlerts(d.alerts, snap);
  }

  function renderSources(sources) {
    for (const name of SOURCES) {
      const li = document.querySelector('#sources li[data-source="' + name + '"]');
      const src = sources[name];
      setBadge(li.querySelector(".badge"), src ? src.status : "unknown");
      let msg = "";
      if (src) {
        const parts = [];
        if (src.error) parts.push(src.error);
        if (Array.isArray(src.warnings) && src.warnings.length) parts.push("warnings: " + src.warnings.join("; "));
        msg = parts.join(" · ");
        li.title = src.latency_ms != null ? "collected in " + src.latency_ms + " ms" : "";
      }
      li.querySelector(".src-error").textContent = msg;
    }
  }

  function renderSystem(sys, snap) {
    const okTraffic = sectionState("traffic", "system", snap);
    const okTargets = sectionState("targets", "system", snap);
    if (okTraffic) {
      const rate = byJob(sys.requestRate, "sum");
      const p95 = byJob(sys.responseTime, "max");
      const total = rate ? Object.values(rate).reduce((a, b) => a + b, 0) : null;
      const worst = p95 && Object.keys(p95).length ? Math.max(...Object.values(p95)) : null;
      setValue("v-rate", total === null ? "–" : fmtFixed(total, 2, " req/s"), total);
      setValue("v-p95", fmtLatency(worst), worst);
    }
    const list = $("target-list");
    if (!okTargets) {
      list.replaceChildren();
      $("v-targets").textContent = "";
      return;
    }
    const targets = Array.isArray(sys.uptime) ? sys.uptime : [];
    const rows = targets.map((item) => {
      const m = (item && item.metric) || {};
      const v = num(item && Array.isArray(item.value) ? item.value[1] : null);
      return { up: v === 1, instance: String(m.instance || m.job || "?"), job: String(m.job || "") };
    });
    rows.sort((a, b) => (a.up - b.up) || a.job.localeCompare(b.job) || a.instance.localeCompare(b.instance));
    const down = rows.filter((r) => !r.up).length;
    $("v-targets").textContent = "(" + (rows.length - down) + " up · " + down + " down)";
    $("v-targets").dataset.raw = String(down);
    const items = rows.slice(0, MAX_LIST).map((r) => {
      const li = el("li", r.up ? "up" : "down");
      li.append(el("span", "badge " + (r.up ? "st-ok" : "st-error"), r.up ? "up" : "down"),
        el("span", "name", r.instance), el("span", "muted", r.job));
      return li;
    });
    if (rows.length > MAX_LIST) items.push(el("li", "muted", "… and " + (rows.length - MAX_LIST) + " more"));
    if (rows.length === 0) items.push(el("li", "muted", "No targets match the uptime query."));
    list.replaceChildren(...items);
  }

  function renderApplication(app, snap) {
    if (!sectionState("process", "application", snap)) return;
    const rss = app.memoryUsage ? num(app.memoryUsage.rss) : null;
    setValue("v-rss", fmtBytes(rss), rss);
    setValue("v-cpu", fmtFixed(num(app.cpuPercent), 1, " %"), num(app.cpuPercent));
    setValue("v-conns", fmtCount(num(app.activeConnections)), num(app.activeConnections));
    setValue("v-uptime", fmtDuration(num(app.uptime)), num(app.uptime));
    setValue("v-lag", fmtFixed(num(app.eventLoopLagMs), 1, " ms"), num(app.eventLoopLagMs));
    const fds = num(app.openFds), threads = num(app.threads);
    setValue("v-fds", (fds === null ? "–" : fds) + " · " + (threads === null ? "–" : threads), fds);
  }

  function renderBusiness(biz, snap) {
    const a = biz && biz.appointments;
    if (!sectionState("business", "business", snap) || !a) {
      $("specialties").replaceChildren();
      return;
    }
    $("v-window").textContent = biz.timeRange ? "(last " + biz.timeRange + ")" : "";
    setValue("v-appts", fmtCount(num(a.total)), num(a.total));
    setValue("v-cancel", fmtFixed(num(a.cancellationRate), 1, " %"), num(a.cancellationRate));
    setValue("v-booking", fmtDuration(num(a.averageBookingTime)), num(a.averageBookingTime));
    const sat = num(a.patientSatisfaction);
    setValue("v-satisfaction", sat === null ? "no reviews" : sat.toFixed(2) + " / 5", sat);
    const rows = Array.isArray(a.bySpecialty) ? a.bySpecialty : [];
    const max = rows.reduce((m, r) => Math.max(m, num(r && r.count) || 0), 0);
    const items = rows.slice(0, 12).map((r) => {
      const count = num(r && r.count) || 0;
      const name = r && r._id !== null && r._id !== undefined ? String(r._id) : "unknown";
      const li = el("li");
      const bar = el("progress");
      bar.max = max || 1;
      bar.value = count;
      bar.setAttribute("aria-label", name);
      li.append(el("span", "name", name), bar, el("span", "count", fmtCount(count)));
      return li;
    });
    if (rows.length === 0) items.push(el("li", "muted", "No appointments in the window."));
    $("specialties").replaceChildren(...items);
  }

  const SEVERITIES = ["critical", "error", "warning", "info"];

  function renderAlerts(alerts, snap) {
    const list = $("alert-list");
    if (!sectionState("alerts", "alerts", snap)) {
      list.replaceChildren();
      $("v-alerts").textContent = "";
      return;
    }
    const firing = alerts.filter((x) => x && x.state === "firing").length;
    $("v-alerts").textContent = "(" + firing + " firing · " + (alerts.length - firing) + " pending)";
    $("v-alerts").dataset.raw = String(firing);
    const now = Date.now();
    const items = alerts.slice(0, MAX_LIST).map((x) => {
      const sev = String((x && x.severity) || "none").toLowerCase();
      const li = el("li", "alert sev-" + (SEVERITIES.includes(sev) ? sev : "other") + " state-" +
        (x.state === "firing" ? "firing" : "pending"));
      const head = el("div", "alert-head");
      head.append(el("span", "badge sev", sev), el("span", "name", x.name || "unnamed"),
        el("span", "muted", String(x.state || "")));
      const since = Date.parse(x.activeAt);
      if (Number.isFinite(since)) head.append(el("span", "muted", "for " + fmtDuration((now - since) / 1000)));
      li.append(head);
      if (x.summary) li.append(el("div", "summary", x.summary));
      return li;
    });
    if (alerts.length > MAX_LIST) items.push(el("li", "muted", "… and " + (alerts.length - MAX_LIST) + " more"));
    if (alerts.length === 0) items.push(el("li", "muted none", "Nothing firing."));
    list.replaceChildren(...items);
  }

  // ------------------------------------------------------------------ connection badge

  function setConn(conn) {
    state.conn = conn;
    updateBadge();
  }

  function updateBadge() {
    const badge = $("conn-state");
    let shown = state.conn;
    const age = state.last ? (performance.now() - state.lastAt) / 1000 : null;
    // Stale: two expected updates missed (plus a little grace for network jitter).
    if (shown === "live" && age !== null && age > 2 * state.interval + Math.min(1, state.interval / 2)) {
      shown = "stale";
    }
    if (!navigator.onLine && shown !== "unauthorized") shown = "offline";
    if (badge.dataset.state !== shown) {
      badge.dataset.state = shown;
      badge.className = "badge st-" + shown;
      badge.textContent = shown;
    }
    $("conn-age").textContent = age === null ? "waiting for data" : "updated " + fmtAgo(age);
  }

  // A socket that stays open but silent (half-open TCP, a stuck proxy) is replaced. A quiet
  // hub is asked with a ping first: one that answers (tick loop stuck, say) keeps its socket.
  function watchdog() {
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      const silent = silentFor();
      const now = performance.now();
      if (silent > Math.max(4 * state.interval, WATCHDOG_MIN_S)) {
        forceReconnect();
      } else if (silent > Math.max(2 * state.interval, PING_AFTER_S) && now - state.pingAt > PING_AFTER_S * 1000) {
        state.pingAt = now;
        try { ws.send(JSON.stringify({ type: "ping" })); } catch (e) { /* closing */ }
      }
    }
    updateBadge();
  }

  setInterval(watchdog, 1000);

  // ------------------------------------------------------------------ charts

  const MB = MIB;
  const CHARTS = [
    { id: "chart-rate", key: "rate", perJob: true, fmt: (v) => fmtFixed(v, 2, " req/s") },
    { id: "chart-p95", key: "p95", perJob: true, fmt: fmtLatency },
    { id: "chart-rss", series: [{ key: "rss", label: "RSS", scale: (v) => v / MB }],
      fmt: (v) => fmtFixed(v, 1, " MiB") },
    { id: "chart-cpu", series: [{ key: "cpu", label: "CPU %" },
      { key: "conns", label: "connections", axis: "n", fmt: fmtCount }],
      fmt: (v) => fmtFixed(v, 1, " %") },
    { id: "chart-appts", series: [{ key: "appts", label: "booked" }], fmt: fmtCount },
  ];
  const charts = new Map();   // id -> {plot, names}

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function chartHeight(box) {
    const h = parseInt(getComputedStyle(box).getPropertyValue("--chart-h"), 10);
    return Number.isFinite(h) && h > 40 ? h : 160;
  }

  // The jobs to draw: ranked by their largest value in the window, at most MAX_SERIES.
  function jobNames(key) {
    const peak = new Map();
    for (const p of state.points) {
      const m = p[key];
      if (!m) continue;
      for (const k of Object.keys(m)) peak.set(k, Math.max(peak.get(k) || 0, m[k]));
    }
    return [...peak.keys()].sort((a, b) => peak.get(b) - peak.get(a) || a.localeCompare(b))
      .slice(0, MAX_SERIES).sort();
  }

  function seriesDefs(spec) {
    if (spec.perJob) return jobNames(spec.key).map((job) => ({ label: job, get: (p) => (p[spec.key] ? p[spec.key][job] : undefined) }));
    return spec.series.map((s) => ({ label: s.label, axis: s.axis, fmt: s.fmt,
      get: (p) => (p[s.key] === null || p[s.key] === undefined ? null : (s.scale ? s.scale(p[s.key]) : p[s.key])) }));
  }

  function makeChart(spec, defs) {
    const box = $(spec.id);
    const fg = cssVar("--muted"), grid = cssVar("--grid");
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const twoAxes = defs.some((d) => d.axis);
    const opts = {
      width: Math.max(200, box.clientWidth),
      height: chartHeight(box),
      scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min || 0), niceCeil(max)] },
        n: { range: (u, min, max) => [0, niceCeil(max)] } },
      axes: [
        Object.assign({}, axis),
        Object.assign({}, axis, { size: 64, values: (u, splits) => splits.map((v) => compact(v)) }),
      ],
      // Without a cursor on the chart the legend shows the latest values.
      series: [{ value: (u, v, si, idx) => (idx === null || idx === undefined ? "latest"
        : new Date(v * 1000).toLocaleTimeString()) }].concat(defs.map((d, i) => ({
        label: d.label,
        scale: d.axis || "y",
        stroke: cssVar("--s" + ((i % 8) + 1)),
        width: 2,
        points: { show: false },
        value: (u, v, si, idx) => {
          if (idx === null || idx === undefined) v = lastValue(u.data[si]);
          return v === null || v === undefined ? "–" : (d.fmt || spec.fmt)(v);
        },
      }))),
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false } },
    };
    if (twoAxes) opts.axes.push(Object.assign({}, axis, { scale: "n", side: 1, size: 48, grid: { show: false } }));
    box.replaceChildren();
    return new uPlot(opts, chartData(defs), box);
  }

  // A round upper bound a little above `v` (so axes get readable ticks), 1 when no data.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const target = v * 1.05;
    const p = 10 ** Math.floor(Math.log10(target));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= target) return m * p;
    return 10 * p;
  }

  function lastValue(arr) {
    for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null && arr[i] !== undefined) return arr[i];
    return null;
  }

  function compact(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (a > 0 && a < 0.01) return v.toExponential(0);
    return String(+v.toFixed(3));
  }

  function chartData(defs) {
    const pts = state.points;
    const x = pts.map((p) => p.t);
    return [x].concat(defs.map((d) => pts.map((p) => {
      const v = d.get(p);
      return v === undefined ? null : v;
    })));
  }

  function drawCharts() {
    if (typeof uPlot === "undefined") return;
    if (document.hidden) {
      state.dirty = true;   // no drawing for a background tab; catch up when shown
      return;
    }
    state.dirty = false;
    for (const spec of CHARTS) {
      const defs = seriesDefs(spec);
      const names = defs.map((d) => d.label).join("\n");
      const have = charts.get(spec.id);
      if (!have || have.names !== names) {
        if (have) have.plot.destroy();
        charts.set(spec.id, { plot: makeChart(spec, defs), names, defs });
      } else {
        have.plot.setData(chartData(have.defs));
      }
    }
  }

  function rebuildCharts() {
    for (const c of charts.values()) c.plot.destroy();
    charts.clear();
    drawCharts();
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.dirty) drawCharts();
  });

  // Colours come from CSS variables, so a theme switch rebuilds the charts.
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", rebuildCharts);
  }

  if (window.ResizeObserver) {
    const ro = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const c = charts.get(entry.target.id);
        if (!c) continue;
        const w = Math.max(200, Math.floor(entry.contentRect.width));
        const h = chartHeight(entry.target);
        if (c.plot.width !== w || c.plot.height !== h) c.plot.setSize({ width: w, height: h });
      }
    });
    for (const spec of CHARTS) ro.observe($(spec.id));
  }

  // ------------------------------------------------------------------ debug / tests

  // Read-only view for tests and curious operators (no way to change state through it).
  Object.defineProperty(window, "hubDebug", {
    value: Object.freeze({
      get lastSeq() { return state.lastSeq; },
      get points() { return state.points.length; },
      get conn() { return $("conn-state").dataset.state; },
      get interval() { return state.interval; },
      get connects() { return state.connects; },
      get restarts() { return state.restarts; },
      get attempt() { return state.attempt; },
      get firstBatch() { return state.firstBatch; },
      seqs() { return state.points.map((p) => p.seq); },
      seriesLengths() {
        const out = {};
        for (const [id, c] of charts) out[id] = c.plot.data[0].length;
        return out;
      },
    }),
  });

  reconnect();
})();
