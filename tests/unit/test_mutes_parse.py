"""The body of POST /api/mutes read into (check, until, comment): RFC 3339 forms and the bounds, on a fixed clock."""

from __future__ import annotations

import datetime as dt

import pytest

from hub.mute_views import parse_mute, parse_rfc3339

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-05T13:00:00Z", NOW + 3600),
    ("2026-12-05t13:00:00z", NOW + 3600),
    ("2026-12-05 13:00:00Z", NOW + 3600),
    ("2026-12-05T14:00:00+01:00", NOW + 3600),
    ("2026-12-05T12:30:00-00:30", NOW + 3600),
    ("2026-12-05T13:00:00.250Z", NOW + 3600.25),
    ("2026-12-05T13:00:00.123456789Z", NOW + 3600.123456),
    ("2026-12-05T12:59:60Z", NOW + 3599),  # a leap second, read as the second before
])
def test_rfc3339_forms(text: str, expected: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["2026-12-05T13:00:00", "2026-12-05", "13:00", "2026-13-05T13:00:00Z",
                                  "2026-12-05T13:00:00+1:00", " 2026-12-05T13:00:00Z", "2026-12-05T25:00:00Z"])
def test_not_rfc3339(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_a_duration_and_an_until_at_the_maximum_are_taken_and_the_comment_trimmed() -> None:
    body = {"check": "api", "duration_s": 7200, "comment": "  deploy\n"}
    assert parse_mute(body, checks={"api"}, max_mute_s=7200, now=NOW) == ("api", NOW + 7200, "deploy")
    body = {"check": "api", "until": "2026-12-05T14:00:00Z", "comment": "x"}
    assert parse_mute(body, checks={"api"}, max_mute_s=7200, now=NOW) == ("api", NOW + 7200, "x")
    body = {"check": "api", "duration_s": 0.5, "comment": "x"}
    assert parse_mute(body, checks={"api"}, max_mute_s=7200, now=NOW)[1] == NOW + 0.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, [1]])
def test_a_duration_that_is_no_number_of_seconds_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^'duration_s' must be a number of seconds$"):
        parse_mute({"check": "api", "duration_s": bad, "comment": "x"}, checks={"api"}, max_mute_s=60, now=NOW)
