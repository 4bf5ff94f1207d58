// The booking API's SLO figures in the Traffic (system) panel, from data.slo: one row per SLO
// (the series' `slo` label), the error budget left over 30 days and the current burn rate. Figures
// Prometheus does not have (null: the recording rules are not loaded) are left out; with none, so is the block.

import { $, el, fmtFixed, num } from "./format.js";

// How the default slo_queries' figures read; any other name shows its plain value.
const FIGURES = {
  errorBudgetRemaining: { label: "budget left", fmt: (v) => fmtFixed(v * 100, 1, " %") },
  burnRate: { label: "burn rate", fmt: (v) => fmtFixed(v, v < 10 ? 2 : 0, "×") },
};

function sloName(metric) {
  const name = metric && typeof metric === "object" ? String(metric.slo || metric.job || "all") : "all";
  return name.replace(/^booking-api-/, "");
}

/** Rows {slo, figures: {key: value}} from data.slo, sorted by SLO name. */
export function sloRows(slo) {
  const rows = new Map();
  if (!slo || typeof slo !== "object") return [];
  for (const [key, result] of Object.entries(slo)) {
    if (!Array.isArray(result)) continue;
    for (const item of result) {
      const v = num(item && Array.isArray(item.value) ? item.value[1] : null);
      if (v === null) continue;
      const name = sloName(item.metric);
      if (!rows.has(name)) rows.set(name, {});
      rows.get(name)[key] = v;
    }
  }
  return [...rows.keys()].sort().map((name) => ({ slo: name, figures: rows.get(name) }));
}

/** Show data.slo's figures (hidden when the token may not see them or Prometheus has none). */
export function renderSlo(slo) {
  const rows = sloRows(slo);
  $("h-slo").hidden = $("slo-list").hidden = rows.length === 0;
  const items = rows.map((r) => {
    const li = el("li", "slo-row");
    li.dataset.slo = r.slo;
    li.append(el("span", "name", r.slo));
    for (const [key, v] of Object.entries(r.figures)) {
      const f = FIGURES[key] || { label: key, fmt: (x) => String(+x.toFixed(4)) };
      const span = el("span", "slo-fig", f.label + " " + f.fmt(v));
      span.dataset.key = key;
      span.dataset.raw = String(v);
      if (key === "burnRate" && v > 1) span.classList.add("over");
      if (key === "errorBudgetRemaining" && v < 0) span.classList.add("over");
      li.append(span);
    }
    return li;
  });
  $("slo-list").replaceChildren(...items);
}
