#!/usr/bin/env python3
"""An example Duely bot on the Python client library (clients/python/duely_client).

It logs in (or registers), joins the queue, and for every duel: reads the task, submits a
solution from a folder of solutions by task (or a naive attempt when it has none), resigns
when it cannot win (its last idea was not Accepted), and queues again when the duel is over.
Ctrl-C (or SIGTERM) leaves the queue and exits cleanly.

    .venv/bin/python examples/bot.py --nickname bot1 --solutions tests/devtaski/solutions \
        --problems duely/devtaski/problems

`--stream` follows the event log over its Server-Sent Events stream (`Client.stream()`, one
open connection) instead of long polls (`Client.updates()`); the bot plays the same either way.

Solutions are found by task: `<task id>.<ext>`, `<title as a-slug>.<ext>`, or, with
`--problems`, `<folder name>.<ext>` of the problem whose problem.json has that id.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python"))

from duely_client import AlreadyInDuel, Client, ConnectionFailed, DuelFinished, DuelyError, RateLimited  # noqa: E402

EXTENSIONS = {"python": "py", "cpp": "cpp"}
RATE_LIMITED_WAIT_SECS = 5.0  # when a 429 comes without Retry-After (Duely always sends one)
NAIVE = {
    "python": "import sys\ndata = sys.stdin.read().split()\nprint(sum(int(x) for x in data if x.lstrip('-').isdigit()))\n",
    "cpp": "#include <iostream>\nint main() { long long x, s = 0; while (std::cin >> x) s += x; std::cout << s << '\\n'; }\n",
}


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class Bot:
    def __init__(self, client: Client, nickname: str, password: str, language: str, solutions: Path | None,
                 problems: Path | None, stream: bool = False):
        self.client, self.nickname, self.password, self.language = client, nickname, password, language
        self.stream = stream  # follow the log over the event stream instead of long polls
        self.solutions = solutions
        self.folder_by_task = self._problem_folders(problems)
        self.duel_id: int | None = None
        self.attempts: list[str] = []  # what is left to try in this duel
        self.pending: set[str] = set()  # our submissions without a verdict yet
        self.duels_played = 0

    def say(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.nickname}: {message}", flush=True)

    @staticmethod
    def _problem_folders(problems: Path | None) -> dict[int, str]:
        if problems is None:
            return {}
        return {json.loads(p.read_text())["id"]: p.parent.name for p in problems.glob("*/problem.json")}

    def solution_for(self, task: dict) -> str | None:
        if self.solutions is None:
            return None
        ext = EXTENSIONS[self.language]
        names = [str(task["id"]), slug(task.get("title", ""))]
        if task["id"] in self.folder_by_task:
            names.append(self.folder_by_task[task["id"]])
        for name in names:
            path = self.solutions / f"{name}.{ext}"
            if name and path.exists():
                return path.read_text()
        return None

    # -- the game --------------------------------------------------------------------------
    def run(self) -> None:
        self.client.login_or_register(self.nickname, self.password)
        self.say(f"logged in as user {self.client.user_id}")
        after = self._newest_event_id()
        # the bot knows what its own calls did from their answers: it need not be woken for their echoes
        follow = self.client.stream if self.stream else self.client.updates
        updates = follow(after, on_resync=lambda _: self.resync(), wake_on_own=False)
        self.resync()
        for event in updates:
            self.on_event(event)

    def _newest_event_id(self) -> int:
        """Start from now: what happened before this run is read from the REST snapshot."""
        last = 0
        while True:
            try:
                page = self.client.poll(last, timeout=0)
            except DuelyError as exc:
                if exc.code != "events_expired":
                    raise
                return int(exc.body.get("last_event_id", 0))
            if not page["events"]:
                return page["last_event_id"]
            last = page["last_event_id"]

    def resync(self) -> None:
        status = self.client.queue_status()
        if status["status"] == "in_duel":
            if status["duel_id"] != self.duel_id:
                self.start_duel(status["duel_id"])
        elif status["status"] == "idle":
            self.queue()

    def queue(self) -> None:
        try:
            self.client.join_queue()
            self.say("queued")
        except AlreadyInDuel:
            self.resync()

    def start_duel(self, duel_id: int) -> None:
        self.duel_id, self.pending = duel_id, set()
        task = self.client.duel(duel_id)["task"]
        self.say(f"duel {duel_id} started: task {task['id']} {task.get('title', '')!r}")
        known = self.solution_for(task)
        self.attempts = [known] if known is not None else [NAIVE[self.language]]
        self.next_attempt()

    def next_attempt(self) -> None:
        if not self.attempts:
            self.say(f"cannot win duel {self.duel_id}; resigning")
            try:
                self.client.resign(self.duel_id)
            except DuelFinished:
                pass
            return
        sid = self.submit(self.attempts.pop(0))
        if sid is not None:
            self.pending.add(sid)
            self.say(f"submitted {sid}")

    def submit(self, solution: str) -> str | None:
        """Submit to the current duel; None when it is over. Past the submission rate limit
        (429: nothing was stored) it waits as long as the answer says and submits again."""
        while True:
            try:
                return self.client.submit(self.duel_id, solution, self.language)
            except DuelFinished:
                return None
            except RateLimited as exc:
                wait = exc.retry_after if exc.retry_after is not None else RATE_LIMITED_WAIT_SECS
                self.say(f"rate limited: submitting again in {wait:g} s")
                time.sleep(wait)

    def on_event(self, event: dict) -> None:
        kind, data = event["type"], event["data"]
        if kind == "duel_started" and data["duel_id"] != self.duel_id:
            self.start_duel(data["duel_id"])
        elif kind == "submission_verdict" and data["submission_id"] in self.pending:
            self.pending.discard(data["submission_id"])
            self.say(f"verdict {data['verdict']!r}")
            if data["verdict"] != "Accepted" and data["duel_id"] == self.duel_id:
                self.next_attempt()
        elif kind == "duel_finished" and data["duel_id"] == self.duel_id:
            won = data.get("winner_id") == self.client.user_id
            self.duels_played += 1
            change = (data.get("rating_changes") or {}).get(str(self.client.user_id))
            self.say(f"duel {self.duel_id} finished: {'won' if won else data.get('outcome') if data.get('outcome') == 'draw' else 'lost'} "
                     f"({data.get('reason')}), rating change {change}")
            self.duel_id = None
            self.queue()
        elif kind == "queue_left" and data.get("reason") == "expired":
            self.queue()

    def leave(self) -> None:
        try:
            self.client.leave_queue()
        except (DuelyError, ConnectionFailed) as exc:
            self.say(f"could not leave the queue: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5001")
    parser.add_argument("--nickname", required=True)
    parser.add_argument("--password", default="bot password 123")
    parser.add_argument("--language", default="python", choices=sorted(EXTENSIONS))
    parser.add_argument("--solutions", type=Path, help="folder of solutions by task")
    parser.add_argument("--problems", type=Path, help="the dev Taski's problems folder (maps task ids to names)")
    parser.add_argument("--stream", action="store_true",
                        help="follow the event log over Server-Sent Events (one open connection) instead of long polls")
    args = parser.parse_args(argv)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    bot = Bot(Client(args.url), args.nickname, args.password, args.language, args.solutions, args.problems,
              args.stream)
    try:
        bot.run()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the goodbye short
        bot.leave()
        bot.say(f"stopped after {bot.duels_played} duels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
