// The charts: a bounded window of chart points, and uPlot drawing.
// Points are plain objects {seq, t, rate: {job: v}, p95: {job: v}, rss, cpu, conns, appts}. The hub
// derives them (hub/feed.py chart_point, the one definition): each metrics_update carries its own as
// `point`, and a `points` message carries the history; the page only plots them.

import { $, MIB, fmtCount, fmtFixed, fmtLatency, num } from "./format.js";
import { MAX_POINTS, state } from "./state.js";

const MAX_SERIES = 8;   // lines per chart; more jobs than this are ranked and cut

function seriesName(metric) {
  if (!metric || typeof metric !== "object") return "all";
  return String(metric.job || metric.instance || metric.__name__ || "all");
}

// Prometheus result list -> {job: value}, summed (rates) or max (quantiles).
export function byJob(result, how) {
  if (!Array.isArray(result)) return null;
  const out = {};
  for (const item of result) {
    const v = num(item && Array.isArray(item.value) ? item.value[1] : null);
    if (v === null) continue;
    const k = seriesName(item.metric);
    out[k] = k in out ? (how === "sum" ? out[k] + v : Math.max(out[k], v)) : v;
  }
  return out;
}

/** The chart point the hub sent with a metrics_update (`point`), timed as `t` (seconds); null without one. */
export function pointOf(snap) {
  const p = snap.point;
  if (!p || typeof p !== "object") return null;
  return { ...p, t: Date.parse(p.timestamp) / 1000 };
}

/** Append one point; a point at or before the newest one's time replaces the tail (x must increase). */
export function addPoint(p) {
  if (!p || typeof p !== "object" || !Number.isFinite(p.t)) return false;
  const pts = state.points;
  while (pts.length && pts[pts.length - 1].t >= p.t) pts.pop();
  pts.push(p);
  if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
  return true;
}

/**
 * Put `points` (oldest first; backfilled ones, without seq) before the window's points: only those
 * older than its oldest, so a reconnect's history never replaces live points. Redraws when any is taken.
 */
export function prependPoints(points) {
  const first = state.points.length ? state.points[0].t : Infinity;
  const older = [];
  for (const p of points) {
    if (p && Number.isFinite(p.t) && p.t < first && (!older.length || p.t > older[older.length - 1].t)) older.push(p);
  }
  if (!older.length) return 0;
  state.points = older.concat(state.points);
  if (state.points.length > MAX_POINTS) state.points.splice(0, state.points.length - MAX_POINTS);
  estimateInterval();
  drawCharts();
  return older.length;
}

/** Forget every point (a new epoch: the old sequence's points belong to another stream). */
export function resetPoints() {
  state.points = [];
}

/**
 * Add `points` (oldest first) to the window and redraw; returns how many were taken. A point is
 * shaped like a metrics_update's `point`, with its time as `t` (seconds) or as the hub's ISO `timestamp`.
 * Sequence bookkeeping (seq, epoch) stays with the caller (stream.js).
 */
export function ingestPoints(points) {
  if (!Array.isArray(points)) return 0;
  let added = 0;
  for (const p of points) {
    if (!p || typeof p !== "object") continue;
    const t = Number.isFinite(p.t) ? p.t : Date.parse(p.timestamp) / 1000;
    if (addPoint({ ...p, t })) added += 1;
  }
  if (added) {
    estimateInterval();
    drawCharts();
  }
  return added;
}

/**
 * The tick interval: the median time between consecutive seqs among the latest points, or between
 * backfilled points (no seq; one range step, the interval, apart) while no two live ones are there
 * yet: a page opened after a restart knows its interval from the first message, so its stale
 * banner comes after 2 intervals, not after 2 x the 10 s default (the hog run of CI caught it).
 */
export function estimateInterval() {
  const pts = state.points;
  const gaps = [];
  const backfilled = [];
  for (let i = pts.length - 1; i > 0 && gaps.length < 10; i--) {
    const a = pts[i - 1], b = pts[i];
    if (Number.isFinite(a.seq) && b.seq === a.seq + 1) gaps.push(b.t - a.t);
    else if (a.backfill && b.backfill && backfilled.length < 10) backfilled.push(b.t - a.t);
  }
  if (gaps.length === 0) gaps.push(...backfilled);
  if (gaps.length === 0) return;
  gaps.sort((a, b) => a - b);
  const median = gaps[Math.floor(gaps.length / 2)];
  if (median > 0) state.interval = median;
}

// ------------------------------------------------------------------ drawing

const CHARTS = [
  { id: "chart-rate", key: "rate", perJob: true, fmt: (v) => fmtFixed(v, 2, " req/s") },
  { id: "chart-p95", key: "p95", perJob: true, fmt: fmtLatency },
  { id: "chart-rss", series: [{ key: "rss", label: "RSS", scale: (v) => v / MIB }],
    fmt: (v) => fmtFixed(v, 1, " MiB") },
  { id: "chart-cpu", series: [{ key: "cpu", label: "CPU %" },
    { key: "conns", label: "connections", axis: "n", fmt: fmtCount }],
    fmt: (v) => fmtFixed(v, 1, " %") },
  // The expected band (data.business.expected): bookings so far this hour against the count expected
  // by now, with its likely range (Poisson, ±2 standard deviations) shaded between two unlabelled edges.
  { id: "chart-appts", series: [{ key: "appts", label: "booked" },
    // this hour's series on their own (right) axis: a 24 h window's total would flatten them
    { key: "hour_observed", label: "this hour", axis: "n" },
    { key: "hour_expected", label: "expected by now", axis: "n", dash: [6, 4] },
    { key: "hour_expected", label: "likely high", axis: "n", edge: true, scale: (v) => v + 2 * Math.sqrt(v) },
    { key: "hour_expected", label: "likely low", axis: "n", edge: true,
      scale: (v) => Math.max(0, v - 2 * Math.sqrt(v)) }],
  band: ["likely high", "likely low"], fmt: fmtCount },
];
const charts = new Map();   // id -> {plot, names, defs}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// The plot's height (uPlot's `height`: canvas and axes; the legend goes below it). A box marked
// `--chart-fill: 1` (the kiosk view) is sized by the layout, and the plot fills what its legend leaves.
function chartHeight(box) {
  const css = getComputedStyle(box);
  if (css.getPropertyValue("--chart-fill").trim() === "1") {
    const legend = box.querySelector(".u-legend");
    return Math.max(40, Math.floor(box.clientHeight - (legend ? legend.offsetHeight : 30)));
  }
  const h = parseInt(css.getPropertyValue("--chart-h"), 10);
  return Number.isFinite(h) && h > 40 ? h : 160;
}

// Bring a plot to its box's size (after a resize, or once its legend exists to be measured).
function fit(plot, box) {
  const w = Math.max(200, Math.floor(box.clientWidth));
  const h = chartHeight(box);
  if (plot.width !== w || plot.height !== h) plot.setSize({ width: w, height: h });
}

// The jobs to draw: ranked by their largest value in the window, at most MAX_SERIES.
function jobNames(key) {
  const peak = new Map();
  for (const p of state.points) {
    const m = p[key];
    if (!m) continue;
    for (const k of Object.keys(m)) peak.set(k, Math.max(peak.get(k) || 0, m[k]));
  }
  return [...peak.keys()].sort((a, b) => peak.get(b) - peak.get(a) || a.localeCompare(b))
    .slice(0, MAX_SERIES).sort();
}

function seriesDefs(spec) {
  if (spec.perJob) return jobNames(spec.key).map((job) => ({ label: job, get: (p) => (p[spec.key] ? p[spec.key][job] : undefined) }));
  return spec.series.map((s) => ({ label: s.label, axis: s.axis, fmt: s.fmt, dash: s.dash, edge: s.edge,
    get: (p) => (p[s.key] === null || p[s.key] === undefined ? null : (s.scale ? s.scale(p[s.key]) : p[s.key])) }));
}

// A round upper bound a little above `v` (so axes get readable ticks), 1 when no data.
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const target = v * 1.05;
  const p = 10 ** Math.floor(Math.log10(target));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= target) return m * p;
  return 10 * p;
}

function lastValue(arr) {
  for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null && arr[i] !== undefined) return arr[i];
  return null;
}

function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (a > 0 && a < 0.01) return v.toExponential(0);
  return String(+v.toFixed(3));
}

function chartData(defs) {
  const pts = state.points;
  const x = pts.map((p) => p.t);
  return [x].concat(defs.map((d) => pts.map((p) => {
    const v = d.get(p);
    return v === undefined ? null : v;
  })));
}

function makeChart(spec, defs) {
  const box = $(spec.id);
  const fg = cssVar("--muted"), grid = cssVar("--grid");
  // Axis type and the room it takes grow together (`--axis-scale`: the kiosk view's large type).
  const k = parseFloat(cssVar("--axis-scale")) || 1;
  const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 },
    font: Math.round(10 * k) + "px system-ui, sans-serif" };
  const twoAxes = defs.some((d) => d.axis);
  const opts = {
    width: Math.max(200, box.clientWidth),
    height: chartHeight(box),
    scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min || 0), niceCeil(max)] },
      n: { range: (u, min, max) => [0, niceCeil(max)] } },
    axes: [
      // uPlot's default sizes and tick spacing (50 and 30 px), scaled with the type.
      Object.assign({}, axis, { size: Math.round(50 * k), space: Math.round(50 * k) }),
      Object.assign({}, axis, { size: Math.round(64 * k), space: Math.round(30 * k),
        values: (u, splits) => splits.map((v) => compact(v)) }),
    ],
    // Without a cursor on the chart the legend shows the latest values.
    series: [{ value: (u, v, si, idx) => (idx === null || idx === undefined ? "latest"
      : new Date(v * 1000).toLocaleTimeString()) }].concat(defs.map((d, i) => ({
      label: d.label,
      scale: d.axis || "y",
      stroke: d.edge ? "transparent" : cssVar("--s" + ((i % 8) + 1)),
      width: d.edge ? 0 : 2,
      dash: d.dash,
      class: d.edge ? "band-edge" : undefined,   // the band's edges: no legend row (style.css)
      points: { show: false },
      value: (u, v, si, idx) => {
        if (idx === null || idx === undefined) v = lastValue(u.data[si]);
        return v === null || v === undefined ? "–" : (d.fmt || spec.fmt)(v);
      },
    }))),
    legend: { show: true, live: true },
    cursor: { drag: { x: false, y: false } },
  };
  if (spec.band) {
    const [hi, lo] = spec.band.map((label) => defs.findIndex((d) => d.label === label) + 1);
    opts.bands = [{ series: [hi, lo], fill: cssVar("--band-fill") || "rgba(127, 127, 127, 0.2)" }];
  }
  if (twoAxes) opts.axes.push(Object.assign({}, axis, { scale: "n", side: 1, size: Math.round(48 * k), grid: { show: false } }));
  box.replaceChildren();
  return new window.uPlot(opts, chartData(defs), box);
}

/** Redraw every chart from state.points (deferred while the tab is hidden). */
export function drawCharts() {
  if (typeof window.uPlot === "undefined") return;
  if (document.hidden) {
    state.dirty = true;   // no drawing for a background tab; catch up when shown
    return;
  }
  state.dirty = false;
  for (const spec of CHARTS) {
    const defs = seriesDefs(spec);
    const names = defs.map((d) => d.label).join("\n");
    const have = charts.get(spec.id);
    if (!have || have.names !== names) {
      if (have) have.plot.destroy();
      const plot = makeChart(spec, defs);
      fit(plot, $(spec.id));   // the legend's height is known only now
      charts.set(spec.id, { plot, names, defs });
    } else {
      have.plot.setData(chartData(have.defs));
    }
  }
}

function rebuildCharts() {
  for (const c of charts.values()) c.plot.destroy();
  charts.clear();
  drawCharts();
}

/** Points per drawn chart, by element id (for tests). */
export function seriesLengths() {
  const out = {};
  for (const [id, c] of charts) out[id] = c.plot.data[0].length;
  return out;
}

/** Per drawn chart (by element id), the times (s) of the points it plots a value at, copied (for tests). */
export function plottedTimes() {
  const out = {};
  for (const [id, c] of charts) {
    const d = c.plot.data;
    out[id] = d[0].filter((t, i) => d.slice(1).some((ys) => ys[i] !== null && ys[i] !== undefined));
  }
  return out;
}

/** A drawn chart's series labels and data (copies; for tests), or null before it is drawn. */
export function chartSeries(id) {
  const c = charts.get(id);
  if (!c) return null;
  return { labels: c.plot.series.slice(1).map((s) => s.label),
    data: c.plot.data.map((arr) => Array.from(arr)), bands: (c.plot.bands || []).map((b) => b.series.slice()) };
}

/** Redraw on tab visibility, colour-scheme change and resize. */
export function initCharts() {
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.dirty) drawCharts();
  });
  // Colours come from CSS variables, so a theme switch rebuilds the charts.
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", rebuildCharts);
  }
  if (window.ResizeObserver) {
    const ro = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const c = charts.get(entry.target.id);
        if (c) fit(c.plot, entry.target);
      }
    });
    for (const spec of CHARTS) ro.observe($(spec.id));
  }
}
