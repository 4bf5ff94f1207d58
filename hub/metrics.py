"""Self-metrics: a dedicated CollectorRegistry per app, exposed on /metrics."""

from __future__ import annotations

import asyncio
import sys

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from hub import __version__
from hub.business_export import BusinessExport
from hub.client import CloseReason
from hub.health_export import HealthUpExport

#: why a REST request was refused (hub_http_rejected_total); WebSocket upgrades count in hub_ws_rejected_total
HTTP_REJECT_REASONS = ("unauthorized", "auth_rate_limited", "topic_not_allowed", "forbidden", "busy")
#: why an audit record was not written (hub_audit_dropped_total)
AUDIT_DROP_REASONS = ("queue_full", "write_error", "closed", "limiter_full")
#: why a replica skipped a snapshot-stream entry (hub_cluster_rejected_entries_total), see hub.stream_check
STREAM_REJECT_REASONS = ("malformed", "seq_ahead", "unrecorded")


class HubMetrics:
    """Every metric the hub exports, registered in one private registry (tests stay isolated)."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("hub_ws_connections", "Open WebSocket connections.", registry=r)
        self.max_connections = Gauge("hub_ws_max_connections", "Configured server.max_connections.", registry=r)
        self.messages_sent = Counter("hub_ws_messages_sent_total",
                                     "WebSocket messages handed to client transports.", registry=r)
        self.disconnects = Counter("hub_ws_disconnects_total", "WebSocket disconnects by reason.",
                                   ["reason"], registry=r)
        self.rejected = Counter("hub_ws_rejected_total", "WebSocket upgrades refused before the handshake.",
                                ["reason"], registry=r)
        self.http_rejected = Counter("hub_http_rejected_total",
                                     "HTTP (non-WebSocket) requests refused: unauthorized, auth_rate_limited, "
                                     "topic_not_allowed, busy.", ["reason"], registry=r)
        for reason in HTTP_REJECT_REASONS:
            self.http_rejected.labels(reason)  # export zeros so rate() works from the start
        self.body_streams = Gauge("hub_http_body_streams",
                                  "Large REST bodies (over 64 KiB) being written now; at most 8.", registry=r)
        self.audit_dropped = Counter("hub_audit_dropped_total",
                                     "Audit records not written: queue_full, write_error, closed, limiter_full.",
                                     ["reason"], registry=r)
        for reason in AUDIT_DROP_REASONS:
            self.audit_dropped.labels(reason)
        self.broadcast_duration = Histogram(
            "hub_broadcast_duration_seconds", "Time to hand one snapshot to every client.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=r)
        self.frame_variants = Gauge(
            "hub_broadcast_frame_variants",
            "Distinct frames (topic set x window) assembled for the latest snapshot: at most 32 x 3.", registry=r)
        self.deflate_input_bytes = Gauge(
            "hub_broadcast_deflate_input_bytes",
            "Bytes compressed for the latest snapshot: its pieces once per window in use, so at most twice "
            "its size (windows 15 and 9), whatever topic sets and window sizes clients choose.", registry=r)
        self.collect_duration = Histogram(
            "hub_collect_duration_seconds", "Time one source took to collect.", ["source"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=r)
        self.collect_errors = Counter("hub_collect_errors_total", "Failed collections by source.",
                                      ["source"], registry=r)
        self.source_up = Gauge("hub_source_up", "1 when the source's last collection succeeded (ok or partial).",
                               ["source"], registry=r)
        self.source_failures = Gauge("hub_source_consecutive_failures",
                                     "Consecutive failed collections of the source.", ["source"], registry=r)
        self.ticks = Counter("hub_ticks_total", "Snapshots produced or received.", registry=r)
        self.seq = Gauge("hub_seq", "seq of the latest snapshot.", registry=r)
        self.tick_failures = Counter("hub_tick_failures_total",
                                     "Ticks that failed as a whole (no snapshot went out).", registry=r)
        self.history_bytes = Gauge("hub_history_bytes", "Encoded bytes of the snapshots kept in history.",
                                   registry=r)
        self.history_entries = Gauge("hub_history_entries", "Snapshots kept in history.", registry=r)
        self.cluster_redis_up = Gauge("hub_cluster_redis_up",
                                      "1 when Redis is reachable (cluster mode), -1 when not clustered.", registry=r)
        self.cluster_leader = Gauge("hub_cluster_leader", "1 when this replica holds the collector lease.",
                                    registry=r)
        self.cluster_rejected_entries = Counter(
            "hub_cluster_rejected_entries_total",
            "Snapshot-stream entries this replica skipped: malformed, seq_ahead (seq above the cluster's "
            "counter), unrecorded (not written by the publish script under the collector lease).",
            ["reason"], registry=r)
        for reason in STREAM_REJECT_REASONS:
            self.cluster_rejected_entries.labels(reason)
        self.info = Info("hub", "Hub build and runtime.", registry=r)
        self.business_buckets = Gauge("hub_business_buckets",
                                      "Closed hours the business source keeps as aggregates in memory.", registry=r)
        self.business_dirty_hours = Counter("hub_business_dirty_hours_total",
                                            "Closed hours marked for recomputation by a change or a reconcile.",
                                            registry=r)
        self.business_mode = Gauge("hub_business_mode",
                                   "1 for the business source's change detection mode (change_stream or reconcile).",
                                   ["mode"], registry=r)
        self.business_change_overflow = Counter(
            "hub_business_change_overflow_total",
            "Change-stream drains whose updated documents exceeded MAX_IDS (5000); every kept hour was "
            "recomputed instead, as after a delete.",
            registry=r)
        self.cluster_redis_up.set(-1)
        for reason in CloseReason:
            self.disconnects.labels(reason.value)  # export zeros so rate() works from the start
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        # Health checks and notifications (issue 15)
        #: follows the snapshots this replica serves (hub.health_export), not the checks it ran
        self.health_check_up = HealthUpExport(r)
        self.health_check_latency = Gauge(
            "hub_health_check_latency_seconds",
            "Duration of the check's last attempt, failed ones included (a timeout reads as the timeout).",
            ["check"], registry=r)
        # Booking anomalies (issue 24): like hub_health_check_up, from the snapshots this replica serves
        self.business_export = BusinessExport(r)
        self.notifications = Counter(
            "hub_notifications_total",
            "Notifications by channel and result: sent, retried (an attempt to be repeated), "
            "failed (given up), dropped (never attempted).",
            ["channel", "result"], registry=r)

    def set_info(self) -> None:
        """Record version, Python and event-loop implementation (uvloop or asyncio)."""
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        self.info.info({"version": __version__, "loop": loop,
                        "python": ".".join(map(str, sys.version_info[:3]))})
