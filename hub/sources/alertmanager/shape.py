"""Alertmanager API v2 answers checked and cut to what the snapshot carries.

Items keep the shape of the Prometheus source's `data.alerts` and add Alertmanager's state; what
is returned is built from str, bool, list and dict only, so it always encodes as JSON.
"""

from __future__ import annotations

from typing import Any

from hub.sources.prometheus.shape import MAX_ALERTS, MAX_LABEL_CHARS, MAX_TEXT_CHARS, BadAnswer, Issues, labels

#: silences shown at most; an operator with more has a process problem the page cannot fix
MAX_SILENCES = 200
#: ids kept per alert in silencedBy / inhibitedBy, and matchers kept per silence
MAX_IDS = 64
MAX_MATCHERS = 64
#: characters kept of an id, a time or a silence's creator
MAX_SHORT = 256
_SILENCE_ORDER = {"active": 0, "pending": 1}


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _text(v: Any, limit: int) -> str | None:
    return v[:limit] if isinstance(v, str) else None


def _ids(v: Any, issues: Issues) -> list[str]:
    if not isinstance(v, list):
        return []
    ids = [i[:MAX_SHORT] for i in v if isinstance(i, str)]
    if len(ids) > MAX_IDS:
        issues.changed[f"silencedBy/inhibitedBy cut to {MAX_IDS} ids"] += 1
    return ids[:MAX_IDS]


def shape_alerts(raw: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """(alerts in the Prometheus source's shape plus fingerprint, silencedBy, inhibitedBy, amState;
    warnings) of /api/v2/alerts; raises BadAnswer."""
    if not isinstance(raw, list):
        raise BadAnswer("answer from /api/v2/alerts is not a list")
    issues = Issues()
    alerts = []
    for a in raw:
        if not isinstance(a, dict) or not isinstance(a.get("fingerprint"), str):
            issues.dropped["not an object with a text fingerprint"] += 1
            continue
        found = labels(a.get("labels"), issues)
        if found is None:
            issues.changed["alerts whose labels are not an object shown without labels"] += 1
            found = {}
        notes = _obj(a.get("annotations"))
        summary = notes.get("summary") or notes.get("description")
        status = _obj(a.get("status"))
        alerts.append({
            "name": found.get("alertname", ""),
            "state": "firing",  # Alertmanager holds firing alerts only (pending ones never leave Prometheus)
            "severity": found.get("severity"),
            "activeAt": _text(a.get("startsAt"), 64),
            "summary": _text(summary, MAX_TEXT_CHARS),
            "labels": found,
            "fingerprint": a["fingerprint"][:MAX_SHORT],
            "silencedBy": _ids(status.get("silencedBy"), issues),
            "inhibitedBy": _ids(status.get("inhibitedBy"), issues),
            # "unprocessed" (not yet matched against silences and inhibitions) is not suppressed
            "amState": "suppressed" if status.get("state") == "suppressed" else "active",
        })
    alerts.sort(key=lambda a: (a["activeAt"] or "", a["name"], a["fingerprint"]))
    warnings = issues.warnings("malformed alerts", "skipped")
    if len(alerts) > MAX_ALERTS:
        warnings.append(f"{len(alerts) - MAX_ALERTS} more active alerts not shown (limit {MAX_ALERTS})")
        alerts = alerts[:MAX_ALERTS]
    return alerts, warnings


def shape_matchers(raw: Any) -> list[dict[str, Any]] | None:
    """A silence's matchers as {name, value, isRegex, isEqual}; None if they are not that."""
    if not isinstance(raw, list):
        return None
    out = []
    for m in raw[:MAX_MATCHERS]:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("value"), str):
            return None
        out.append({"name": m["name"][:MAX_LABEL_CHARS], "value": m["value"][:MAX_LABEL_CHARS],
                    "isRegex": m.get("isRegex") is True, "isEqual": m.get("isEqual") is not False})
    return out


def shape_silence(s: Any) -> dict[str, Any] | None:
    """One silence as `data.silences` lists it, whatever its state; None if it is not a silence."""
    if not isinstance(s, dict) or not isinstance(s.get("id"), str):
        return None
    status = _obj(s.get("status"))
    matchers = shape_matchers(s.get("matchers"))
    state = status.get("state")
    if matchers is None or not isinstance(state, str):
        return None
    return {"id": s["id"][:MAX_SHORT], "matchers": matchers,
            "createdBy": _text(s.get("createdBy"), MAX_SHORT) or "",
            "comment": _text(s.get("comment"), MAX_TEXT_CHARS) or "",
            "startsAt": _text(s.get("startsAt"), 64), "endsAt": _text(s.get("endsAt"), 64),
            "status": state[:32]}


def shape_silences(raw: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """(active then pending silences, warnings) of /api/v2/silences; expired ones are left out; raises BadAnswer."""
    if not isinstance(raw, list):
        raise BadAnswer("answer from /api/v2/silences is not a list")
    issues = Issues()
    out = []
    for s in raw:
        shaped = shape_silence(s)
        if shaped is None:
            issues.dropped["not a silence (id, matchers, status.state)"] += 1
        elif shaped["status"] in _SILENCE_ORDER:
            out.append(shaped)
    out.sort(key=lambda s: (_SILENCE_ORDER[s["status"]], s["endsAt"] or "", s["id"]))
    warnings = issues.warnings("malformed silences", "skipped")
    if len(out) > MAX_SILENCES:
        warnings.append(f"{len(out) - MAX_SILENCES} more silences not shown (limit {MAX_SILENCES})")
        out = out[:MAX_SILENCES]
    return out, warnings
