"""A throwaway private CA and a server certificate for localhost/127.0.0.1, made with the openssl CLI."""

from __future__ import annotations

import atexit
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import need_program


def make_private_ca(directory: Path) -> dict[str, Path]:
    """{"ca", "cert", "key"}: a CA certificate, and a server certificate and key signed by it."""
    openssl = need_program("openssl", hint="Debian/Ubuntu package 'openssl'")
    d = directory

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=hub test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                               "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                               "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def server_context(ca: dict[str, Path]) -> ssl.SSLContext:
    """A server-side TLS context presenting the certificate `make_private_ca` made."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(ca["cert"], ca["key"])
    return ctx


_SHARED: dict[str, Path] = {}


def shared_private_ca() -> dict[str, Path]:
    """One `make_private_ca` per test process (made on first use, removed at exit)."""
    if not _SHARED:
        d = Path(tempfile.mkdtemp(prefix="hub-test-ca-"))
        atexit.register(shutil.rmtree, d, True)
        _SHARED.update(make_private_ca(d))
    return _SHARED


@contextmanager
def trusted_server_context(ssl_context: ssl.SSLContext | None = None) -> Iterator[ssl.SSLContext]:
    """`ssl_context`, or one from the shared private CA, which SSL_CERT_FILE trusts until the block ends
    (a client made inside the block, as a notifier's is at start, reads it)."""
    if ssl_context is not None:
        yield ssl_context
        return
    ca = shared_private_ca()
    previous = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(ca["ca"])
    try:
        yield server_context(ca)
    finally:
        if previous is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = previous
