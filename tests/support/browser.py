"""Chromium for browser tests: Debian's `chromium` driven by Playwright for Python.

Never `playwright install` (it downloads a browser build and fails offline): the system
Chromium is launched through `executable_path`. `HUB_CHROMIUM` overrides the path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from tests.support import need_program, services_required

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",            # containers and CI runners have no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Records CSP violations in the page; installed before any page script runs.
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sourceFile || ''));
});
"""

T = TypeVar("T")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def chromium_executable() -> str:
    """`$HUB_CHROMIUM`, else /usr/bin/chromium, else `chromium` on PATH; skip (or fail) when none."""
    override = os.environ.get("HUB_CHROMIUM")
    if override:
        if _executable(override):
            return override
        why = f"HUB_CHROMIUM={override!r} is not an executable file"
        if services_required():
            pytest.fail(f"{why}, and HUB_REQUIRE_SERVICES=1 requires a browser")
        pytest.skip(why)
    if _executable(DEFAULT_CHROMIUM):
        return DEFAULT_CHROMIUM
    return need_program("chromium", hint="Debian package 'chromium', or set HUB_CHROMIUM")


def _sync_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright (Python package, a dev dependency) is not installed"
        if services_required():
            pytest.fail(f"{why}, and HUB_REQUIRE_SERVICES=1 requires it")
        pytest.skip(why)
    return sync_playwright


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium `Browser`, one per test module, closed at the end.

    Playwright's `launch()` gives every launch a fresh temporary user-data-dir and removes it
    on close, so no profile state leaks between runs.
    """
    executable = chromium_executable()
    sync_playwright = _sync_playwright()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageWatch:
    """A page plus everything it reported: console errors, uncaught exceptions."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        """CSP violations the page saw so far."""
        return list(self.page.evaluate("() => window.__cspViolations || []"))

    def js(self, expression: str) -> Any:
        """Evaluate `expression` in the page (through the debugger protocol, so CSP allows it)."""
        return self.page.evaluate(f"() => ({expression})")


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Callable[..., PageWatch]]:
    """Factory: a new context + page (default 1920x1080, light scheme) watched for errors."""
    contexts: list[Any] = []

    def make(*, width: int = 1920, height: int = 1080, color_scheme: str = "light") -> PageWatch:
        ctx = chromium.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
        contexts.append(ctx)
        page = ctx.new_page()
        watch = PageWatch(page=page)
        page.on("console", lambda m: watch.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: watch.page_errors.append(str(e)))
        page.add_init_script(CSP_PROBE)
        return watch

    yield make
    for ctx in contexts:
        ctx.close()


def override_document_csp(watch: PageWatch, csp: str) -> None:
    """Serve every document `watch.page` loads with Content-Security-Policy `csp` instead of its own.

    Done at the response stage through the DevTools protocol, so the response still comes from
    the real server (a `page.route` fulfil would make Chromium's local-network checks block the
    page's WebSocket to 127.0.0.1).
    """
    cdp = watch.page.context.new_cdp_session(watch.page)

    def paused(event: dict[str, Any]) -> None:
        headers = [h for h in event.get("responseHeaders", [])
                   if h["name"].lower() != "content-security-policy"]
        headers.append({"name": "Content-Security-Policy", "value": csp})
        cdp.send("Fetch.continueResponse", {"requestId": event["requestId"],
                                            "responseCode": event.get("responseStatusCode", 200),
                                            "responseHeaders": headers})

    cdp.on("Fetch.requestPaused", paused)
    cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "resourceType": "Document",
                                            "requestStage": "Response"}]})


def wait_for(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll `check` until it returns a truthy value; return it, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
