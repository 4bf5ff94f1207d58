"""The feed: the latest snapshot, a history bounded in entries and bytes, and the page's chart points.

Each kept snapshot is held once, as the JSON pieces it is sent in (one per data section and per
source status); a topic-limited view is assembled from the pieces, never from a parsed copy.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from hub.frames import Deflated, deflate_piece
from hub.vocab import sections_of, topic_of


def _key(name: str) -> bytes:
    return orjson.dumps(name)


@dataclass(slots=True, eq=False)
class Entry:
    """One snapshot as encoded pieces (one per data section and per source status).

    `deflated` holds, per window size, each piece compressed once on its own (`frames.Deflated`),
    so that any topic set's message is assembled from them and never recompressed; `frames`
    caches ready frames while this is the latest.
    """

    seq: int
    epoch: str
    timestamp: str
    sections: dict[str, bytes]
    sources: dict[str, bytes]
    size: int = 0
    frames: dict[Any, bytes] = field(default_factory=dict)
    deflated: dict[int, dict[str, Deflated]] = field(default_factory=dict)
    #: the chart point (`chart_point`), set when the feed keeps the entry: the one definition the
    #: page plots, sent with the snapshot so that no client derives it again
    point: dict[str, Any] | None = None
    #: filled from Prometheus's past at start (hub/backfill.py): sent without `seq`, with
    #: `"backfill": true`, always before the live entries
    backfill: bool = False

    def __post_init__(self) -> None:
        self.size = self.raw_size + 120

    @property
    def raw_size(self) -> int:
        """Bytes of the encoded pieces."""
        return sum(map(len, self.sections.values())) + sum(map(len, self.sources.values()))

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> Entry:
        """Split a parsed metrics_update (e.g. read from Redis) into pieces."""
        data = snap.get("data") or {}
        sources = snap.get("sources") or {}
        return cls(seq=int(snap["seq"]), epoch=str(snap.get("epoch") or ""), timestamp=str(snap.get("timestamp")),
                   sections={k: orjson.dumps(v) for k, v in data.items()},
                   sources={k: orjson.dumps(v) for k, v in sources.items()})

    def _select(self, topics: tuple[str, ...] | None,
                source_sections: Mapping[str, tuple[str, ...]] | None) -> tuple[Iterable[str], Iterable[str]]:
        if topics is None:
            return self.sections, self.sources
        wanted = set(topics)
        return ([x for t in topics for x in sections_of(t) if x in self.sections],
                [s for s in self.sources
                 if source_sections is None or s not in source_sections
                 or wanted & {topic_of(x) for x in source_sections[s]}])

    def segments(self, topics: tuple[str, ...] | None = None,
                 source_sections: Mapping[str, tuple[str, ...]] | None = None, *, window: int = 0,
                 pieces: Mapping[str, Deflated] | None = None) -> list[bytes]:
        """The metrics_update as segments: glue bytes and the pieces (compressed ones for `window`).

        Joined, plain segments are the JSON (`encode`); compressed ones are a permessage-deflate
        payload once passed through `frames.deflated_message`. The compressed pieces are
        `pieces`, else `deflated[window]`.
        """
        names, srcs = self._select(topics, source_sections)
        z = (pieces if pieces is not None else self.deflated[window]) if window else None
        numbered = b'"backfill":true' if self.backfill else b'"seq":' + str(self.seq).encode()
        out = [b'{"type":"metrics_update",' + numbered + b',"epoch":' + _key(self.epoch)
               + b',"timestamp":' + _key(self.timestamp) + b',"data":{']
        for prefix, keys, values in (("d", names, self.sections), ("s", srcs, self.sources)):
            if prefix == "s":
                out.append(b'},"sources":{')
            for i, k in enumerate(keys):
                if i:
                    out.append(b",")
                if z is None:
                    out += (_key(k) + b":", values[k])
                else:
                    out.append(z[prefix + k])
        out.append(b"}")
        if self.point is not None:
            out.append(b',"point":' + orjson.dumps(filter_point(self.point, topics)))
        out.append(b"}")
        return out

    def encode(self, topics: tuple[str, ...] | None = None,
               source_sections: Mapping[str, tuple[str, ...]] | None = None) -> bytes:
        """The metrics_update JSON; with `topics`, only those sections and the sources that fill one."""
        return b"".join(self.segments(topics, source_sections))

    def encoded_size(self, topics: tuple[str, ...] | None = None,
                     source_sections: Mapping[str, tuple[str, ...]] | None = None) -> int:
        """len(encode(...)) without building it."""
        return sum(map(len, self.segments(topics, source_sections)))

    def compress(self, window: int) -> dict[str, Deflated]:
        """Every piece compressed on its own with `window` bits (CPU only: safe in a worker thread)."""
        z = {"d" + k: deflate_piece(_key(k), b":", v, window_bits=window) for k, v in self.sections.items()}
        z.update({"s" + k: deflate_piece(_key(k), b":", v, window_bits=window) for k, v in self.sources.items()})
        return z


# ------------------------------------------------------------------------------ chart points


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _by_job(result: Any, how: str) -> dict[str, float] | None:
    """A Prometheus result list as {job: value}, summed or max'ed per job (what the page plots)."""
    if not isinstance(result, list):
        return None
    out: dict[str, float] = {}
    for item in result:
        if not isinstance(item, dict):
            continue
        value = item.get("value")
        v = _num(value[1]) if isinstance(value, list) and len(value) > 1 else None
        if v is None:
            continue
        metric = item.get("metric")
        job = "all"
        if isinstance(metric, dict):
            job = str(metric.get("job") or metric.get("instance") or metric.get("__name__") or "all")
        out[job] = (out[job] + v if how == "sum" else max(out[job], v)) if job in out else v
    return out


def chart_point(seq: int | None, timestamp: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """What the page's charts plot from one snapshot: a few numbers, whatever the fleet's size.

    A backfilled snapshot (`seq` None) gets `"backfill": true` instead of a `seq`.
    """
    sys_ = data.get("system") if isinstance(data.get("system"), dict) else None
    app = data.get("application") if isinstance(data.get("application"), dict) else None
    biz = data.get("business") if isinstance(data.get("business"), dict) else None
    appts = biz.get("appointments") if biz and isinstance(biz.get("appointments"), dict) else None
    mem = app.get("memoryUsage") if app and isinstance(app.get("memoryUsage"), dict) else None
    exp = biz.get("expected") if biz and isinstance(biz.get("expected"), dict) else None
    hour, elapsed = (_num(exp.get("hour")), _num(exp.get("elapsed"))) if exp else (None, None)
    head: dict[str, Any] = {"backfill": True} if seq is None else {"seq": seq}
    return head | {
        "timestamp": timestamp,
        "rate": _by_job(sys_.get("requestRate"), "sum") if sys_ else None,
        "p95": _by_job(sys_.get("responseTime"), "max") if sys_ else None,
        "rss": _num(mem.get("rss")) if mem else None,
        "cpu": _num(app.get("cpuPercent")) if app else None,
        "conns": _num(app.get("activeConnections")) if app else None,
        "appts": _num(appts.get("total")) if appts else None,
        # the expected band: bookings so far this hour against the hour's expected count pro-rated
        # by the fraction of the hour passed (data.business.expected)
        "hour_observed": _num(exp.get("observed")) if exp else None,
        "hour_expected": round(hour * elapsed, 3) if hour is not None and elapsed is not None else None,
    }


#: which topic each chart field comes from, so a topic-limited token sees only its own
POINT_TOPIC = {"rate": "system", "p95": "system", "rss": "application", "cpu": "application",
               "conns": "application", "appts": "business", "hour_observed": "business",
               "hour_expected": "business"}


def filter_point(point: dict[str, Any], topics: tuple[str, ...] | None) -> dict[str, Any]:
    """`point` without the fields of topics outside `topics` (None: unchanged)."""
    if topics is None:
        return point
    return {k: v for k, v in point.items() if POINT_TOPIC.get(k, "") in topics or k in ("seq", "timestamp", "backfill")}


# ------------------------------------------------------------------------------ the feed


class Feed:
    """Latest snapshot, history bounded by `history_size` entries and `history_max_bytes`, chart points."""

    def __init__(self, *, history_size: int, history_max_bytes: int,
                 source_sections: Mapping[str, tuple[str, ...]]) -> None:
        self.history: collections.deque[Entry] = collections.deque()
        self.history_size = history_size
        self.max_bytes = history_max_bytes
        self.bytes = 0
        #: chart points outlive raw snapshots: they are small, so charts keep their span
        self.points: collections.deque[dict[str, Any]] = collections.deque(maxlen=history_size)
        #: source name -> data sections it fills, for filtering `sources` per topic set
        self.source_sections = dict(source_sections)
        self.default_epoch = ""
        #: backfilled entries and points (hub/backfill.py): older than every live one, evicted first
        self.backfill: collections.deque[Entry] = collections.deque()
        self.backfill_points: collections.deque[dict[str, Any]] = collections.deque()
        #: timestamp of the first live entry of this epoch: backfill stops before it
        self.first_live: str | None = None

    @property
    def latest(self) -> Entry | None:
        """The newest snapshot, or None before the first tick."""
        return self.history[-1] if self.history else None

    @property
    def seq(self) -> int:
        """seq of the newest snapshot (0 before the first)."""
        return self.history[-1].seq if self.history else 0

    @property
    def epoch(self) -> str:
        """epoch of the newest snapshot (before the first: the publisher's, when it knows it)."""
        return self.history[-1].epoch if self.history else self.default_epoch

    def append(self, entry: Entry, data: Mapping[str, Any]) -> bool:
        """Keep `entry` as the latest; False (ignored) unless it is newer within the same epoch.

        A new epoch means the sequence restarted: older entries and points belong to another
        numbering and are dropped.
        """
        latest = self.latest
        if latest is not None:
            if entry.epoch == latest.epoch and entry.seq <= latest.seq:
                return False
            if entry.epoch != latest.epoch:
                self.history.clear()
                self.points.clear()
                self.backfill.clear()
                self.backfill_points.clear()
                self.bytes = 0
                self.first_live = None
            latest.frames = {}  # only the latest keeps ready frames
        if self.first_live is None:
            self.first_live = entry.timestamp
        if entry.point is None:
            entry.point = chart_point(entry.seq, entry.timestamp, data)
            entry.size += len(orjson.dumps(entry.point)) + 9  # ,"point":
        self.history.append(entry)
        self.bytes += entry.size
        self._evict()
        self.points.append(entry.point)
        if self.backfill_points and len(self.backfill_points) + len(self.points) > self.history_size:
            self.backfill_points.popleft()
        return True

    def add_backfill(self, entries: Iterable[tuple[str, Mapping[str, Any], dict[str, bytes]]]) -> int:
        """Keep backfilled snapshots (timestamp, parsed data, encoded sections; oldest first) before
        the live ones; returns how many were kept.

        Only once per epoch, only those older than the first live snapshot, and only as many as
        `history_size` and `history_max_bytes` leave room for beside the live ones (the newest
        first). They carry the feed's epoch and never move `seq` or `epoch`.
        """
        if self.backfill or self.backfill_points:
            return 0
        items = [e for e in entries if self.first_live is None or e[0] < self.first_live]
        room = self.history_size - max(len(self.history), len(self.points))
        items = items[-room:] if room > 0 else []
        for timestamp, data, sections in items:
            entry = Entry(seq=0, epoch=self.epoch, timestamp=timestamp, sections=sections, sources={},
                          backfill=True)
            entry.point = chart_point(None, timestamp, data)
            entry.size += len(orjson.dumps(entry.point)) + 9
            self.backfill.append(entry)
            self.backfill_points.append(entry.point)
            self.bytes += entry.size
        self._evict()
        return len(items)
    def attach(self, entry: Entry, window: int, pieces: dict[str, Deflated]) -> None:
        """Keep `pieces` (entry.compress(window)) with `entry`, counted in the byte budget."""
        if window in entry.deflated:
            return
        entry.deflated[window] = pieces
        added = sum(map(len, pieces.values()))
        entry.size += added
        if self.history and any(e is entry for e in reversed(self.history)):
            self.bytes += added
            self._evict()

    def _evict(self) -> None:
        # By count, then by bytes; backfilled entries first (they are the oldest); the latest always stays.
        while self.backfill and (len(self.backfill) + len(self.history) > self.history_size
                                 or self.bytes > self.max_bytes):
            self.bytes -= self.backfill.popleft().size
        while len(self.history) > 1 and (len(self.history) > self.history_size or self.bytes > self.max_bytes):
            self.bytes -= self.history.popleft().size

    def items(self, limit: int, *, after: int = 0) -> list[Entry]:
        """Up to `limit` most recent entries with seq > `after`, oldest first (backfilled ones, which
        come before every live one, only without `after`)."""
        if limit <= 0:
            return []
        out = [e for e in self.history if e.seq > after] if after else [*self.backfill, *self.history]
        return out[-limit:]

    def within(self, entries: Iterable[Entry], topics: tuple[str, ...] | None, max_bytes: int | None) -> list[Entry]:
        """The newest of `entries` whose encoding (filtered to `topics`) fits in `max_bytes`, oldest first.

        The newest is always kept, as a broadcast always sends one snapshot.
        """
        kept: list[Entry] = []
        total = 0
        for entry in reversed(list(entries)):
            size = entry.encoded_size(topics, self.source_sections)
            if max_bytes is not None and kept and total + size > max_bytes:
                break
            kept.append(entry)
            total += size + 1  # the comma
        kept.reverse()
        return kept

    def encode_items(self, entries: Iterable[Entry], topics: tuple[str, ...] | None, *,
                     max_bytes: int | None = None) -> tuple[bytes, int]:
        """A JSON array of entries (filtered to `topics`, bounded by `max_bytes` as `within` says) and
        the seq of its last entry (0: empty)."""
        kept = self.within(entries, topics, max_bytes)
        body = b"[" + b",".join(e.encode(topics, self.source_sections) for e in kept) + b"]"
        return body, kept[-1].seq if kept else 0

    def encode_points(self, limit: int, topics: tuple[str, ...] | None) -> bytes:
        """The `points` message: up to `limit` most recent chart points, oldest first."""
        pts = [*self.backfill_points, *self.points][-limit:] if limit > 0 else []
        return orjson.dumps({"type": "points", "epoch": self.epoch, "seq": self.seq,
                             "items": [filter_point(p, topics) for p in pts]})
