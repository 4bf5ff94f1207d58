"""hub/page.py: the dashboard's files are found, typed and routed by name; missing files give a 503
with a sentence (never a bare 404) and one ERROR line. The installed-wheel case is tests/system/."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hub.app import create_app
from hub.page import Page, check_page
from tests.support.hubproc import ROOT

WEB = ROOT / "web"


def page_app(page: Page) -> web.Application:
    app = web.Application()
    app.router.add_get("/", page.index)
    page.add_routes(app)
    return app


def test_source_checkout_serves_the_repositorys_web_dir():
    # Run from the checkout (PYTHONPATH or `pip install -e .`), hub/web does not exist: the page
    # is the checkout's web/, so edits show on reload.
    page = Page.locate()
    assert page.missing is None
    assert page.root == WEB.resolve()
    on_disk = {p.relative_to(WEB).as_posix() for p in WEB.rglob("*") if p.is_file()}
    assert set(page.files) == on_disk


async def test_every_page_file_by_name_with_its_type(aiohttp_client: Any, make_config: Any):
    client = await aiohttp_client(create_app(make_config()))
    r = await client.get("/")
    assert r.status == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Cache-Control"] == "no-cache"
    assert await r.read() == (WEB / "index.html").read_bytes()
    expected = {"/app.js": "text/javascript", "/style.css": "text/css", "/favicon.svg": "image/svg+xml",
                "/vendor/uPlot.iife.min.js": "text/javascript", "/vendor/uPlot.min.css": "text/css"}
    for path, ctype in expected.items():
        r = await client.get(path)
        assert r.status == 200, path
        assert r.headers["Content-Type"].split(";")[0] == ctype, path
        assert r.headers["Cache-Control"] == "no-cache", path
        assert await r.read() == (WEB / path.lstrip("/")).read_bytes(), path


@pytest.mark.parametrize("path", ["/vendor/", "/vendor", "/index.html", "/vendor/../config.toml",
                                  "/%2e%2e/pyproject.toml", "/vendor/%2e%2e/%2e%2e/pyproject.toml",
                                  "/web/app.js", "/.git/config"])
async def test_no_listing_no_traversal(aiohttp_client: Any, make_config: Any, path: str):
    client = await aiohttp_client(create_app(make_config()))
    r = await client.get(path)
    assert r.status == 404, path
    assert b"[tool.setuptools]" not in await r.read()


def test_only_files_referenced_by_the_index_are_required(tmp_path: Path):
    shutil.copytree(WEB, tmp_path / "web")
    assert Page(tmp_path / "web").missing is None
    (tmp_path / "web" / "vendor" / "README.md").unlink()  # not loaded by the page: still complete
    assert Page(tmp_path / "web").missing is None
    (tmp_path / "web" / "app.js").unlink()
    (tmp_path / "web" / "vendor" / "uPlot.min.css").unlink()
    missing = Page(tmp_path / "web").missing
    assert missing is not None and missing.startswith("the dashboard files are incomplete: ")
    assert "web/vendor/uPlot.min.css" in missing and "web/app.js" in missing and "python -m build" in missing


async def test_missing_page_answers_503_with_the_sentence_and_logs_once(
        aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    page = Page(tmp_path / "nothing-here")
    assert page.missing == (f"the dashboard files are not installed: web/index.html not found in the hub "
                            f"package (looked in {(tmp_path / 'nothing-here').resolve()}); reinstall hub "
                            f"from a wheel built with `python -m build`")
    with caplog.at_level(logging.ERROR, logger="hub.page"):
        check_page(page)
        client = await aiohttp_client(page_app(page))
        for _ in range(2):
            r = await client.get("/")
            assert r.status == 503 and r.headers["Content-Type"].startswith("text/plain")
            assert (await r.text()).strip() == page.missing
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1 and page.missing in errors[0].getMessage()


def test_complete_page_logs_nothing(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG, logger="hub.page"):
        check_page(Page(WEB))
    assert not caplog.records


async def test_symlinks_and_hidden_files_are_not_served(aiohttp_client: Any, tmp_path: Path):
    web_dir = tmp_path / "web"
    shutil.copytree(WEB, web_dir)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for browsers")
    (web_dir / "leak.txt").symlink_to(secret)
    (web_dir / "linked").symlink_to(tmp_path, target_is_directory=True)
    (web_dir / ".env").write_text("TOKEN=x")
    (web_dir / "{name}.js").write_text("odd")
    (web_dir / "modules").mkdir()
    (web_dir / "modules" / "charts.js").write_text("export const x = 1;\n")
    page = Page(web_dir)
    assert "leak.txt" not in page.files and not any(n.startswith("linked/") for n in page.files)
    client = await aiohttp_client(page_app(page))
    for path in ("/leak.txt", "/linked/secret.txt", "/.env", "/{name}.js", "/x.js"):
        assert (await client.get(path)).status == 404, path
    # Nested ES modules are served under their relative path, typed as JavaScript.
    r = await client.get("/modules/charts.js")
    assert r.status == 200 and r.headers["Content-Type"] == "text/javascript; charset=utf-8"
