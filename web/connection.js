// The connection: token or sign-in, one WebSocket with chart points on connect, backoff, and a watchdog
// that replaces a silent socket. Messages go to stream.accept().

import { refreshMe } from "./actions.js";
import { $ } from "./format.js";
import { render, setConn, updateBadge } from "./panels.js";
import { MAX_POINTS, TOKEN_KEY, authHeaders, silentLimit, state } from "./state.js";
import { accept, acceptPoints } from "./stream.js";

const BACKOFF_BASE_MS = 1000;
const BACKOFF_CAP_MS = 30000;
const PING_AFTER_S = 5;          // ask a silent socket for a pong at most this often
// RFC 7230 tchar: what may travel in Sec-WebSocket-Protocol.
const TOKEN_RE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

// ------------------------------------------------------------------ auth

function saveToken(token) {
  if (token !== state.token) state.me = null;   // another credential: its rights are asked anew
  state.token = token;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage disabled: keep the token for this page only */ }
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

/**
 * Take an access token from the URL fragment (`#token=...`, a wall screen's start URL, say). A
 * fragment never reaches the server, so the token is in no request line and no access log. It is
 * kept like a typed one (this tab's sessionStorage) and removed from the address bar at once.
 */
function takeFragmentToken() {
  const parts = location.hash.replace(/^#/, "").split("&");
  const found = parts.find((p) => p.startsWith("token="));
  if (found === undefined) return;
  const rest = parts.filter((p) => p !== "" && !p.startsWith("token="));
  history.replaceState(null, "", location.pathname + location.search + (rest.length ? "#" + rest.join("&") : ""));
  let token = "";
  try { token = decodeURIComponent(found.slice("token=".length)).trim(); } catch (e) { /* bad escape */ }
  if (TOKEN_RE.test(token)) saveToken(token);
  else showAuth("The token in the page's address contains characters that cannot be sent; check it.");
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
    res = await fetch("api/metrics/history?limit=0", { headers: authHeaders(), cache: "no-store" });
  } catch (e) {
    return true;   // network error: let the socket attempt fail and back off
  }
  if (res.status !== 401) {
    $("auth").hidden = true;
    checkActions();
    return true;
  }
  if (state.token) saveToken("");   // rejected: forget it
  const sign = (await res.json().catch(() => ({}))).signIn;
  if (sign && state.signedIn) {   // our session ended (its expiry, or a logout): the provider usually
    location.assign(sign);        // signs us in again at once, and the page comes back live
    return false;
  }
  if (sign) $("auth-signin").href = sign;
  $("auth-signin").hidden = !sign;
  if (!state.prompted && !sign) {
    state.prompted = true;
    if (askToken()) return probeAuth();
  }
  if ($("auth").hidden) showAuth("This hub needs an access token.");
  else setConn("unauthorized");
  return false;
}

// What we may do decides the panels' controls: asked on every (re)connect, so new rights need no reload.
function checkActions() {
  refreshMe().then((changed) => { if (changed && state.last) render(state.last); });
}

// ------------------------------------------------------------------ socket

// The page asks for its charts' points (a few numbers per tick, whatever the fleet's size), never
// for raw snapshots: the hub answers with a `points` message, then the latest full snapshot.
function wsUrl() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "?points=" + MAX_POINTS;
  return url.href;
}

function openSocket() {
  clearTimeout(state.retryTimer);
  if (state.ws) return;
  let ws;
  try {
    ws = state.token
      ? new WebSocket(wsUrl(), ["hub.v1", "bearer." + state.token])
      : new WebSocket(wsUrl());
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
  // Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)).
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
  const delay = Math.random() * ceiling;
  state.attempt = Math.min(state.attempt + 1, 15);
  state.retries += 1;
  state.retryAt = performance.now() + delay;
  state.retryTimer = setTimeout(reconnect, delay);
  setConn("reconnecting");
}

async function reconnect() {
  clearTimeout(state.retryTimer);
  state.retryAt = 0;   // an attempt is under way
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

function onMessage(text) {
  state.lastMsgAt = performance.now();
  let msg;
  try { msg = JSON.parse(text); } catch (e) { return; }
  if (!msg || typeof msg !== "object") return;
  if (msg.type === "points") {
    acceptPoints(msg);
    return;   // the latest snapshot follows at once; it is what marks the connection live
  } else if (msg.type === "history") {
    accept(Array.isArray(msg.items) ? msg.items : []);
  } else if (msg.type === "metrics_update") {
    accept([msg]);
  } else {
    return;   // pong, subscribed, error: nothing to show
  }
  if (!state.socketData) {
    // Data is flowing: that, not the bare open, counts as a successful connection
    // (a hub that accepts and drops at once must not reset the backoff).
    state.socketData = true;
    state.connects += 1;
    state.attempt = 0;
    state.retries = 0;
    setConn("live");
  }
}

// A socket that stays open but silent (half-open TCP, a stuck proxy) is replaced. A quiet
// hub is asked with a ping first: one that answers (tick loop stuck, say) keeps its socket.
function watchdog() {
  const ws = state.ws;
  if (ws && ws.readyState === WebSocket.OPEN) {
    const silent = silentFor();
    const now = performance.now();
    if (silent > silentLimit()) {
      forceReconnect();
    } else if (silent > Math.max(2 * state.interval, PING_AFTER_S) && now - state.pingAt > PING_AFTER_S * 1000) {
      state.pingAt = now;
      try { ws.send(JSON.stringify({ type: "ping" })); } catch (e) { /* closing */ }
    }
  }
  updateBadge();
}

/** Take a token from the URL, wire the token button, network events and the watchdog, then connect. */
export function start() {
  takeFragmentToken();
  $("auth-btn").addEventListener("click", () => {
    if (!askToken()) return;
    $("auth").hidden = true;
    state.attempt = 0;
    reconnect();
  });
  window.addEventListener("online", () => {
    state.attempt = 0;
    // After a network change the old TCP connection may be dead without any close event.
    if (state.ws && silentFor() > 1.5 * state.interval) forceReconnect();
    else if (!state.ws) reconnect();
    else updateBadge();
  });
  window.addEventListener("offline", updateBadge);
  setInterval(watchdog, 1000);
  reconnect();
}
