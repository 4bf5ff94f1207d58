"""Alertmanager source: alerts with their silenced/inhibited state (`data.alerts`) and silences
(`data.silences`) from Alertmanager's API v2, and the calls that create and expire silences.

`api` speaks to Alertmanager (bounded, through the Prometheus source's fetch), `shape` checks its
answers, `source` collects them each tick.
"""

from hub.sources.alertmanager.api import AlertmanagerAPI, Refused, Unavailable
from hub.sources.alertmanager.source import AlertmanagerSource

__all__ = ["AlertmanagerAPI", "AlertmanagerSource", "Refused", "Unavailable"]
