"""Command line: `hub serve`, `hub check-config`, `hub doctor`, `hub token new`, `hub demo`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hub import __version__

if TYPE_CHECKING:
    from hub.config import Config

# Imports beyond the standard library's smallest modules happen inside the commands: `hub serve`
# takes its signals over first, so that a SIGTERM during start-up is never fatal.

log = logging.getLogger("hub")

EXIT_CONFIG = 2


def _setup_logging() -> None:
    level = os.environ.get("HUB_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiohttp's access log records full request lines; keep it, but at WARNING by default
    # so a wall of dashboards does not flood the log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # httpx logs every request at INFO: four lines per tick per replica, and measurable CPU.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _remember_signals() -> list[int]:
    """From here until `hub serve`'s event loop takes them over, SIGTERM, SIGINT and SIGHUP are only
    remembered (the default action would kill the hub: -15, or -1 for SIGHUP)."""
    received: list[int] = []

    def remember(signum: int, frame: object) -> None:
        received.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, remember)
    return received


def _load(path: str | None, *, host: str | None = None, port: int | None = None) -> Config:
    """The config file plus environment, then --host/--port, all validated alike; exit 2 naming the key."""
    from hub.config import ConfigError, load_config, with_overrides

    try:
        cfg = load_config(path)
        overrides = {k: v for k, v in (("server.host", host), ("server.port", port)) if v is not None}
        if overrides:
            cfg = with_overrides(cfg, overrides, labels={"server.host": "--host", "server.port": "--port"})
        return cfg
    except ConfigError as exc:
        print(f"hub: config error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _install_uvloop() -> None:
    import asyncio

    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # absent on some platforms
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the hub until SIGTERM/SIGINT."""
    from hub.app import create_app
    from hub.serve import BindError, bind, run

    cfg = _load(args.config, host=args.host, port=args.port)
    try:
        app = create_app(cfg, role=args.role)
        sock = bind(cfg.server.host, cfg.server.port)
    except (ValueError, BindError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _install_uvloop()
    run(app, cfg, sock, role=args.role, early=getattr(args, "signals", None))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print the effective config with secrets redacted, or what is wrong (exit 2)."""
    from hub.config import redacted_dict

    cfg = _load(args.config)
    print(json.dumps(redacted_dict(cfg), indent=2))
    for tok in cfg.auth.tokens:
        if not tok.hash.startswith("sha256:"):
            print(f"warning: auth token {tok.name!r} is stored in plaintext; "
                  f"use `hub token new {tok.name}` and store its sha256 hash", file=sys.stderr)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check the live dependencies (MongoDB index) for the config."""
    import asyncio

    from hub.doctor import run_doctor

    cfg = _load(args.config)
    return asyncio.run(run_doctor(cfg, out=sys.stdout))


def cmd_token(args: argparse.Namespace) -> int:
    """Print a fresh token and the config line holding its hash."""
    from hub.auth import hash_token, new_token

    token = new_token()
    print(f"token: {token}")
    print("add to config.toml [auth] tokens:")
    print(f'  {{name = "{args.name}", hash = "{hash_token(token)}"}},')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the hub with a simulated healthcare backend, MongoDB-wire store and (if installed) Prometheus."""
    try:
        from hub_demo.demo import run_demo
    except ImportError as exc:  # the demo ships beside the product package, with the `demo` extra
        print(f"hub demo: the demo is not installed ({exc}); install it with: pip install 'hub[demo]'",
              file=sys.stderr)
        return 1
    _install_uvloop()  # `make run` is the demo: it runs on the same loop as `hub serve`
    return run_demo(host=args.host, port=args.port, interval=args.interval)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `hub`."""
    parser = argparse.ArgumentParser(prog="hub", description="Real-time WebSocket monitoring hub")
    parser.add_argument("--version", action="version", version=f"hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    help_config = "config file (default: $HUB_CONFIG or ./config.toml)"

    p = sub.add_parser("serve", help="run the hub")
    p.add_argument("--config", help=help_config)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--role", choices=("all", "edge"), default="all",
                   help="cluster role: 'all' may collect, 'edge' only fans out (default: all)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="validate and print the effective config")
    p.add_argument("--config", help=help_config)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("doctor", help="check MongoDB reachability and the recommended index")
    p.add_argument("--config", help=help_config)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("token", help="manage access tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("new", help="print a new token and its config line")
    t.add_argument("name")
    t.set_defaults(func=cmd_token)

    p = sub.add_parser("demo", help="run the hub with simulated data (what `make run` starts)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--interval", type=float, default=2.0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hub` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        args.signals = _remember_signals()  # before anything slow: imports, config, create_app
    _setup_logging()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
