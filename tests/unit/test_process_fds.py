"""openFds: the process source's descriptor count, O(1) on Linux 6.2+, the listing elsewhere."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from hub.sources.process import open_fds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_open_fds_counts_each_descriptor_opened_and_closed(tmp_path: Path) -> None:
    proc = psutil.Process()
    before = open_fds(proc)
    assert before is not None and before > 0
    files = [(tmp_path / f"f{i}").open("w") for i in range(7)]
    try:
        assert open_fds(proc) == before + 7
        if os.stat("/proc/self/fd").st_size > 0:
            # psutil lists /proc/self/fd and counts the listing's own descriptor too
            assert open_fds(proc) == proc.num_fds() - 1
    finally:
        for f in files:
            f.close()
    assert open_fds(proc) == before
