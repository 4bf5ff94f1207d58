"""The dashboard page: found inside the installed hub package and served file by file.

Wheels and sdists carry the repository's top-level web/ as hub/web (see pyproject.toml), so an
installed hub finds its page through importlib.resources. A source checkout (PYTHONPATH or an
editable install, where hub/web does not exist) serves the checkout's web/ instead, so that edits
to the page show on reload.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import re
import tomllib
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger(__name__)

INDEX = "index.html"
#: where the page lives inside the hub package (the repository's web/, mapped by pyproject.toml)
PACKAGE_DIR = "web"
REINSTALL = "reinstall hub from a wheel built with `python -m build`"
#: explicit types, so that what a browser gets does not depend on the host's /etc/mime.types
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".map": "application/json",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
#: route paths stay literal: aiohttp would read "{...}" as a variable, and odd names need quoting
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
_NO_CACHE = "no-cache"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def content_type(name: str) -> str:
    """The Content-Type a page file named `name` is served with."""
    suffix = Path(name).suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class _References(HTMLParser):
    """Collects the local files an HTML page loads (src= and href= that are relative paths)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key not in ("src", "href") or not value:
                continue
            parts = urlsplit(value)
            if parts.scheme or parts.netloc or not parts.path or value.startswith("#"):
                continue  # absolute URLs, data:, fragments: not files of the page
            self.names.append(posixpath.normpath(parts.path).lstrip("/"))


def _walk(root: Path) -> dict[str, Path]:
    """Every regular file under `root` by relative POSIX name; no symlinks, no hidden files."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        # Like add_static(follow_symlinks=False): a link could point outside the page.
        if any((root.joinpath(*rel.parts[:i + 1])).is_symlink() for i in range(len(rel.parts))):
            continue
        if path.is_file():
            found[rel.as_posix()] = path
    return found


def _checkout_web(package: Path) -> Path | None:
    """The web/ of the source checkout `package` was imported from, if it is one."""
    top = package.parent
    try:
        project = tomllib.loads((top / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if project.get("project", {}).get("name") != "hub" or not (top / PACKAGE_DIR).is_dir():
        return None
    return top / PACKAGE_DIR


class Page:
    """The dashboard's files; `missing` says what is missing when the page cannot be served."""

    def __init__(self, root: Path | None, *, where: str | None = None) -> None:
        self.root = root.resolve() if root is not None else None
        where = where or (str(self.root) if self.root is not None else "nowhere")
        self.files: dict[str, Path] = _walk(self.root) if self.root is not None and self.root.is_dir() else {}
        self.missing: str | None = None
        if INDEX not in self.files:
            self.missing = (f"the dashboard files are not installed: {PACKAGE_DIR}/{INDEX} not found in the "
                            f"hub package (looked in {where}); {REINSTALL}")
            return
        refs = _References()
        refs.feed(self.files[INDEX].read_text(encoding="utf-8", errors="replace"))
        absent = [n for n in dict.fromkeys(refs.names) if n not in self.files]
        if absent:
            self.missing = (f"the dashboard files are incomplete: "
                            f"{', '.join(f'{PACKAGE_DIR}/{n}' for n in absent)} not found in the hub "
                            f"package (looked in {where}); {REINSTALL}")

    @classmethod
    def locate(cls) -> Page:
        """The page of the installed hub package (or of the source checkout hub runs from)."""
        package = resources.files("hub")
        if not isinstance(package, Path):  # e.g. a zipped install: FileResponse needs real files
            return cls(None, where=f"{package} (not a directory: install hub with pip)")
        installed = package / PACKAGE_DIR
        if installed.is_dir():
            return cls(installed)
        checkout = _checkout_web(package)
        return cls(checkout if checkout is not None else installed)

    async def index(self, request: web.Request) -> web.StreamResponse:
        """The page (no-cache), or 503 text/plain saying what is missing."""
        index = self.files.get(INDEX)
        if self.missing is not None or index is None or not index.is_file():
            text = self.missing or f"the dashboard page {index} disappeared since the hub started; {REINSTALL}"
            return web.Response(status=503, text=text + "\n", content_type="text/plain",
                                headers={"Cache-Control": "no-store"})
        return web.FileResponse(index, headers={"Cache-Control": _NO_CACHE, "Content-Type": content_type(INDEX)})

    def add_routes(self, app: web.Application) -> None:
        """Route GET /<name> for every page file except the index (which is "/"), vendor/ included."""
        for name, path in self.files.items():
            if name == INDEX:
                continue
            if not _SAFE_NAME.fullmatch(name):
                log.warning("not serving page file %r: only letters, digits, '_', '.', '-' and '/' are routed", name)
                continue
            app.router.add_get(f"/{name}", _file_handler(path, content_type(name)))


def _file_handler(path: Path, ctype: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": _NO_CACHE, "Content-Type": ctype})

    return handler


def check_page(page: Page) -> None:
    """Log one ERROR when the page cannot be served (call once when `hub serve` starts)."""
    if page.missing is not None:
        log.error("%s; / answers 503 until then", page.missing)
