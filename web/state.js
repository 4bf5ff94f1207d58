// The page's constants and its one mutable state object, shared by every module.

export const MAX_POINTS = 360;          // chart window: 1 h at the default 10 s interval
export const DEFAULT_INTERVAL = 10;     // seconds, until two consecutive snapshots tell us better
export const MAX_LIST = 50;             // rows per target / alert / health list
export const TOKEN_KEY = "hub.token";
export const STALE_AFTER = 2;           // intervals without data before the page says so, loudly
export const WATCHDOG_MIN_S = 20;       // never replace a silent socket sooner than this
// The sources named in the header, in order (the hub's `sources` keys).
export const SOURCES = ["process", "prometheus", "alertmanager", "business", "health"];

/** Seconds a socket may stay silent before the watchdog replaces it. */
export function silentLimit() {
  return Math.max(4 * state.interval, WATCHDOG_MIN_S);
}

/** The REST headers that carry the access token (none without one). */
export function authHeaders() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

function loadToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
}

export const state = {
  points: [],          // the hub's chart points, oldest first, at most MAX_POINTS
  epoch: null,         // the hub's stream epoch of the accepted snapshots (null: an older hub sends none)
  lastSeq: 0,          // highest seq accepted in the current epoch
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
  retries: 0,          // reconnect attempts scheduled since data last flowed (shown, never capped)
  retryAt: 0,          // performance.now() of the next scheduled attempt; 0 while one is under way
  openedAt: performance.now(),   // the page's start: "no data since" before any data came
  lastWall: 0,         // Date.now() when the latest snapshot arrived (the banner's "since")
  staleTimer: 0,       // fires when the latest snapshot turns stale
  connects: 0,         // sockets that delivered data (1 + successful reconnects)
  restarts: 0,         // sequence restarts seen (a new epoch, or seq going backwards on an older hub)
  prompted: false,     // the automatic token prompt is shown at most once per page
  token: loadToken(),
  dirty: false,        // charts need a redraw once the tab is visible again
  firstBatch: 0,       // snapshots in the page's first non-empty message (the history)
  me: null,            // GET /api/me for the token: {name, topics, actions}; null: none, so no controls
  meChecked: false,    // /api/me was answered (or skipped: no token) at least once
  signedIn: false,     // a person's session fed this page: when it ends, sign in again
};
