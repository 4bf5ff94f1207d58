"""What the source passes on: Prometheus answers checked against the shapes the page and the seed's clients read.

Everything returned here is built from str, finite float, 64-bit int, list and dict only, so it
always encodes as JSON; anything else in an answer is dropped or converted, and counted in a warning.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from hub.vocab import safe_text

#: labels kept per series; more than this is a mistake in a query or a target, not fleet data
MAX_LABELS = 64
#: characters kept per label name or value (Prometheus itself sets no limit by default)
MAX_LABEL_CHARS = 1024
#: characters kept of a `string` result or an alert's summary
MAX_TEXT_CHARS = 1024
#: At most this many alerts go into a snapshot; the rest are counted in a warning, because
#: every snapshot is sent to every client and an alert storm must not bloat each frame.
MAX_ALERTS = 200
#: a sample value as Prometheus writes it (Go's FormatFloat, 'f' or 'e' form, or NaN/±Inf)
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf)|NaN")
_STATE_ORDER = {"firing": 0, "pending": 1}
_SAMPLE = 'value is not [timestamp, "number"]'


class BadAnswer(Exception):
    """The answer as a whole cannot be used; the message says why (already capped)."""


class Issues:
    """What was dropped or changed in one answer, reported as a few counted warnings."""

    def __init__(self) -> None:
        self.dropped: Counter[str] = Counter()
        self.changed: Counter[str] = Counter()

    def warnings(self, what: str = "series", dropped: str = "dropped") -> list[str]:
        out = []
        if self.dropped:
            reasons = ", ".join(f"{n} {why}" for why, n in self.dropped.items())
            out.append(f"{self.dropped.total()} {what} {dropped}: {reasons}")
        out += [f"{n} {why}" for why, n in self.changed.items()]
        return out


def shape_result(data: Any, *, max_series: int) -> tuple[Any, list[str], tuple[int, int] | None]:
    """(result, warnings, (returned, kept) if cut to `max_series`) of a query's `data`; raises BadAnswer."""
    if not isinstance(data, dict) or "result" not in data:
        raise BadAnswer("answer has no data.result")
    kind, result = data.get("resultType"), data["result"]
    issues = Issues()
    if kind in ("scalar", "string"):
        point = _point(result, issues, text=kind == "string")
        if point is None:
            raise BadAnswer(f'data.result is not a [timestamp, "value"] pair (resultType {kind})')
        return point, issues.warnings(), None
    if kind not in ("vector", "matrix"):
        shown = safe_text(kind, limit=40) if isinstance(kind, str) else "missing"
        raise BadAnswer(f"unknown data.resultType ({shown})")
    if not isinstance(result, list):
        raise BadAnswer(f"data.result is not a list (resultType {kind})")
    rows = [row for entry in result if (row := _series(entry, kind, issues)) is not None]
    cut = None
    warnings = issues.warnings()
    if len(rows) > max_series:
        cut = (len(rows), max_series)
        rows, urgent = keep(rows, max_series)
        if urgent:
            warnings.append(f"{urgent} series with a NaN, Inf or 0 value were cut too: "
                            "more series are in trouble than max_series allows")
    return rows, warnings, cut


def keep(rows: list[dict[str, Any]], n: int) -> tuple[list[dict[str, Any]], int]:
    """(The `n` series an operator most needs to see, in their original order; how many NaN/Inf/0 series did not fit).

    First NaN and ±Inf (a broken ratio, a quantile past the top bucket), then zeros (an `up` or
    `probe_success` that is 0, traffic that stopped), then the largest absolute values. Ties at
    the cut are broken by the label set, so the same series are kept tick after tick whatever
    order Prometheus answers in, and charts do not flicker.
    """
    ranks = [_rank(row) for row in rows]
    order = sorted(range(len(rows)), key=ranks.__getitem__)
    edge = ranks[order[n - 1]]
    chosen = [i for i in order[:n] if ranks[i] < edge]
    # Only the series tied with the last kept one need their labels compared: cheap even for 100k.
    tied = [i for i in order if ranks[i] == edge]
    tied.sort(key=lambda i: sorted(rows[i]["metric"].items()))
    chosen += tied[: n - len(chosen)]
    urgent = sum(1 for i in order[n:] if ranks[i][0] < 2)
    return [rows[i] for i in sorted(chosen)], urgent


def _rank(row: dict[str, Any]) -> tuple[int, float]:
    sample = row["value"] if "value" in row else (row["values"][-1] if row["values"] else None)
    if sample is None:
        return 3, 0.0
    v = float(sample[1])
    if math.isnan(v) or math.isinf(v):
        return 0, 0.0
    return (1, 0.0) if v == 0 else (2, -abs(v))


def _series(entry: Any, kind: str, issues: Issues) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        issues.dropped["not an object"] += 1
        return None
    metric = labels(entry.get("metric"), issues)
    if metric is None:
        issues.dropped["metric is not an object"] += 1
        return None
    if kind == "vector":
        if "value" not in entry and "histogram" in entry:
            issues.dropped["native histogram samples (use histogram_quantile)"] += 1
            return None
        point = _point(entry.get("value"), issues)
        if point is None:
            issues.dropped[_SAMPLE] += 1
            return None
        return {"metric": metric, "value": point}
    values = entry.get("values")
    if not isinstance(values, list):
        issues.dropped["values is not a list"] += 1
        return None
    points = [p for v in values if (p := _point(v, issues)) is not None]
    if len(points) < len(values):
        issues.changed[f"points dropped ({_SAMPLE})"] += len(values) - len(points)
    return {"metric": metric, "values": points}


def _point(v: Any, issues: Issues, *, text: bool = False) -> list[Any] | None:
    """[timestamp, "value"] as Prometheus writes it, converting a JSON number value; None if unusable."""
    if not isinstance(v, list) or len(v) != 2:
        return None
    ts, x = v
    if type(ts) is float:
        if not math.isfinite(ts):
            return None
    elif type(ts) is not int or not -(2**63) <= ts < 2**64:  # bool is not a timestamp
        return None
    if type(x) is str:
        if text:
            return [ts, x[:MAX_TEXT_CHARS]]
        return [ts, x] if len(x) <= 40 and _NUMBER.fullmatch(x) else None
    if type(x) in (int, float) and not text and math.isfinite(x):
        issues.changed["values were JSON numbers, not strings: converted"] += 1
        return [ts, repr(float(x)) if type(x) is float else str(x)]
    return None


def labels(m: Any, issues: Issues) -> dict[str, str] | None:
    """A label set as str -> str, capped in count and size; None if `m` is not an object."""
    if not isinstance(m, dict):
        return None
    if len(m) <= MAX_LABELS and all(type(v) is str and len(v) <= MAX_LABEL_CHARS and len(k) <= MAX_LABEL_CHARS
                                    for k, v in m.items()):
        return m  # the common case: already right, no copy
    out: dict[str, str] = {}
    for k, v in m.items():
        if type(v) is not str or type(k) is not str:
            issues.changed["labels that are not text dropped"] += 1
        elif len(out) >= MAX_LABELS:
            issues.changed[f"labels beyond {MAX_LABELS} per series dropped"] += 1
        else:
            if len(k) > MAX_LABEL_CHARS or len(v) > MAX_LABEL_CHARS:
                issues.changed[f"label names or values cut to {MAX_LABEL_CHARS} characters"] += 1
            out[k[:MAX_LABEL_CHARS]] = v[:MAX_LABEL_CHARS]
    return out


def shape_alerts(data: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """(firing then pending alerts in the seed's shape, warnings) of /api/v1/alerts' `data`; raises BadAnswer."""
    raw = data.get("alerts") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise BadAnswer("answer has no data.alerts")
    issues = Issues()
    alerts = []
    for a in raw:
        if not isinstance(a, dict) or type(a.get("state")) is not str:
            issues.dropped["not an object with a text state"] += 1
        elif a["state"] in _STATE_ORDER:  # inactive alerts are not shown
            alerts.append(_alert(a, issues))
    # Every key is str after _alert, so the sort cannot meet mixed types.
    alerts.sort(key=lambda a: (_STATE_ORDER[a["state"]], a["activeAt"] or "", a["name"]))
    warnings = issues.warnings("malformed alerts", "skipped")
    if len(alerts) > MAX_ALERTS:
        warnings.append(f"{len(alerts) - MAX_ALERTS} more active alerts not shown (limit {MAX_ALERTS})")
        alerts = alerts[:MAX_ALERTS]
    return alerts, warnings


def _alert(a: dict[str, Any], issues: Issues) -> dict[str, Any]:
    found = labels(a.get("labels"), issues)
    if found is None:
        issues.changed["alerts whose labels are not an object shown without labels"] += 1
        found = {}
    annotations = a.get("annotations")
    notes: dict[str, Any] = annotations if isinstance(annotations, dict) else {}
    summary = notes.get("summary") or notes.get("description")
    active = a.get("activeAt")
    return {
        "name": found.get("alertname", ""),
        "state": a["state"],
        "severity": found.get("severity"),
        "activeAt": active[:64] if isinstance(active, str) else None,
        "summary": summary[:MAX_TEXT_CHARS] if isinstance(summary, str) else None,
        "labels": found,
    }


def text_warnings(body: dict[str, Any], clean: Callable[[str], str] = str) -> list[str]:
    """Prometheus's `warnings`, each scrubbed by `clean`, capped and escaped; entries that are not text are counted."""
    items = body.get("warnings")
    if not isinstance(items, list):
        return []
    out = [safe_text(clean(w)) for w in items if isinstance(w, str)]
    if odd := sum(not isinstance(w, str) for w in items):
        out.append(f"{odd} warnings that are not text dropped")
    return out
