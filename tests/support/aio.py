"""Helpers for in-process tests: test configs, waiting on messages and conditions, reading metrics."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `over` into a copy of `base`."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


TEST_BASE: dict[str, Any] = {
    "broadcast": {"interval": 0.2, "heartbeat": 5.0},
    "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}, "health": {"enabled": False}},
}


async def recv_json(ws: aiohttp.ClientWebSocketResponse, *, timeout: float = 5.0) -> dict[str, Any]:
    """The next text message as JSON; fails on close or after `timeout` seconds."""
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected text, got {msg.type} {msg.data!r} {msg.extra!r}"
    return orjson.loads(msg.data)


async def recv_type(ws: aiohttp.ClientWebSocketResponse, kind: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """Skip messages until one of `type` == kind arrives."""
    async with asyncio.timeout(timeout):
        while True:
            m = await recv_json(ws, timeout=timeout)
            if m.get("type") == kind:
                return m


async def wait_for(pred: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02,
                   what: str = "condition") -> Any:
    """Poll `pred` (sync or async) until truthy, returning its value; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def sample(metrics: Any, name: str, **labels: str) -> float:
    """A metric's current value read through its registry (0.0 when the series does not exist yet)."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
