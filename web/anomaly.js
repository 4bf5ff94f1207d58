// The bookings-anomaly banner: a silent or improbably low booking flow (data.business.anomaly) is
// named across the page's full width, with since when and expected against observed. Distinct from
// the stale banner (the page's own data stopping): this one is about the platform. Text only.

import { $, fmtCount, fmtFixed, num } from "./format.js";

const pad = (n) => String(n).padStart(2, "0");

// "14:05" for an ISO time today, "Mon 14:05" for an older one (local time, as the stale banner).
function when(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return null;
  const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
  return d.toDateString() === new Date().toDateString()
    ? hm : d.toLocaleDateString("en-US", { weekday: "short" }) + " " + hm;
}

function expectedText(v) {
  const n = num(v);
  if (n === null) return "no history";
  return n < 10 ? fmtFixed(n, 1, "") : fmtCount(n);
}

/** The banner's headline and detail for `anomaly`, or null when there is nothing to say. */
export function anomalyText(anomaly) {
  if (!anomaly || typeof anomaly !== "object") return null;
  const kind = anomaly.state;
  if (kind !== "silent" && kind !== "low") return null;
  const since = anomaly.since ? when(anomaly.since) : null;
  const head = (kind === "silent" ? "Bookings have stopped" : "Bookings are improbably low") +
    (since ? " since " + since : "");
  const observed = num(anomaly.observed);
  const parts = [(observed === null ? "–" : fmtCount(observed)) + " booked in the last 60 min, " +
    expectedText(anomaly.expected) + " expected"];
  const quiet = num(anomaly.minutes_since_last_booking);
  if (quiet !== null) parts.push("last booking " + Math.round(quiet) + " min ago");
  else if (kind === "silent") parts.push("no booking on record");
  return { kind, head, detail: parts.join(" · "), reason: typeof anomaly.reason === "string" ? anomaly.reason : "" };
}

/** Show or hide the banner for `business` (data.business, or null/absent). */
export function renderAnomaly(business) {
  const box = $("anomaly");
  const text = anomalyText(business && typeof business === "object" ? business.anomaly : null);
  box.hidden = !text;
  document.documentElement.classList.toggle("has-anomaly", !!text);
  if (!text) {
    delete box.dataset.kind;
    return;
  }
  box.dataset.kind = text.kind;
  box.dataset.since = String(business.anomaly.since || "");
  // Only a change is written: the headline is a live region, and must not repeat every tick.
  if ($("anomaly-msg").textContent !== text.head) $("anomaly-msg").textContent = text.head;
  $("anomaly-detail").textContent = text.detail;
  $("anomaly-detail").title = text.reason;
}
