"""httpcore's per-request `import sniffio` costs no path search once the hub recorded its absence."""

from __future__ import annotations

import importlib.machinery
import sys
from unittest import mock

import pytest
from httpcore._synchronization import current_async_library

import hub.sources  # noqa: F401  (records sniffio's absence at import)
from hub.sources.sniffio_absent import cache_missing_sniffio


def test_a_missing_sniffio_is_never_searched_for_again() -> None:
    if sys.modules.get("sniffio") is not None:
        pytest.skip("sniffio is installed here: httpcore imports it once and the cache is not needed")
    assert "sniffio" in sys.modules and sys.modules["sniffio"] is None
    assert cache_missing_sniffio() is False  # already recorded: nothing to do
    with mock.patch.object(importlib.machinery.PathFinder, "find_spec",
                           side_effect=AssertionError("sys.path searched for sniffio")):
        assert current_async_library() == "asyncio"
