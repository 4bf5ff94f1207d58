"""The previous hub version's reading of a snapshot-stream entry (format 1), frozen here so that tests
can show that such a replica still serves what a collector of this version publishes.

Copied from the hub before `hub.stream_format` (stream_check.judge's field check, EntryCheck.snapshot,
Entry.from_snapshot) and not to be changed with the hub: it stands for replicas still running that
version during a rolling update. It knows no `format` or `index` field.
"""

from __future__ import annotations

from typing import Any

import orjson

from hub.feed import Entry

#: the fields the previous version requires in every entry
REQUIRED = (b"seq", b"replica", b"epoch", b"data")
#: the fields the previous version's publish script writes
FIELDS = {b"seq", b"replica", b"epoch", b"size", b"data"}


def read(fields: dict[bytes, bytes]) -> tuple[Entry, dict[str, Any], dict[str, Any]] | None:
    """(entry, data, statuses) as the previous version builds them, or None where it counts `malformed`."""
    if any(k not in fields for k in REQUIRED):
        return None
    try:
        snap = orjson.loads(fields[b"data"])
        data, sources = snap.get("data") or {}, snap.get("sources") or {}
        entry = Entry(seq=int(snap["seq"]), epoch=str(snap.get("epoch") or ""), timestamp=str(snap.get("timestamp")),
                      sections={k: orjson.dumps(v) for k, v in data.items()},
                      sources={k: orjson.dumps(v) for k, v in sources.items()})
        statuses = {k: v.get("status") for k, v in sources.items() if isinstance(v, dict)}
        if entry.seq == int(fields[b"seq"]) and entry.epoch.encode() == fields[b"epoch"] and isinstance(data, dict):
            return entry, data, statuses
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        pass
    return None
