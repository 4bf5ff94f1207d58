"""The import rules of docs/architecture.md ("Layers"): no cycle in hub/, type-only imports included,
and no module importing from a layer below its own. The layers are read from that document."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HUB = ROOT / "hub"


def modules() -> dict[str, Path]:
    out = {}
    for path in HUB.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the hub modules it imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if t == "hub" or t.startswith("hub."):
                    found = resolve(t)
                    if found and found != mod:
                        graph[mod].add(found)
    return graph


def layers() -> list[list[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return [re.findall(r"`([\w.]+)`", line) for line in section.splitlines() if re.match(r"^\d+\. ", line)]


def layer_of(mod: str, table: list[list[str]]) -> int:
    """The layer of the longest listed name covering `mod` (a package covers its modules)."""
    best, found = -1, ""
    for i, names in enumerate(table):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > len(found):
                best, found = i, n
    return best


def test_every_module_has_a_layer():
    table = layers()
    assert len(table) >= 5
    assert [m for m in modules() if layer_of(m, table) < 0] == []


def test_no_module_imports_from_a_lower_layer():
    table = layers()
    graph = imports(modules())
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if layer_of(t, table) > layer_of(m, table))
    assert upward == []


def test_hub_has_no_import_cycle():
    graph = imports(modules())
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles == []


def test_the_checker_sees_type_only_imports_and_cycles():
    # The checks above can fail: a TYPE_CHECKING import is an edge, and a two-module loop is a cycle.
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hub.app import create_app\n"
    tree = ast.parse(src)
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "hub.app" in found
    table = layers()
    assert layer_of("hub.app", table) > layer_of("hub.vocab", table)
