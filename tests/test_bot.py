"""examples/bot.py: two bots play duels on the real stack, meet the submission rate limit and
wait it out, then Ctrl-C makes them leave the queue and exit cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from sqlalchemy import text

from tests.fixtures.stack import ROOT


def start_as_from_a_terminal(command: list[str], out) -> subprocess.Popen:
    """Start `command` with Ctrl-C (SIGINT) at its default, as a terminal would: a suite run as a
    background job (`nohup make test &`) has SIGINT ignored, and a child inherits that, so the
    bots would not hear the test's Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_two_bots_play_then_leave_on_ctrl_c(instant_stack, db, tmp_path):
    bots = []
    for name, extra in (("bot-a", ["--solutions", "tests/devtaski/solutions", "--problems", "duely/devtaski/problems"]),
                        ("bot-b", ["--stream"])):  # one follows its log by long polls, the other by the stream
        out = open(tmp_path / f"{name}.out", "w")
        bots.append((start_as_from_a_terminal([sys.executable, str(ROOT / "examples" / "bot.py"), "--url",
                                               instant_stack.url, "--nickname", name, *extra], out),
                     tmp_path / f"{name}.out"))
    try:
        deadline = time.monotonic() + 90
        while not all("finished:" in path.read_text() for _, path in bots):
            assert time.monotonic() < deadline, "\n".join(path.read_text() for _, path in bots) + instant_stack.logs()
            assert all(proc.poll() is None for proc, _ in bots), "\n".join(path.read_text() for _, path in bots)
            time.sleep(0.2)
        # Both queue again after the duel. With the instant judge they play one duel after the
        # other until they make more submissions than SUBMIT_RATE_LIMIT allows in its window: a bot
        # waits that out (the 429's Retry-After) instead of dying of it.
        while not (all(path.read_text().count("queued") >= 2 for _, path in bots)
                   and any("rate limited: submitting again in" in path.read_text() for _, path in bots)):
            assert time.monotonic() < deadline, "\n".join(path.read_text() for _, path in bots)
            assert all(proc.poll() is None for proc, _ in bots), "\n".join(path.read_text() for _, path in bots)
            time.sleep(0.2)
        for proc, _ in bots:
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(30) for proc, _ in bots]
    finally:
        for proc, _ in bots:
            if proc.poll() is None:
                proc.kill()
    outputs = [path.read_text() for _, path in bots]
    assert codes == [0, 0], outputs
    assert all(re.search(r"stopped after [1-9]\d* duels", out) and "Traceback" not in out for out in outputs), outputs
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM queue_entries")).scalar_one() == 0
        duels = s.execute(text("SELECT status, reason FROM duels")).all()
    # A rematch may have started before Ctrl-C (it stays to be played or to time out).
    assert ("finished", "accepted") in [tuple(d) for d in duels], duels
