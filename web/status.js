// The Health panel's status table: per check its state, uptime over 24 h / 7 d / 30 d with the p95
// latency beneath each, and days left on an https check's certificate. From data.health.checks.<name>
// {state, cert_days, uptime: {"24h", "7d", "30d", source, since}, p95_ms: {"24h", "7d", "30d"}}
// (docs/protocol.md); every field is optional: an older hub sends none, and the table stays hidden.

import { $, el, fmtLatency, fmtLocal, num } from "./format.js";

export const WINDOWS = ["24h", "7d", "30d"];
const WINDOW_TEXT = { "24h": "24 h", "7d": "7 d", "30d": "30 d" };
const SOURCE_TEXT = { hub: "the hub's record", prometheus: "Prometheus" };
const BADGE = { up: "st-ok", degraded: "st-degraded", down: "st-error" };

/** "up", "degraded" or "down": the check's `state`, else from `up` (an older hub). */
export function stateOf(c, up) {
  return c.state === "up" || c.state === "degraded" || c.state === "down" ? c.state : (up ? "up" : "down");
}

/** An uptime fraction as a percentage, floored (99.999 % is not 100 %); "–" without one. */
export function fmtUptime(f) {
  const v = num(f);
  if (v === null) return "–";
  if (v >= 1) return "100 %";
  return (Math.floor(Math.max(0, v) * 10000) / 100).toFixed(2) + " %";
}

/** Days left on a certificate: "12 d", "4.9 d", "expired"; "–" when unknown (http, or not read yet). */
export function fmtCertDays(d) {
  const v = num(d);
  if (v === null) return "–";
  if (v < 0) return "expired";
  return (v < 10 ? v.toFixed(1) : String(Math.floor(v))) + " d";
}

function windowOf(obj, w) {
  return obj && typeof obj === "object" ? num(obj[w]) : null;
}

// Whether any check carries the figures this table adds (an older hub's snapshot carries none).
function hasFigures(rows) {
  return rows.some((r) => (r.uptime && typeof r.uptime === "object") || (r.p95 && typeof r.p95 === "object")
    || num(r.certDays) !== null);
}

function headRow() {
  const tr = el("tr");
  tr.append(el("th", "st-check", "check"));
  for (const w of WINDOWS) tr.append(el("th", "st-win", WINDOW_TEXT[w]));
  tr.append(el("th", "st-cert", "cert"));
  const thead = el("thead");
  thead.append(tr);
  return thead;
}

function bodyRow(r) {
  const tr = el("tr", "state-" + r.state);
  tr.dataset.check = r.name;
  tr.dataset.state = r.state;
  const name = el("th", "st-check");
  name.scope = "row";
  const badge = el("span", "badge " + BADGE[r.state], r.state);
  if (r.state !== "up" && r.error) badge.title = r.error;
  name.append(el("span", "name", r.name), badge);
  tr.append(name);
  for (const w of WINDOWS) {
    const td = el("td", "st-win");
    td.dataset.window = w;
    const up = windowOf(r.uptime, w);
    const p95 = windowOf(r.p95, w);
    td.dataset.uptime = up === null ? "" : String(up);
    td.dataset.p95 = p95 === null ? "" : String(p95);
    td.append(el("span", "st-up", fmtUptime(up)), el("span", "st-p95", p95 === null ? "–" : fmtLatency(p95 / 1000)));
    tr.append(td);
  }
  const days = num(r.certDays);
  const cert = el("td", "st-cert" + (days !== null && days < 0 ? " expired" : ""), fmtCertDays(days));
  cert.dataset.raw = days === null ? "" : String(days);
  tr.append(cert);
  return tr;
}

// "uptime and p95 latency per window; <source> since <time>": what the figures are and what they cover.
function caption(rows) {
  const withUptime = rows.map((r) => r.uptime).filter((u) => u && typeof u === "object");
  let text = "uptime and p95 latency per window";
  const sources = [...new Set(withUptime.map((u) => SOURCE_TEXT[u.source] || String(u.source || "")))]
    .filter(Boolean);
  if (sources.length) text += "; " + sources.join(", ");
  const since = withUptime.map((u) => Date.parse(u.since)).filter(Number.isFinite);
  if (since.length) text += " since " + fmtLocal(new Date(Math.min(...since)).toISOString());
  return el("caption", "muted", text);
}

/** Show the status table for `rows` (health.js's rows, in its order), or hide it when they carry no figures. */
export function renderStatus(rows) {
  const table = $("health-table");
  if (!rows || !hasFigures(rows)) {
    table.hidden = true;
    table.replaceChildren();
    return;
  }
  const tbody = el("tbody");
  tbody.append(...rows.map(bodyRow));
  table.replaceChildren(caption(rows), headRow(), tbody);
  table.hidden = false;
}
