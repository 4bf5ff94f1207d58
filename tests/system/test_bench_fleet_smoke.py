"""The large-fleet benchmark's machinery: its fake fleet, its wire counter, and one tiny run end to end.

No timing is asserted: numbers come only from `python -m bench.fleet`. The tiny run checks that
every figure is measured and consistent with the others (bytes add up, deflate is smaller, the
history holds what was configured).
"""

from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path

import pytest

from bench import fleet
from bench.fleetkit.prom import fleet_alerts, fleet_results
from bench.fleetkit.wire import Conn
from tests.support import need_program, services_required

pytestmark = [pytest.mark.timeout(90), pytest.mark.untimed]


def test_fake_fleet_has_n_distinct_realistic_series_per_query() -> None:
    res = fleet_results(700)
    assert set(res) == {"uptime", "requestRate", "responseTime"}
    for items in res.values():
        assert len(items) == 700
        keys = {tuple(sorted(i["metric"].items())) for i in items}
        assert len(keys) == 700, "series must be distinct"
        assert all({"job", "instance", "method", "route", "status"} <= set(i["metric"]) for i in items)
        assert all(float(i["value"][1]) >= 0 for i in items)
    assert len({i["metric"]["job"] for i in res["requestRate"]}) > 1, "a fleet has several jobs"
    assert [i["value"][1] for i in res["uptime"]].count("0") == 1, "one target is down"
    assert len(fleet_alerts(3000)) == 30
    with pytest.raises(ValueError, match="distinct series"):
        fleet_results(10**7)


def _frame(payload: bytes, *, rsv1: bool = False) -> bytes:
    n = len(payload)
    first = 0xC1 if rsv1 else 0x81
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def test_wire_counter_splits_frames_across_chunks() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    small, medium, big = b"x" * 10, b"y" * 300, b"z" * 70_000
    packed = zlib.compress(big)
    stream = head + _frame(small) + _frame(medium) + _frame(big) + _frame(packed, rsv1=True)
    conn = Conn(opened=0.0)
    for i in range(0, len(stream), 777):  # chunk boundaries fall inside headers and payloads
        conn.feed(stream[i:i + 777], float(i))
    assert conn.upgraded and conn.head_bytes == len(head)
    assert [(f.payload, f.wire, f.compressed) for f in conn.frames] == [
        (10, 12, False), (300, 304, False), (70_000, 70_010, False), (len(packed), len(packed) + (2 if len(packed) < 126 else 4), True)]
    assert conn.bytes_until(float(len(stream))) == len(stream)

    plain = Conn(opened=0.0)
    plain.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 1.0)
    assert not plain.is_ws and plain.frames == [] and plain.bytes_until(1.0) == 43


async def test_tiny_fleet_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_program("node", hint="the fan-out phase's clients run on Node.js")
    no_browser = fleet.chromium_path() is None
    if no_browser and services_required():
        pytest.fail("no Chromium, and HUB_REQUIRE_SERVICES=1 requires a browser")
    args = argparse.Namespace(series=[40], history_size=5, fill_interval=0.2, fanout_interval=0.5, clients=20,
                              ticks=2, procs=1, page_runs=1, tick_samples=2, no_browser=no_browser,
                              python=fleet.sys.executable, out=tmp_path / "fleet.json")
    [row] = await fleet.run(args)
    table = capsys.readouterr().out

    assert row.ticks >= 6 and row.history_entries == 5
    # History bytes are the kept snapshots' encoded size (within the per-entry overhead).
    assert 0.9 * 5 * row.snapshot_bytes <= row.history_bytes <= 1.2 * 5 * row.snapshot_bytes
    assert 10 < row.rss_mb <= row.hwm_mb < 1024
    # A plain frame on the wire is the JSON plus a 4-byte header (126..65535 bytes).
    assert row.tick_plain["wire"] == pytest.approx(row.tick_plain["decoded"] + 4) and row.tick_plain["compressed"] == 0
    assert row.tick_deflate["compressed"] == 1 and row.tick_deflate["wire"] < 0.5 * row.tick_plain["wire"]
    assert row.tick_deflate["decoded"] == pytest.approx(row.snapshot_bytes, rel=0.02)
    pts = row.connects["points plain"]
    assert pts["messages"] == ["points", "metrics_update"] and pts["items"] == 5
    assert row.connects["points deflate"]["wire_bytes"] < pts["wire_bytes"]
    assert row.connects["history plain"]["messages"][0] == "history"
    assert row.connects["history plain"]["decoded_bytes"] >= row.snapshot_bytes
    if not no_browser:
        assert row.page["ws_request"].startswith("/ws?")
        assert row.page["bytes"] > row.page["ws_bytes"] > 0 and row.page["chart_points"] >= 1
        assert 0 < row.page["seconds"] < 60
    for mode in ("plain", "deflate"):
        f = row.fanout[mode]
        assert f["ticks"] >= 2 and f["closed"] == 0 and f["cpu_ms_per_tick"] >= 0
        assert f["payload_bytes_per_client_tick"] == pytest.approx(row.snapshot_bytes, rel=0.05)
    assert "| snapshot (metrics_update JSON) |" in table and "40 series/query" in table
    assert (tmp_path / "fleet.json").is_file()
