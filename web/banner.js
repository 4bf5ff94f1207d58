// The stale banner: a frozen page must look frozen. Once no snapshot came for STALE_AFTER intervals,
// a full-width banner (every view) says since when, and what the connection is doing about it; the
// root element gets `is-stale` (the kiosk view dims its charts with it).

import { $ } from "./format.js";
import { STALE_AFTER, silentLimit, state } from "./state.js";
import { VIEW } from "./view.js";

/** Seconds since the latest snapshot arrived (since the page opened, before any). */
export function dataAge(now) {
  return (now - (state.last ? state.lastAt : state.openedAt)) / 1000;
}

// Seconds without data that make the page stale: STALE_AFTER intervals, and a quarter of one (at
// most 0.5 s) so that a tick arriving a few milliseconds late after a missed one does not flash it.
function staleAfter() {
  return STALE_AFTER * state.interval + Math.min(0.5, state.interval / 4);
}

/** True once no snapshot came for STALE_AFTER intervals. */
export function isStale(now) {
  return dataAge(now) > staleAfter();
}

/** Call `update` again the moment the latest snapshot turns stale (the 1 s watchdog is too coarse). */
export function armStaleTimer(update) {
  clearTimeout(state.staleTimer);
  state.staleTimer = setTimeout(update, staleAfter() * 1000 + 10);
}

const pad = (n) => String(n).padStart(2, "0");

function clock(ms) {
  const d = new Date(ms);
  return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
}

// What the page is doing to get data back: its own retry state, in words.
function plan(now) {
  const s = (ms) => Math.max(0, Math.ceil(ms / 1000)) + " s";
  const conn = !navigator.onLine && state.conn !== "unauthorized" ? "offline" : state.conn;
  switch (conn) {
    case "reconnecting":
      return state.retryAt > now
        ? "reconnect attempt " + state.retries + " in " + s(state.retryAt - now)
        : "reconnect attempt " + state.retries + " under way";
    case "offline":
      return "this device is offline: reconnecting when the network returns";
    case "live":
      // A hub that answers the watchdog's pings keeps its socket (its ticks stopped, not the
      // network); a silent socket is replaced.
      if (state.lastMsgAt > state.lastAt) return "the hub answers, but sends no data";
      return "the connection is open but silent: a new one in " +
        s(state.lastMsgAt + silentLimit() * 1000 - now);
    case "unauthorized":   // the kiosk view has no button: the token comes with its address
      return VIEW === "kiosk" ? "open this page as /?kiosk#token=…" : "enter one with the button above";
    default:
      return "connecting";
  }
}

/** Show or hide the banner for the moment `now` (performance.now()). */
export function renderBanner(now) {
  const stale = isStale(now);
  document.documentElement.classList.toggle("is-stale", stale);
  $("stale").hidden = !stale;
  if (!stale) return;
  const since = state.last ? state.lastWall : Date.now() - (now - state.openedAt);
  const what = state.conn === "unauthorized" ? ": access token needed" : ", reconnecting…";
  const head = "No data since " + clock(since) + what;
  // Only a change is written: the headline is a live region, and must not repeat every second.
  if ($("stale-msg").textContent !== head) $("stale-msg").textContent = head;
  $("stale-plan").textContent = plan(now);
}
