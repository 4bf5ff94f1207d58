"""The snapshot stream's entry formats: a replica installs a snapshot as the pieces the feed keeps,
without parsing it and encoding it again.

- Format 1 (no `format` field: hubs before this module): `data` is the metrics_update JSON. A replica
  parses it and encodes every section again as a piece (`stream_check.EntryCheck.snapshot`).
- Format 2 (`format` = "2"): the same `data`, byte for byte, plus `index`, a small JSON object saying
  where each piece lies in `data` and carrying what the feed would otherwise compute from the parsed
  data: `{"t": timestamp, "d": [[section, start, end], ...], "s": [[source, start, end], ...],
  "point": chart point}`. A replica slices the pieces out of `data`, checks that they encode back to
  `data` exactly (one copy and compare, no parse), and parses only the small pieces its metrics read
  (the source statuses; `health` and `business` when asked for, `PieceData`).

Every format keeps `data` as the full snapshot JSON: a replica of the previous version reads format 2
as format 1 (it ignores the fields it does not know), and a replica reading a format it does not know
reads `data` as format 1 does, logging it once. docs/replicas.md ("Entry format") says what this costs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from hub.feed import Entry, chart_point
from hub.stream_check import EntryCheck, Fields, field_seq
from hub.vocab import safe_text

log = logging.getLogger(__name__)

#: the format this hub writes, and every format it reads without falling back to parsing `data`
FORMAT = 2
FORMAT_FIELD = b"format"
INDEX_FIELD = b"index"
Snapshot = tuple[Entry, Mapping[str, Any], dict[str, Any]]


def layout(entry: Entry, data: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(`data` field, `index` field) of a format-2 entry for `entry` (not yet in a feed: no point).

    `data` is `entry.encode()`, what format 1 publishes; `data` here is the parsed snapshot the
    chart point is computed from (the collector's, never re-read).
    """
    assert entry.point is None, "the published JSON carries no point (format 1 has none)"
    segments = entry.segments()
    index: dict[str, Any] = {"t": entry.timestamp, "d": [], "s": []}
    # Entry.segments emits, per piece, the key glue `"name":` and then the piece itself: walk them
    # with the names in the same order and note where each piece starts and ends.
    expected = [("d", k, v) for k, v in entry.sections.items()] + [("s", k, v) for k, v in entry.sources.items()]
    pos = at = 0
    glue = b""
    for seg in segments:
        if at < len(expected) and glue == orjson.dumps(expected[at][1]) + b":" and seg is expected[at][2]:
            prefix, name, _ = expected[at]
            index[prefix].append([name, pos, pos + len(seg)])
            at += 1
        glue = seg
        pos += len(seg)
    assert at == len(expected), "Entry.segments changed its layout: stream_format.layout must follow"
    index["point"] = chart_point(entry.seq, entry.timestamp, data)
    return b"".join(segments), orjson.dumps(index)


def _spans(blob: bytes, items: Any) -> dict[str, bytes]:
    if not isinstance(items, list):
        raise ValueError("not a list of spans")
    out: dict[str, bytes] = {}
    for name, start, end in items:
        if not (isinstance(name, str) and isinstance(start, int) and isinstance(end, int)
                and 0 < start < end <= len(blob)):
            raise ValueError("a span outside the data")
        out[name] = blob[start:end]
    return out


def install(fields: Fields) -> Snapshot | None:
    """(entry, data, source statuses) of a format-2 entry, or None when its index does not describe its
    `data` (the caller then reads `data` as format 1 does).

    The entry encodes to `data` byte for byte, and carries `data`'s `seq` and `epoch` (the fields'),
    so what clients receive is what the collector published; `data` is a `PieceData`.
    """
    try:
        blob, index = fields[b"data"], orjson.loads(fields[INDEX_FIELD])
        seq = field_seq(fields)
        if seq is None or not isinstance(index, dict) or not isinstance(index.get("point"), dict):
            return None
        entry = Entry(seq=seq, epoch=fields[b"epoch"].decode(), timestamp=str(index["t"]),
                      sections=_spans(blob, index["d"]), sources=_spans(blob, index["s"]))
        # The check that makes the index trustworthy: every byte of `data` is glue this hub writes
        # or a piece in the index (memcpy and memcmp of one snapshot, against a parse of it).
        if entry.encode() != blob:
            return None
        point = index["point"]
        if point.get("seq") != seq or point.get("timestamp") != entry.timestamp:
            return None
        entry.point = point
        entry.size += len(orjson.dumps(point)) + 9  # as Feed.append counts a point it computes: ,"point":
        statuses = {}
        for name, piece in entry.sources.items():
            status = orjson.loads(piece)
            if isinstance(status, dict):
                statuses[name] = status.get("status")
        return entry, PieceData(entry.sections), statuses
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, orjson.JSONDecodeError):
        return None


class PieceData(Mapping[str, Any]):
    """A snapshot's `data` over its pieces: a section is parsed on first access, and only that one
    (the metrics read `health` and `business`; the large ones stay bytes)."""

    def __init__(self, pieces: Mapping[str, bytes]) -> None:
        self._pieces = pieces
        self._parsed: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._parsed:
            self._parsed[name] = orjson.loads(self._pieces[name])
        return self._parsed[name]

    def __contains__(self, name: object) -> bool:
        return name in self._pieces

    def __iter__(self) -> Iterator[str]:
        return iter(self._pieces)

    def __len__(self) -> int:
        return len(self._pieces)


class StreamReader:
    """Reads accepted entries of any format into snapshots; logs each reason for falling back once."""

    def __init__(self, check: EntryCheck) -> None:
        self.check = check
        self._logged: set[str] = set()

    def read(self, entry_id: bytes, fields: Fields) -> Snapshot | None:
        """(entry, data, statuses) of an accepted entry, or None (counted as malformed by the check)."""
        fmt = fields.get(FORMAT_FIELD)
        if fmt == str(FORMAT).encode():
            got = install(fields)
            if got is not None:
                return got
            self._once("index", "cluster: stream entry %s carries an index that does not describe its data; "
                       "parsing its data instead (logged once)", entry_id)
        elif fmt is not None:
            self._once(f"format {fmt!r}", "cluster: stream entry %s has format %s, which this hub version does "
                       f"not know (it reads 1 and {FORMAT}; a newer collector runs): reading its data field as "
                       "format 1 (logged once)", entry_id, safe_text(fmt.decode("utf-8", "replace"), limit=16))
        return self.check.snapshot(entry_id, fields)

    def _once(self, reason: str, msg: str, entry_id: bytes, *args: Any) -> None:
        if reason in self._logged:
            return
        self._logged.add(reason)
        log.warning(msg, safe_text(entry_id.decode("ascii", "replace"), limit=64), *args)
