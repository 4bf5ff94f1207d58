"""CPU per tick of collecting from Prometheus: the hub's PrometheusSource against plain aiohttp.

    python -m bench.fanout.collect_cost [--ticks 50]

Explains the fan-out table's "idle CPU ms/tick" column: both clients fetch the same three
queries and the alerts from the benchmark's fake Prometheus, one tick at a time, each in a fresh
process (uvloop when installed), and the process' own user+system CPU time is divided by ticks.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
from typing import Any

from bench.fanout.run import FakePrometheus


def _cpu_ms() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return (ru.ru_utime + ru.ru_stime) * 1000.0


async def _ticks(kind: str, url: str, ticks: int) -> float:
    from hub.config import DEFAULT_QUERIES, build_config, secrets_of

    if kind == "PrometheusSource (httpx)":
        from hub.sources.prometheus import PrometheusSource

        config = build_config({"sources": {"prometheus": {"url": url}}})
        source = PrometheusSource(config.sources.prometheus, secrets=secrets_of(config))
        await source.start()

        async def tick() -> Any:
            result = await source.collect(source.timeout)
            assert result.error is None, result.error
            return result

        close = source.close
    else:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(DEFAULT_QUERIES) + 1))

        async def get(path: str, params: dict[str, str] | None) -> Any:
            async with session.get(url + path, params=params) as resp:
                return await resp.json()

        async def tick() -> Any:
            return await asyncio.gather(*(get("/api/v1/query", {"query": q}) for q in DEFAULT_QUERIES.values()),
                                        get("/api/v1/alerts", None))

        close = session.close
    await tick()  # connections open, code paths warm
    t0 = _cpu_ms()
    for _ in range(ticks):
        await tick()
        await asyncio.sleep(0.02)  # idle between ticks, as in the hub (keep-alive reuse)
    spent = (_cpu_ms() - t0) / ticks
    await close()
    return spent


def _child(kind: str, url: str, ticks: int, out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.send(asyncio.run(_ticks(kind, url, ticks)))


async def main_async(ticks: int) -> None:
    """Print CPU ms per tick for each client."""
    prom = FakePrometheus()
    await prom.start()
    try:
        ctx = multiprocessing.get_context("spawn")
        for kind in ("PrometheusSource (httpx)", "aiohttp.ClientSession"):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(kind, prom.url, ticks, send))
            proc.start()
            while not recv.poll():
                await asyncio.sleep(0.05)
                if not proc.is_alive() and not recv.poll():
                    raise SystemExit(f"{kind}: measuring process died ({proc.exitcode})")
            print(f"{kind}: {recv.recv():.2f} ms CPU per tick (3 queries + alerts, {ticks} ticks)")
            proc.join()
    finally:
        await prom.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.fanout.collect_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=50)
    args = ap.parse_args(argv)
    asyncio.run(main_async(args.ticks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
