"""The cluster follower benchmark (`python -m bench.fleet_cluster`), one tiny run end to end.

No timing is asserted: numbers come only from the benchmark. The tiny run checks that every figure
is measured: three hubs tick, the stream entry is this version's format with its index, and both
ways of reading it were timed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bench import fleet_cluster
from bench.fleetkit.hub import REPO
from tests.support import need_program

pytestmark = [pytest.mark.timeout(120), pytest.mark.untimed]


async def test_tiny_cluster_run_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    need_program("redis-server")
    args = argparse.Namespace(series=40, interval=0.3, ticks=2, repeat=2, reference=Path(REPO), python=sys.executable)
    results = await fleet_cluster.run(args)
    table = capsys.readouterr().out
    assert set(results) == {"this", "reference"}
    for res in results.values():
        assert res["format"] == "2" and 0 < res["index"] < res["data"]
        assert set(res["cpu"]) == {"single", "collector", "follower"} and min(res["cpu"].values()) >= 0
        assert all(len(windows) == 2 for windows in res["all"].values())
        assert set(res["reads"]) == {"format 1 (parse, encode pieces)", "format 2 (slice, compare)"}
    assert "| this | 2 |" in table and "| reference | 2 |" in table and "40 series per query" in table
