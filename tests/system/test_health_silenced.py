"""A health check whose HubHealthCheckDown alert is silenced in a real Alertmanager (0.25) keeps the hub's
direct channel (a local https Slack receiver) quiet, like a muted check: its down message is held, and
goes out once when the silence ends while the check is still down."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hub.app import create_app
from tests.support.aio import wait_for
from tests.support.alertmanager import AlertmanagerServer, alertmanager_server  # noqa: F401
from tests.support.components import config
from tests.support.http_targets import Target, serve
from tests.support.slack import slack_receiver
from tests.support.timing import WAIT

DOWN = "Health check failed: {}: HTTP 503"
UP = "Health check recovered: {}"


async def test_a_silenced_checks_down_is_held_and_sent_once_the_silence_ends(
        aiohttp_client: Any, tmp_path: Path, alertmanager_server: AlertmanagerServer) -> None:  # noqa: F811
    am = alertmanager_server
    target = Target()
    async with serve(target.app) as url, slack_receiver() as slack:
        client = await aiohttp_client(create_app(config({
            "broadcast": {"interval": 0.3, "heartbeat": 30.0},
            "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                        "health": {"checks": {"backend": f"{url}/toggle", "frontend": f"{url}/toggle"},
                                   "timeout": 1.0, "failures_before_down": 1},
                        "alertmanager": {"enabled": True, "url": am.url}},
            "notify": {"slack_webhook_url": slack.url},
        })))

        async def snapshot() -> dict[str, Any]:
            """The latest snapshot ({} before the first tick)."""
            resp = await client.get("/api/metrics/snapshot")
            return await resp.json() if resp.status == 200 else {}

        # Set ahead of the outage (a planned deploy): no alert exists yet, the matchers decide.
        sid = await asyncio.to_thread(am.create_silence, {"alertname": "HubHealthCheckDown", "check": "backend"})
        await wait_for(lambda: _has_silence(snapshot(), sid), timeout=WAIT, what="the silence read by the hub")

        target.toggle_status = 503
        await wait_for(lambda: slack.delivered, timeout=WAIT, what="frontend's down message")
        down_seq = (await snapshot())["seq"]
        # Both checks went down in the same collection and were announced together: a message for
        # backend would have come with frontend's. Three more ticks to be sure it stays quiet.
        await wait_for(lambda: _seq_at_least(snapshot(), down_seq + 3), timeout=WAIT, what="three more ticks")
        assert (await snapshot())["data"]["health"]["details"] == {"backend": False, "frontend": False}
        assert slack.texts() == [DOWN.format("frontend")]

        await asyncio.to_thread(am.expire_silence, sid)
        await wait_for(lambda: len(slack.delivered) >= 2, timeout=WAIT, what="backend's down, once unsilenced")
        target.toggle_status = 200
        await wait_for(lambda: len(slack.delivered) >= 4, timeout=WAIT, what="both recoveries")
        last_seq = (await snapshot())["seq"]
        await wait_for(lambda: _seq_at_least(snapshot(), last_seq + 3), timeout=WAIT, what="three more ticks")

    texts = slack.texts()
    assert texts[:2] == [DOWN.format("frontend"), DOWN.format("backend")], texts
    assert sorted(t.split(" (")[0] for t in texts[2:]) == [UP.format("backend"), UP.format("frontend")], texts


async def _has_silence(snap: Any, sid: str) -> bool:
    return any(s["id"] == sid for s in ((await snap).get("data") or {}).get("silences") or [])


async def _seq_at_least(snap: Any, seq: int) -> bool:
    return bool((await snap)["seq"] >= seq)
