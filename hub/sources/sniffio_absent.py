"""httpcore runs `import sniffio` on every request, lock and close; when sniffio is not installed
each attempt fails anew, after a search of every sys.path entry (a directory listing and a stat
per entry). Recording the absence once makes those imports fail at once, as Python's import
system does for a module set to None in `sys.modules`."""

from __future__ import annotations

import importlib.util
import sys


def cache_missing_sniffio() -> bool:
    """Make `import sniffio` fail without a path search when sniffio is absent; True if it was."""
    if "sniffio" in sys.modules or importlib.util.find_spec("sniffio") is not None:
        return False
    sys.modules["sniffio"] = None  # type: ignore[assignment]
    return True
