"""Background tasks: started in a context of their own, and stopped by cancelling and awaiting them."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Run `coro` as a task in a fresh contextvars.Context: no caller's deadline or other contextvar leaks in."""
    # create_task copies the caller's context by default. A pymongo.timeout() the caller is inside
    # would then bound the task too, and the task's own pymongo.timeout() can only shorten that
    # deadline, never extend it. Work that outlives or is shared beyond its caller must not inherit it.
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and return once every one has finished; their results and errors are discarded."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        # return_exceptions: a task's CancelledError or error is its outcome here, not ours; awaiting
        # them all means none is left pending ("Task was destroyed but it is pending") at loop close.
        await asyncio.gather(*tasks, return_exceptions=True)


def honour_cancel() -> None:
    """Raise CancelledError if the current task was cancelled and the cancellation got lost on the way.

    A library can swallow a cancellation that lands inside it (redis-py's commands then return or fail
    as if nothing happened: redis/redis-py#2028, #2551). A loop that went on would never end, nor would
    the shutdown waiting for it: long-lived loops call this once per round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
