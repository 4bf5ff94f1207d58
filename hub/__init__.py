"""hub: a real-time WebSocket monitoring hub (aiohttp)."""

from __future__ import annotations

__version__ = "0.1.0"
