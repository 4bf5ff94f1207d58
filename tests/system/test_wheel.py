"""The hub as a new user installs it: `python -m build`, `pip install <wheel>` into a fresh virtual
environment outside the repository, `hub serve` from another directory. The page, its scripts and
the vendored uPlot must come from the installed package, with the right content types."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import hub
from tests.support import end_process
from tests.support.hubproc import ROOT, HubProcess

pytestmark = [pytest.mark.system, pytest.mark.timeout(420)]

WEB = ROOT / "web"
#: what never belongs in the copy the distributions are built from (big, or build litter)
SKIP = {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".pytest_cache",
        ".hypothesis", ".mypy_cache", ".ruff_cache"}
CONFIG = {"sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}}}
JS = ("text/javascript", "application/javascript")


def web_files() -> list[str]:
    """Every file of the repository's web/, as a relative POSIX path."""
    return sorted(p.relative_to(WEB).as_posix() for p in WEB.rglob("*")
                  if p.is_file() and not any(s.startswith(".") for s in p.relative_to(WEB).parts))


def clean_env() -> dict[str, str]:
    """The environment minus anything that would make the venv see this checkout or its config."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("HUB_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(argv: list[str | Path], *, timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env=clean_env())
    assert res.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@dataclass(frozen=True)
class Dists:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    site: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """A wheel and an sdist built once, from a copy of the repository (no build/ or egg-info litter)."""
    pytest.importorskip("build", reason="`python -m build` is in the dev extra: pip install -e '.[dev]'")
    src = tmp_path_factory.mktemp("src") / "hub"

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in SKIP or n.endswith(".egg-info")}
        if Path(folder).resolve() == (ROOT / "bench").resolve():
            skip.add("results")
        return skip

    shutil.copytree(ROOT, src, ignore=ignore, symlinks=True)
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, src], timeout=240, cwd=out)
    (wheel,) = out.glob("hub-*.whl")
    (sdist,) = out.glob("hub-*.tar.gz")
    return Dists(wheel=wheel, sdist=sdist)


@pytest.fixture(scope="session")
def venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtual environment outside the repository with the wheel installed (not editable)."""
    root = tmp_path_factory.mktemp("venv") / "env"
    assert ROOT.resolve() not in root.resolve().parents
    run([sys.executable, "-m", "venv", root], timeout=120, cwd=root.parent)
    run([root / "bin" / "python", "-m", "pip", "install", "--quiet", dists.wheel], timeout=300, cwd=root.parent)
    site = run([root / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               timeout=30, cwd=root.parent).stdout.strip()
    return Venv(root=root, site=Path(site))


class InstalledHub(HubProcess):
    """`<venv>/bin/hub serve`, started from a directory outside the repository."""

    def __init__(self, venv: Venv, tmp: Path) -> None:
        super().__init__(CONFIG, tmp)
        self.exe = venv.bin / "hub"
        self.cwd = tmp
        self.env = clean_env()

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> InstalledHub:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(self.exe), "serve", "--config", str(self.config_path), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        if wait:
            self.wait_healthy(timeout=timeout)
        return self


@pytest.fixture
def installed_hub(venv: Venv, tmp_path: Path) -> Any:
    hub_proc = InstalledHub(venv, tmp_path).start()
    yield hub_proc
    end_process(hub_proc.proc)
    hub_proc.stop()


def package_dirs(top: str) -> list[Path]:
    return sorted(p.parent for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts)


def test_wheel_and_sdist_carry_every_page_file_and_module(dists: Dists):
    files = web_files()
    assert {"index.html", "app.js", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"} <= set(files)
    wheel = set(zipfile.ZipFile(dists.wheel).namelist())
    missing = [f"hub/web/{f}" for f in files if f"hub/web/{f}" not in wheel]
    assert not missing, f"not in the wheel: {missing}"
    # pyproject.toml lists its packages (discovery cannot map web/): a package added to hub/ or
    # hub_demo/ but not to that list would silently be missing from every install.
    modules = [p.relative_to(ROOT).as_posix() for top in ("hub", "hub_demo") for d in package_dirs(top)
               for p in d.glob("*.py")]
    missing = [m for m in modules if m not in wheel]
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {missing}"
    assert not [n for n in wheel if n.startswith("tests/")]
    version = hub.__version__
    assert dists.wheel.name == f"hub-{version}-py3-none-any.whl"
    with tarfile.open(dists.sdist) as tar:
        sdist = set(tar.getnames())
    missing = [f for f in files if f"hub-{version}/web/{f}" not in sdist]
    assert not missing, f"not in the sdist: {missing}"


def test_installed_wheel_serves_the_page_from_the_package(venv: Venv, installed_hub: InstalledHub):
    # The hub that answers is the installed one: its package, and its page, live in the venv.
    where = run([venv.bin / "python", "-c", "import hub, hub.page; p = hub.page.Page.locate(); "
                 "print(hub.__file__); print(p.root); print(p.missing)"], timeout=30, cwd=venv.root).stdout
    module, root, missing = where.splitlines()
    assert Path(module).is_relative_to(venv.site) and Path(root) == (venv.site / "hub" / "web").resolve()
    assert missing == "None"
    with httpx.Client(base_url=installed_hub.url, timeout=5) as http:
        r = http.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "<title>Hub · live monitoring</title>" in r.text and r.content == (WEB / "index.html").read_bytes()
        r = http.get("/app.js")
        assert r.status_code == 200 and r.headers["content-type"].split(";")[0] in JS
        assert r.content == (WEB / "app.js").read_bytes()
        for name in web_files():
            if name == "index.html":
                continue
            r = http.get(f"/{name}")
            assert r.status_code == 200, name
            assert r.content == (WEB / name).read_bytes(), name
            ctype = r.headers["content-type"].split(";")[0]
            if name.endswith(".js"):
                assert ctype in JS, (name, ctype)
            elif name.endswith(".css"):
                assert ctype == "text/css", (name, ctype)
        metrics = http.get("/metrics").text
    # uvloop is a dependency wherever it installs (CPython, not Windows): the hub runs on it.
    if sys.platform != "win32" and sys.implementation.name == "cpython":
        info = re.search(r"^hub_info\{(.*)\} 1\.0$", metrics, re.M)
        assert info and 'loop="uvloop"' in info.group(1), metrics[:2000]
        assert f'version="{hub.__version__}"' in info.group(1)


def test_installed_hub_version(venv: Venv):
    out = run([venv.bin / "hub", "--version"], timeout=30, cwd=venv.root).stdout
    assert out.strip() == f"hub {hub.__version__}"
    out = run([venv.bin / "python", "-m", "hub", "--version"], timeout=30, cwd=venv.root).stdout
    assert out.strip() == f"hub {hub.__version__}"


def test_installed_hub_without_its_page_answers_503_and_logs_once(venv: Venv, tmp_path: Path):
    # Take the installed page away (as a broken install would), then put it back for other tests.
    page_dir = venv.site / "hub" / "web"
    hidden = venv.site / "hub" / "web.hidden"
    page_dir.rename(hidden)
    proc = InstalledHub(venv, tmp_path)
    try:
        proc.start()
        with httpx.Client(base_url=proc.url, timeout=5) as http:
            r = http.get("/")
            body = r.text.strip()
            assert r.status_code == 503 and r.headers["content-type"].startswith("text/plain")
            assert body.startswith("the dashboard files are not installed: web/index.html not found in the hub "
                                   "package") and "python -m build" in body
            assert str(page_dir.resolve()) in body
            assert http.get("/").status_code == 503
            assert http.get("/app.js").status_code == 404  # no page file is routed
            assert http.get("/health").status_code == 200  # the feed itself still works
    finally:
        end_process(proc.proc)
        proc.stop()
        hidden.rename(page_dir)
    log = proc.log_path.read_text()
    errors = [ln for ln in log.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, log
    assert "hub.page" in errors[0] and body in errors[0]
