"""Shared fixtures; the helpers themselves live in tests/support."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hub.config import Config, build_config
from tests.support.aio import TEST_BASE, merge


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """make_config({"server": {...}}) -> a validated Config with fast ticks and external sources off."""

    def make(over: dict[str, Any] | None = None) -> Config:
        return build_config(merge(TEST_BASE, over or {}), environ={})

    return make


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the random order's seed even under -q (pytest-randomly's own line is in the quiet header)."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None:
        terminalreporter.write_line(f"tests ran in random order: repeat it with --randomly-seed={seed}")
