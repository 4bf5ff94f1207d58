// Acting from the page: silences (Alertmanager) and mutes of health checks, for a credential that
// may (GET /api/me: a token, or a signed-in person); without "silence" the panels get no controls,
// and the wall screen (`/?kiosk`) never does. Controls are kept by key across the per-tick renders:
// a comment being typed, a message next to a button and the keyboard focus survive an update.

import { $, el } from "./format.js";
import { authHeaders, state } from "./state.js";
import { VIEW } from "./view.js";

const HOUR_S = 3600;
const UNTIL_HOUR = 8;   // "Silence until 08:00": the next local 08:00

// ------------------------------------------------------------------ permission

function names(v) {
  return Array.isArray(v) ? v.filter((x) => typeof x === "string") : [];
}

/** Ask /api/me what we may do; resolve to true when that changed. */
export async function refreshMe() {
  let me = null;
  if (state.token || /hub_person=1/.test(document.cookie)) {   // a token, or signed in
    let res;
    try {
      res = await fetch("api/me", { headers: authHeaders(), cache: "no-store" });
    } catch (e) {
      return false;    // unreachable: keep what we knew; the next connect asks again
    }
    if (res.ok) {
      try {
        const body = await res.json();
        if (body && typeof body === "object") {
          me = { name: String(body.name || ""), topics: names(body.topics), actions: names(body.actions) };
          if (body.csrf) me.csrf = String(body.csrf);
        }
      } catch (e) { /* not JSON: no rights */ }
    }
  }
  // A signed-in person sees who they are and can sign out (a token has no session to end).
  if (me && /hub_person=1/.test(document.cookie)) state.signedIn = true;
  $("me").hidden = !(me && /hub_person=1/.test(document.cookie)) || VIEW === "kiosk";
  $("me-name").textContent = me ? me.name : "";
  $("me-out").href = "auth/logout";   // set here: the hub checks that every link in index.html is a file
  const changed = JSON.stringify(me) !== JSON.stringify(state.me) || !state.meChecked;
  state.me = me;
  state.meChecked = true;
  return changed;
}

/** True when the token may act on `topic`'s data: "alerts" (silences) or "health" (mutes). */
export function mayAct(topic) {
  const me = state.me;
  return VIEW !== "kiosk" && !!me && me.actions.includes("silence") && me.topics.includes(topic);
}

// ------------------------------------------------------------------ controls kept across renders

const kept = new Map();   // key -> {node, pass}
let pass = 0;

function keep(key, build) {
  let entry = kept.get(key);
  if (!entry) {
    entry = { node: build() };
    kept.set(key, entry);
  }
  entry.pass = pass;
  return entry.node;
}

/**
 * Run `draw` (one full render) keeping controls: those it does not show again are dropped, and the
 * element that had the focus (moved while its row was rebuilt) gets it back, caret included.
 */
export function renderKeeping(draw) {
  pass += 1;
  const active = document.activeElement;
  const caret = active && typeof active.selectionStart === "number"
    ? [active.selectionStart, active.selectionEnd] : null;
  try {
    draw();
  } finally {
    for (const [key, entry] of kept) if (entry.pass !== pass) kept.delete(key);
    if (active && active !== document.body && active !== document.activeElement && active.isConnected) {
      active.focus({ preventScroll: true });
      if (caret) active.setSelectionRange(caret[0], caret[1]);
    }
  }
}

// ------------------------------------------------------------------ requests

// One request to the hub's API: {ok, data} or {ok: false, error} with the hub's own `error` text.
async function call(method, path, body) {
  const headers = { ...authHeaders() };
  if (state.me && state.me.csrf) headers["X-Hub-CSRF"] = state.me.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { ok: false, error: "the hub could not be reached; try again" };
  }
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (res.ok) return { ok: true, data };
  const error = data && typeof data.error === "string" ? data.error : "HTTP " + res.status;
  return { ok: false, error };
}

function say(msg, text, isError) {
  msg.textContent = text;
  msg.classList.toggle("act-error", !!isError);
}

function message() {
  const msg = el("span", "act-msg");
  msg.setAttribute("role", "status");   // read out when it changes
  return msg;
}

// A required comment and one submit button per choice ([label, value]); `send(value, comment)`
// makes the request and resolves to a call() result plus `done`, the text shown on success.
function commentForm(cls, choices, send) {
  const form = el("form", "act " + cls);
  form.noValidate = true;   // the comment is checked here, with a message next to the buttons
  const input = el("input", "act-comment");
  input.type = "text";
  input.name = "comment";
  input.required = true;
  input.autocomplete = "off";
  input.placeholder = "why (required)";
  const label = el("label", "act-label");
  label.append(el("span", null, "Comment"), input);
  form.append(label);
  for (const [text, value] of choices) {
    const button = el("button", "act-btn", text);
    button.type = "submit";
    button.value = value;
    form.append(button);
  }
  const msg = message();
  form.append(msg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;
    const button = ev.submitter || form.querySelector("button");
    const comment = input.value.trim();
    if (!comment) {
      say(msg, "A comment is required: say why.", true);
      input.focus();
      return;
    }
    form.setAttribute("aria-busy", "true");
    say(msg, "sending…", false);
    const r = await send(button.value, comment);
    form.removeAttribute("aria-busy");
    if (r.ok) input.value = "";
    say(msg, r.ok ? r.done : r.error, !r.ok);
  });
  return form;
}

// One button (Expire, Unmute) with its message; `send()` as for commentForm.
function buttonControl(cls, text, send) {
  const wrap = el("span", "act " + cls);
  const button = el("button", "act-btn", text);
  button.type = "button";
  const msg = message();
  button.addEventListener("click", async () => {
    if (wrap.getAttribute("aria-busy") === "true") return;
    wrap.setAttribute("aria-busy", "true");
    say(msg, "sending…", false);
    const r = await send();
    wrap.removeAttribute("aria-busy");
    say(msg, r.ok ? r.done : r.error, !r.ok);
  });
  wrap.append(button, msg);
  return wrap;
}

/** The next local `hour`:00 from now (tomorrow's once today's has passed). */
export function nextLocal(hour) {
  const now = new Date();
  const at = new Date(now);
  at.setHours(hour, 0, 0, 0);
  if (at <= now) at.setDate(at.getDate() + 1);
  return at;
}

const SHOWN_NEXT = " — shown with the next update";

/** "Silence 1 h / 4 h / until 08:00" with a comment, for an active alert (by its fingerprint). */
export function silenceControls(fingerprint) {
  return keep("silence:" + fingerprint, () => commentForm("act-silence", [
    ["Silence 1 h", String(HOUR_S)],
    ["Silence 4 h", String(4 * HOUR_S)],
    ["Silence until " + String(UNTIL_HOUR).padStart(2, "0") + ":00", "until"],
  ], async (value, comment) => {
    const body = value === "until"
      ? { fingerprint, endsAt: nextLocal(UNTIL_HOUR).toISOString(), comment }
      : { fingerprint, duration_s: Number(value), comment };
    const r = await call("POST", "api/silences", body);
    return { ...r, done: "silenced" + SHOWN_NEXT };
  }));
}

/** "Expire" for a listed silence. */
export function expireControl(id) {
  return keep("expire:" + id, () => buttonControl("act-expire", "Expire", async () => {
    const r = await call("DELETE", "api/silences/" + encodeURIComponent(id));
    return { ...r, done: "expired" + SHOWN_NEXT };
  }));
}

/** "Mute 1 h" with a comment, for a health check. */
export function muteControls(check) {
  return keep("mute:" + check, () => commentForm("act-mute", [["Mute 1 h", String(HOUR_S)]],
    async (value, comment) => {
      const r = await call("POST", "api/mutes", { check, duration_s: Number(value), comment });
      return { ...r, done: "muted" + SHOWN_NEXT };
    }));
}

/** "Unmute" for an active mute. */
export function unmuteControl(id) {
  return keep("unmute:" + id, () => buttonControl("act-unmute", "Unmute", async () => {
    const r = await call("DELETE", "api/mutes/" + encodeURIComponent(id));
    return { ...r, done: "unmuted" + SHOWN_NEXT };
  }));
}
