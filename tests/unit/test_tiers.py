"""Each test tier holds what its name says: nothing under tests/unit starts a process, opens a
socket or waits real time (docs/architecture.md: unit = no I/O, fake clock)."""

from __future__ import annotations

import ast
from pathlib import Path

UNIT = Path(__file__).resolve().parent
#: calls a unit test may not make: processes, servers, sockets, real waiting
FORBIDDEN_CALLS = {"Popen", "run", "create_subprocess_exec", "create_subprocess_shell", "HubProcess",
                   "start_redis", "start_prometheus", "create_connection", "open_connection", "serve"}
FORBIDDEN_MODULES = {"subprocess", "socket", "tests.support.redis", "tests.support.prom"}


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f"imports {a.name}" for a in node.names if a.name in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in FORBIDDEN_MODULES:
            out.append(f"imports {node.module}")
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in FORBIDDEN_CALLS:
                out.append(f"calls {name} (line {node.lineno})")
            if name == "sleep":  # asyncio.sleep(0) only yields; any other delay waits real time
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and arg.value == 0):
                    owner = fn.value.id if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) else ""
                    if owner in ("asyncio", "time"):
                        out.append(f"sleeps (line {node.lineno})")
    return sorted(out)


def test_no_unit_test_starts_a_process_opens_a_socket_or_sleeps():
    found = {p.name: o for p in sorted(UNIT.glob("test_*.py")) if (o := offences(p))}
    assert found == {}


def test_the_checker_catches_what_it_forbids(tmp_path: Path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("import subprocess, asyncio, time\n"
                   "async def test_x():\n    await asyncio.sleep(0.5)\n    time.sleep(1)\n"
                   "    subprocess.Popen(['x'])\n")
    assert offences(bad) == ["calls Popen (line 5)", "imports subprocess", "sleeps (line 3)", "sleeps (line 4)"]
