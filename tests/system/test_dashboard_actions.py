"""Silences and mutes from the dashboard page: Chromium (Playwright) against a real `hub serve`
reading a real Alertmanager 0.25 that a real Prometheus fires rules into, with a local HTTP
service as the health check. The page shows silenced and inhibited alerts with who, why and until
when; a token with the `silence` action gets controls, any other page gets none."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub.auth import hash_token
from tests.support import browser
from tests.support.alertmanager import AlertmanagerServer, start_alertmanager
from tests.support.browser import PageWatch, wait_for
from tests.support.http_targets import ThreadedService
from tests.support.hubproc import HubProcess
from tests.support.prom import PrometheusServer, start_prometheus

# The browser fixtures, by assignment (an imported fixture taken as a parameter reads as a redefinition).
chromium, open_page = browser.chromium, browser.open_page

ACTOR, READER = "act-token-0b7e55c1d9f2", "read-token-61aa0e93c7d4"
INTERVAL = 1.0
WAIT = 45.0            # generous: a loaded 2-core machine runs Prometheus, Alertmanager, a hub and Chromium
COMMENT = "known noisy, ticket OPS-12"
RULES = """\
groups:
  - name: hub-page-test
    interval: 1s
    rules:
      - alert: HubPageSilenceMe
        expr: vector(1)
        labels: {severity: warning, hubtest: page}
        annotations: {summary: To be silenced from the page}
      - alert: HubPageKeepMe
        expr: vector(1)
        labels: {severity: critical, hubtest: page}
        annotations: {summary: Never silenced}
      - alert: HubPageInhibited
        expr: vector(1)
        labels: {severity: info, hubtest: page}
        annotations: {summary: Inhibited by HubPageKeepMe}
"""
#: HubPageKeepMe (firing) inhibits HubPageInhibited
INHIBIT = ({"source_matchers": ['alertname="HubPageKeepMe"'], "target_matchers": ['alertname="HubPageInhibited"'],
            "equal": ["hubtest"]},)
# Every button an acting token gets; a page that may not act has none of them (and no form).
CONTROLS = "#alerts button, #alerts form, #alerts input, #health button, #health form, #health input"



class WsClient:
    """A second client of the hub's feed (aiohttp, in a thread of its own): keeps every metrics_update."""

    def __init__(self, url: str, token: str) -> None:
        self.updates: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(url, token)), daemon=True)
        self._thread.start()

    async def _run(self, url: str, token: str) -> None:
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    url.replace("http", "ws", 1) + "/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
                while not self._stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = json.loads(msg.data)
                    if data.get("type") == "metrics_update":
                        self.updates.append(data)
        except BaseException as exc:  # reported by the test that reads it
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Stack:
    """Alertmanager, Prometheus firing RULES into it, a health-check target and a hub reading them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.am: AlertmanagerServer | None = None
        self.prom: PrometheusServer | None = None
        self.service = ThreadedService()
        self.hub: HubProcess | None = None
        self.audit_path = tmp / "audit.jsonl"

    def start(self) -> None:
        self.am = start_alertmanager(self.tmp / "am", inhibit_rules=INHIBIT)
        self.prom = start_prometheus(self.tmp / "prom", rules=RULES, alertmanagers=[self.am.address])
        self.hub = HubProcess({
            "broadcast": {"interval": INTERVAL, "heartbeat": 30.0},
            "audit": {"path": str(self.audit_path)},
            "auth": {"tokens": [{"name": "alice", "hash": hash_token(ACTOR), "actions": ["silence"]},
                                {"name": "wall", "hash": hash_token(READER)}]},
            "sources": {"prometheus": {"enabled": True, "url": self.prom.url, "queries": {"one": "vector(1)"}},
                        "business": {"enabled": False},
                        "health": {"enabled": True, "timeout": 2.0, "failures_before_down": 1,
                                   "checks": {"frontend": self.service.url}},
                        "alertmanager": {"enabled": True, "url": self.am.url}},
        }, self.tmp).start()
        self.hub.wait_healthy(path="/ready", timeout=30)

    def stop(self) -> None:
        if self.hub is not None:
            self.hub.stop()
        if self.prom is not None:
            self.prom.kill()
        if self.am is not None:
            self.am.stop()
        self.service.close()

    @property
    def url(self) -> str:
        assert self.hub is not None
        return self.hub.url

    def request(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON body) of one API request with `token`."""
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def snapshot(self) -> dict[str, Any]:
        status, body = self.request("GET", "/api/metrics/snapshot", READER)
        assert status == 200
        return body

    def audit(self, event: str) -> list[dict[str, Any]]:
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module; every test undoes what it set (silences expired, mutes ended)."""
    s = Stack(tmp_path_factory.mktemp("page-actions"))
    try:
        s.start()

        def all_there() -> bool:
            alerts = {a["name"]: a for a in s.snapshot()["data"]["alerts"] or []}
            return ({"HubPageSilenceMe", "HubPageKeepMe"} <= set(alerts)
                    and alerts.get("HubPageInhibited", {}).get("amState") == "suppressed")

        wait_for(all_there, timeout=WAIT, interval=0.25, what="the alerts in the hub, one inhibited")
        yield s
    finally:
        s.stop()


def expire_silences(stack: Stack) -> None:
    """Expire every silence through the hub, then wait until the hub's snapshot shows none: the next
    test of the module starts from the alerts as they were (a test that read an alert's controls
    right after its own wait once saw the previous test's silence, not yet gone from the snapshot)."""
    for s in stack.am.silences("active", "pending"):  # type: ignore[union-attr]
        stack.request("DELETE", f"/api/silences/{s['id']}", ACTOR)

    def none_left() -> bool:
        data = stack.snapshot()["data"]
        return not data.get("silences") and not any(a.get("silencedBy") for a in data["alerts"] or [])

    wait_for(none_left, timeout=WAIT, interval=0.25, what="no silence left in the hub's snapshot")


def load(watch: PageWatch, stack: Stack, token: str | None) -> None:
    """Open the page with `token` in its fragment; wait for live data with the alerts and /api/me answered."""
    watch.page.goto(stack.url + "/" + (f"#token={token}" if token else ""))
    wait_for(lambda: watch.js("window.hubDebug && hubDebug.conn === 'live' && hubDebug.me !== undefined && "
                              "document.querySelectorAll('#alert-list li.alert').length >= 3"),
             timeout=WAIT, what="the page live, with alerts")


def alert_row(watch: PageWatch, name: str) -> Any:
    return watch.page.locator("#alert-list li.alert", has=watch.page.locator(".name", has_text=name)).first


def shown_alert(watch: PageWatch, name: str) -> dict[str, Any] | None:
    """What the page shows for alert `name`, and the seq it shows, read in one evaluation."""
    return watch.js(f"""(() => {{
        const li = [...document.querySelectorAll('#alert-list li.alert')]
            .find((x) => x.querySelector('.name').textContent === {json.dumps(name)});
        if (!li) return null;
        const q = (sel) => li.querySelector(sel) && li.querySelector(sel).textContent;
        return {{seq: Number(document.getElementById('conn-seq').dataset.raw),
                badges: [...li.querySelectorAll('.alert-head .badge')].map((b) => b.textContent),
                line: q('.silenced-by'), who: q('.silenced-by .who'), why: q('.silenced-by .why'),
                until: q('.silenced-by .until'), inhibited: q('.inhibited-by'),
                untilIso: li.querySelector('.silenced-by time') && li.querySelector('.silenced-by time').dateTime,
                buttons: [...li.querySelectorAll('button')].map((b) => b.textContent)}};
    }})()""")


# Records, in the page, the seq shown when HubPageSilenceMe first renders as silenced (the header's
# seq is written before the panels, so an observer of the alert list reads the same snapshot's).
FIRST_SILENCED_SEQ = """(() => {
    window.__firstSilencedSeq = null;
    new MutationObserver(() => {
        if (window.__firstSilencedSeq !== null) return;
        const li = [...document.querySelectorAll('#alert-list li.alert')]
            .find((x) => x.querySelector('.name').textContent === 'HubPageSilenceMe');
        if (li && li.querySelector('.silenced-by')) {
            window.__firstSilencedSeq = Number(document.getElementById('conn-seq').dataset.raw);
        }
    }).observe(document.getElementById('alert-list'), {childList: true, subtree: true});
    return true;
})()"""


def local_text(iso: str) -> str:
    """The page's local rendering of `iso` (the browser and this process share the machine's zone)."""
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    hm = at.strftime("%H:%M")
    return hm if at.date() == datetime.now().astimezone().date() else at.strftime("%Y-%m-%d ") + hm


def assert_clean(watch: PageWatch, *expected: str) -> None:
    """No uncaught exception, CSP violation or console error beyond the `expected` HTTP statuses."""
    assert watch.page_errors == []
    assert watch.csp_violations() == []
    assert [e for e in watch.console_errors if not any(f"status of {s}" in e for s in expected)] == []


def test_a_silence_set_from_the_page_shows_on_every_client_and_expires(stack: Stack, open_page: Any) -> None:
    actor, wall = open_page(), open_page()
    load(actor, stack, ACTOR)
    load(wall, stack, READER)
    feed = WsClient(stack.url, READER)
    try:
        assert actor.js("hubDebug.me") == {"name": "alice", "topics": ["system", "application", "business",
                                                                       "alerts", "health"], "actions": ["silence"]}
        row = alert_row(actor, "HubPageSilenceMe")
        for label in ("Silence 1 h", "Silence 4 h", "Silence until 08:00"):
            assert row.get_by_role("button", name=label, exact=True).is_visible()
        # Typed by keyboard; the panel is rebuilt every tick meanwhile, and neither the text nor the focus is lost.
        comment = row.get_by_label("Comment")
        comment.focus()
        actor.page.keyboard.type(COMMENT)
        seq = actor.js("hubDebug.lastSeq")
        wait_for(lambda: actor.js("hubDebug.lastSeq") >= seq + 2, timeout=WAIT, what="two more ticks")
        assert comment.input_value() == COMMENT
        assert actor.js("document.activeElement.name") == "comment"
        actor.page.keyboard.press("Tab")
        assert actor.js("document.activeElement.textContent") == "Silence 1 h"
        for watch in (actor, wall):   # the seq each page shows when the silence first appears on it
            watch.js(FIRST_SILENCED_SEQ)
        with actor.page.expect_response(lambda r: r.url.endswith("/api/silences")
                                        and r.request.method == "POST") as answer:
            actor.page.keyboard.press("Enter")
        assert answer.value.status == 201
        sid = answer.value.json()["silenceID"]
        seq_after = stack.snapshot()["seq"]
        (held,) = [s for s in stack.am.silences("active") if s["id"] == sid]  # type: ignore[union-attr]
        assert held["createdBy"] == "alice" and held["comment"] == COMMENT
        assert {m["name"] for m in held["matchers"]} == {"alertname", "severity", "hubtest"}

        # Within 2 ticks every client shows it silenced, with the token's name, why and until when.
        for watch in (actor, wall):
            seen = wait_for(lambda w=watch: (a := shown_alert(w, "HubPageSilenceMe")) and "silenced" in a["badges"]
                            and a, timeout=WAIT, what="the alert shown silenced")
            first = watch.js("window.__firstSilencedSeq")
            assert seen["seq"] >= first and first <= seq_after + 2, (first, seq_after)
            assert seen["who"] == "alice" and seen["why"] == COMMENT
            assert seen["untilIso"] == held["endsAt"] and seen["until"] == local_text(held["endsAt"])
            assert seen["line"] == f"silenced by alice until {local_text(held['endsAt'])}: {COMMENT}"
            assert seen["buttons"] == []   # silenced: nothing more to silence
            kept = shown_alert(watch, "HubPageKeepMe")
            assert kept is not None and "silenced" not in kept["badges"]

        def silenced_on_the_feed() -> dict[str, Any] | None:
            for update in feed.updates:
                alerts = {a["name"]: a for a in update["data"]["alerts"] or []}
                if alerts.get("HubPageSilenceMe", {}).get("silencedBy") == [sid]:
                    return update
            return None

        update = wait_for(silenced_on_the_feed, timeout=WAIT, what="the second client's update")
        assert feed.error is None and update["seq"] <= seq_after + 2
        assert [(s["id"], s["createdBy"]) for s in update["data"]["silences"]] == [(sid, "alice")]

        # The silence is listed on both pages; only the acting one can expire it.
        for watch, buttons in ((actor, ["Expire"]), (wall, [])):
            listed = watch.page.locator(f'#silence-list li.silence[data-silence="{sid}"]')
            assert listed.locator(".who").text_content() == "alice"
            assert listed.locator(".why").text_content() == COMMENT
            assert listed.locator(".matchers").text_content() == \
                'alertname="HubPageSilenceMe", hubtest="page", severity="warning"'
            assert listed.locator("button").all_text_contents() == buttons
        assert wall.page.locator(CONTROLS).count() == 0

        created = wait_for(lambda: [r for r in stack.audit("silence_created") if r["silence_id"] == sid],
                           timeout=WAIT, what="the audit line")
        assert [(r["name"], r["comment"], r["fingerprint"]) for r in created] == [
            ("alice", COMMENT, actor.js("document.querySelector('#alert-list li[data-fingerprint]') && "
                                        "[...document.querySelectorAll('#alert-list li.alert')].find((li) => "
                                        "li.querySelector('.name').textContent === 'HubPageSilenceMe')"
                                        ".dataset.fingerprint"))]

        with actor.page.expect_response(lambda r: r.url.endswith(f"/api/silences/{sid}")
                                        and r.request.method == "DELETE") as answer:
            actor.page.locator(f'#silence-list li.silence[data-silence="{sid}"]').get_by_role(
                "button", name="Expire").click()
        assert answer.value.status == 200
        for watch in (actor, wall):
            wait_for(lambda w=watch: (a := shown_alert(w, "HubPageSilenceMe")) and a["badges"][-1] != "silenced"
                     and w.js("document.querySelectorAll('#silence-list li.silence').length") == 0,
                     timeout=WAIT, what="the alert active again, no silence listed")
        assert shown_alert(actor, "HubPageSilenceMe")["buttons"] == [  # type: ignore[index]
            "Silence 1 h", "Silence 4 h", "Silence until 08:00"]
        assert sid in [s["id"] for s in stack.am.silences("expired")]  # type: ignore[union-attr]
        expired = wait_for(lambda: [r for r in stack.audit("silence_expired") if r["silence_id"] == sid],
                           timeout=WAIT, what="the expiry's audit line")
        assert [r["name"] for r in expired] == ["alice"]
        assert len([r for r in stack.audit("silence_created") if r["silence_id"] == sid]) == 1
        assert_clean(actor)
        assert_clean(wall)
    finally:
        feed.close()
        expire_silences(stack)


def test_an_inhibited_alert_says_so_and_by_which_alert(stack: Stack, open_page: Any) -> None:
    actor = open_page()
    load(actor, stack, ACTOR)
    seen = wait_for(lambda: (a := shown_alert(actor, "HubPageInhibited")) and "inhibited" in a["badges"] and a,
                    timeout=WAIT, what="the inhibited alert")
    assert seen["inhibited"] == "inhibited by HubPageKeepMe"
    assert "silenced" not in seen["badges"] and seen["line"] is None
    assert seen["buttons"] == []   # suppressed already: nothing to silence
    assert shown_alert(actor, "HubPageKeepMe")["buttons"] == [  # type: ignore[index]
        "Silence 1 h", "Silence 4 h", "Silence until 08:00"]
    assert_clean(actor)


def test_until_eight_sends_the_next_local_eight_oclock(stack: Stack, open_page: Any) -> None:
    actor = open_page()
    load(actor, stack, ACTOR)
    try:
        row = alert_row(actor, "HubPageKeepMe")
        row.get_by_label("Comment").fill("overnight: fixed in the morning")
        expected = actor.js("(() => { const d = new Date(); const t = new Date(d); t.setHours(8, 0, 0, 0); "
                            "if (t <= d) t.setDate(t.getDate() + 1); return t.toISOString(); })()")
        with actor.page.expect_request(lambda r: r.url.endswith("/api/silences")) as sent:
            row.get_by_role("button", name="Silence until 08:00").click()
        body = json.loads(sent.value.post_data)
        assert body["fingerprint"] == actor.js(
            "[...document.querySelectorAll('#alert-list li.alert')].find((li) => "
            "li.querySelector('.name').textContent === 'HubPageKeepMe').dataset.fingerprint")
        assert body["endsAt"] == expected and body["comment"] == "overnight: fixed in the morning"
        assert set(body) == {"fingerprint", "endsAt", "comment"}
        seen = wait_for(lambda: (a := shown_alert(actor, "HubPageKeepMe")) and a["until"] and a,
                        timeout=WAIT, what="the alert silenced until 08:00")
        assert seen["until"] == local_text(expected) and seen["until"].endswith("08:00")
        assert_clean(actor)
    finally:
        expire_silences(stack)


def test_api_errors_and_a_missing_comment_are_shown_next_to_the_control(stack: Stack, open_page: Any) -> None:
    actor = open_page()
    load(actor, stack, ACTOR)
    row = alert_row(actor, "HubPageSilenceMe")
    form = row.locator("form")
    # No comment: said at once, nothing sent.
    row.get_by_role("button", name="Silence 4 h").click()
    assert form.locator(".act-msg").text_content() == "A comment is required: say why."
    assert actor.js("document.activeElement.name") == "comment"
    # The hub's 400 is shown as its text.
    row.get_by_label("Comment").fill("x" * 1025)
    with actor.page.expect_response(lambda r: r.url.endswith("/api/silences")) as answer:
        row.get_by_role("button", name="Silence 4 h").click()
    assert answer.value.status == 400
    message = form.locator(".act-msg.act-error")
    message.wait_for(timeout=WAIT * 1000)
    assert message.text_content() == '"comment" is longer than 1024 characters'
    # Still there (and the comment kept) after the next ticks.
    seq = actor.js("hubDebug.lastSeq")
    wait_for(lambda: actor.js("hubDebug.lastSeq") >= seq + 2, timeout=WAIT, what="two more ticks")
    assert message.text_content() == '"comment" is longer than 1024 characters'
    assert row.get_by_label("Comment").input_value() == "x" * 1025
    assert [s for s in stack.am.silences() if s["comment"].startswith("xx")] == []  # type: ignore[union-attr]
    assert_clean(actor, "400")


def test_a_page_that_may_not_act_has_no_controls(stack: Stack, open_page: Any, tmp_path: Path) -> None:
    wall = open_page()
    load(wall, stack, READER)
    assert wall.js("hubDebug.me")["actions"] == []
    wait_for(lambda: wall.js("document.querySelectorAll('#health-list li.check').length") == 1,
             timeout=WAIT, what="the health check shown")
    assert wall.page.locator(CONTROLS).count() == 0
    # The API says the same: 403, nothing created.
    row = {a["name"]: a for a in stack.snapshot()["data"]["alerts"]}["HubPageSilenceMe"]
    status, body = stack.request("POST", "/api/silences", READER,
                                 {"fingerprint": row["fingerprint"], "duration_s": 3600, "comment": "from the wall"})
    assert (status, body) == (403, {"error": "forbidden: token 'wall' may not silence (its actions: [])"})
    assert stack.am.silences("active", "pending") == []  # type: ignore[union-attr]
    assert_clean(wall)

    # The wall screen has no controls, whatever its token may do.
    kiosk = open_page()
    kiosk.page.goto(stack.url + f"/?kiosk#token={ACTOR}")
    wait_for(lambda: kiosk.js("window.hubDebug && hubDebug.conn === 'live' && hubDebug.me !== undefined && "
                              "document.querySelectorAll('#health-list li.check').length === 1"),
             timeout=WAIT, what="the wall screen live")
    assert kiosk.js("hubDebug.view") == "kiosk" and kiosk.js("hubDebug.me")["actions"] == ["silence"]
    assert kiosk.page.locator(CONTROLS).count() == 0
    assert_clean(kiosk)

    # Open mode (no tokens): no credential, so /api/me is not even asked, and no controls.
    assert stack.am is not None
    open_hub = HubProcess({"broadcast": {"interval": INTERVAL},
                           "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                                       "health": {"enabled": True, "checks": {"frontend": stack.service.url}},
                                       "alertmanager": {"enabled": True, "url": stack.am.url}}}, tmp_path).start()
    try:
        open_hub.wait_healthy(path="/ready", timeout=30)
        anyone = open_page()
        asked: list[str] = []
        anyone.page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/api/me") else None)
        anyone.page.goto(open_hub.url + "/")
        wait_for(lambda: anyone.js("window.hubDebug && hubDebug.conn === 'live' && "
                                   "document.querySelectorAll('#alert-list li.alert').length >= 2 && "
                                   "document.querySelectorAll('#health-list li.check').length === 1"),
                 timeout=WAIT, what="the open page live")
        assert anyone.js("hubDebug.me") is None and asked == []
        assert anyone.page.locator(CONTROLS).count() == 0
        assert_clean(anyone)
    finally:
        open_hub.stop()


def test_mute_and_unmute_a_check_from_the_page(stack: Stack, open_page: Any) -> None:
    actor, wall = open_page(), open_page()
    load(actor, stack, ACTOR)
    load(wall, stack, READER)
    check = actor.page.locator('#health-list li.check[data-check="frontend"]')
    check.wait_for(timeout=WAIT * 1000)
    try:
        # By keyboard: the comment, Tab to "Mute 1 h" (its focus visible), Enter.
        check.get_by_label("Comment").focus()
        actor.page.keyboard.type("planned deploy 14:00")
        actor.page.keyboard.press("Tab")
        assert actor.js("document.activeElement.textContent") == "Mute 1 h"
        assert actor.js("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        with actor.page.expect_response(lambda r: r.url.endswith("/api/mutes")) as answer:
            actor.page.keyboard.press("Enter")
        assert answer.value.status == 201
        mute_id = answer.value.json()["muteID"]
        (mute,) = wait_for(lambda: stack.snapshot()["data"]["health"]["mutes"], timeout=WAIT, what="the mute")
        assert (mute["id"], mute["check"], mute["createdBy"], mute["comment"]) == (
            mute_id, "frontend", "alice", "planned deploy 14:00")

        for watch, buttons in ((actor, ["Unmute"]), (wall, [])):
            row = watch.page.locator(f'#health-list li.check[data-check="frontend"] .muted-by[data-mute="{mute_id}"]')
            row.wait_for(timeout=WAIT * 1000)
            assert row.locator(".who").text_content() == "alice"
            assert row.locator(".why").text_content() == "planned deploy 14:00"
            assert row.locator("time").get_attribute("datetime") == mute["until"]
            assert row.locator("time").text_content() == local_text(mute["until"])
            assert watch.page.locator('#health-list li.check[data-check="frontend"] .badge').all_text_contents() \
                == ["up", "muted"]
            assert row.locator("button").all_text_contents() == buttons
        # Muted: no second "Mute 1 h" on the check.
        assert check.get_by_role("button", name="Mute 1 h").count() == 0
        assert wall.page.locator(CONTROLS).count() == 0
        (line,) = wait_for(lambda: [r for r in stack.audit("mute_created") if r["mute_id"] == mute_id],
                           timeout=WAIT, what="the audit line")
        assert (line["name"], line["check"], line["comment"]) == ("alice", "frontend", "planned deploy 14:00")

        with actor.page.expect_response(lambda r: r.url.endswith(f"/api/mutes/{mute_id}")) as answer:
            check.get_by_role("button", name="Unmute").click()
        assert answer.value.status == 200
        for watch in (actor, wall):
            wait_for(lambda w=watch: w.js("document.querySelectorAll('#health-list .muted-by').length") == 0,
                     timeout=WAIT, what="the mute gone from the page")
        check.get_by_role("button", name="Mute 1 h").wait_for(timeout=WAIT * 1000)
        assert stack.snapshot()["data"]["health"]["mutes"] == []
        (ended,) = wait_for(lambda: [r for r in stack.audit("mute_ended") if r["mute_id"] == mute_id],
                            timeout=WAIT, what="the audit line")
        assert ended["name"] == "alice"
        assert_clean(actor)
        assert_clean(wall)
    finally:
        for m in stack.snapshot()["data"]["health"]["mutes"]:
            stack.request("DELETE", f"/api/mutes/{m['id']}", ACTOR)
