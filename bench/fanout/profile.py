"""Profile the hub's fan-out: the benchmark's hub, fake Prometheus and load clients, with py-spy attached.

    python -m bench.fanout.profile [--clients 3000] [--seconds 30] [--interval 1.0] [--out FILE]

Starts the hub as `bench.fanout.run` does, connects N clients, then records the hub process with
`py-spy record --native --format raw` (collapsed stacks, one line per stack) and prints the
functions with the most samples, inclusive and own. Needs py-spy on PATH or next to this Python.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import tempfile
from pathlib import Path

from bench.fanout.run import FANOUT_DIR, REPO, FakePrometheus, LoadClients, ensure_node_deps, raise_nofile, start_server


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return found


def summarise(raw: str, top: int = 25, within: str = "") -> str:
    """Inclusive and own sample shares per function from py-spy's collapsed stacks: the event loop's
    thread only, on CPU (not waiting in epoll), and only stacks through `within` when given."""
    incl: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "run_forever" not in stack:
            continue  # worker threads: mostly idle waits
        frames = [f.split(" (")[0] for f in stack.split(";")]
        if frames[-1] in ("epoll_pwait", "epoll_wait") or (within and within not in frames):
            continue
        n = int(count)
        total += n
        for f in set(frames):
            incl[f] += n
        own[frames[-1]] += n
    out = [f"{total} samples on the loop's thread" + (f" through {within}" if within else "")]
    for title, counter in (("inclusive", incl), ("own", own)):
        out.append(f"\n{title}:")
        out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in counter.most_common(top)]
    return "\n".join(out)


async def profile(n: int, seconds: float, interval: float, out: Path, rate: int) -> str:
    raise_nofile()
    ensure_node_deps(FANOUT_DIR)
    prom = FakePrometheus()
    await prom.start()
    with tempfile.TemporaryDirectory(prefix="hub-profile-") as tmp:
        workdir = Path(tmp)
        payload_file = workdir / "payload.json"
        payload_file.write_text("{}")
        server = await start_server("hub", workdir=workdir, interval=interval, prometheus_url=prom.url,
                                    payload_file=payload_file, python=sys.executable, hub_root=REPO)
        clients = LoadClients(server.ws_url, n, procs=2, concurrency=50)
        try:
            await clients.start(timeout=120 + n / 50)
            await asyncio.sleep(2 * interval)
            spy = await asyncio.create_subprocess_exec(
                py_spy(), "record", "--native", "--format", "raw", "--rate", str(rate), "--duration",
                str(int(seconds)), "--pid", str(server.pid), "--output", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await spy.communicate()
            if spy.returncode:
                raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
        finally:
            await server.stop()
            await clients.stop()
            await prom.stop()
    raw = out.read_text()
    return summarise(raw) + "\n\n" + summarise(raw, within="Broadcaster._fan_out")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout.profile", description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=Path("bench/results/profile.txt"))
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(asyncio.run(profile(args.clients, args.seconds, args.interval, args.out, args.rate)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
