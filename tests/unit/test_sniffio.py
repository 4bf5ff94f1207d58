"""httpcore's per-request `import sniffio` is a dictionary look-up, not a search of sys.path."""

from __future__ import annotations

import importlib.util


def test_sniffio_is_installed_with_the_hub() -> None:
    # A dependency in pyproject.toml for this alone: without it every httpx request of every tick
    # searched each sys.path entry for it again (bench/README.md, "Profiles").
    assert importlib.util.find_spec("sniffio") is not None
