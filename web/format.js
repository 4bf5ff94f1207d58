// Number formatting and the few DOM helpers every panel uses. Server data reaches the DOM
// through textContent and DOM APIs only (the page runs under CSP default-src 'self').

export const MIB = 1024 * 1024;

export const $ = (id) => document.getElementById(id);

export function num(v) {
  const n = typeof v === "number" ? v : parseFloat(v);
  return Number.isFinite(n) ? n : null;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  if (n >= 1024 * MIB) return (n / 1024 / MIB).toFixed(2) + " GiB";
  return (n / MIB).toFixed(1) + " MiB";
}

export function fmtFixed(n, digits, unit) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  return n.toFixed(digits) + (unit || "");
}

export function fmtLatency(sec) {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return "–";
  const ms = Math.round(sec * 1000);
  return ms < 1000 ? ms + " ms" : sec.toFixed(2) + " s";   // 0.9996 s is "1.00 s", not "1000 ms"
}

export function fmtDuration(sec) {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return "–";
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return sec + " s";
  if (sec < 3600) return Math.floor(sec / 60) + " min " + (sec % 60) + " s";
  if (sec < 86400) return Math.floor(sec / 3600) + " h " + Math.floor((sec % 3600) / 60) + " min";
  return Math.floor(sec / 86400) + " d " + Math.floor((sec % 86400) / 3600) + " h";
}

export function fmtAgo(sec) {
  if (sec < 1.5) return "just now";
  return fmtDuration(sec) + " ago";
}

export function fmtCount(n) {
  return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US");
}

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// Set a value's text, and its raw number in data-raw (for tests and tooling).
export function setValue(id, text, raw) {
  const e = $(id);
  e.textContent = text;
  e.dataset.raw = raw === null || raw === undefined ? "" : String(raw);
}

export function setBadge(e, status) {
  const s = String(status || "unknown");
  e.className = "badge st-" + s.replace(/[^a-z]/g, "");
  e.textContent = s;
}

const pad2 = (n) => String(n).padStart(2, "0");

/** A moment in local time: "HH:MM" when it is today, else "YYYY-MM-DD HH:MM"; null when unparseable. */
export function fmtLocal(iso) {
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms)) return null;
  const d = new Date(ms);
  const hm = pad2(d.getHours()) + ":" + pad2(d.getMinutes());
  if (d.toDateString() === new Date().toDateString()) return hm;
  return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " + hm;
}

/** "<verb> by <who> until <local time>: <why>", in spans .who, time.until (datetime = `until`), .why. */
export function byLine(cls, verb, who, until, why) {
  const line = el("div", cls);
  const time = el("time", "until", fmtLocal(until) || String(until));
  time.dateTime = String(until);
  if (Number.isFinite(Date.parse(until))) time.title = new Date(Date.parse(until)).toLocaleString();
  line.append(verb + " by ", el("span", "who", who || "unknown"), " until ", time);
  if (why) line.append(": ", el("span", "why", why));
  return line;
}
