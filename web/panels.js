// The panels: one snapshot rendered into the header and every section, text only.

import { renderKeeping } from "./actions.js";
import { renderAlerts } from "./alerts.js";
import { renderAnomaly } from "./anomaly.js";
import { isStale, renderBanner } from "./banner.js";
import { byJob } from "./charts.js";
import {
  $, el, fmtAgo, fmtBytes, fmtCount, fmtDuration, fmtFixed, fmtLatency, num, setBadge, setValue,
} from "./format.js";
import { renderHealth } from "./health.js";
import { renderSlo } from "./slo.js";
import { MAX_LIST, SOURCES, state } from "./state.js";

/** Show `snap` (the latest accepted snapshot) everywhere; controls and the focus are kept. */
export function render(snap) {
  renderKeeping(() => {
    const d = snap.data || {};
    $("conn-seq").textContent = "seq " + snap.seq;
    $("conn-seq").dataset.raw = String(snap.seq);
    $("conn-seq").title = typeof snap.epoch === "string" ? "epoch " + snap.epoch : "";
    renderSources(snap.sources || {});
    renderSystem(d.system, snap);
    renderApplication(d.application, snap);
    renderBusiness(d.business, snap);
    renderAnomaly(d.business);
    renderSlo(d.slo);
    // With Alertmanager configured, alerts are its (and an empty panel names it as the reason).
    $("alerts").dataset.source = snap.sources && snap.sources.alertmanager ? "alertmanager" : "prometheus";
    if (sectionState("alerts", "alerts", snap)) renderAlerts(d.alerts, d.silences);
    else renderAlerts(null, null);
    if (sectionState("health", "health", snap)) renderHealth(d.health);
    else renderHealth(null);
  });
}

/**
 * Mark a section empty when data[key] is absent or null, with the reason; true when it has data.
 * Absent means the token may not see it (the hub filters by topic); null means its source failed
 * or is disabled, and the source's own status says which.
 */
export function sectionState(sectionId, key, snap) {
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

function renderSources(sources) {
  for (const name of SOURCES) {
    const li = document.querySelector('#sources li[data-source="' + name + '"]');
    const src = sources[name];
    // A source the hub does not report (not allowed for this token, or an older hub) is not shown.
    li.hidden = !src;
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

// ------------------------------------------------------------------ connection badge

/** Set the connection state ("connecting", "live", "reconnecting", "offline", "unauthorized"). */
export function setConn(conn) {
  state.conn = conn;
  updateBadge();
}

/** Show the connection state, "stale" when updates stopped (and the banner), and the age of the latest data. */
export function updateBadge() {
  const badge = $("conn-state");
  let shown = state.conn;
  const now = performance.now();
  const age = state.last ? (now - state.lastAt) / 1000 : null;
  if (shown === "live" && age !== null && isStale(now)) shown = "stale";
  if (!navigator.onLine && shown !== "unauthorized") shown = "offline";
  if (badge.dataset.state !== shown) {
    badge.dataset.state = shown;
    badge.className = "badge st-" + shown;
    badge.textContent = shown;
  }
  $("conn-age").textContent = age === null ? "waiting for data" : "updated " + fmtAgo(age);
  renderBanner(now);
}
