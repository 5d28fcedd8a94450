"""A swarm of scripted players against the whole stack, the way `make run` starts it.

    .venv/bin/python bench/swarm.py --players 20 --think 1 --duration 30
    .venv/bin/python bench/swarm.py --players 1000 --think 30 --duration 300
    .venv/bin/python bench/swarm.py --players 20 --duration 30      # no thinking: a closed loop
    .venv/bin/python bench/swarm.py --players 1000 --think 4 --transport stream  # logs over SSE

`--warmup S`: the players play S seconds before the measured window opens, so that the window
measures a steady state rather than a fresh database's first minute (its plans made on empty
tables, until autovacuum's first ANALYZE: see the README); every submission is still checked.

`--resign-chance P`: each player resigns at a duel's start with this probability (default 0.05);
a larger one gives the resignation's latency more samples in a short window.

`--think S`: each player pauses a random 0.5-1.5 x S before every submission and queue join (and
arrives within the first S), so the load is chosen by the number of players and their pace; with
0 every player acts the moment it can and the latency measured is the queue the box builds.

Starts `python -m duely.run` (supervisor, embedded PostgreSQL, broker, dev Taski in instant mode:
DEVTASKI_JUDGE=instant) in a temporary DATA_DIR on free ports, registers N players (before the
measured window), then for `--duration` seconds every player, built on the client library
(clients/python/duely_client) and run as a gevent greenlet here, plays duels through the public
API: queue, submit (a mix of wrong and accepted: the verdict comes from a `# verdict:` marker),
resign sometimes, queue again. Each player follows its log with long polls (`updates()`), or with
`--transport stream` over the Server-Sent Events stream (`stream()`); either way as bots do, with
`wake_on_own=False` (its own submits' and joins' echoes come with its next event instead of
answering a held poll each; `--wake-on-own` for the API's default). Afterwards it lets outstanding verdicts arrive, checks that every
player's log was gapless and every submission got exactly one verdict event, and prints:
submissions/s sustained, submit -> own verdict event p50/p99 (and minute by minute when the
window is two minutes or longer: with each stage's p99, the CPU per submission of each part, and
the WAL PostgreSQL wrote: what grows as a run ages), queue join -> duel_started
p50/p99, p99 of each write endpoint, counts of lost / doubled / gaps / 5xx, and as the baseline
of the same run the latency of `GET /healthz` (no database work beyond SELECT 1) under the same load,
the requests made per submission, and the CPU per submission of each part of the stack (/proc),
PostgreSQL's split by client (the backends' application_name: duely-web, duely-reader, ...).
Where the time goes: from the events' created_at (the stack's clock is this box's), the submit
request until the submission's row, that until the verdict's row (dispatch, judge, broker,
intake) and that until its player read it (commit, wake-up, the poll, the player); with the
players' own event-loop lag, PostgreSQL's active backends by wait event (pg_stat_activity), and
its checkpoints (from its log: one's full-page images make the WAL of the minute after it larger).
It also prints the most the players' pace can offer (`offered_pace`: the same players against a
stack that answers instantly): a sustained rate close to it says the load, not the stack, was the limit.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Iterable  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "python"))
sys.path.insert(0, str(ROOT))

from duely_client import Client, DuelyError  # noqa: E402

from duely.gcfreeze import freeze_startup_heap  # noqa: E402
from duely.infra import free_port  # noqa: E402

if TYPE_CHECKING:
    import psycopg

ACCEPTED = "print(1)\n"
WRONG = "print(0)\n# verdict: Wrong Answer on test #1\n"
P_WRONG = 0.6  # each submission is wrong with this probability...
P_RESIGN = 0.05  # ...and at the start of a duel a player resigns instead with this one
DRAIN_SECS = 30.0
POLL_TIMEOUT_SECS = 25.0  # what the web page and the client library use; idle players cost a poll per this


def offered_pace(think_secs: float, duels: int = 20_000, seed: int = 1, resign_chance: float = P_RESIGN) -> float:
    """Submissions per second ONE player makes against a stack that answers instantly: the most
    its pace can offer, whatever the stack. Simulated with the players' own rules (`Player`):
    each player of a duel resigns at its start with `resign_chance`, else thinks and submits until
    Accepted (each wrong with P_WRONG); the first Accepted ends the duel (a submission still
    being thought about is dropped); each then thinks once more and joins, paired at once.
    With N players the swarm can sustain at most N times this: a run near it measures the
    players' pace, not the stack's capacity."""
    if think_secs <= 0:
        return float("inf")
    rng = random.Random(seed)

    def pause() -> float:
        return think_secs * rng.uniform(0.5, 1.5)

    submissions = seconds = 0.0
    for _ in range(duels):
        resigned = [rng.random() < resign_chance for _ in range(2)]
        attempts: list[list[float]] = []  # each player's submission times, up to its first Accepted
        for player in range(2):
            times: list[float] = []
            while not resigned[player]:
                times.append((times[-1] if times else 0.0) + pause())
                if rng.random() >= P_WRONG:
                    break
            attempts.append(times)
        end = 0.0 if any(resigned) else min(times[-1] for times in attempts)
        submissions += sum(1 for times in attempts for t in times if t <= end)
        seconds += 2 * end + pause() + pause()  # both players' duel, then each one's think before joining
    return submissions / seconds


def wall_clock(created_at: str) -> float:
    """An event's created_at (ISO-8601 UTC, "Z") as seconds since the epoch."""
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value == value else "n/a"


class Stats:
    def __init__(self) -> None:
        self.playing = False  # the players act (the warm-up and the window)
        self.window_open = False  # what they do is measured
        self.window_began = float("inf")  # monotonic time the window opened (none yet: nothing is timed)
        self.window_began_wall = float("inf")  # the same, wall clock
        self.closed = False
        self.endpoint: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[int, int] = defaultdict(int)
        self.submit_to_verdict: list[float] = []
        self.verdict_began: list[float] = []  # when each submission in submit_to_verdict began (same order)
        self.submit_began: list[float] = []  # when each submission made within the window began
        self.join_to_start: list[float] = []
        self.submitted: dict[str, float] = {}  # submission id -> monotonic time the submit began
        self.submitted_wall: dict[str, float] = {}  # the same, wall clock
        self.verdict_events: dict[str, int] = defaultdict(int)
        self.verdicts_in_window = 0
        self.submits_in_window = 0
        self.gaps = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.healthz: list[float] = []
        # Where a verdict's time goes, from the events' created_at (the stack's clock is this box's):
        # the submit request until the submission's row, that until the verdict's row (the pipeline:
        # dispatch, judge, broker, intake), and that until the player has read it (commit, wake-up,
        # the poll's answer, the player's loop).
        self.stored_at: dict[str, float] = {}  # submission id -> created_at of its submission_created
        self.submit_to_stored: list[float] = []
        self.stored_to_verdict: list[float] = []
        self.verdict_to_seen: list[float] = []
        self.where_began: list[float] = []  # when each submission in submit_to_stored began (same order)
        # (monotonic time, cpu_by_part, pg_counters then) at each SLICE_SECS of the window: which
        # part's CPU grows, and the WAL written (a checkpoint's full-page images)
        self.cpu_marks: list[tuple[float, dict[str, tuple[float, float]], dict[str, float]]] = []
        self.loop_lag: list[float] = []  # how late the players' own event loop woke a 10 ms sleep
        self.box_speed: list[tuple[float, float]] = []  # (monotonic time, CPU seconds of BOX_SPEED_LOOP) in the window
        self.pg_waits: dict[str, int] = defaultdict(int)  # PostgreSQL's active backends by wait event, summed over samples
        self.pg_samples = 0
        self.requests: dict[str, int] = defaultdict(int)  # route -> requests made within the window
        # "METHOD route status" of every 5xx -> monotonic times it was answered: which request, and a burst or not
        self.server_errors: dict[str, list[float]] = defaultdict(list)

    def on_response(self, method: str, route: str, status: int, secs: float) -> None:
        if self.closed:  # the polls still held when the run ends are cut off: not a failure of the stack
            return
        self.statuses[status] += 1
        if status >= 500:
            self.server_errors[f"{method} {route} {status}"].append(time.monotonic())
        if self.window_open:
            self.requests[route] += 1
            if method != "GET":
                self.endpoint[route].append(secs)


class Player:
    def __init__(self, url: str, index: int, stats: Stats, stop: gevent.event.Event, think_secs: float = 0.0,
                 transport: str = "poll", wake_on_own: bool = False, resign_chance: float = P_RESIGN):
        self.client = Client(url, on_response=stats.on_response, timeout=30)
        self.think_secs = think_secs
        self.transport = transport
        self.wake_on_own = wake_on_own
        self.resign_chance = resign_chance
        self.nickname = f"swarm{index}"
        self.stats, self.stop = stats, stop
        self.rng = random.Random(index)
        self.duel_id: int | None = None
        self.joined_at: float | None = None
        self.last_id = 0

    def register(self) -> None:
        self.client.register(self.nickname, "swarm password 1")

    def play(self, measuring: gevent.event.Event) -> None:
        updates: Iterable[dict] = (self.client.stream(0, stop=self.stop, wake_on_own=self.wake_on_own)
                                   if self.transport == "stream"
                                   else self.client.updates(0, timeout=POLL_TIMEOUT_SECS, stop=self.stop,
                                                            wake_on_own=self.wake_on_own))
        measuring.wait()
        if self.think_secs > 0:  # players arrive spread over one think time, not all in the same instant
            gevent.spawn_later(self.rng.uniform(0, self.think_secs), self.act, self.join)
        else:
            self.act(self.join)
        for event in updates:
            if event["id"] != self.last_id + 1:
                self.stats.gaps += 1
            self.last_id = event["id"]
            self.on_event(event)

    def later(self, action, *args) -> None:
        """Do `action` after a think time (uniform in [0.5, 1.5] x --think), off the event loop of
        this player's updates, so events keep being read meanwhile."""
        if self.think_secs <= 0:
            self.act(action, *args)
        else:
            gevent.spawn_later(self.think_secs * self.rng.uniform(0.5, 1.5), self.act, action, *args)

    def act(self, action, *args) -> None:
        if self.stop.is_set() or not self.stats.playing:
            return
        try:
            action(*args)
        except DuelyError as exc:
            self.stats.errors[exc.code] += 1

    def join(self) -> None:
        self.joined_at = time.monotonic()
        self.client.join_queue()

    def submit(self, duel_id: int | None = None) -> None:
        duel_id = self.duel_id if duel_id is None else duel_id
        if duel_id != self.duel_id:  # the duel ended while this player was thinking
            return
        began, began_wall = time.monotonic(), time.time()
        sid = self.client.submit(duel_id, WRONG if self.rng.random() < P_WRONG else ACCEPTED)
        self.stats.submitted[sid] = began
        self.stats.submitted_wall[sid] = began_wall
        if self.stats.window_open:
            self.stats.submits_in_window += 1
            self.stats.submit_began.append(began)

    def on_event(self, event: dict) -> None:
        kind, data, now = event["type"], event["data"], time.monotonic()
        if kind == "submission_created":
            self.stats.stored_at[data["submission_id"]] = wall_clock(event["created_at"])
        if kind == "duel_started":
            self.duel_id = data["duel_id"]
            if self.joined_at is not None and self.stats.window_open:
                self.stats.join_to_start.append(now - self.joined_at)
            self.joined_at = None
            if self.rng.random() < self.resign_chance:
                self.act(self.client.resign, self.duel_id)
            else:
                self.later(self.submit, self.duel_id)
        elif kind == "submission_verdict":
            sid = data["submission_id"]
            self.stats.verdict_events[sid] += 1
            began = self.stats.submitted.get(sid)
            # latencies of the submissions begun in the window (a warm-up's are checked, not timed)
            if began is not None and self.stats.verdict_events[sid] == 1 and began >= self.stats.window_began:
                self.stats.submit_to_verdict.append(now - began)
                self.stats.verdict_began.append(began)
                verdict_at, stored_at = wall_clock(event["created_at"]), self.stats.stored_at.get(sid)
                self.stats.verdict_to_seen.append(time.time() - verdict_at)
                if stored_at is not None:
                    self.stats.submit_to_stored.append(stored_at - self.stats.submitted_wall[sid])
                    self.stats.stored_to_verdict.append(verdict_at - stored_at)
                    self.stats.where_began.append(began)
                if self.stats.window_open:
                    self.stats.verdicts_in_window += 1
            if data["verdict"] != "Accepted" and data["duel_id"] == self.duel_id:
                self.later(self.submit, self.duel_id)
        elif kind == "duel_finished" and data["duel_id"] == self.duel_id:
            self.duel_id = None
            self.later(self.join)
        elif kind == "queue_left" and data.get("reason") == "expired":
            self.act(self.join)


def start_stack(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "KAFKA_", "TASKI_", "DUELY_"))}
    env.update({
        "DATA_DIR": str(data_dir), "PORT": str(port), "KAFKA_PORT": str(free_port()),
        "DEVTASKI_PORT": str(free_port()), "DEVTASKI_JUDGE": "instant", "LOG_LEVEL": "INFO",
        # The players submit far more often than the per-user limit of a real game allows.
        "SUBMIT_RATE_LIMIT": "100000", "DUEL_DURATION": "10m",
    })
    log = open(data_dir / "run.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "duely.run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    return proc


def wait_healthy(url: str, proc: subprocess.Popen, timeout_secs: float = 180) -> None:
    client = Client(url, timeout=2)
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the stack exited while starting")
        try:
            if client.health()["status"] == "ok":
                return
        except DuelyError:
            pass
        time.sleep(0.5)
    raise SystemExit("the stack did not come up")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_part(data_dir: Path) -> dict[str, tuple[float, float]]:
    """(CPU seconds used so far, seconds spent runnable but waiting for a CPU) by each part of the
    stack, read from /proc: the supervisor's children (found through `run.log`'s "started
    process=NAME pid=PID" lines, with all their descendants), PostgreSQL (every `postgres`
    process), this process (the players), the rest. The CPU includes what ended processes used
    (a backend of a closed connection, an autovacuum worker); the wait counts live processes'
    threads only (/proc/PID/task/*/schedstat: the kernel keeps no total for ended ones)."""
    roots: dict[int, str] = {}
    for line in (data_dir / "run.log").read_text(errors="replace").splitlines():
        if "started process=" in line and " pid=" in line:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            roots[int(fields["pid"])] = fields["process"]
    parents: dict[int, int] = {}
    usage: dict[int, tuple[str, float, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            waited = run_queue_wait(int(entry))
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        parents[int(entry)] = int(rest[1])
        # utime + stime, and cutime + cstime: what its children that ended used (a PostgreSQL
        # backend of a connection that was closed, an autovacuum worker), or they would be missed
        usage[int(entry)] = (comm, sum(int(field) for field in rest[11:15]) / CLOCK_TICKS, waited)
    totals: dict[str, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
    for pid, (comm, secs, waited) in usage.items():
        part, walk = None, pid
        while walk > 1 and part is None:
            part = roots.get(walk)
            walk = parents.get(walk, 0)
        if part is None:
            part = "postgres" if comm == "postgres" else "players (this process)" if pid == os.getpid() else "rest of the box"
        cpu, wait = totals[part]
        totals[part] = (cpu + secs, wait + waited)
    return totals


def run_queue_wait(pid: int) -> float:
    """Seconds the threads of `pid` have spent runnable but not running: waiting for a CPU
    (the second field of each thread's /proc/PID/task/TID/schedstat, in nanoseconds)."""
    waited = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            waited += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile, or a kernel without schedstats
    return waited / 1e9


def embedded_pg(data_dir: Path) -> "psycopg.Connection":
    """An autocommit connection to the embedded PostgreSQL of the stack in `data_dir` (its socket
    is in DATA_DIR/pg); raises psycopg.Error when the server is not the embedded one."""
    import psycopg

    return psycopg.connect(host=str(data_dir / "pg"), user="postgres", dbname="postgres", autocommit=True)


def pg_cpu_by_client(data_dir: Path) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by each live PostgreSQL backend, with whose it is: its
    `application_name` without a trailing pid (the stack's pools, readers and listeners name
    themselves: duely-web, duely-reader, duely-scheduler, ...), else its backend type. Empty when
    the server is not the embedded one."""
    import psycopg

    try:
        conn = embedded_pg(data_dir)
    except psycopg.Error:
        return {}
    with conn:
        rows = conn.execute("SELECT pid, application_name, backend_type FROM pg_stat_activity"
                            " WHERE pid <> pg_backend_pid()").fetchall()
    usage: dict[int, tuple[str, float]] = {}
    for pid, app, backend_type in rows:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = re.sub(r"-\d+$", "", app) if app else backend_type
        usage[pid] = (name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return usage


def sample_healthz(url: str, stats: Stats, stop: gevent.event.Event) -> None:
    client = Client(url, timeout=10)
    while not stop.is_set():
        began = time.monotonic()
        try:
            client.health()
            stats.healthz.append(time.monotonic() - began)
        except DuelyError:
            stats.errors["healthz"] += 1
        gevent.sleep(0.1)


def sample_loop_lag(stats: Stats, stop: gevent.event.Event, period: float = 0.01) -> None:
    """How late this process's event loop runs a greenlet that asked to sleep `period`: every
    latency measured here includes this much of the players' own waiting (1,000 players share
    one process and the box's cores with the stack)."""
    while not stop.is_set():
        began = time.monotonic()
        gevent.sleep(period)
        if stats.window_open:
            stats.loop_lag.append(max(0.0, time.monotonic() - began - period))


# A fixed piece of pure-Python work, run in a process of its own: the CPU time it takes (not the
# wall time: waiting for a core does not count) says how fast the box's cores are right now. On
# this shared virtual machine it ranged 0.10-0.16 s on an idle box, within minutes: runs are only
# comparable at the same speed.
BOX_SPEED_LOOP = """
import time
def work():
    began, s = time.process_time(), 0
    for i in range(2_000_000):
        s += i * i % 7
    return time.process_time() - began
print(work())
"""


def box_speed() -> float:
    """CPU seconds BOX_SPEED_LOOP took this time (NaN if it failed)."""
    done = subprocess.run([sys.executable, "-c", BOX_SPEED_LOOP], capture_output=True, text=True, timeout=60)
    try:
        return float(done.stdout.strip())
    except ValueError:
        return float("nan")


def sample_box_speed(stats: Stats, stop: gevent.event.Event, period: float = 15.0) -> None:
    """`box_speed` every `period` over the window (~1% of one core)."""
    while not stop.wait(period):
        if stats.window_open:
            stats.box_speed.append((time.monotonic(), box_speed()))


def sample_pg_waits(data_dir: Path, stats: Stats, stop: gevent.event.Event, period: float = 0.1) -> None:
    """What the stack's PostgreSQL backends are doing, sampled from pg_stat_activity every
    `period` over the window (the embedded server's socket is in DATA_DIR/pg): the mean number
    of active backends by wait event ("cpu" when running). Lock waits at commit are PostgreSQL's
    NOTIFY queue lock, held by a committing transaction that sent NOTIFY until its WAL flush."""
    import psycopg

    try:
        conn = embedded_pg(data_dir)
    except psycopg.Error:
        return  # not the embedded server: no figure
    with conn:
        while not stop.is_set():
            if stats.window_open:
                stats.pg_samples += 1
                for wait_type, wait_event in conn.execute(
                        "SELECT coalesce(wait_event_type, 'cpu'), coalesce(wait_event, '') FROM pg_stat_activity"
                        " WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()"):
                    stats.pg_waits[f"{wait_type}/{wait_event}" if wait_event else wait_type] += 1
            gevent.sleep(period)


def checkpoints_logged(data_dir: Path, window_began_wall: float) -> list[str]:
    """PostgreSQL's checkpoints from its log (log_checkpoints is on by default), as seconds from
    the window's start, why each began (time, wal, shutdown...) and what it wrote: a checkpoint's
    writes, and the full-page images in the WAL after it began, compete with the stack for the
    disk and the cores."""
    try:
        text = (data_dir / "pg" / "log").read_text(errors="replace")
    except OSError:
        return []

    def offset(stamp: str, zone: str) -> float:
        at = datetime.strptime(f"{stamp} {'+0000' if zone in ('UTC', 'GMT') else zone}", "%Y-%m-%d %H:%M:%S.%f %z")
        return at.timestamp() - window_began_wall

    found, began = [], None
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (\w+) \[\d+\] LOG:  "
    for match in re.finditer(stamp + r"checkpoint (starting: (.*)|complete: (wrote \d+ buffers).*?(total=[\d.]+ s).*?(distance=\d+ kB).*)$",
                             text, re.MULTILINE):
        when, zone, _, why, wrote, total, distance = match.groups()
        if why is not None:
            began = (offset(when, zone), why.strip())
            continue
        start = f"began {began[0]:+.0f} s ({began[1]}), " if began else ""
        found.append(f"{start}ended {offset(when, zone):+.0f} s ({wrote}, {total}, WAL {distance})")
        began = None
    return found


def deadlocks_logged(data_dir: Path) -> int | None:
    """Deadlocks the embedded PostgreSQL detected, from its log (None: no such log). They are
    retried, so no player sees an error, but each waited deadlock_timeout first."""
    try:
        return (data_dir / "pg" / "log").read_text(errors="replace").count("ERROR:  deadlock detected")
    except OSError:
        return None


SLICE_SECS = 60.0


def by_slice(stats: Stats, window_began: float, window: float) -> list[str]:
    """Per SLICE_SECS of the window: submissions/s, submit -> own verdict p50/p99 of the
    submissions begun in it, the p99 of each stage of theirs (where it goes), and the CPU per
    submission of the parts that used the most (from `stats.cpu_marks`): whether a late minute's
    tail comes with a part that needs more CPU as the run ages."""
    lines = []
    marks = {round((t - window_began) / SLICE_SECS): (usage, counters) for t, usage, counters in stats.cpu_marks}
    for start in range(0, int(window // SLICE_SECS)):
        lo, hi = window_began + start * SLICE_SECS, window_began + (start + 1) * SLICE_SECS
        submits = sum(1 for t in stats.submit_began if lo <= t < hi)
        latencies = [v for t, v in zip(stats.verdict_began, stats.submit_to_verdict, strict=True) if lo <= t < hi]
        stages = [(label, [v for t, v in zip(began, values, strict=True) if lo <= t < hi])
                  for label, began, values in (("to stored", stats.where_began, stats.submit_to_stored),
                                               ("to verdict", stats.where_began, stats.stored_to_verdict),
                                               ("to read", stats.verdict_began, stats.verdict_to_seen))]
        speed = [secs for t, secs in stats.box_speed if lo <= t < hi]
        line = (f"{start * SLICE_SECS:.0f}-{(start + 1) * SLICE_SECS:.0f} s {submits / SLICE_SECS:.1f}/s, "
                f"p50 {ms(quantile(latencies, 0.5))}, p99 {ms(quantile(latencies, 0.99))}"
                + (f", box speed loop {ms(quantile(speed, 0.5))}" if speed else "")
                + "; stage p99: " + ", ".join(f"{label} {ms(quantile(values, 0.99))}" for label, values in stages))
        if start in marks and start + 1 in marks and submits:
            (before, pg_before), (after, pg_after) = marks[start], marks[start + 1]
            used = {part: after[part][0] - before.get(part, (0.0, 0.0))[0] for part in after}
            line += "; CPU ms/submission: " + ", ".join(
                f"{part.split(' ')[0]} {secs * 1000 / submits:.1f}"
                for part, secs in sorted(used.items(), key=lambda item: -item[1])[:6])
            if pg_before and pg_after:
                delta = {key: pg_after[key] - pg_before[key] for key in pg_after}
                line += (f"; WAL {delta['wal_bytes'] / 1024 / submits:.1f} kB/submission"
                         f" ({delta['wal_fpi'] / submits:.2f} full-page images), {delta['commits'] / submits:.1f} commits")
        lines.append(line)
    return lines


def pg_counters(data_dir: Path) -> dict[str, float]:
    """The embedded server's WAL written so far (pg_stat_wal: bytes, full-page images) and its
    transactions committed (pg_stat_database); empty when it is not the embedded one."""
    import psycopg

    try:
        with embedded_pg(data_dir) as conn:
            row = conn.execute("SELECT wal_bytes, wal_fpi, (SELECT sum(xact_commit) FROM pg_stat_database)"
                               " FROM pg_stat_wal").fetchone()
    except psycopg.Error:
        return {}
    return {"wal_bytes": float(row[0]), "wal_fpi": float(row[1]), "commits": float(row[2])} if row else {}


def sample_cpu_marks(data_dir: Path, stats: Stats, stop: gevent.event.Event) -> None:
    """`cpu_by_part` and `pg_counters` at every SLICE_SECS of the window after its start (which
    main records)."""
    mark = 1
    while not stop.is_set():
        gevent.sleep(max(0.0, stats.window_began + mark * SLICE_SECS - time.monotonic()))
        if not stats.window_open:
            return
        stats.cpu_marks.append((time.monotonic(), cpu_by_part(data_dir), pg_counters(data_dir)))
        mark += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the measured window")
    parser.add_argument("--think", type=float, default=0.0,
                        help="mean seconds a player thinks before each submission and queue join (0: none, a closed loop)")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds the players play before the measured window (every submission is still checked)")
    parser.add_argument("--transport", choices=("poll", "stream"), default="poll",
                        help="how players follow their log: long polls (updates()) or the Server-Sent Events stream (stream())")
    parser.add_argument("--wake-on-own", action="store_true",
                        help="players' polls also wake for the echoes of their own requests (the API's default; "
                             "bots need not: wake_on_own=false)")
    parser.add_argument("--resign-chance", type=float, default=P_RESIGN,
                        help=f"each player resigns at a duel's start with this probability (default {P_RESIGN}); "
                             "more gives the resignation's latency more samples")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs) afterwards")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    speed_before = quantile([box_speed() for _ in range(3)], 0.5)  # the box before the stack starts
    data_dir = Path(tempfile.mkdtemp(prefix="duely-swarm-"))
    data_dir.chmod(0o755)  # as root, the embedded PostgreSQL runs as its own user and must reach it
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_stack(data_dir, port)
    stats = Stats()
    stop, measuring = gevent.event.Event(), gevent.event.Event()
    try:
        wait_healthy(url, proc)
        print(f"stack up at {url} (data in {data_dir}); registering {args.players} players", flush=True)
        players = [Player(url, i, stats, stop, args.think, args.transport, args.wake_on_own, args.resign_chance)
                   for i in range(args.players)]
        began = time.monotonic()
        gevent.pool.Pool(16).map(lambda p: p.register(), players)
        print(f"registered in {time.monotonic() - began:.1f} s; "
              + (f"warming up for {args.warmup:.0f} s, then " if args.warmup > 0 else "")
              + f"playing for {args.duration:.0f} s", flush=True)

        greenlets = [gevent.spawn(p.play, measuring) for p in players]
        gevent.sleep(1.0)  # every player's first poll is held before the window opens
        # The players and their clients are this process's long-lived objects: a full collection
        # over them paused every player at once (~120 ms seen with gc.callbacks) and showed up in
        # the latencies measured here. As the stack's processes do (duely/gcfreeze.py):
        freeze_startup_heap()
        stats.playing = True
        measuring.set()
        if args.warmup > 0:  # played, not measured: a fresh database's first minute (README) is behind
            gevent.sleep(args.warmup)
            print("warm-up over: the window opens", flush=True)
        stats.window_began, stats.window_began_wall = time.monotonic(), time.time()
        stats.window_open = True
        sampler = gevent.spawn(sample_healthz, url, stats, stop)
        lag_sampler = gevent.spawn(sample_loop_lag, stats, stop)
        pg_sampler = gevent.spawn(sample_pg_waits, data_dir, stats, stop)
        speed_sampler = gevent.spawn(sample_box_speed, stats, stop)
        window_began = stats.window_began
        cpu_before, pg_before = cpu_by_part(data_dir), pg_cpu_by_client(data_dir)
        stats.cpu_marks.append((window_began, cpu_before, pg_counters(data_dir)))
        cpu_sampler = gevent.spawn(sample_cpu_marks, data_dir, stats, stop)
        gevent.sleep(args.duration)
        stats.window_open = stats.playing = False
        window = time.monotonic() - window_began
        cpu_after, pg_after = cpu_by_part(data_dir), pg_cpu_by_client(data_dir)
        stats.cpu_marks.append((time.monotonic(), cpu_after, pg_counters(data_dir)))
        drain_until = time.monotonic() + DRAIN_SECS
        while time.monotonic() < drain_until and any(stats.verdict_events.get(s, 0) == 0 for s in list(stats.submitted)):
            gevent.sleep(0.2)
        gevent.sleep(1.0)  # a doubled verdict would arrive now
        stop.set()
        samplers: list[gevent.Greenlet] = [sampler, lag_sampler, pg_sampler, speed_sampler, cpu_sampler]
        gevent.joinall(greenlets + samplers, timeout=5)
        stats.closed = True
        gevent.killall(greenlets, timeout=10)  # the polls still held
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        deadlocks = deadlocks_logged(data_dir)  # the stack has stopped: its log is complete
        checkpoints = checkpoints_logged(data_dir, stats.window_began_wall)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    lost = sum(1 for s in stats.submitted if stats.verdict_events.get(s, 0) == 0)
    doubled = sum(1 for s in stats.submitted if stats.verdict_events.get(s, 0) > 1)
    five_xx = sum(n for status, n in stats.statuses.items() if status >= 500)
    print(f"\nplayers {args.players}, think {args.think:g} s, window {window:.0f} s, following their logs by "
          f"{'the event stream' if args.transport == 'stream' else 'long polls'}"
          f"{', woken for their own echoes too' if args.wake_on_own else ''}"
          " (machine load shared with other work)")
    print(f"submissions/s sustained: {stats.submits_in_window / window:.1f} submitted, "
          f"{stats.verdicts_in_window / window:.1f} verdicts seen within the window")
    # What the players could offer at all: a rate near it measures their pace, not the stack.
    print(f"the players' pace offers at most {args.players * offered_pace(args.think, resign_chance=args.resign_chance):.0f} submissions/s "
          f"(against an instant stack, think {args.think:g} s): a sustained rate near it is the players' limit, not the stack's")
    print(f"submit -> own verdict event: p50 {ms(quantile(stats.submit_to_verdict, 0.5))}, "
          f"p99 {ms(quantile(stats.submit_to_verdict, 0.99))} ({len(stats.submit_to_verdict)} verdicts)")
    print("  where it goes: " + "; ".join(
        f"{label} p50 {ms(quantile(values, 0.5))}, p99 {ms(quantile(values, 0.99))}" for label, values in (
            ("submit request began -> submission stored", stats.submit_to_stored),
            ("stored -> verdict stored (dispatch, judge, broker, intake)", stats.stored_to_verdict),
            ("verdict stored -> read by its player (commit, wake-up, poll, the player)", stats.verdict_to_seen))))
    if window >= 2 * SLICE_SECS:  # sustained, or fading: the window minute by minute
        print("  by minute of the window:\n" + "\n".join(f"    {line}" for line in by_slice(stats, window_began, window)))
    print(f"queue join -> duel_started: p50 {ms(quantile(stats.join_to_start, 0.5))}, "
          f"p99 {ms(quantile(stats.join_to_start, 0.99))} ({len(stats.join_to_start)} duels)")
    for route, values in sorted(stats.endpoint.items()):
        print(f"  {route}: p50 {ms(quantile(values, 0.5))}, p99 {ms(quantile(values, 0.99))} ({len(values)} calls)")
    print(f"baseline GET /healthz under the same load: p50 {ms(quantile(stats.healthz, 0.5))}, "
          f"p99 {ms(quantile(stats.healthz, 0.99))}")
    print(f"the players' own event loop, lag of a 10 ms sleep (included in every latency above): "
          f"p50 {ms(quantile(stats.loop_lag, 0.5))}, p99 {ms(quantile(stats.loop_lag, 0.99))}, "
          f"max {ms(max(stats.loop_lag, default=float('nan')))}")
    speed = [secs for _, secs in stats.box_speed]
    print(f"box speed, the CPU time of a fixed pure-Python loop in a process of its own (lower is faster; "
          f"runs compare only at similar speeds): {ms(speed_before)} before the stack started, "
          f"p50 {ms(quantile(speed, 0.5))} in the window ({ms(min(speed, default=float('nan')))}-"
          f"{ms(max(speed, default=float('nan')))}, {len(speed)} samples), {ms(quantile([box_speed() for _ in range(3)], 0.5))} "
          f"after it stopped")
    if stats.pg_samples:
        print(f"PostgreSQL's active backends by wait, mean of {stats.pg_samples} samples: " + ", ".join(
            f"{wait} {n / stats.pg_samples:.2f}" for wait, n in sorted(stats.pg_waits.items(), key=lambda item: -item[1])[:6]))
    print("requests per submission: " + ", ".join(
        f"{route} {n / max(1, stats.submits_in_window):.2f}" for route, n in sorted(stats.requests.items(), key=lambda item: -item[1])))
    cpu = {part: cpu_after[part][0] - cpu_before.get(part, (0.0, 0.0))[0] for part in cpu_after}
    # Near saturation the latencies are mostly this: processes ready to run, waiting for a core.
    waited = {part: cpu_after[part][1] - cpu_before.get(part, (0.0, 0.0))[1] for part in cpu_after}
    submits = max(1, stats.submits_in_window)
    print(f"CPU per submission (ms; share of the box's {os.cpu_count()} cores over the window): " + ", ".join(
        f"{part} {secs * 1000 / submits:.1f} ({secs / window / (os.cpu_count() or 1):.0%})"
        for part, secs in sorted(cpu.items(), key=lambda item: -item[1]) if secs > 0))
    print("  waiting for a CPU (ready to run, not running; seconds per second of the window summed over a part's "
          "threads, and per second of its CPU): " + ", ".join(
              f"{part} {secs / window:.2f} ({secs / cpu[part]:.1f}x)" for part, secs in sorted(waited.items(), key=lambda item: -item[1])
              if secs / window >= 0.005 and cpu.get(part, 0) > 0))
    pg_by_client: dict[str, float] = defaultdict(float)
    for pid, (name, secs) in pg_after.items():  # a backend that started in the window counts whole
        pg_by_client[name] += secs - pg_before.get(pid, (name, 0.0))[1]
    if pg_by_client:
        print("  postgres by client (ms per submission; backends alive at the window's end): " + ", ".join(
            f"{name} {secs * 1000 / submits:.2f}" for name, secs in sorted(pg_by_client.items(), key=lambda item: -item[1])
            if secs * 1000 / submits >= 0.01))
    print(f"lost {lost}, doubled {doubled}, gaps {stats.gaps}, 5xx {five_xx}, no answer "
          f"{stats.statuses.get(0, 0)}; other errors {dict(stats.errors) or 'none'}")
    if deadlocks is not None:  # each held its transaction for deadlock_timeout (1 s), then was retried
        print(f"deadlocks in PostgreSQL's log over the whole run: {deadlocks}")
    if checkpoints:
        print("PostgreSQL's checkpoints, from the window's start: " + "; ".join(checkpoints))
    for what, times in sorted(stats.server_errors.items()):
        print(f"  5xx: {what} x{len(times)}, {times[0] - stats.window_began:+.1f} s to {times[-1] - stats.window_began:+.1f} s "
              "from the window's start (--keep keeps the stack's logs)")


if __name__ == "__main__":
    main()
