"""CPU milliseconds per call of the Python client library (clients/python/duely_client) in the
calling process, against the same requests made with bare `http.client` in the same run.

    .venv/bin/python bench/client_cpu.py                  # 3 rounds of 300 calls each, threads and gevent
    .venv/bin/python bench/client_cpu.py --calls 200 --rounds 2 --mode gevent
    .venv/bin/python bench/client_cpu.py --client-dir /tmp/old/clients/python   # another version's library

It starts the real web app the way bench/request_cpu.py does (embedded PostgreSQL in a temporary
directory, one gunicorn with Duely's gunicorn_conf.py and ONE gevent worker), seeds users with
tokens and duels straight in the database (request_cpu's helpers), then runs the measuring
client in a child process per mode - `threads` (plain Python) and `gevent` (monkey-patched, as
bench/swarm.py runs its players as greenlets) - so the measured process holds only the client.
Per round the child makes, one after another on keep-alive connections:

  updates   next() of `Client.updates()` answered at once (one event per poll: limit=1)
  submit    `Client.submit()`                           (a new submission each time)
  join      `Client.join_queue()`                       (a user not in a duel, not queued)
  leave     `Client.leave_queue()`

and, as the baseline, the same requests through one bare `http.client.HTTPConnection` (headers,
json.dumps of the body, json.loads of the answer: what any client must do). The figure is the
child's CPU (time.process_time: user + system) per call, best of the rounds (the box is shared;
the least disturbed round is the closest to the truth).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("updates", "submit", "join", "leave")


# -- the measuring child (no server modules imported) -------------------------------------------

def child(plan: dict) -> None:
    if plan["mode"] == "gevent":
        from gevent import monkey

        monkey.patch_all()
    import http.client
    import time
    import uuid

    sys.path.insert(0, plan["client_dir"])
    from duely_client import Client, Updates

    url, port, calls = plan["url"], plan["port"], plan["calls"]
    reader, players, idle = plan["reader"], plan["players"], plan["idle"]

    # -- the library ----------------------------------------------------------------------
    lib_reader = Client(url, reader["token"])
    lib_players = [Client(url, p["token"]) for p in players]
    lib_idle = [Client(url, u["token"]) for u in idle]
    updates_iter: list = []

    def lib_updates_start() -> None:
        client = lib_reader
        updates_iter[:] = [Updates(client, 0, timeout=0, poll=lambda last, wait: client.poll(last, wait, limit=1))]

    def lib_updates(i: int) -> None:
        next(updates_iter[0])

    def lib_submit(i: int) -> None:
        client = lib_players[i % len(lib_players)]
        client.submit(players[i % len(players)]["duel_id"], "print(1)")

    def lib_join(i: int) -> None:
        lib_idle[i % len(lib_idle)].join_queue()

    def lib_leave(i: int) -> None:
        lib_idle[i % len(lib_idle)].leave_queue()

    # -- the baseline: bare http.client ------------------------------------------------------
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    cursor = [0]

    def call(method: str, path: str, token: str, body: dict | None = None, expect: int = 200):
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != expect:
            raise SystemExit(f"unexpected answer {resp.status}: {raw[:300]!r}")
        return json.loads(raw) if raw else None

    def bare_updates_start() -> None:
        cursor[0] = 0

    def bare_updates(i: int) -> None:
        page = call("GET", f"/api/updates?last_event_id={cursor[0]}&timeout=0&limit=1", reader["token"])
        cursor[0] = page["events"][0]["id"]

    def bare_submit(i: int) -> None:
        p = players[i % len(players)]
        call("POST", f"/api/duels/{p['duel_id']}/submit", p["token"],
             {"solution": "print(1)", "language": "python", "client_temp_id": uuid.uuid4().hex}, expect=202)

    def bare_join(i: int) -> None:
        call("POST", "/api/queue", idle[i % len(idle)]["token"], expect=202)

    def bare_leave(i: int) -> None:
        call("DELETE", "/api/queue", idle[i % len(idle)]["token"], expect=204)

    steps = {
        "library": {"updates": (lib_updates_start, lib_updates), "submit": (None, lib_submit),
                    "join": (None, lib_join), "leave": (None, lib_leave)},
        "http.client": {"updates": (bare_updates_start, bare_updates), "submit": (None, bare_submit),
                        "join": (None, bare_join), "leave": (None, bare_leave)},
    }

    def measure(start, step, count: int) -> float:
        if start is not None:
            start()
        before = time.process_time()
        for i in range(count):
            step(i)
        return (time.process_time() - before) * 1000 / count

    def run() -> dict:
        if plan.get("profile"):  # the library's calls only, under cProfile, instead of the figures
            import cProfile

            profiler = cProfile.Profile()
            for kind in KINDS:
                measure(*steps["library"][kind], 5)
                profiler.runcall(measure, *steps["library"][kind], calls)
            profiler.dump_stats(plan["profile"])
            return {}
        for who in steps.values():  # warm-up: every path once, connections open
            for kind in KINDS:
                measure(*who[kind], 5)
        results: dict = {who: {k: [] for k in KINDS} for who in steps}
        for _ in range(plan["rounds"]):
            for kind in KINDS:
                for who in steps:
                    results[who][kind].append(measure(*steps[who][kind], calls))
        return results

    if plan["mode"] == "gevent":
        import gevent

        results = gevent.spawn(run).get()  # a greenlet, as the swarm's players are
    else:
        results = run()
    print(json.dumps(results), flush=True)


# -- the parent: database, server, seeding ------------------------------------------------------

def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls per kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=["threads", "gevent", "both"], default="both")
    parser.add_argument("--profile", metavar="FILE", help="instead of the figures, write a cProfile of the library's "
                        "calls (one round per mode) to FILE.<mode> (read it with python -m pstats)")
    parser.add_argument("--client-dir", default=str(ROOT / "clients" / "python"),
                        help="where duely_client is imported from (e.g. an older version's, to compare)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(Path(args.child).read_text()))
        return

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from request_cpu import Bench

    from duely import eventlog
    from duely.eventlog.types import QueueLeft, QueueLeftReason

    bench = Bench(argparse.Namespace())
    try:
        bench.start_database()
        players, idle = bench.seed(players=100, idle=101)
        reader = idle.pop()
        # updates: two readers (library, http.client) walk one log of calls+warm-up events per round.
        with bench.db.transaction() as s:
            for _ in range(args.calls + 10):
                eventlog.append(s, reader["id"], QueueLeft(reason=QueueLeftReason.LEFT))
        _, port, pid = bench.start_gunicorn("app:app", "duely")
        modes = ["threads", "gevent"] if args.mode == "both" else [args.mode]
        print(f"web worker pid {pid}; {args.calls} calls per kind per round, {args.rounds} rounds; "
              "CPU ms per call of the calling process, best round (all rounds):", flush=True)
        for mode in modes:
            plan = {"mode": mode, "url": f"http://127.0.0.1:{port}", "port": port, "calls": args.calls,
                    "rounds": args.rounds, "reader": reader, "players": players, "idle": idle,
                    "client_dir": str(Path(args.client_dir).resolve()),
                    "profile": f"{Path(args.profile).resolve()}.{mode}" if args.profile else None}
            plan_path = bench.tmp / f"plan-{mode}.json"
            plan_path.write_text(json.dumps(plan))
            out = subprocess.run([sys.executable, __file__, "--child", str(plan_path)], cwd=ROOT,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"the {mode} child failed:\n{out.stdout}\n{out.stderr}")
            results = json.loads(out.stdout.strip().splitlines()[-1])
            if args.profile:
                print(f"{mode}: profile in {args.profile}.{mode}")
                continue
            print(f"{mode}:")
            for kind in KINDS:
                lib, bare = results["library"][kind], results["http.client"][kind]
                print(f"  {kind:8s} library {min(lib):5.2f} ms [{', '.join(f'{v:.2f}' for v in lib)}]   "
                      f"http.client {min(bare):5.2f} ms [{', '.join(f'{v:.2f}' for v in bare)}]   "
                      f"({min(lib) / min(bare):.1f}x)", flush=True)
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
