"""safe_text: every dependency's error text reaches logs and clients as one short printable line."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from hub.vocab import safe_text


def test_newlines_and_escapes_are_visible_not_live() -> None:
    forged = "bad_data: oops\n2024-01-01 ERROR hub: forged line\r\x1b[31mred\x00"
    out = safe_text(forged)
    assert out == "bad_data: oops\\n2024-01-01 ERROR hub: forged line\\r\\x1b[31mred\\x00"
    assert safe_text("tab\there \u2028 \u202e evil \ufeff") == "tab\\there \\u2028 \\u202e evil \\ufeff"
    assert safe_text("tag \U000e0001") == "tag \\U000e0001"


def test_long_text_is_cut_with_an_ellipsis() -> None:
    assert safe_text("x" * 300) == "x" * 300
    out = safe_text("x" * 3_000_000)
    assert out == "x" * 299 + "…" and len(out) == 300
    assert safe_text("abcdef", limit=4) == "abc…"
    # escaping happens before the cut: the result never exceeds the limit
    assert len(safe_text("\n" * 500, limit=10)) == 10


def test_lone_surrogates_become_encodable() -> None:
    out = safe_text("half a pair: \ud800")
    assert out == "half a pair: \\ud800"
    orjson.dumps(out)  # would raise "str is not valid UTF-8: surrogates not allowed"


@given(st.text(), st.integers(min_value=1, max_value=400))
def test_always_one_short_printable_line(text: str, limit: int) -> None:
    out = safe_text(text, limit=limit)
    assert len(out) <= limit
    assert "\n" not in out and "\r" not in out
    assert all(c.isprintable() or c == " " for c in out), repr(out)
    orjson.dumps(out)
