"""Which stream entries a replica accepts (hub.stream_check.judge), and when its cursor must go back
(hub.catchup.went_back): pure, no Redis."""

from __future__ import annotations

import pytest

from hub.catchup import went_back
from hub.metrics import STREAM_REJECT_REASONS
from hub.stream_check import EXPLAIN, judge

GOOD = {b"seq": b"7", b"replica": b"r1", b"epoch": b"e1", b"size": b"2", b"data": b"{}"}


def test_a_recorded_entry_within_the_counter_is_accepted() -> None:
    assert judge(GOOD, counter=7, recorded=True) is None
    assert judge({k: v for k, v in GOOD.items() if k != b"size"}, counter=9, recorded=True) is None


@pytest.mark.parametrize(("fields", "counter", "recorded", "reason"), [
    ({**GOOD, b"seq": b"8"}, 7, True, "seq_ahead"),
    ({**GOOD, b"seq": b"100007"}, 7, False, "seq_ahead"),
    (GOOD, 7, False, "unrecorded"),
    ({k: v for k, v in GOOD.items() if k != b"replica"}, 7, True, "malformed"),
    ({k: v for k, v in GOOD.items() if k != b"epoch"}, 7, True, "malformed"),
    ({k: v for k, v in GOOD.items() if k != b"data"}, 7, True, "malformed"),
    ({**GOOD, b"seq": b"7x"}, 7, True, "malformed"),
    ({**GOOD, b"seq": b"0"}, 7, True, "malformed"),
    ({**GOOD, b"seq": b"-3"}, 7, True, "malformed"),
    ({b"data": b"\xff"}, 7, False, "malformed"),
])
def test_anything_else_is_rejected_with_the_first_failed_check(fields: dict[bytes, bytes], counter: int,
                                                                recorded: bool, reason: str) -> None:
    assert judge(fields, counter, recorded) == reason


def test_every_reason_is_exported_and_explained() -> None:
    assert set(EXPLAIN) == set(STREAM_REJECT_REASONS)


@pytest.mark.parametrize(("newest", "last", "restarted"), [
    (b"1700000000000-0", b"18446744073709551615-18446744073709551615", True),
    (b"1700000000000-0", b"1700000000000-1", True),
    (b"1700000000000-1", b"1700000000000-1", False),
    (b"1700000000001-0", b"1700000000000-9", False),
    (b"999-0", b"1000-0", True),  # by number, not as text
    (b"", b"1700000000000-1", False),  # an empty stream: wait for its next entry
    (b"1700000000000-0", b"0-0", False),
])
def test_a_stream_started_afresh_is_recognised_by_its_newest_id(newest: bytes, last: bytes, restarted: bool) -> None:
    assert went_back(newest, last) is restarted
