"""The web page on the real stack, in a real browser: two players in two browser contexts play
a whole duel through the UI only (register, queue, submit, a lost answer retried, a reload in
the middle, the result, history, log out and in).

Headless Debian Chromium driven by pip playwright (`playwright install` cannot download
browsers here). Screenshots of the key steps go to test-artifacts/browser/; with
DUELY_DOCS_SCREENSHOT=1 the duel screen is also saved as docs/duel-screen.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from tests.fixtures.stack import HttpPlayer, reference_solution

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
# Every text a submission's status cell ever shows, however briefly: rows are re-rendered as
# new nodes, and a MutationObserver sees each added node (the page's CSP does not apply to it).
RECORD_STATUSES = """
window.__statuses = [];
new MutationObserver((records) => {
  for (const record of records) for (const node of record.addedNodes) {
    if (node.nodeType !== Node.ELEMENT_NODE) continue;
    for (const el of [node, ...node.querySelectorAll("[data-testid=submission-status]")]) {
      if (el.dataset.testid === "submission-status") window.__statuses.push(el.textContent);
    }
  }
}).observe(document, { childList: true, subtree: true });
"""
PASSWORD = "correct horse"
WRONG = "print(0)\n"

# Generous: matchmaking runs every second, judging takes seconds, the machine may be busy.
UI_MS = 15_000
MATCH_MS = 90_000
JUDGE_MS = 120_000
EVENT_MS = 30_000


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package `chromium`): the browser test cannot run")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip playwright is not installed: the browser test cannot run")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    sync_api.expect.set_options(timeout=UI_MS)
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Player:
    """One person with their own browser context (own localStorage), using only the page."""

    def __init__(self, browser, base_url: str, nickname: str):
        self.base_url, self.nickname = base_url, nickname
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.add_init_script(RECORD_STATUSES)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.submit_bodies: list[dict] = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda exc: self.console.append(f"uncaught: {exc}"))
        self.page.on("request", self._note_submit)

    def _note_submit(self, request) -> None:
        if request.method == "POST" and request.url.endswith("/submit"):
            self.submit_bodies.append(request.post_data_json)

    def by(self, testid: str):
        return self.page.get_by_test_id(testid)

    def at(self, selector: str):
        return self.page.locator(selector)

    def shot(self, name: str, path: Path | None = None) -> None:
        self.page.screenshot(path=str(path or ARTIFACTS / f"{name}.png"))

    def register(self) -> None:
        from playwright.sync_api import expect

        self.page.goto(self.base_url + "/")
        self.by("auth-nickname").fill(self.nickname)
        self.by("auth-password").fill(PASSWORD)
        self.by("register-button").click()
        expect(self.by("current-user")).to_have_text(self.nickname, timeout=UI_MS)
        expect(self.by("profile-rating")).to_have_text("1500?", timeout=UI_MS)  # provisional
        self.id = self.api("GET", "/api/users/me")["id"]

    def write(self, code: str) -> None:
        self.by("code-editor").fill(code)

    def api(self, method: str, path: str) -> dict:
        """The API as this player, with the token the page keeps (for checks only)."""
        token = self.page.evaluate("localStorage.getItem('duely.token')")
        resp = requests.request(method, self.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert resp.ok, resp.text
        return resp.json() if resp.content else {}


def unexpected_console(player: Player, allowed: list[str]) -> list[str]:
    return [line for line in player.console if not any(a in line for a in allowed)]


def test_two_players_duel_in_the_browser(make_stack, devtaski, browser):
    from playwright.sync_api import expect

    stack = make_stack(devtaski.url)
    alice, bob = Player(browser, stack.url, "alice"), Player(browser, stack.url, "bob")
    try:
        _play(stack, alice, bob, expect)
    except BaseException:
        for p in (alice, bob):
            p.shot(f"failure-{p.nickname}")
        print(stack.logs())
        print({p.nickname: p.console for p in (alice, bob)})
        raise
    # The one deliberate network failure (the dropped submit answer) is all the console saw.
    assert unexpected_console(alice, ["net::ERR_FAILED"]) == []
    assert unexpected_console(bob, []) == []


def _play(stack, alice: Player, bob: Player, expect) -> None:
    alice.register()
    bob.register()

    # The queue: waiting time runs, Cancel leaves it.
    alice.by("find-duel-button").click()
    expect(alice.by("queue-status")).to_have_attribute("data-status", "waiting", timeout=UI_MS)
    expect(alice.by("queue-wait-time")).to_have_text(re.compile(r"^0:(0[1-9]|[1-5]\d)$"), timeout=UI_MS)   # it runs
    alice.by("cancel-queue-button").click()
    expect(alice.by("queue-status")).to_have_attribute("data-status", "idle", timeout=UI_MS)
    assert alice.api("GET", "/api/queue")["status"] == "idle"

    # Both look for a duel and land on the duel screen.
    alice.by("find-duel-button").click()
    bob.by("find-duel-button").click()
    for p in (alice, bob):
        expect(p.by("duel-screen")).to_have_attribute("data-status", "active", timeout=MATCH_MS)
    duel_id = alice.by("duel-screen").get_attribute("data-duel-id")
    expect(bob.by("duel-screen")).to_have_attribute("data-duel-id", duel_id)
    task_id = alice.by("duel-screen").get_attribute("data-task-id")
    duel = alice.api("GET", f"/api/duels/{duel_id}")
    expect(alice.by("task-title")).to_have_text(duel["task"]["title"])
    expect(alice.by("task-statement")).not_to_be_empty()
    expect(alice.at("[data-testid=player-card][data-role=opponent] [data-testid=player-name]")).to_have_text("bob")
    expect(bob.at("[data-testid=player-card][data-role=opponent] [data-testid=player-name]")).to_have_text("alice")
    expect(alice.by("countdown")).to_have_text(re.compile(r"^\d+:\d\d$"))
    stake = duel["stakes"][str(alice.id)]  # two newcomers: what each stands to win or lose
    expect(alice.at("[data-testid=player-card][data-role=me] [data-testid=player-stakes]")).to_have_text(
        f"win +{stake['win']} · draw ±0 · loss \u2212{-stake['loss']}")
    expect(alice.by("language-select").locator("option")).to_have_count(len(alice.api("GET", "/api/languages")["languages"]))
    alice.shot("1-duel-screen")

    # Alice's wrong solution. The answer to her first POST is lost on the way back (the server
    # has stored it); the page retries with the same client_temp_id and shows one row.
    dropped: list[bool] = []

    def lose_first_answer(route):
        if dropped:
            route.continue_()
            return
        dropped.append(True)
        route.fetch()
        route.abort("failed")

    alice.page.route("**/api/duels/*/submit", lose_first_answer)
    alice.write(WRONG)
    rows = alice.by("submission-row")
    # The only 202 the page sees is the retry's (the first answer never reaches it).
    with alice.page.expect_response(lambda r: r.url.endswith("/submit") and r.status == 202, timeout=UI_MS):
        alice.by("submit-button").click()
        expect(rows).to_have_count(1, timeout=UI_MS)      # drawn at once, before any answer
    expect(rows.first).to_have_attribute("data-state", "judged", timeout=JUDGE_MS)
    verdict = rows.first.get_attribute("data-verdict")
    assert verdict and verdict != "Accepted"
    expect(rows.first.get_by_test_id("submission-status")).to_have_text(verdict)
    expect(rows).to_have_count(1)
    assert len(alice.submit_bodies) >= 2 and len({b["client_temp_id"] for b in alice.submit_bodies}) == 1
    stored = alice.api("GET", f"/api/duels/{duel_id}/submissions")["submissions"]
    assert [s["client_temp_id"] for s in stored] == [alice.submit_bodies[0]["client_temp_id"]]
    expect(rows.first).to_have_attribute("data-submission-id", stored[0]["id"])
    alice.page.unroute("**/api/duels/*/submit")

    # Bob hears the verdict, never the code; then his own wrong one reaches Alice.
    expect(bob.by("opponent-verdict")).to_have_count(1, timeout=EVENT_MS)
    expect(bob.by("opponent-verdict").first).to_have_attribute("data-verdict", verdict)
    bob.write("print(-1)\n")
    bob.by("submit-button").click()
    expect(bob.by("submission-row").first).to_have_attribute("data-state", "judged", timeout=JUDGE_MS)
    expect(alice.by("opponent-verdict")).to_have_count(1, timeout=EVENT_MS)

    # A reload in the middle: back on the duel, own submissions and the opponent's verdicts
    # restored, the draft kept, and events keep coming (the rest of the duel needs them).
    alice.write("# half-written\n")
    alice.page.reload()
    expect(alice.by("duel-screen")).to_have_attribute("data-duel-id", duel_id, timeout=UI_MS)
    expect(alice.by("duel-screen")).to_have_attribute("data-status", "active")
    expect(alice.by("submission-row")).to_have_count(1)
    expect(alice.by("submission-row").first).to_have_attribute("data-verdict", verdict)
    expect(alice.by("opponent-verdict")).to_have_count(1)
    expect(alice.by("code-editor")).to_have_value("# half-written\n")
    alice.shot("2-after-reload")

    # The right solution wins; both see the result with the rating changes.
    alice.write(reference_solution(task_id))
    if os.environ.get("DUELY_DOCS_SCREENSHOT"):
        alice.by("code-editor").evaluate("el => { el.setSelectionRange(0, 0); el.scrollTop = 0; }")
        alice.shot("duel-screen", ROOT / "docs" / "duel-screen.png")
    alice.by("submit-button").click()
    expect(alice.by("submission-row")).to_have_count(2, timeout=UI_MS)
    expect(alice.by("duel-result")).to_have_attribute("data-outcome", "won", timeout=JUDGE_MS)
    # Since the reload the row went through every stage, the judge's progress included.
    statuses = alice.page.evaluate("window.__statuses")
    assert {"Sending…", "Waiting for the judge", "Accepted"} <= set(statuses), statuses
    assert any(re.fullmatch(r"Test #\d+ passed", s) for s in statuses), statuses
    expect(bob.by("duel-result")).to_have_attribute("data-outcome", "lost", timeout=EVENT_MS)
    finished = alice.api("GET", f"/api/duels/{duel_id}")
    changes = finished["rating_changes"]
    assert finished["result"]["winner_id"] == alice.id and changes[str(alice.id)] > 0 > changes[str(bob.id)]
    for p in (alice, bob):
        for user_id, delta in changes.items():
            expect(p.at(f"[data-testid=rating-change][data-user-id='{user_id}']")).to_have_attribute(
                "data-delta", str(delta), timeout=EVENT_MS)
        expect(p.by("current-rating")).to_have_text(f"{1500 + changes[str(p.id)]}?", timeout=EVENT_MS)  # still provisional
        expect(p.by("submit-button")).to_have_count(0)
    alice.shot("3-result-winner")
    bob.shot("3-result-loser")

    # History: the duel is there; its page shows both players' submissions with their code.
    alice.by("nav-history").click()
    item = alice.at(f"[data-testid=history-item][data-duel-id='{duel_id}']")
    expect(item).to_have_attribute("data-outcome", "won", timeout=UI_MS)
    # the rating chart: the start and one point per finished duel, the last at her rating now
    dots = alice.at("[data-testid=rating-chart] .chart-dot")
    expect(dots).to_have_count(2)
    expect(dots.last).to_have_attribute("data-rating", str(1500 + changes[str(alice.id)]))
    alice.shot("4-history")
    item.click()
    expect(alice.by("duel-screen")).to_have_attribute("data-status", "finished", timeout=UI_MS)
    expect(alice.by("duel-submission")).to_have_count(3)
    expect(alice.at(f"[data-testid=duel-submission][data-user-id='{alice.id}']")).to_have_count(2)
    bobs = alice.at(f"[data-testid=duel-submission][data-user-id='{bob.id}']")
    expect(bobs).to_have_count(1)
    bobs.locator("summary").click()
    expect(bobs.get_by_test_id("submission-code")).to_be_visible()
    expect(bobs.get_by_test_id("submission-code")).to_have_text("print(-1)\n")
    expect(alice.by("code-editor")).to_have_count(0)
    alice.shot("5-finished-duel")

    # Bob logs out and in again: his record is there.
    bob.by("logout-button").click()
    expect(bob.by("auth")).to_be_visible(timeout=UI_MS)
    bob.by("auth-nickname").fill("bob")
    bob.by("auth-password").fill(PASSWORD)
    bob.by("login-button").click()
    expect(bob.by("profile-played")).to_have_text("1", timeout=UI_MS)
    expect(bob.by("profile-lost")).to_have_text("1")
    expect(bob.at(f"[data-testid=leaderboard-row][data-user-id='{alice.id}']")).to_be_visible()
    bob.shot("6-home")


def test_reconnect_expired_log_resign_and_revoked_token(make_stack, devtaski, browser):
    """The event loop's bad days, forced with request routing: polls that fail (backoff, then
    on), a 410 events_expired (full resync, then on from the id in the error body), a resign
    through the page's confirm dialog, and a token revoked elsewhere (401 logs the page out)."""
    from playwright.sync_api import expect

    stack = make_stack(devtaski.url)
    alice = Player(browser, stack.url, "alice")
    try:
        _bad_days(alice, HttpPlayer(stack.url, "bob"), expect)
    except BaseException:
        alice.shot("failure-bad-days")
        print(stack.logs())
        print(alice.console)
        raise
    assert unexpected_console(alice, ["net::ERR_FAILED", "status of 410", "status of 401"]) == []


def _bad_days(alice: Player, bob: HttpPlayer, expect) -> None:
    from urllib.parse import parse_qs, urlparse

    alice.register()
    mode = {"polls": "pass"}
    seen: list[dict] = []                    # the query of every poll, in order
    expired_at: list[int] = []

    def polls(route):
        seen.append(parse_qs(urlparse(route.request.url).query))
        if mode["polls"] == "fail":
            route.abort("failed")
        elif mode["polls"] == "expire-once":
            mode["polls"] = "pass"
            after = int(seen[-1]["last_event_id"][0])
            expired_at.append(len(seen) - 1)
            route.fulfill(status=410, json={"error": {"code": "events_expired", "message": "Events were pruned.",
                                                      "last_event_id": after}})
        else:
            route.continue_()

    alice.page.route(lambda url: "/api/updates?" in url, polls)

    # Polls fail: the page says it is reconnecting, backs off, and comes back by itself.
    mode["polls"] = "fail"
    alice.by("find-duel-button").click()      # queue_joined answers the held poll; the next one fails
    expect(alice.by("connection-status")).to_have_attribute("data-state", "offline", timeout=EVENT_MS)
    expect(alice.by("connection-status")).to_be_visible()
    mode["polls"] = "pass"
    expect(alice.by("connection-status")).to_be_hidden(timeout=EVENT_MS)
    expect(alice.by("queue-status")).to_have_attribute("data-status", "waiting")

    # Matched with a bot over HTTP: the loop that survived the outage brings the duel.
    assert bob.call("POST", "/api/queue").status_code == 202
    started = bob.wait_for(lambda e: e["type"] == "duel_started", 90, "duel_started")
    duel_id = started["data"]["duel_id"]
    expect(alice.by("duel-screen")).to_have_attribute("data-duel-id", str(duel_id), timeout=MATCH_MS)

    # 410: resync from the REST snapshot, then go on from the id in the error body.
    mode["polls"] = "expire-once"
    for n in (1, 2):
        resp = bob.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": f"print({-n})", "language": "python"})
        assert resp.status_code == 202, resp.text
        expect(alice.by("opponent-verdict")).to_have_count(n, timeout=JUDGE_MS)
    assert expired_at, "the page never polled after its held poll was answered"
    expired, drain = seen[expired_at[0]], seen[expired_at[0] + 1]
    assert drain["last_event_id"] == expired["last_event_id"] and drain["timeout"] == ["0"]   # resync from the body's id
    expect(alice.by("connection-status")).to_be_hidden()

    # Resign, confirmed in the page's dialog (Cancel first: nothing happens).
    alice.by("resign-button").click()
    expect(alice.by("confirm-dialog")).to_be_visible()
    alice.by("confirm-no").click()
    expect(alice.by("duel-screen")).to_have_attribute("data-status", "active")
    alice.by("resign-button").click()
    alice.by("confirm-yes").click()
    expect(alice.by("duel-result")).to_have_attribute("data-outcome", "lost", timeout=EVENT_MS)
    expect(alice.by("result-reason")).to_have_text("alice resigned.")
    finished = bob.wait_for(lambda e: e["type"] == "duel_finished", 30, "duel_finished")
    assert (finished["data"]["winner_id"], finished["data"]["reason"]) == (bob.id, "resign")
    expect(alice.by("current-rating")).to_have_text(f"{1500 + finished['data']['rating_changes'][str(alice.id)]}?",
                                                    timeout=EVENT_MS)

    # The token is revoked elsewhere: the page's next call gets 401 and it logs out. That call
    # is either the event loop's next poll or the history the click below asks for, whichever
    # comes first (dispatch_event: the link is hidden once the page has logged out).
    alice.api("POST", "/api/auth/logout")
    alice.by("nav-history").dispatch_event("click")
    expect(alice.by("auth")).to_be_visible(timeout=EVENT_MS)
    expect(alice.by("toast")).to_have_count(1)
    expect(alice.by("toast")).to_contain_text("session has ended")
    assert alice.page.evaluate("localStorage.getItem('duely.token')") is None
