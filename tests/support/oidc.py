"""A real OpenID provider for tests: the npm package `oidc-provider` run by Node (tests/support/oidc/).

Its development login screen signs in any login name with any password; `USERS` gives the logins
the tests use their name, email and groups. Its signing key is generated here (joserfc), so tests
can forge ID tokens signed with the provider's own key (wrong audience, expired) as well as with
a stranger's. `npm ci` runs on first use when node_modules is missing (the lock file has no
registry URLs: see .npmrc). Start one per module: `start_provider(tmp, redirect_uris=[...])`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

from bench.fanout.run import npm_ci_once
from tests.support import end_process, free_port, log_tail, need_program

HERE = Path(__file__).parent / "oidc"
CLIENT_ID = "hub-test"
CLIENT_SECRET = "hub-test-secret-5f0c2a7e9b"
READY_TIMEOUT = 20.0
#: login -> claims; any other login signs in too, in no group
USERS: dict[str, dict[str, Any]] = {
    "alice": {"name": "Alice Oncall", "email": "alice@example.org", "groups": ["oncall"]},
    "sam": {"name": "Sam Systems", "email": "sam@example.org", "groups": ["sysviewers", "unmapped"]},
    "nora": {"name": "Nora Nogroup", "email": "nora@example.org", "groups": ["elsewhere"]},
}


def npm_ci() -> None:
    """Install the provider's pinned packages (once per clone; one process at a time)."""
    marker = HERE / "node_modules" / "oidc-provider"
    if marker.is_dir():
        return
    npm_ci_once(need_program("npm", hint="installs the test provider's pinned oidc-provider package"), HERE, marker)


class OidcProvider:
    """One oidc-provider process on a fixed port; `stop()` then `start()` brings it back with the same key."""

    def __init__(self, node: str, workdir: Path, *, redirect_uris: list[str], post_logout_uris: list[str]) -> None:
        self.node = node
        self.workdir = workdir
        self.port = free_port()
        self.key = RSAKey.generate_key(2048, parameters={"kid": "provider-key-1", "use": "sig", "alg": "RS256"})
        self.redirect_uris = redirect_uris
        self.post_logout_uris = post_logout_uris
        self.log_path = workdir / "oidc-provider.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = READY_TIMEOUT) -> OidcProvider:
        """Start Node and wait until discovery answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OIDC_PORT": str(self.port), "OIDC_ISSUER": self.issuer, "OIDC_CLIENT_ID": CLIENT_ID,
               "OIDC_CLIENT_SECRET": CLIENT_SECRET, "OIDC_REDIRECT_URIS": json.dumps(self.redirect_uris),
               "OIDC_POST_LOGOUT_URIS": json.dumps(self.post_logout_uris),
               "OIDC_JWKS": json.dumps({"keys": [self.key.as_dict(private=True)]}),
               "OIDC_USERS": json.dumps(USERS), "NODE_ENV": "test"}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen([self.node, str(HERE / "provider.js")], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=HERE, env=env)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited with {self.proc.returncode}:\n{log_tail(self.log_path, 30)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"oidc-provider not ready after {timeout} s:\n{log_tail(self.log_path, 30)}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.issuer + "/.well-known/openid-configuration", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def tamper(self, mode: str) -> None:
        """From now on the token endpoint hands out ID tokens forged or altered in way `mode` ("audience",
        "expired", "nonce", "issuer", "kid", "none", "altered"; "" for genuine ones): see provider.js."""
        req = urllib.request.Request(f"{self.issuer}/__test/tamper?mode={mode}", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 204, resp.status

    def id_token_ttl(self, seconds: int) -> None:
        """From now on ID tokens live `seconds` (3600 by default)."""
        req = urllib.request.Request(f"{self.issuer}/__test/ttl?id_token={seconds}", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 204, resp.status

    def stop(self) -> None:
        """End the provider and wait until it is gone."""
        end_process(self.proc)
        self.proc = None


def start_provider(workdir: Path, *, redirect_uris: list[str], post_logout_uris: Sequence[str] = ()) -> OidcProvider:
    """A started provider (skips, or fails under HUB_REQUIRE_SERVICES=1, without node)."""
    node = need_program("node", hint="Debian/Ubuntu package 'nodejs'")
    npm_ci()
    return OidcProvider(node, workdir, redirect_uris=redirect_uris, post_logout_uris=list(post_logout_uris)).start()
