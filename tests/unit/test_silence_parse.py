"""What POST /api/silences accepts (hub.silences.parse), and the matchers that would match everything."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from hub.silences import BadRequest, parse, shown

NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)
M = {"name": "alertname", "value": "X", "isRegex": False}


def ok(**body: Any) -> Any:
    return parse({"comment": "why", **body}, max_seconds=86400, now=NOW)


def refused(body: Any) -> str:
    with pytest.raises(BadRequest) as err:
        parse(body, max_seconds=86400, now=NOW)
    return str(err.value)


def test_a_duration_or_an_rfc3339_end_within_the_maximum() -> None:
    assert ok(matchers=[M], duration_s=3600).ends_at == NOW + dt.timedelta(hours=1)
    assert ok(fingerprint="abc", endsAt="2026-11-27T09:00:00+01:00").ends_at == NOW + dt.timedelta(hours=5)
    assert ok(matchers=[M], duration_s=86400).ends_at == NOW + dt.timedelta(days=1)
    assert refused({"matchers": [M], "endsAt": "2026-11-28T03:00:01Z", "comment": "c"}) == (
        '"endsAt" is further away than the longest silence allowed (sources.alertmanager.max_silence_s, 86400 s)')
    assert refused({"matchers": [M], "endsAt": "2026-11-27T08:00:00", "comment": "c"}) == (
        '"endsAt" must carry a time zone (Z or +01:00)')
    assert refused({"matchers": [M], "endsAt": "tomorrow", "comment": "c"}) == (
        '"endsAt" must be an RFC 3339 time such as 2026-11-27T08:00:00Z')
    assert refused({"matchers": [M], "duration_s": 60, "endsAt": "2026-11-27T08:00:00Z", "comment": "c"}) == (
        'give exactly one of "duration_s" (seconds) and "endsAt" (RFC 3339)')
    assert refused({"matchers": [M], "duration_s": float("nan"), "comment": "c"}) == (
        '"duration_s" must be a number of seconds')


def test_exactly_one_target_and_no_unknown_field() -> None:
    assert refused({"fingerprint": "a", "matchers": [M], "duration_s": 1, "comment": "c"}) == (
        'give exactly one of "fingerprint" and "matchers"')
    assert refused({"duration_s": 1, "comment": "c"}) == 'give exactly one of "fingerprint" and "matchers"'
    assert refused({"matchers": [M], "duration_s": 1, "comment": "c", "createdBy": "mallory"}) == (
        "unknown field(s) 'createdBy'; known: comment, duration_s, endsAt, fingerprint, matchers")


@pytest.mark.parametrize("matchers", [
    [{"name": "alertname", "value": ".*", "isRegex": True}],
    [{"name": "alertname", "value": ".+", "isRegex": True}],
    [{"name": "alertname", "value": "", "isRegex": False}],
    [{"name": "alertname", "value": "", "isRegex": False, "isEqual": False}],
    [{"name": "alertname", "value": "X", "isRegex": False, "isEqual": False},
     {"name": "job", "value": "a|.*", "isRegex": True}],
])
def test_matchers_that_select_nothing_in_particular_are_refused(matchers: list[dict[str, Any]]) -> None:
    assert refused({"matchers": matchers, "duration_s": 1, "comment": "c"}).startswith(
        "these matchers would match every alert")


def test_one_selective_matcher_is_enough_and_each_matcher_is_checked() -> None:
    wanted = ok(matchers=[{"name": "severity", "value": ".*", "isRegex": True},
                          {"name": "alertname", "value": "Hub.*", "isRegex": True}], duration_s=60)
    assert shown(wanted.matchers or []) == ['severity=~".*"', 'alertname=~"Hub.*"']
    assert refused({"matchers": [{"name": "a b", "value": "x", "isRegex": False}], "duration_s": 1,
                    "comment": "c"}) == "matchers[0].name must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
    assert refused({"matchers": [{"name": "a", "value": "(", "isRegex": True}], "duration_s": 1,
                    "comment": "c"}).startswith("matchers[0].value is not a valid regular expression")
    assert refused({"matchers": [{"name": "a", "value": "x"}], "duration_s": 1, "comment": "c"}) == (
        'matchers[0] must be an object with "name", "value", "isRegex" and optionally "isEqual"')
    assert refused({"matchers": [{**M, "isEqual": "no"}], "duration_s": 1, "comment": "c"}) == (
        "matchers[0].isRegex and .isEqual must be true or false")
