// The Alerts panel: firing and pending alerts and, from Alertmanager (`[sources.alertmanager]`),
// whether each is silenced (by whom, why, until when) or inhibited, plus the list of silences.
// With a token that may act (actions.js): "Silence 1 h / 4 h / until 08:00" on each active alert
// and "Expire" on each silence; without one, no controls at all.

import { expireControl, mayAct, silenceControls } from "./actions.js";
import { $, byLine, el, fmtDuration } from "./format.js";
import { MAX_LIST } from "./state.js";

const SEVERITIES = ["critical", "error", "warning", "info"];

const ids = (v) => (Array.isArray(v) ? v.filter((x) => typeof x === "string") : []);

// Why an alert is suppressed, in words: each silence with who, why and until when; each inhibition.
function suppression(x, silences, byFingerprint) {
  const lines = [];
  for (const id of ids(x.silencedBy)) {
    const s = silences.get(id);
    const line = s
      ? byLine("silenced-by", "silenced", s.createdBy, s.endsAt, s.comment)
      : el("div", "silenced-by", "silenced (silence " + id + ")");
    line.dataset.silence = id;
    lines.push(line);
  }
  const inhibitors = ids(x.inhibitedBy);
  if (inhibitors.length) {
    const named = inhibitors.map((fp) => byFingerprint.get(fp)).filter(Boolean);
    lines.push(el("div", "inhibited-by",
      "inhibited by " + (named.length ? [...new Set(named)].join(", ") : "another alert")));
  }
  return lines;
}

function alertRow(x, now, silences, byFingerprint, act) {
  const sev = String((x && x.severity) || "none").toLowerCase();
  const li = el("li", "alert sev-" + (SEVERITIES.includes(sev) ? sev : "other") + " state-" +
    (x.state === "firing" ? "firing" : "pending"));
  const silenced = ids(x.silencedBy).length > 0;
  const inhibited = ids(x.inhibitedBy).length > 0;
  li.classList.toggle("suppressed", silenced || inhibited || x.amState === "suppressed");
  if (typeof x.fingerprint === "string") li.dataset.fingerprint = x.fingerprint;
  const head = el("div", "alert-head");
  head.append(el("span", "badge sev", sev), el("span", "name", x.name || "unnamed"),
    el("span", "muted", String(x.state || "")));
  if (silenced) head.append(el("span", "badge st-silenced", "silenced"));
  if (inhibited) head.append(el("span", "badge st-inhibited", "inhibited"));
  const since = Date.parse(x.activeAt);
  if (Number.isFinite(since)) head.append(el("span", "muted", "for " + fmtDuration((now - since) / 1000)));
  li.append(head);
  if (x.summary) li.append(el("div", "summary", x.summary));
  li.append(...suppression(x, silences, byFingerprint));
  // Only an active alert from Alertmanager (it has a fingerprint) can be silenced from here.
  if (act && typeof x.fingerprint === "string" && x.fingerprint && !silenced && !inhibited &&
      x.amState !== "suppressed") {
    li.append(silenceControls(x.fingerprint));
  }
  return li;
}

function matcherText(m) {
  const op = (m.isEqual === false ? "!" : "=") + (m.isRegex ? "~" : (m.isEqual === false ? "=" : ""));
  return String(m.name) + op + JSON.stringify(String(m.value));
}

function silenceRow(s, act) {
  const li = el("li", "silence");
  li.dataset.silence = String(s.id);
  const head = el("div", "silence-head");
  const matchers = Array.isArray(s.matchers) ? s.matchers.filter((m) => m && typeof m === "object") : [];
  head.append(el("span", "badge st-" + (s.status === "pending" ? "pending" : "silenced"), String(s.status || "")),
    el("span", "matchers mono", matchers.map(matcherText).join(", ")));
  li.append(head, byLine("silenced-by", "set", s.createdBy, s.endsAt, s.comment));
  if (act) li.append(expireControl(String(s.id)));
  return li;
}

function renderSilences(silences, act) {
  const list = $("silence-list");
  const shown = Array.isArray(silences);   // only with Alertmanager, and only for the alerts topic
  list.hidden = !shown;
  $("h-silences").hidden = !shown;
  if (!shown) {
    list.replaceChildren();
    return;
  }
  const rows = silences.filter((s) => s && typeof s === "object" && typeof s.id === "string");
  $("v-silences").textContent = "(" + rows.length + ")";
  const items = rows.slice(0, MAX_LIST).map((s) => silenceRow(s, act));
  if (rows.length > MAX_LIST) items.push(el("li", "muted", "… and " + (rows.length - MAX_LIST) + " more"));
  if (rows.length === 0) items.push(el("li", "muted none", "No silences."));
  list.replaceChildren(...items);
}

/** Show data.alerts and data.silences (`alerts` null: the section is empty, its reason shown by the caller). */
export function renderAlerts(alerts, silences) {
  const list = $("alert-list");
  if (!Array.isArray(alerts)) {
    list.replaceChildren();
    $("v-alerts").textContent = "";
    renderSilences(null, false);
    return;
  }
  const act = mayAct("alerts");
  const valid = alerts.filter((x) => x && typeof x === "object");
  const firing = valid.filter((x) => x.state === "firing").length;
  const suppressed = valid.filter((x) => x.amState === "suppressed").length;
  $("v-alerts").textContent = "(" + firing + " firing · " + (valid.length - firing) + " pending" +
    (suppressed ? " · " + suppressed + " suppressed" : "") + ")";
  $("v-alerts").dataset.raw = String(firing);
  const bySilence = new Map((Array.isArray(silences) ? silences : [])
    .filter((s) => s && typeof s === "object").map((s) => [s.id, s]));
  const byFingerprint = new Map(valid.filter((x) => typeof x.fingerprint === "string")
    .map((x) => [x.fingerprint, x.name || "unnamed"]));
  const now = Date.now();
  const items = valid.slice(0, MAX_LIST).map((x) => alertRow(x, now, bySilence, byFingerprint, act));
  if (valid.length > MAX_LIST) items.push(el("li", "muted", "… and " + (valid.length - MAX_LIST) + " more"));
  if (valid.length === 0) items.push(el("li", "muted none", "Nothing firing."));
  list.replaceChildren(...items);
  renderSilences(silences, act);
}
