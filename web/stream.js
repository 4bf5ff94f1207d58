// The snapshot stream: which snapshots to accept, in order, once each, across reconnects and
// hub restarts. A hub stamps every message with an opaque `epoch`; `seq` only grows within one
// epoch, and a new epoch means the sequence restarted (docs/protocol.md).

import {
  addPoint, drawCharts, estimateInterval, ingestPoints, pointOf, prependPoints, resetPoints,
} from "./charts.js";
import { armStaleTimer } from "./banner.js";
import { render, updateBadge } from "./panels.js";
import { state } from "./state.js";

function isSnapshot(s) {
  return s && typeof s === "object" && Number.isFinite(s.seq) && typeof s.timestamp === "string";
}

function isBackfill(s) {
  return s && typeof s === "object" && s.backfill === true && !("seq" in s) && typeof s.timestamp === "string";
}

/** The message's epoch, or null from a hub that sends none. */
export function epochOf(msg) {
  return msg && typeof msg.epoch === "string" && msg.epoch !== "" ? msg.epoch : null;
}

// The sequence restarted: what was seen belongs to another stream. Its chart points go (a new
// sequence's times may overlap them), and the next seq is taken as fresh, not as a gap.
function newSequence() {
  state.restarts += 1;
  state.lastSeq = 0;
  resetPoints();
}

// A hub without epochs: guess a restart from the first batch of a connection (seq went
// backwards, or the same seq has another timestamp). Its chart points stay, as they always did.
function guessRestart(items) {
  const newest = items[items.length - 1];
  const same = items.find((s) => s.seq === state.lastSeq);
  if (newest.seq < state.lastSeq || (same && same.timestamp !== state.last.timestamp)) {
    state.restarts += 1;
    state.lastSeq = 0;
  }
}

/** Accept the snapshots of `batch` (a history or one metrics_update) that are new; redraw once. */
export function accept(batch) {
  // Backfilled items (history filled from Prometheus at the hub's start) have no seq: their chart
  // points are plotted, and they never move the sequence bookkeeping.
  const filled = batch.filter(isBackfill);
  if (filled.length) {
    const epoch = epochOf(filled[0]);
    if (state.last && epoch !== state.epoch) newSequence();
    state.epoch = epoch;
    prependPoints(filled.map(pointOf).filter(Boolean));
  }
  const items = batch.filter(isSnapshot);
  if (items.length === 0) return;
  if (state.firstBatch === 0) state.firstBatch = items.length;
  if (state.fresh) {
    state.fresh = false;
    if (state.last && state.epoch === null && epochOf(items[items.length - 1]) === null) guessRestart(items);
  }
  let accepted = 0;
  for (const snap of items) {
    const epoch = epochOf(snap);
    if (state.last && epoch !== state.epoch) newSequence();
    state.epoch = epoch;
    if (snap.seq <= state.lastSeq) continue;
    state.lastSeq = snap.seq;
    state.last = snap;
    const point = pointOf(snap);
    if (point) addPoint(point);
    accepted += 1;
  }
  if (accepted === 0) return;
  state.lastAt = performance.now();
  state.lastWall = Date.now();
  estimateInterval();
  render(state.last);
  updateBadge();
  armStaleTimer(updateBadge);
  drawCharts();
}

/** A `points` message: the charts' history from the hub, oldest first, in the message's epoch. */
export function acceptPoints(msg) {
  const items = Array.isArray(msg.items) ? msg.items : [];
  const epoch = epochOf(msg);
  if (state.last && epoch !== state.epoch) newSequence();
  state.epoch = epoch;
  state.fresh = false;   // the epoch says whether the sequence restarted: nothing to guess
  if (state.firstBatch === 0) state.firstBatch = items.length;
  // seq is not advanced here: the full snapshot that follows renders the panels.
  ingestPoints(items);
}
