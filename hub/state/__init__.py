"""State kept where every collector sees it: named states per scope, and a notification ledger.

A `Store` holds, per scope (e.g. "health"), one small JSON-able state per name (e.g. per check), and
a ledger of transitions already announced: `claim(key)` is True for exactly one caller, ever (within
the ledger's retention), so a restarted or newly elected collector never announces a transition twice.

Three kinds, chosen once from the config by `open_store`:

- memory (the default): nothing survives the process, as before there was a store;
- file (`[state] dir`, one process): survives restarts, written atomically (temp file + rename);
- redis (`[cluster] redis_url`): shared by every replica, under the cluster's key prefix.

A store that cannot be reached raises `StoreUnavailable` (a readable reason, free of secrets); the
caller keeps what it could not write and tries again later, never announcing without a claim.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hub.secrets import Secrets, redact_url
from hub.state.base import LEDGER_TTL, MAX_LEDGER, Ledger, MemoryStore, Store, StoreUnavailable

if TYPE_CHECKING:
    from hub.config import Config

__all__ = ["LEDGER_TTL", "MAX_LEDGER", "Ledger", "MemoryStore", "Store", "StoreUnavailable", "open_store"]

log = logging.getLogger(__name__)


def open_store(config: Config, *, secrets: Secrets) -> Store:
    """The store for `config`: Redis when `[cluster] redis_url` is set, else a file in `[state] dir`
    when set, else memory. A `dir` that cannot be used raises ValueError naming `state.dir`."""
    if config.cluster.redis_url:
        from hub.state.redis_store import RedisStore

        log.info("state: health states and the notification ledger in Redis %s",
                 redact_url(config.cluster.redis_url))
        return RedisStore(config.cluster.redis_url, key_prefix=config.cluster.key_prefix, secrets=secrets)
    if config.state.dir:
        from hub.state.file_store import FileStore

        store = FileStore(config.state.dir)
        log.info("state: health states and the notification ledger in %s", store.path)
        return store
    log.info("state: kept in memory only ([state] dir is empty): a restart forgets health states")
    return MemoryStore()
