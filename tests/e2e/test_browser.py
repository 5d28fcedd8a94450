"""The web page on the real stack, in a real browser: two players in two browser contexts play
a whole duel through the UI only (register, queue, submit, a lost answer retried, a reload in
the middle, the result, history, log out and in); then the code editor (CodeMirror) on its
own, typed into key by key; then challenges (a named one declined with a reason, an invite
link accepted in another context), a rematch offered and accepted, and a third context
watching a duel live to its end.

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
# The editor's text, read through CodeMirror's own API from the module the page loaded (the same
# URL, so the same module instance): the DOM shows only the visible lines.
LOAD_CODEMIRROR = "async () => { window.__cm = await import('/static/vendor/codemirror.js'); }"
EDITOR_TEXT = """() => {
  const el = document.querySelector("[data-testid=code-editor]");
  const view = el && window.__cm.EditorView.findFromDOM(el);
  return view ? view.state.doc.toString() : null;
}"""
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

    def __init__(self, browser, base_url: str, nickname: str, sse: bool = True):
        self.base_url, self.nickname = base_url, nickname
        # The clipboard: write() pastes code into the editor, as people do.
        self.context = browser.new_context(viewport=VIEWPORT, permissions=["clipboard-read", "clipboard-write"])
        self.context.add_init_script(RECORD_STATUSES)
        if not sse:
            # A browser without EventSource: the page follows its logs by long polling only.
            self.context.add_init_script("delete window.EventSource;")
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
        """Replace the editor's text as a person pasting it would: select all, paste. (Typing
        it would add auto-indents and closing brackets; keyboard.insert_text bypasses the
        editor's input handling, and the browser's own multi-line insertion sets inline styles
        the page's CSP refuses.)"""
        self.page.evaluate("(text) => navigator.clipboard.writeText(text)", code)
        self.editor_content().click()
        self.page.keyboard.press("ControlOrMeta+a")
        self.page.keyboard.press("ControlOrMeta+v")
        self.expect_code(code)   # exactly that, nothing auto-indented or auto-closed

    def editor_content(self):
        return self.at("[data-testid=code-editor] .cm-content")

    def code(self) -> str | None:
        self.page.evaluate(LOAD_CODEMIRROR)
        return self.page.evaluate(EDITOR_TEXT)

    def expect_code(self, text: str) -> None:
        self.page.evaluate(LOAD_CODEMIRROR)
        try:
            self.page.wait_for_function(f"(text) => ({EDITOR_TEXT})() === text", arg=text, timeout=UI_MS)
        except Exception:
            raise AssertionError(f"editor text {self.code()!r}, expected {text!r}") from None

    def api(self, method: str, path: str, json: dict | None = None) -> dict:
        """The API as this player, with the token the page keeps (for checks only)."""
        token = self.page.evaluate("localStorage.getItem('duely.token')")
        resp = requests.request(method, self.base_url + path, headers={"Authorization": f"Bearer {token}"}, json=json,
                                timeout=30)
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
    alice.expect_code("# half-written\n")
    alice.shot("2-after-reload")

    # The right solution wins; both see the result with the rating changes.
    alice.write(reference_solution(task_id))
    if os.environ.get("DUELY_DOCS_SCREENSHOT"):
        alice.page.keyboard.press("ControlOrMeta+Home")    # cursor and scroll back at the top
        alice.shot("duel-screen", ROOT / "docs" / "duel-screen.png")
    alice.by("submit-button").click()
    expect(alice.by("submission-row")).to_have_count(2, timeout=UI_MS)
    assert alice.submit_bodies[-1]["solution"] == reference_solution(task_id)
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
    through the page's confirm dialog, and a token revoked elsewhere (401 logs the page out).
    In a browser without EventSource, so the page long-polls (the fallback of its SSE loop;
    test_event_stream_bad_days covers the stream)."""
    from playwright.sync_api import expect

    stack = make_stack(devtaski.url)
    alice = Player(browser, stack.url, "alice", sse=False)
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


def test_code_editor(make_stack, devtaski, browser):
    """The solution editor is CodeMirror, styled under the page's CSP: typed into with the
    keyboard it auto-indents, closes and matches brackets and highlights the chosen language;
    the draft (code and language) survives a reload; Ctrl+Enter sends exactly its text."""
    from playwright.sync_api import expect

    stack = make_stack(devtaski.url)
    alice = Player(browser, stack.url, "alice")
    try:
        _edit(alice, HttpPlayer(stack.url, "bob"), expect)
    except BaseException:
        alice.shot("failure-editor")
        print(stack.logs())
        print(alice.console)
        raise
    # No CSP refusal (of a style or a script) nor any other complaint.
    assert unexpected_console(alice, []) == []


def _edit(alice: Player, bob: HttpPlayer, expect) -> None:
    alice.register()
    alice.by("find-duel-button").click()
    expect(alice.by("queue-status")).to_have_attribute("data-status", "waiting", timeout=UI_MS)
    assert bob.call("POST", "/api/queue").status_code == 202
    duel_id = bob.wait_for(lambda e: e["type"] == "duel_started", 90, "duel_started")["data"]["duel_id"]
    expect(alice.by("duel-screen")).to_have_attribute("data-duel-id", str(duel_id), timeout=MATCH_MS)
    expect(alice.by("duel-screen")).to_have_attribute("data-status", "active")

    # CodeMirror, labelled, with line numbers; its stylesheet applies (the base theme makes the
    # editor a flex column) although the CSP allows no inline styles.
    editor, content = alice.by("code-editor"), alice.editor_content()
    expect(editor).to_have_class(re.compile(r"\bcm-editor\b"))
    expect(content).to_have_attribute("role", "textbox")
    expect(content).to_have_attribute("aria-label", "Solution")
    expect(content).to_have_attribute("contenteditable", "true")
    expect(editor.locator(".cm-lineNumbers")).to_be_visible()
    assert editor.evaluate("el => getComputedStyle(el).display") == "flex"
    assert editor.evaluate("el => getComputedStyle(el).flexDirection") == "column"

    # Typed key by key in Python: "(" closes itself and a typed ")" steps over the closing one;
    # Enter after the colon indents the body by four spaces.
    alice.by("language-select").select_option("python")
    content.click()
    alice.page.keyboard.type("def solve(a, b):")
    alice.expect_code("def solve(a, b):")
    alice.page.keyboard.press("Enter")
    alice.expect_code("def solve(a, b):\n    ")
    alice.page.keyboard.type("return max(a, b")
    alice.expect_code("def solve(a, b):\n    return max(a, b)")
    # The cursor sits before ")": that bracket and its "(" are highlighted as a pair.
    expect(content.locator(".cm-matchingBracket")).to_have_count(2)
    expect(content.locator(".cm-matchingBracket").first).to_have_text("(")
    alice.page.keyboard.press("End")
    alice.page.keyboard.press("Enter")
    alice.page.keyboard.press("Shift+Tab")       # back out of the body, however far in Enter put it
    alice.page.keyboard.type("print(solve(*map(int, input().split())))")
    python_code = "def solve(a, b):\n    return max(a, b)\nprint(solve(*map(int, input().split())))"
    alice.expect_code(python_code)
    # Highlighted as Python: "def" is a keyword, in a colour of its own.
    keyword = content.locator(".tok-keyword", has_text=re.compile(r"^def$"))
    expect(keyword).to_have_count(1)
    colour = "el => getComputedStyle(el).color"
    assert keyword.evaluate(colour) != content.evaluate(colour)

    # C++: the same text is no longer Python ("def" is no keyword); C++ is highlighted as C++.
    alice.by("language-select").select_option("cpp")
    expect(content.locator(".tok-keyword", has_text=re.compile(r"^def$"))).to_have_count(0)
    cpp_code = ("#include <cstdio>\n\nint main() {\n    long long a, b;\n"
                "    if (scanf(\"%lld %lld\", &a, &b) != 2) return 1;\n    printf(\"%lld\\n\", a > b ? a : b);\n}\n")
    alice.write(cpp_code)
    expect(content.locator(".tok-typeName", has_text=re.compile(r"^int$"))).to_have_count(1)
    expect(content.locator(".tok-keyword", has_text=re.compile(r"^return$"))).to_have_count(1)

    # A reload keeps the draft: the text, the language, its highlighting.
    alice.page.reload()
    expect(alice.by("duel-screen")).to_have_attribute("data-status", "active", timeout=UI_MS)
    alice.expect_code(cpp_code)
    expect(alice.by("language-select")).to_have_value("cpp")
    expect(content.locator(".tok-typeName", has_text=re.compile(r"^int$"))).to_have_count(1)

    # Esc, then Tab leaves the editor (Tab alone indents): no keyboard trap.
    content.click()
    alice.page.keyboard.press("Escape")
    alice.page.keyboard.press("Tab")
    assert alice.page.evaluate("document.activeElement.closest('.cm-editor') === null")
    alice.expect_code(cpp_code)

    # Ctrl+Enter submits exactly the editor's text, in the chosen language (no blank line added).
    content.click()
    # (Its answer, not just the request: the check below reads what the server stored.)
    with alice.page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/submit"), timeout=UI_MS):
        alice.page.keyboard.press("Control+Enter")
    assert alice.submit_bodies[-1]["solution"] == cpp_code == alice.code()
    assert alice.submit_bodies[-1]["language"] == "cpp"
    expect(alice.by("submission-row")).to_have_count(1)
    stored = alice.api("GET", f"/api/duels/{duel_id}/submissions")["submissions"]
    assert [(s["solution"], s["language"]) for s in stored] == [(cpp_code, "cpp")]
    alice.shot("7-editor")


# -- challenges, rematch, spectating (issue 15) ------------------------------------------------


def _fail_report(stack, players) -> None:
    for p in players:
        p.shot(f"failure-{p.nickname}")
    print(stack.logs())
    print({p.nickname: p.console for p in players})


def _on_duel(player: Player, expect, duel_id=None) -> str:
    screen = player.by("duel-screen")
    expect(screen).to_have_attribute("data-status", "active", timeout=MATCH_MS)
    if duel_id is not None:
        expect(screen).to_have_attribute("data-duel-id", str(duel_id), timeout=EVENT_MS)
    return screen.get_attribute("data-duel-id")


def test_challenge_declined_and_invite_link_accepted(instant_stack, browser):
    """Bob challenges Alice from the leaderboard; she sees it live and declines with a reason,
    which Bob is told. With challenges turned off, or Bob blocked on his profile, his next ones
    are refused; unblocked, one from her profile goes through and he cancels it. Then Alice
    creates an open challenge; its invite link, opened in Carol's browser (who signs up on the
    way), starts the duel for both."""
    from playwright.sync_api import expect

    stack = instant_stack
    alice, bob, carol = (Player(browser, stack.url, n) for n in ("alice", "bob", "carol"))
    try:
        _invite(stack, alice, bob, carol, expect)
    except BaseException:
        _fail_report(stack, (alice, bob, carol))
        raise
    assert unexpected_console(bob, ["status of 403"]) == []      # the two refused challenges
    for p in (alice, carol):
        assert unexpected_console(p, []) == [], p.nickname


def _invite(stack, alice: Player, bob: Player, carol: Player, expect) -> None:
    alice.register()
    bob.register()

    # A named challenge, from the leaderboard: Alice gets it at once, on whatever page she is.
    bob.page.reload()
    bob.at(f"[data-testid=leaderboard-row][data-user-id='{alice.id}'] [data-testid=challenge-button]").click()
    expect(bob.by("challenge-dialog")).to_be_visible()
    bob.by("challenge-rated").uncheck()
    bob.by("challenge-duration").select_option("600")
    bob.by("challenge-send").click()
    expect(bob.by("challenge-dialog")).to_have_count(0)
    mine = bob.by("outgoing-challenge")
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("Challenge to alice")
    expect(mine).to_contain_text("unrated · 10 min")
    incoming = alice.by("incoming-challenge")
    expect(incoming).to_have_count(1, timeout=EVENT_MS)
    expect(incoming).to_contain_text("bob")
    expect(incoming).to_contain_text("challenges you")
    challenge_id = incoming.get_attribute("data-challenge-id")
    assert mine.get_attribute("data-challenge-id") == challenge_id
    alice.shot("8-challenge-received")

    # Declined with a reason: gone on both sides, and Bob is told why.
    incoming.get_by_test_id("decline-reason").select_option("later")
    incoming.get_by_test_id("decline-challenge").click()
    expect(alice.by("incoming-challenge")).to_have_count(0)
    expect(bob.by("outgoing-challenge")).to_have_count(0, timeout=EVENT_MS)
    expect(bob.by("toast").filter(has_text="alice declined your challenge: not now, later")).to_have_count(1)
    declined = bob.api("GET", f"/api/challenges/{challenge_id}")
    assert (declined["status"], declined["decline_reason"]) == ("declined", "later")

    # Alice turns challenges off: Bob's next one is refused, and the dialog says so.
    alice.by("accept-challenges-toggle").uncheck()
    _until(alice, lambda: alice.api("GET", "/api/users/me/settings")["accept_challenges"] is False, "the setting saved")
    bob.at(f"[data-testid=leaderboard-row][data-user-id='{alice.id}'] [data-testid=challenge-button]").click()
    bob.by("challenge-send").click()
    expect(bob.by("challenge-error")).to_be_visible()
    expect(bob.by("challenge-error")).not_to_be_empty()
    bob.page.keyboard.press("Escape")
    expect(bob.by("challenge-dialog")).to_have_count(0)
    alice.by("accept-challenges-toggle").check()
    _until(alice, lambda: alice.api("GET", "/api/users/me/settings")["accept_challenges"] is True, "the setting saved")

    # Alice blocks Bob on his profile: his challenge from hers is refused; unblocked, it goes
    # through, and when Bob cancels it, it leaves Alice's inbox.
    alice.page.goto(f"{stack.url}/#/users/{bob.id}")
    alice.by("block-button").click()
    expect(alice.by("block-button")).to_have_attribute("data-blocked", "true")
    assert [u["user_id"] for u in alice.api("GET", "/api/users/me/blocks")["users"]] == [bob.id]
    bob.page.goto(f"{stack.url}/#/users/{alice.id}")
    bob.by("profile-challenge-button").click()
    bob.by("challenge-send").click()
    expect(bob.by("challenge-error")).to_be_visible()
    bob.page.keyboard.press("Escape")
    alice.by("block-button").click()
    expect(alice.by("block-button")).to_have_attribute("data-blocked", "false")
    assert alice.api("GET", "/api/users/me/blocks")["users"] == []
    bob.by("profile-challenge-button").click()
    bob.by("challenge-send").click()
    expect(bob.by("challenge-dialog")).to_have_count(0)
    expect(alice.by("incoming-challenge")).to_have_count(1, timeout=EVENT_MS)
    bob.by("nav-home").click()
    bob.by("cancel-challenge").click()
    expect(bob.by("outgoing-challenge")).to_have_count(0)
    expect(alice.by("incoming-challenge")).to_have_count(0, timeout=EVENT_MS)
    alice.by("nav-home").click()

    # An open challenge: its invite link is shown with a copy button.
    alice.by("open-challenge-button").click()
    alice.by("challenge-send").click()
    expect(alice.by("outgoing-challenge")).to_have_count(1)
    link = alice.by("invite-url").input_value()
    assert re.fullmatch(re.escape(stack.url) + r"/\?challenge=[\w-]{12,}", link), link
    alice.by("copy-invite").click()
    assert alice.page.evaluate("navigator.clipboard.readText()") == link
    alice.shot("9-invite-link")

    # Carol opens it without an account: she signs up, and lands on the invitation.
    carol.page.goto(link)
    expect(carol.by("auth")).to_be_visible()
    carol.by("auth-nickname").fill("carol")
    carol.by("auth-password").fill(PASSWORD)
    carol.by("register-button").click()
    screen = carol.by("challenge-screen")
    expect(screen).to_be_visible(timeout=UI_MS)
    expect(screen).to_contain_text("alice")
    expect(carol.by("challenge-status")).to_have_attribute("data-status", "pending")
    carol.shot("10-invite-screen")
    carol.by("accept-invite").click()

    # The duel starts for both; the challenge is accepted and leads to it.
    duel_id = _on_duel(carol, expect)
    _on_duel(alice, expect, duel_id)
    expect(alice.by("outgoing-challenge")).to_have_count(0)
    duel = alice.api("GET", f"/api/duels/{duel_id}")
    assert sorted(p["nickname"] for p in duel["players"]) == ["alice", "carol"]
    # The link, opened again (by Bob), says it is taken.
    bob.page.goto(link)
    expect(bob.by("challenge-status")).to_have_attribute("data-status", "accepted", timeout=UI_MS)
    expect(bob.by("accept-invite")).to_have_count(0)


def test_rematch_offered_and_accepted(instant_stack, browser):
    """After an unrated duel (no rating moves) Alice offers a rematch; Bob sees the offer on his
    result screen, also after a reload, accepts, and both are in a new unrated duel on another task."""
    from playwright.sync_api import expect

    stack = instant_stack
    alice, bob = Player(browser, stack.url, "alice"), Player(browser, stack.url, "bob")
    try:
        _rematch(alice, bob, expect)
    except BaseException:
        _fail_report(stack, (alice, bob))
        raise
    for p in (alice, bob):
        assert unexpected_console(p, []) == [], p.nickname


def _rematch(alice: Player, bob: Player, expect) -> None:
    alice.register()
    bob.register()
    # The first duel, from a challenge (set up over the API; the UI path is tested above).
    challenge = alice.api("POST", "/api/challenges", json={"to": "bob", "rated": False})
    expect(bob.by("incoming-challenge")).to_have_count(1, timeout=EVENT_MS)
    bob.by("accept-challenge").click()
    first = _on_duel(bob, expect)
    _on_duel(alice, expect, first)
    first_task = alice.by("duel-screen").get_attribute("data-task-id")
    expect(alice.by("unrated-tag")).to_be_visible()
    expect(alice.by("player-stakes")).to_have_count(0)
    assert bob.api("GET", f"/api/challenges/{challenge['id']}")["duel_id"] == int(first)

    # Alice wins at once (the instant judge accepts a solution without a verdict marker).
    alice.write("print(42)\n")
    alice.by("submit-button").click()
    for p, outcome in ((alice, "won"), (bob, "lost")):
        expect(p.by("duel-result")).to_have_attribute("data-outcome", outcome, timeout=JUDGE_MS)
        expect(p.by("unrated-note")).to_be_visible()
        assert p.api("GET", "/api/users/me")["rating"] == 1500

    # Alice offers a rematch: she waits; Bob sees the offer where the result is.
    alice.by("rematch-button").click()
    expect(alice.by("rematch-waiting")).to_have_text("Rematch offered; waiting for bob…")
    expect(bob.by("rematch-offered")).to_have_text("alice offers a rematch", timeout=EVENT_MS)
    expect(bob.at("[data-testid=incoming-challenge][data-kind=rematch]")).to_have_count(1)
    bob.shot("11-rematch-offered")
    # The offer survives a reload (the page takes it from GET /api/challenges, the snapshot).
    bob.page.reload()
    expect(bob.by("rematch-offered")).to_have_text("alice offers a rematch", timeout=UI_MS)
    expect(alice.by("rematch-waiting")).to_be_visible()
    bob.by("accept-rematch").click()

    # A new duel for both, on another task, unrated like the first.
    second = _on_duel(bob, expect)
    assert second != first
    _on_duel(alice, expect, second)
    assert alice.by("duel-screen").get_attribute("data-task-id") != first_task
    duel = alice.api("GET", f"/api/duels/{second}")
    assert duel["rated"] is False
    expect(bob.by("incoming-challenge")).to_have_count(0)
    alice.shot("12-rematch-started")


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "long-polling"])
def test_spectator_watches_a_duel_end(instant_stack, browser, sse):
    """Carol finds a duel between two bots on the Live duels page and watches it: both players'
    verdicts as they come (never their code while it runs), then the result, then the code.
    Over Server-Sent Events, and in a browser without EventSource, by long polling."""
    from playwright.sync_api import expect

    stack = instant_stack
    carol = Player(browser, stack.url, "carol", sse=sse)
    requests_seen: list[str] = []
    carol.page.on("request", lambda r: requests_seen.append(r.url))
    try:
        _spectate(stack, carol, expect, requests_seen, sse)
    except BaseException:
        _fail_report(stack, (carol,))
        raise
    assert unexpected_console(carol, []) == []


def _spectate(stack, carol: Player, expect, requests_seen: list[str], sse: bool) -> None:
    alice, bob = HttpPlayer(stack.url, "alice"), HttpPlayer(stack.url, "bob")
    carol.register()
    for p in (alice, bob):
        assert p.call("POST", "/api/queue").status_code == 202
    duel_id = bob.wait_for(lambda e: e["type"] == "duel_started", 90, "duel_started")["data"]["duel_id"]

    # The Live duels page lists it; Watch opens it.
    carol.by("nav-live").click()
    row = carol.at(f"[data-testid=live-duel][data-duel-id='{duel_id}']")
    expect(row).to_be_visible(timeout=UI_MS)
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text("bob")
    carol.shot("13-live-duels")
    row.get_by_test_id("watch-duel").click()
    screen = carol.by("duel-screen")
    expect(screen).to_have_attribute("data-mode", "watching", timeout=UI_MS)
    expect(carol.by("watching-tag")).to_be_visible()
    expect(carol.by("code-editor")).to_have_count(0)
    expect(screen).to_have_attribute("data-stream", "online", timeout=EVENT_MS)
    subs = carol.by("duel-submission")
    expect(subs).to_have_count(0)

    # Bob's wrong answer, then Alice's: each appears with its verdict, without code.
    wrong = "print(0)\n# verdict: Wrong answer on test #2\n"
    resp = bob.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": wrong, "language": "python"})
    assert resp.status_code == 202, resp.text
    bobs = carol.at(f"[data-testid=duel-submission][data-user-id='{bob.id}']")
    expect(bobs).to_have_count(1, timeout=EVENT_MS)
    expect(bobs).to_have_attribute("data-verdict", "Wrong answer on test #2", timeout=EVENT_MS)
    expect(bobs.get_by_test_id("submission-player")).to_have_text("bob")
    resp = alice.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": wrong.replace("#2", "#1"), "language": "python"})
    assert resp.status_code == 202, resp.text
    alices = carol.at(f"[data-testid=duel-submission][data-user-id='{alice.id}']")
    expect(alices).to_have_attribute("data-verdict", "Wrong answer on test #1", timeout=EVENT_MS)
    expect(carol.by("submission-code")).to_have_count(0)
    expect(screen).to_have_attribute("data-status", "active")
    carol.shot("14-spectator")

    # Alice's right answer ends it: Carol sees the verdict and the result, then both codes.
    resp = alice.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": "print(1)\n", "language": "python"})
    assert resp.status_code == 202, resp.text
    expect(carol.by("duel-result")).to_be_visible(timeout=JUDGE_MS)
    expect(carol.by("result-title")).to_have_text("alice won")
    expect(carol.by("result-reason")).to_have_text("alice was first with an Accepted solution.")
    expect(screen).to_have_attribute("data-status", "finished")
    expect(alices).to_have_count(2)
    expect(carol.at(f"[data-testid=duel-submission][data-user-id='{alice.id}'][data-verdict=Accepted]")).to_have_count(1)
    expect(carol.by("submission-code")).to_have_count(3)
    expect(carol.by("rematch-button")).to_have_count(0)
    carol.shot("15-spectator-result")
    # The page followed the duel over Server-Sent Events, authenticated by a ticket, or else by
    # long polls on the duel's log.
    streams = [url for url in requests_seen if f"/api/duels/{duel_id}/stream?" in url]
    polls = [url for url in requests_seen if f"/api/duels/{duel_id}/updates?" in url]
    if sse:
        assert streams and all("ticket=" in url for url in streams), streams
    else:
        assert polls and not streams, (polls, streams)


def test_event_stream_bad_days(make_stack, start_devtaski, browser):
    """The personal log over Server-Sent Events, and its bad days forced with request routing:
    a stream that cannot connect (the page says it is reconnecting, and comes back by itself), a
    stream refused with 410 (one poll learns why; full resync from the id in the error body, then
    the stream again), events of a duel arriving over the stream, and a token revoked elsewhere
    (the stream ends, the reconnect is refused, and the page logs out)."""
    from playwright.sync_api import expect

    taski = start_devtaski(extra_args=("--devtaski-judge", "instant"))
    stack = make_stack(taski.url, sse_heartbeat=1)
    alice = Player(browser, stack.url, "alice")
    try:
        _stream_bad_days(alice, HttpPlayer(stack.url, "bob"), expect)
    except BaseException:
        _fail_report(stack, (alice,))
        raise
    assert unexpected_console(alice, ["net::ERR_FAILED", "status of 410", "status of 401"]) == []


def _until(player: Player, condition, what: str, within_ms: int = EVENT_MS) -> None:
    for _ in range(within_ms // 100):
        if condition():
            return
        player.page.wait_for_timeout(100)    # lets Playwright run the route handlers meanwhile
    raise AssertionError(f"no {what} within {within_ms} ms")


def _stream_bad_days(alice: Player, bob: HttpPlayer, expect) -> None:
    from urllib.parse import parse_qs, urlparse

    mode = {"stream": "pass", "polls": "pass"}
    streams: list[dict] = []
    polls: list[dict] = []

    def on_stream(route):
        streams.append(parse_qs(urlparse(route.request.url).query))
        if mode["stream"] == "fail":
            route.abort("failed")
        elif mode["stream"] == "expire-once":
            mode["stream"], mode["polls"] = "pass", "expire-once"
            route.fulfill(status=410, json={"error": {"code": "events_expired", "message": "Events were pruned.",
                                                      "last_event_id": 1}})
        else:
            route.continue_()

    def on_poll(route):
        polls.append(parse_qs(urlparse(route.request.url).query))
        if mode["polls"] == "expire-once":
            mode["polls"] = "pass"
            after = int(polls[-1]["last_event_id"][0])
            route.fulfill(status=410, json={"error": {"code": "events_expired", "message": "Events were pruned.",
                                                      "last_event_id": after}})
        else:
            route.continue_()

    alice.page.route(lambda url: "/api/stream?" in url, on_stream)
    alice.page.route(lambda url: "/api/updates?" in url, on_poll)
    alice.register()
    # Followed over the stream, with a ticket; polls only for the first read of the log.
    _until(alice, lambda: streams, "the event stream")
    expect(alice.by("connection-status")).to_be_hidden()
    assert all("ticket" in q for q in streams), streams
    assert all(q["timeout"] == ["0"] for q in polls), polls

    # The stream cannot connect: the page says so, and comes back by itself.
    mode["stream"] = "fail"
    alice.page.reload()
    expect(alice.by("connection-status")).to_have_attribute("data-state", "offline", timeout=EVENT_MS)
    mode["stream"] = "pass"
    expect(alice.by("connection-status")).to_be_hidden(timeout=EVENT_MS)

    # Refused with 410: one poll asks why (410 too), the page resyncs from the id in that answer.
    mode["stream"] = "expire-once"
    seen, streams_seen = len(polls), len(streams)
    alice.page.reload()

    def why_then_drain() -> int | None:  # the index of the poll that learns of the 410, once the drain followed it
        after = polls[seen:]
        why = next((i for i, q in enumerate(after) if "limit" not in q and q["timeout"] == ["0"]), None)
        return why if why is not None and len(after) > why + 1 else None

    # Waited for, not assumed: right after the reload the status is hidden before the page even asks.
    _until(alice, lambda: why_then_drain() is not None, "the poll that learns of the 410, then the resync's drain")
    expect(alice.by("connection-status")).to_be_hidden(timeout=EVENT_MS)
    after_reload = polls[seen:]
    expired = why_then_drain()
    assert expired is not None
    drain = after_reload[expired + 1]
    assert drain["last_event_id"] == after_reload[expired]["last_event_id"] and drain["timeout"] == ["0"]
    assert drain.get("limit"), drain                                  # the resync's drain
    # The refused stream, then the one opened after the resync: from then on events come over it.
    _until(alice, lambda: len(streams) >= streams_seen + 2, "the stream opened again after the resync")
    expect(alice.by("connection-status")).to_be_hidden(timeout=EVENT_MS)
    streams_before = len(streams)

    # Events come over the stream again: a duel with a bot, its verdict.
    alice.by("find-duel-button").click()
    expect(alice.by("queue-status")).to_have_attribute("data-status", "waiting", timeout=EVENT_MS)
    assert bob.call("POST", "/api/queue").status_code == 202
    duel_id = bob.wait_for(lambda e: e["type"] == "duel_started", 90, "duel_started")["data"]["duel_id"]
    expect(alice.by("duel-screen")).to_have_attribute("data-duel-id", str(duel_id), timeout=MATCH_MS)
    resp = bob.call("POST", f"/api/duels/{duel_id}/submit", json={"solution": "# verdict: Wrong answer on test #1",
                                                                  "language": "python"})
    assert resp.status_code == 202, resp.text
    expect(alice.by("opponent-verdict")).to_have_count(1, timeout=EVENT_MS)
    assert len(streams) == streams_before and all(q["timeout"] == ["0"] for q in polls), (streams, polls)

    # The token is revoked elsewhere: the stream ends, its reconnect is refused (401), and the
    # poll that asks why logs the page out.
    alice.api("POST", "/api/auth/logout")
    expect(alice.by("auth")).to_be_visible(timeout=EVENT_MS)
    expect(alice.by("toast")).to_contain_text("session has ended")
