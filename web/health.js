// The Health panel: each of the hub's HTTP / database checks, up, degraded or down, since when, latency,
// reason, and its mutes (who, why, until when); above them the status table (status.js). With a token that may act (actions.js): "Mute 1 h" with a
// comment on each check that is not muted, "Unmute" on each mute; without one, no controls.
// data.health = {healthy, details: {name: bool}, checks: {name: {up, status, latency_ms, error, since, failures,
//                state, cert_days, uptime, p95_ms}},   (the last four from a newer hub only)
//                mutes: [{id, check, until, createdBy, comment}]}

import { mayAct, muteControls, unmuteControl } from "./actions.js";
import { $, byLine, el, fmtDuration, fmtLatency, num } from "./format.js";
import { MAX_LIST } from "./state.js";
import { renderStatus, stateOf } from "./status.js";

function rowsOf(health) {
  const checks = health.checks && typeof health.checks === "object" ? health.checks : {};
  const details = health.details && typeof health.details === "object" ? health.details : {};
  // `checks` has the particulars; `details` (the guide's shape) still names a check it lacks.
  const names = new Set([...Object.keys(checks), ...Object.keys(details)]);
  return [...names].map((name) => {
    const c = checks[name] && typeof checks[name] === "object" ? checks[name] : {};
    const up = typeof c.up === "boolean" ? c.up : details[name] === true;
    const failures = num(c.failures) || 0;
    return {
      name, up, failures,
      state: stateOf(c, up),
      certDays: c.cert_days,
      uptime: c.uptime,
      p95: c.p95_ms,
      status: num(c.status),
      latency: num(c.latency_ms),
      error: c.error === null || c.error === undefined ? "" : String(c.error),
      since: Date.parse(c.since),
    };
  });
}

// Down first, then degraded or up but failing, then healthy; by name within each.
const rank = (r) => (!r.up ? 0 : r.failures > 0 || r.state === "degraded" ? 1 : 2);

function reasonOf(r) {
  if (r.error) return r.error;
  return r.status !== null ? "HTTP " + r.status : "no reason given";
}

// The active mutes by check name (data.health.mutes; absent from an older hub).
function mutesByCheck(health) {
  const byCheck = new Map();
  for (const m of Array.isArray(health.mutes) ? health.mutes : []) {
    if (!m || typeof m !== "object" || typeof m.id !== "string" || typeof m.check !== "string") continue;
    if (!byCheck.has(m.check)) byCheck.set(m.check, []);
    byCheck.get(m.check).push(m);
  }
  return byCheck;
}

function row(r, now, mutes, act) {
  const degraded = r.up && r.state === "degraded";
  const li = el("li", "check " + (r.up ? "up" : "down") + (degraded ? " degraded" : ""));
  li.dataset.check = r.name;
  li.dataset.up = String(r.up);
  li.dataset.state = r.state;
  // Nothing beyond what the status table shows (up, no reason, no mute): the wall leaves it out.
  li.classList.toggle("plain", r.up && !degraded && r.failures === 0 && mutes.length === 0);
  const head = el("div", "check-head");
  head.append(el("span", "badge " + (degraded ? "st-degraded" : r.up ? (r.failures > 0 ? "st-partial" : "st-ok")
    : "st-error"), degraded ? "degraded" : r.up ? "up" : "down"), el("span", "name", r.name));
  if (mutes.length) head.append(el("span", "badge st-mute", "muted"));
  if (Number.isFinite(r.since)) {
    const since = el("span", "muted since", "for " + fmtDuration((now - r.since) / 1000));
    since.title = (r.up ? "up since " : "down since ") + new Date(r.since).toLocaleString();
    head.append(since);
  }
  if (r.latency !== null) head.append(el("span", "muted latency", "latency " + fmtLatency(r.latency / 1000)));
  li.append(head);
  if (!r.up) {
    li.append(el("div", "reason", reasonOf(r)));
  } else if (r.failures > 0) {
    // Not down yet (the hub waits for several failures in a row), but say what is going wrong.
    li.append(el("div", "reason warn", "failing (" + r.failures + "×): " + reasonOf(r)));
  } else if (degraded) {
    // Up (it answers), but slow or with a certificate about to expire: the hub says which.
    li.append(el("div", "reason degraded", r.error || "degraded"));
  }
  for (const m of mutes) {
    const line = byLine("muted-by", "muted", m.createdBy, m.until, m.comment);
    line.dataset.mute = m.id;
    if (act) line.append(unmuteControl(m.id));
    li.append(line);
  }
  if (act && mutes.length === 0) li.append(muteControls(r.name));
  return li;
}

/** Show `health` (data.health), or clear the panel when it is null. */
export function renderHealth(health) {
  const list = $("health-list");
  const head = $("v-health");
  if (!health || typeof health !== "object") {
    list.replaceChildren();
    renderStatus(null);
    head.textContent = "";
    head.dataset.raw = "";
    return;
  }
  const rows = rowsOf(health);
  rows.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
  const down = rows.filter((r) => !r.up).length;
  const degraded = rows.filter((r) => r.up && r.state === "degraded").length;
  // "degraded" only when some are: an older hub's snapshot reads as before.
  head.textContent = "(" + (rows.length - down - degraded) + " up · " + (degraded ? degraded + " degraded · " : "")
    + down + " down)";
  head.dataset.raw = String(down);
  const now = Date.now();
  const mutes = mutesByCheck(health);
  const act = mayAct("health");
  const items = rows.slice(0, MAX_LIST).map((r) => row(r, now, mutes.get(r.name) || [], act));
  if (rows.length > MAX_LIST) items.push(el("li", "muted", "… and " + (rows.length - MAX_LIST) + " more"));
  if (rows.length === 0) items.push(el("li", "muted", "No health checks configured."));
  list.replaceChildren(...items);
  renderStatus(rows.slice(0, MAX_LIST));
}
