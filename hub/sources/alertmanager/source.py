"""AlertmanagerSource: `data.alerts` and `data.silences` from Alertmanager, each tick, within its budget."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hub.config import AlertmanagerSourceConfig
from hub.secrets import Secrets
from hub.sources.alertmanager.api import AlertmanagerAPI, Refused, Unavailable
from hub.sources.alertmanager.shape import shape_alerts, shape_silences
from hub.sources.base import Source, SourceError, SourceResult
from hub.sources.health_silences import AlertSilences
from hub.sources.prometheus.shape import BadAnswer
from hub.tasks import cancel_and_wait
from hub.vocab import safe_text

Shaper = Callable[[Any], tuple[list[dict[str, Any]], list[str]]]


class AlertmanagerSource(Source):
    """Reads /api/v2/alerts and /api/v2/silences concurrently; `api` also serves /api/silences."""

    name = "alertmanager"
    sections = ("alerts", "silences")

    def __init__(self, cfg: AlertmanagerSourceConfig, *, secrets: Secrets,
                 health_silences: AlertSilences | None = None) -> None:
        self.timeout = cfg.timeout
        self.api = AlertmanagerAPI(cfg, secrets=secrets)
        #: told what each read found, so silenced health checks' direct messages are held
        self._health_silences = health_silences

    async def start(self) -> None:
        await self.api.start()

    async def close(self) -> None:
        await self.api.close()

    async def collect(self, budget: float) -> SourceResult:
        """Both lists; one that fails is null and named in `error` (partial), both failing is an error."""
        parts = {"alerts": (self.api.alerts, shape_alerts), "silences": (self.api.silences, shape_silences)}
        tasks = {name: asyncio.create_task(self._one(call, shape), name=f"hub-alertmanager-{name}")
                 for name, (call, shape) in parts.items()}
        try:
            _done, pending = await asyncio.wait(tasks.values(), timeout=budget)
        finally:
            await cancel_and_wait(list(tasks.values()))  # none outlives this call, even when cancelled
        late = f"no answer from Alertmanager at {self.api.safe_url} within the {budget:g} s budget"
        data: dict[str, Any] = {}
        errors: dict[str, str] = {}
        warnings: list[str] = []
        for name, task in tasks.items():
            outcome = late if task in pending else task.result()
            if isinstance(outcome, str):
                data[name] = None
                errors[name] = outcome
            else:
                data[name], warns = outcome
                warnings += [f"{name}: {w}" for w in warns]
        if self._health_silences is not None:
            self._health_silences.observe(data.get("alerts"), data.get("silences"))
        if len(errors) == len(tasks):
            messages = set(errors.values())
            raise SourceError(messages.pop() if len(messages) == 1
                              else "; ".join(f"{n} failed: {m}" for n, m in errors.items()))
        return SourceResult(data=data, error="; ".join(f"{n} failed: {m}" for n, m in errors.items()) or None,
                            warnings=tuple(warnings))

    async def _one(self, call: Callable[[], Awaitable[Any]],
                   shape: Shaper) -> tuple[list[dict[str, Any]], list[str]] | str:
        """The shaped list, or why it could not be had (a readable, capped message)."""
        try:
            return shape(await call())
        except (Unavailable, Refused) as exc:
            return str(exc)
        except BadAnswer as exc:
            return safe_text(f"answer from Alertmanager at {self.api.safe_url}: {exc}")
