"""Which snapshot-stream entries a replica accepts, and what happens to the others.

An entry is accepted only if the `PUBLISH` script wrote it (its id is in `{p}:snapshots:ids`, which
only that script writes, in the step that checked the lease belonged to the entry's `replica`) and
its `seq` is not above the cluster's `{p}:seq` counter. Any other entry (a plain `XADD` by another
writer sharing the Redis and key prefix, an older hub's, garbage) is counted in
`hub_cluster_rejected_entries_total{reason}`, logged once per reason, and skipped: it never blocks
the entries after it, nor makes them look "not newer". What this does and does not guarantee is in
docs/replicas.md ("Who may write to the stream").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from redis.commands.core import AsyncScript

from hub.feed import Entry
from hub.metrics import HubMetrics
from hub.vocab import safe_text

log = logging.getLogger(__name__)

Fields = dict[bytes, bytes]
#: (stream id, fields), as XREAD and XREVRANGE return them with decode_responses=False
StreamEntry = tuple[bytes, Fields]

#: the fields `PUBLISH` writes in every entry (`size` is optional: older entries lack it)
REQUIRED = (b"seq", b"replica", b"epoch", b"data")


def field_seq(fields: Fields) -> int | None:
    """The entry's `seq` field as an int, or None when it is missing or not a number."""
    try:
        return int(fields[b"seq"])
    except (KeyError, ValueError):
        return None


def judge(fields: Fields, counter: int, recorded: bool) -> str | None:
    """None when an entry may be delivered, else why not (one of `hub.metrics.STREAM_REJECT_REASONS`).

    `counter` is the cluster's `{p}:seq` read after the entry was, `recorded` whether `PUBLISH`
    recorded the entry's id. The checks run in this order, so each reason names the first that failed.
    """
    seq = field_seq(fields)
    if seq is None or seq < 1 or any(k not in fields for k in REQUIRED):
        return "malformed"
    if seq > counter:
        return "seq_ahead"
    if not recorded:
        return "unrecorded"
    return None


class EntryCheck:
    """Judges pages of stream entries against Redis in one round trip; counts and logs the rejects."""

    def __init__(self, *, stream: str, key_seq: str, key_ids: str, metrics: HubMetrics) -> None:
        self.stream = stream
        self.keys = [key_seq, key_ids]
        self.metrics = metrics
        self._logged: set[str] = set()

    async def accept(self, script: AsyncScript, page: Sequence[StreamEntry]) -> list[bool]:
        """For each entry of `page`, whether it may be delivered (the others are counted as rejected).

        `script` is `redis_scripts.CHECK` registered on a client; Redis errors propagate (the caller
        reconnects and reads the page again).
        """
        if not page:
            return []
        reply: list[Any] = await script(keys=self.keys, args=[entry_id for entry_id, _ in page])
        try:
            counter = int(reply[0] or 0)
        except ValueError:  # a counter that is not a number vouches for no seq
            counter = 0
        verdicts = []
        for (entry_id, fields), recorded in zip(page, reply[1:], strict=True):
            reason = judge(fields, counter, recorded == 1)
            if reason is not None:
                self.reject(reason, entry_id, fields)
            verdicts.append(reason is None)
        return verdicts

    def snapshot(self, entry_id: bytes, fields: Fields) -> tuple[Entry, dict[str, Any], dict[str, Any]] | None:
        """(entry, data, source statuses) of an accepted entry, or None (counted as malformed) when its
        data is not a snapshot or not the one its `seq` and `epoch` fields name."""
        try:
            snap = orjson.loads(fields[b"data"])
            entry = Entry.from_snapshot(snap)
            sources = snap.get("sources") or {}
            statuses = {k: v.get("status") for k, v in sources.items() if isinstance(v, dict)}
            data = snap.get("data") or {}
            if entry.seq == field_seq(fields) and entry.epoch.encode() == fields[b"epoch"] and isinstance(data, dict):
                return entry, data, statuses
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            pass
        self.reject("malformed", entry_id, fields)
        return None

    def reject(self, reason: str, entry_id: bytes, fields: Fields) -> None:
        """Count one rejected entry; log the first of each reason (the fields are not trusted: cut, escaped)."""
        self.metrics.cluster_rejected_entries.labels(reason).inc()
        if reason in self._logged:
            return
        self._logged.add(reason)

        def show(name: bytes) -> str:
            return safe_text(fields.get(name, b"-").decode("utf-8", "replace"), limit=64)

        log.warning("cluster: skipped stream entry %s in %s (%s: %s; seq %s, replica %s); further entries "
                    "skipped for this reason are only counted in hub_cluster_rejected_entries_total",
                    safe_text(entry_id.decode("ascii", "replace"), limit=64), self.stream, reason,
                    EXPLAIN[reason], show(b"seq"), show(b"replica"))


#: why an entry was skipped, as logged (keys: hub.metrics.STREAM_REJECT_REASONS)
EXPLAIN = {
    "malformed": "not a snapshot entry as the hub's publish script writes it",
    "seq_ahead": "seq above the cluster's seq counter",
    "unrecorded": "not written by the hub's publish script under the collector lease "
                  "(another writer, or the collector of an older hub, which records nothing)",
}
