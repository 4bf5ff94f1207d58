"""The MongoDB client side of the business source: options, deadlines and readable, secret-free errors."""

from __future__ import annotations

import math
from typing import Any

from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from hub.secrets import Secrets

DEFAULT_DATABASE = "healthcare"


def client_options(timeout: float) -> dict[str, Any]:
    """AsyncMongoClient options derived from the source timeout (never the driver's 30 s defaults)."""
    ms = max(1, int(timeout * 1000))
    return {
        "serverSelectionTimeoutMS": ms,
        "timeoutMS": ms,  # client-side operation timeout: also sets maxTimeMS on the server
        "connectTimeoutMS": ms,
        "appname": "hub",
        "retryReads": True,
    }


def _cause(exc: BaseException) -> str:
    """The driver's message without its timeout settings and topology dump, and without a leading "host:port: "."""
    # The driver's text is "<host>: <cause> (configured timeouts: ...), Timeout: ..., Topology Description: ..."
    text = str(exc).split(", Timeout:", 1)[0].split(" (configured timeouts", 1)[0]
    head, sep, rest = text.partition(": ")
    if sep and " " not in head and ":" in head:
        text = rest
    return text


# PyMongo re-checks a pending server selection every 0.5 s (minHeartbeatFrequencyMS), so with the
# server down its timeout fires on that grid: 1.2 s really means 1.5 s.
SELECTION_STEP = 0.5


def driver_deadline(budget: float) -> float:
    """Seconds the driver may spend on one tick's operations: 90% of the scheduler's `budget`, on the
    driver's 0.5 s server-selection grid, so the driver's own reason arrives before the scheduler cancels."""
    usable = 0.9 * budget
    stepped = math.floor(usable / SELECTION_STEP) * SELECTION_STEP
    return round(stepped if stepped >= SELECTION_STEP else max(0.05, usable), 3)




def describe_error(exc: BaseException, *, uri: str, timeout: float, secrets: Secrets) -> str:
    """A short, readable, secret-free reason for a driver error (the URI shown as the registry redacts it)."""
    where = secrets.redact_url(uri)
    if isinstance(exc, ServerSelectionTimeoutError):
        reason = f"MongoDB not reachable at {where} within {timeout:g}s: {_cause(exc)}"
    elif isinstance(exc, (ExecutionTimeout, NetworkTimeout, WTimeoutError)):
        reason = f"MongoDB query timed out after {timeout:g}s ({where})"
    elif isinstance(exc, OperationFailure):
        details = exc.details or {}
        msg = str(details.get("errmsg") or str(exc).split(", full error:", 1)[0])
        if exc.code == 18:
            reason = f"MongoDB authentication failed at {where}: check the user and password in mongodb_uri"
        elif exc.code == 13:
            reason = f"MongoDB refused the query (not authorized): {msg}"
        elif exc.code == 50:
            reason = f"MongoDB query timed out after {timeout:g}s ({where})"
        else:
            reason = f"MongoDB error {exc.code}: {msg}"
    elif isinstance(exc, ConnectionFailure):
        reason = f"lost connection to MongoDB at {where}: {_cause(exc)}"
    else:
        reason = f"MongoDB error: {type(exc).__name__}: {exc}"
    return secrets.clean(reason)
