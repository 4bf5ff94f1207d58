"""Retry-After read as RFC 9110 defines it: delta-seconds (ASCII digits) or an HTTP-date, clamped; else None."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.notify.http import RETRY_AFTER_MAX, retry_after

#: a fixed "now", so dates are read without a clock: 2026-03-01 12:00:00 UTC (a Sunday)
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def test_delta_seconds_are_ascii_digits_with_optional_white_space() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("0") == 0.0
    assert retry_after(" 7\t") == 7.0
    assert retry_after("007") == 7.0


@pytest.mark.parametrize("value", [
    "²",        # str.isdigit() says yes, float() raises: this lost a message with a traceback
    "١٢",       # Arabic-Indic 12: float() reads it, HTTP does not
    "\uff19",        # fullwidth 9
    "-1", "+5", "1.5", "1e3", "0x10", "7 s", "", "   ", "soon", "\u00a07", "NaN", "inf",
])
def test_anything_else_is_none_so_the_caller_backs_off(value: str) -> None:
    assert retry_after(value) is None


def test_absent_is_none() -> None:
    assert retry_after(None) is None


def test_long_delays_are_clamped_even_beyond_what_int_reads() -> None:
    assert retry_after(str(int(RETRY_AFTER_MAX) + 1)) == RETRY_AFTER_MAX
    assert retry_after("9" * 5000) == RETRY_AFTER_MAX  # int() refuses more than 4300 digits


def test_the_three_http_date_forms() -> None:
    assert retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now=NOW) == 30.0  # IMF-fixdate
    assert retry_after("Sunday, 01-Mar-26 12:00:30 GMT", now=NOW) == 30.0  # RFC 850, two-digit year
    assert retry_after("Sun Mar  1 12:00:30 2026", now=NOW) == 30.0  # asctime
    assert retry_after(email.utils.formatdate(NOW + 45, usegmt=True), now=NOW) == 45.0


def test_dates_in_the_past_are_zero_and_far_ones_clamped() -> None:
    assert retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=NOW) == 0.0
    # RFC 850: "94" would be more than 50 years ahead as 2094, so it is 1994
    assert retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now=NOW) == 0.0
    assert retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW) == RETRY_AFTER_MAX


@pytest.mark.parametrize("value", [
    "Sun, 31 Feb 2026 12:00:00 GMT",    # no such day
    "Sun, 01 Mar 2026 25:00:00 GMT",    # no such hour
    "Sun, 01 Mar 2026 12:00:30 +0000",  # an email date, not an HTTP one
    "sun, 01 mar 2026 12:00:30 gmt",    # the names are case-sensitive
    "Sun, 01 Mar \uff12\uff10\uff12\uff16 12:00:30 GMT",  # fullwidth digits again
    "Sun, 01 Mar 2026 12:00:30 GMT trailing",
])
def test_malformed_dates_are_none(value: str) -> None:
    assert retry_after(value, now=NOW) is None


@given(st.text(max_size=40))
def test_any_text_gives_none_or_a_delay_within_the_range(value: str) -> None:
    got = retry_after(value, now=NOW)
    assert got is None or 0.0 <= got <= RETRY_AFTER_MAX
