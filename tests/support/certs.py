"""Server certificates with a chosen lifetime (about to expire, or expired), signed by a throwaway CA.

Made with the openssl CLI like `tests.support.tls` (the `cryptography` package is not a dependency):
`-days -1` gives a certificate whose notAfter precedes its notBefore, i.e. expired from the start.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

from tests.support import need_program


def _run(d: Path, *args: str) -> None:
    openssl = need_program("openssl", hint="Debian/Ubuntu package 'openssl'")
    subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)


def make_ca(d: Path) -> Path:
    """A CA valid 60 days in `d` (ca.pem, ca.key); its certificate's path (for `sources.health.ca_file`)."""
    _run(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
         "-days", "60", "-subj", "/CN=hub test CA")
    return d / "ca.pem"


def server_cert(d: Path, name: str, *, days: int) -> ssl.SSLContext:
    """A server context for localhost/127.0.0.1 whose certificate, signed by `make_ca(d)`'s CA, is valid
    `days` days from now (-1: expired)."""
    _run(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
         "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                               "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _run(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", f"{name}.pem", "-days", str(days), "-extfile", "ext.cnf")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / f"{name}.pem", d / f"{name}.key")
    return ctx
