"""The state store (memory, and a file in `[state] dir`) and health transitions announced once across restarts.

A "restart" here is a new HealthSource and a new FileStore on the same directory, each with its own
notifier, exactly what a new `hub serve` process builds; Slack is a local receiver.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.app import create_app
from hub.config import secrets_of
from hub.context import HUB
from hub.state import MemoryStore, Store, StoreUnavailable, open_store
from hub.state.file_store import FILE, FileStore
from tests.support.aio import wait_for
from tests.support.components import make_health_source, make_notifier
from tests.support.http_targets import Target, serve
from tests.support.slack import Receiver

DOWN = "Health check failed: backend: HTTP 503"
UP = "Health check recovered: backend"


@pytest.fixture
async def backend() -> AsyncIterator[tuple[Target, str]]:
    t = Target()
    async with serve(t.app) as url:
        yield t, f"{url}/toggle"


class Process:
    """What one hub process holds for health checks: its store, notifier and health source."""

    def __init__(self, store: Store, slack: Receiver, url: str) -> None:
        self.store = store
        self.notifier = make_notifier(slack.url, retry_initial=0.05)
        self.source = make_health_source({"backend": url}, timeout=1.0, failures_before_down=2,
                                   notifier=self.notifier, store=store)

    async def __aenter__(self) -> Process:
        await self.notifier.start()
        return self

    async def collect(self, n: int = 1) -> dict[str, Any]:
        for _ in range(n):
            res = await self.source.collect(2.0)
        return res.data["health"]["checks"]["backend"]

    async def __aexit__(self, *exc: object) -> None:
        await self.source.close()
        await self.notifier.close()  # delivers what it queued first: the next process starts after
        await self.store.close()


def kinds(slack: Receiver) -> list[str]:
    return ["down" if t.startswith(DOWN) else "up" if t.startswith(UP) else t for t in slack.texts()]


# ----------------------------------------------------------------------------- the stores


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_claim_is_true_once_and_states_round_trip(kind: str, tmp_path: Path) -> None:
    store: Store = MemoryStore() if kind == "memory" else FileStore(str(tmp_path / "state"))
    assert await store.claim("health:a:down:t1") is True
    assert await store.claim("health:a:down:t1") is False
    assert await store.claim("health:a:up:t1") is True
    await store.save("health", {"a": {"up": False, "n": 1}, "b": {"up": True}})
    await store.save("health", {"a": {"up": True, "n": 2}})  # the others are kept
    loaded = await store.load("health")
    assert loaded == {"a": {"up": True, "n": 2}, "b": {"up": True}}
    loaded["a"]["up"] = "changed"  # a copy
    assert (await store.load("health"))["a"]["up"] is True
    assert await store.load("other") == {}
    await store.close()


async def test_file_store_survives_a_restart_and_leaves_no_temp_files(tmp_path: Path) -> None:
    d = tmp_path / "state"
    s1 = FileStore(str(d))
    await s1.save("health", {"backend": {"up": False}})
    assert await s1.claim("k1")
    await s1.close()
    s2 = FileStore(str(d))
    assert await s2.load("health") == {"backend": {"up": False}}
    assert await s2.claim("k1") is False and await s2.claim("k2") is True
    await s2.close()
    assert sorted(p.name for p in d.iterdir()) == ["hub-state.json", "hub-state.lock"]


async def test_a_claim_counts_only_once_it_is_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(str(tmp_path))
    before = (tmp_path / FILE).read_bytes()

    def full_disk(*_a: Any) -> None:  # a mock: a full disk cannot be had on demand
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(StoreUnavailable, match="No space left on device"):
        await store.claim("k")
    assert (tmp_path / FILE).read_bytes() == before  # the old file, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".hub-state-")] == []
    monkeypatch.undo()
    assert await store.claim("k") is True  # the failed claim was not recorded
    await store.close()


async def test_the_ledger_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hub.state.base.MAX_LEDGER", 5)
    store = FileStore(str(tmp_path))
    for i in range(8):
        assert await store.claim(f"k{i}")
    await store.close()
    doc = orjson.loads((tmp_path / FILE).read_bytes())
    assert [k for k, _t in doc["ledger"]] == ["k3", "k4", "k5", "k6", "k7"]  # the oldest went first


async def test_a_state_dir_is_checked_at_start_and_used_by_one_process(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match=r"^state.dir: cannot use .*a-file/sub"):
        FileStore(str(tmp_path / "a-file" / "sub"))
    first = FileStore(str(tmp_path / "state"))
    with pytest.raises(ValueError, match=r"^state.dir: .* is in use by another hub process"):
        FileStore(str(tmp_path / "state"))
    await first.close()
    await FileStore(str(tmp_path / "state")).close()  # free again


async def test_an_unreadable_state_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / FILE).write_bytes(b"{not json")
    store = FileStore(str(tmp_path))
    assert await store.load("health") == {}
    assert (tmp_path / "hub-state.json.unreadable").read_bytes() == b"{not json"
    await store.close()


def test_the_store_follows_the_config(make_config: Callable[..., Any], tmp_path: Path) -> None:
    def store_for(cfg: Any) -> Any:
        return open_store(cfg, secrets=secrets_of(cfg))

    assert store_for(make_config()).kind == "memory"
    assert store_for(make_config({"state": {"dir": str(tmp_path)}})).kind == "file"
    clustered = make_config({"state": {"dir": str(tmp_path / "x")}, "cluster": {"redis_url": "redis://h:1/0"}})
    assert store_for(clustered).kind == "redis"  # Redis wins: every replica must see the states


def test_create_app_refuses_a_state_dir_it_cannot_use(make_config: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match=r"^state.dir: cannot use"):
        create_app(make_config({"state": {"dir": str(tmp_path / "a-file")}}))
    app = create_app(make_config({"state": {"dir": str(tmp_path / "ok")},
                                  "sources": {"health": {"enabled": True, "checks": {"a": "http://127.0.0.1:9/"}}}}))
    health = next(s for s in app[HUB].publisher.scheduler.sources if s.name == "health")
    assert health._states.store.kind == "file"


# ----------------------------------------------------------------------------- restarts


async def test_a_restart_during_an_outage_sends_no_second_down_message(
        tmp_path: Path, slack: Receiver, backend: tuple[Target, str]) -> None:
    target, url = backend
    d = str(tmp_path / "state")
    async with Process(FileStore(d), slack, url) as p1:
        await p1.collect()
        target.toggle_status = 503
        c = await p1.collect(2)
        assert c["up"] is False and c["failures"] == 2
    assert kinds(slack) == ["down"]
    async with Process(FileStore(d), slack, url) as p2:
        c = await p2.collect(3)  # a forgetful process would announce the outage at its 2nd failure
        assert (c["up"], c["failures"]) == (False, 5)  # the count continued too
        target.toggle_status = 200
        assert (await p2.collect())["up"] is True
        await wait_for(lambda: len(slack.delivered) >= 2, what="the recovery message")
    assert kinds(slack) == ["down", "up"]


async def test_a_recovery_while_nothing_ran_is_announced_exactly_once(
        tmp_path: Path, slack: Receiver, backend: tuple[Target, str]) -> None:
    target, url = backend
    d = str(tmp_path / "state")
    async with Process(FileStore(d), slack, url) as p1:
        target.toggle_status = 503
        await p1.collect(2)
    target.toggle_status = 200  # recovers while no hub runs
    async with Process(FileStore(d), slack, url) as p2:
        c = await p2.collect(2)
        assert c["up"] is True and c["failures"] == 0
    assert kinds(slack) == ["down", "up"]
    assert "(down for " in slack.texts()[1]
    async with Process(FileStore(d), slack, url) as p3:
        await p3.collect(2)
        target.toggle_status = 503  # a new outage: its message comes after any repeat would have
        await p3.collect(2)
    assert kinds(slack) == ["down", "up", "down"]


async def test_without_a_state_dir_a_restart_forgets_as_before(slack: Receiver, backend: tuple[Target, str]) -> None:
    # The default keeps nothing: the documented behaviour for a hub without [state] dir.
    target, url = backend
    target.toggle_status = 503
    for _ in range(2):
        async with Process(MemoryStore(), slack, url) as p:
            await p.collect(2)
    assert kinds(slack) == ["down", "down"]


class Flaky(Store):
    """A FileStore whose claims or saves fail while `fail` names them (a mock: an outage on demand)."""

    kind = "flaky"

    def __init__(self, inner: Store) -> None:
        self.inner, self.fail, self.calls = inner, set[str](), list[str]()

    async def load(self, scope: str) -> dict[str, dict[str, Any]]:
        self.calls.append("load")
        if "load" in self.fail:
            raise StoreUnavailable("Redis: ConnectionError: injected")
        return await self.inner.load(scope)

    async def save(self, scope: str, states: Any) -> None:
        self.calls.append("save")
        if "save" in self.fail:
            raise StoreUnavailable("Redis: ConnectionError: injected")
        await self.inner.save(scope, states)

    async def claim(self, key: str) -> bool:
        self.calls.append("claim")
        if "claim" in self.fail:
            raise StoreUnavailable("Redis: ConnectionError: injected")
        return await self.inner.claim(key)

    async def delete(self, scope: str, names: Any) -> int:
        self.calls.append("delete")
        if "delete" in self.fail:
            raise StoreUnavailable("Redis: ConnectionError: injected")
        return await self.inner.delete(scope, names)

    async def close(self) -> None:
        await self.inner.close()


async def test_an_unreachable_store_keeps_the_transition_pending_and_never_duplicates(
        tmp_path: Path, slack: Receiver, backend: tuple[Target, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hub.sources.health")
    target, url = backend
    store = Flaky(FileStore(str(tmp_path)))
    async with Process(store, slack, url) as p:
        await p.collect()
        target.toggle_status = 503
        store.fail = {"claim"}
        await p.collect(4)  # down at the 2nd; its claim fails at every collection
        assert p.notifier.pending == 0 and slack.attempts == []
        assert caplog.text.count("state store unavailable") == 1  # logged once, not per collection
        store.fail = set()
        await p.collect()  # the store is back: claimed and announced now
        await p.collect(2)
        target.toggle_status = 200
        await p.collect(2)
        await wait_for(lambda: len(slack.delivered) >= 2, what="the recovery message")
    assert kinds(slack) == ["down", "up"]
    assert caplog.text.count("state store reachable again") == 1


async def test_a_store_down_through_the_transition_announces_it_once_when_back(
        tmp_path: Path, slack: Receiver, backend: tuple[Target, str]) -> None:
    target, url = backend
    store = Flaky(FileStore(str(tmp_path)))
    async with Process(store, slack, url) as p:
        await p.collect()
        target.toggle_status = 503
        store.fail = {"load", "save", "claim"}  # as when Redis is down
        c = await p.collect(3)
        assert c["up"] is False and slack.attempts == []  # served from memory, announced to nobody
        store.fail = set()
        await p.collect(3)  # the stored state (up) is the truth: counted again from it, announced once
        target.toggle_status = 200
        await p.collect()
        await wait_for(lambda: len(slack.delivered) >= 2, what="the recovery message")
    assert kinds(slack) == ["down", "up"]


async def test_a_crash_between_claim_and_stored_state_sends_nothing_twice(
        tmp_path: Path, slack: Receiver, backend: tuple[Target, str]) -> None:
    target, url = backend
    d = str(tmp_path / "state")
    store = Flaky(FileStore(d))
    async with Process(store, slack, url) as p1:
        target.toggle_status = 503
        await p1.collect()
        claim = store.inner.claim

        async def claim_then_crash(key: str) -> bool:
            won = await claim(key)
            store.fail = {"save"}  # nothing after the claim reaches the store, as if the process died
            return won

        store.inner.claim = claim_then_crash  # type: ignore[method-assign]
        await p1.collect()
        await wait_for(lambda: slack.delivered, what="the down message")
    stored = orjson.loads((Path(d) / FILE).read_bytes())["scopes"]["health"]["backend"]
    assert stored["up"] is False and [p["kind"] for p in stored["pending"]] == ["down"]
    async with Process(FileStore(d), slack, url) as p2:
        await p2.collect(2)  # finds the down pending; the ledger says it was announced: no message
        assert p2.notifier.pending == 0
        target.toggle_status = 200
        await p2.collect()
        await wait_for(lambda: len(slack.delivered) >= 2, what="the recovery message")
    assert kinds(slack) == ["down", "up"]
