"""Background tasks that own their context: nothing a caller set (a `pymongo.timeout` deadline, any
contextvar) leaks into work that outlives, or is shared beyond, the caller that started it."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Start `coro` as a task in a fresh, empty context: no caller's deadline or contextvar leaks in."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
