"""The audit's one rule for fields: anything a client can influence is cut and escaped."""

from __future__ import annotations

from hub.audit import MAX_FIELD_CHARS, MAX_FIELD_ITEMS, field


def test_every_field_is_cut_and_escaped_whatever_its_type():
    assert field(None) is None and field(3) == 3 and field(True) is True and field(1.5) == 1.5
    assert field("ops") == "ops"
    assert field("a\nb") == "a\\nb"
    assert field("x" * 300) == "x" * (MAX_FIELD_CHARS - 1) + "…"
    assert field(ValueError("y" * 300)) == "y" * (MAX_FIELD_CHARS - 1) + "…"
    assert field(["s"] * 40) == ["s"] * MAX_FIELD_ITEMS + ["…"]
    assert field(("t\x00",)) == ["t\\x00"]
