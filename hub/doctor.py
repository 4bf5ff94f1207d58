"""`hub doctor`: checks sign-in (the identity provider's discovery, JWKS and the redirect URL), the
MongoDB connection, the index the business query needs and which change detection mode the business
source gets, read-only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from hub.config import Config, secrets_of
from hub.secrets import redact_url
from hub.sources.business import (
    DEFAULT_DATABASE,
    client_options,
    describe_error,
)
from hub.sources.business.changes import probe

# Built-in roles that can write; the hub needs only `read` on the appointments database.
WRITE_ROLES = frozenset({
    "readWrite", "readWriteAnyDatabase", "dbOwner", "dbAdmin", "dbAdminAnyDatabase", "userAdmin",
    "userAdminAnyDatabase", "clusterAdmin", "root", "__system", "restore",
})


class _Writer(Protocol):
    def write(self, text: str, /) -> Any: ...


def _index_serves(key: Mapping[str, Any], field: str) -> bool:
    """True when an index key pattern can serve a range on `field` (it is the index's first key)."""
    first = next(iter(key.items()), None)
    return first is not None and first[0] == field and first[1] in (1, -1, 1.0, -1.0)


def index_command(collection: str, field: str) -> str:
    """The mongosh command that creates the recommended index."""
    return f"db.{collection}.createIndex({{{field}: 1}})"


async def run_doctor(cfg: Config, *, out: _Writer) -> int:
    """Report sign-in ([auth.oidc]: discovery, JWKS, redirect URL) and MongoDB (reachability, the user's
    roles and the created-at index); 0 ok, 1 when either has a problem."""

    def say(line: str) -> None:
        out.write(line + "\n")

    status = 0
    if cfg.auth.oidc.issuer:
        from hub.oidc.probe import check

        status = await check(cfg.auth.oidc, secrets=secrets_of(cfg), say=say)
    return max(status, await _business(cfg, say))


async def _business(cfg: Config, say: Callable[[str], None]) -> int:
    bz = cfg.sources.business
    secrets = secrets_of(cfg)
    if not bz.enabled:
        say("business source: disabled (sources.business.enabled = false); nothing to check")
        return 0
    field = bz.fields.created_at
    say(f"MongoDB: {redact_url(bz.mongodb_uri)} (timeout {bz.timeout:g}s)")
    client: AsyncMongoClient[dict[str, Any]] | None = None
    try:
        client = AsyncMongoClient(bz.mongodb_uri, **client_options(bz.timeout))
        db = client.get_default_database(DEFAULT_DATABASE)
        info = await client.server_info()
        say(f"  reachable: yes (server version {info.get('version', '?')})")
        say(f"  database: {db.name}, collection: {bz.collection}")
        await _report_roles(db, say)
        coll = db[bz.collection]
        try:
            count = await coll.estimated_document_count()  # collection metadata; reads no documents
            say(f"  documents (estimated): {count}")
        except PyMongoError:
            pass  # informative only
        indexes = [ix async for ix in await coll.list_indexes()]
        refused = await probe(coll, bz.fields)  # opens a change stream and closes it at once
        reconcile = bz.reconcile_interval
        if refused is None:
            say("  change detection: change_stream (the server supports change streams; a change shows by "
                f"the next tick, a delete within reconcile_interval = {reconcile:g}s)")
        else:
            say(f"  change detection: reconcile ({refused}; closed hours are recomputed in the background, "
                f"every change shows within reconcile_interval = {reconcile:g}s)")
    except PyMongoError as exc:
        say("  reachable: NO - " + describe_error(exc, uri=bz.mongodb_uri, timeout=bz.timeout, secrets=secrets))
        return 1
    finally:
        if client is not None:
            await client.close()
    serving = [ix.get("name", "?") for ix in indexes if _index_serves(ix.get("key") or {}, field)]
    if serving:
        say(f"  index on {field}: yes ({', '.join(serving)})")
        say("OK")
        return 0
    say(f"  index on {field}: MISSING - every tick scans the whole collection")
    say(f"  recommended (mongosh, as a user allowed to create indexes): {index_command(bz.collection, field)}")
    return 1


async def _report_roles(db: Any, say: Callable[[str], None]) -> None:
    """Print the authenticated user and roles; warn when a role can write."""
    try:
        status = await db.command("connectionStatus")
    except PyMongoError:
        return  # older servers or restricted users: not worth failing the check
    auth = status.get("authInfo") or {}
    users = auth.get("authenticatedUsers") or []
    roles = auth.get("authenticatedUserRoles") or []
    if not users:
        say("  user: none (no authentication; in production use a read-only user, see docs/mongodb.md)")
        return
    names = ", ".join(f"{u.get('user')}@{u.get('db')}" for u in users)
    role_names = sorted({r.get("role", "?") for r in roles})
    say(f"  user: {names}; roles: {', '.join(role_names) or 'none'}")
    writable = sorted(set(role_names) & WRITE_ROLES)
    if writable:
        say(f"  warning: roles {', '.join(writable)} allow writes; the hub only reads - grant it just `read`")
