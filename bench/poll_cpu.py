"""CPU microseconds per GET /api/updates inside one process, without HTTP: the app's WSGI
callable called directly (under gevent, as in a web worker), so the figure is what Duely's own
code costs per poll, not gunicorn's parsing and writing.

    .venv/bin/python bench/poll_cpu.py                 # 5 rounds of 2000 polls per case
    .venv/bin/python bench/poll_cpu.py --polls 1000 --rounds 3

It starts its own embedded PostgreSQL (temporary directory), seeds one user with a token and
one event, and runs in turn, per round:

  flask     the plain poll made to go through Flask (an unknown query argument: the view
            answers it), answered at once with the one event   (the baseline)
  fast      the same poll as clients send it (duely/api/fast_poll.py)
  nothing   a poll that finds nothing new (timeout=0): the read a held poll makes before it waits

and reads this process's CPU time (time.process_time) around each batch. One poll at a time,
so no batching flatters the figures. The figure is the best round (the box is shared).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import io  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET_KEY = "bench-secret-key"


def main(argv: list[str]) -> None:
    import argparse
    import shutil

    from sqlalchemy import text

    from duely import auth, eventlog, greenwait
    from duely.api import create_app
    from duely.clock import utcnow
    from duely.config import Config
    from duely.db import Database
    from duely.eventlog.types import QueueJoined
    from duely.infra import start_embedded_postgres, stop_embedded_postgres
    from duely.migrate import upgrade
    from duely.runtime import Runtime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=2000, help="polls per case per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    greenwait.install()
    tmp = Path(tempfile.mkdtemp(prefix="duely-poll-cpu-"))
    url = start_embedded_postgres(tmp / "pg")
    db = runtime = None
    try:
        upgrade(url)
        config = Config(database_url=url, secret_key=SECRET_KEY, log_level="WARNING")
        db = Database(url, pool_size=2, max_overflow=2)
        token = "bench-" + os.urandom(8).hex()
        with db.transaction() as s:
            user_id = s.execute(text("INSERT INTO users (nickname, password_hash) VALUES ('cpu', 'x') RETURNING id")).scalar_one()
            s.execute(text("INSERT INTO auth_tokens (user_id, token_hash, expires_at) VALUES (:u, :h, now() + interval '1 day')"),
                      {"u": user_id, "h": auth.hash_token(SECRET_KEY, token)})
            eventlog.append(s, user_id, QueueJoined(since=utcnow()))
        runtime = Runtime(config, db)
        app = create_app(config, db, runtime)

        def environ(query: str) -> dict:
            return {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/updates", "QUERY_STRING": query, "SCRIPT_NAME": "",
                    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
                    "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000", "HTTP_AUTHORIZATION": f"Bearer {token}",
                    "HTTP_ACCEPT_ENCODING": "gzip, deflate", "HTTP_USER_AGENT": "python-requests/2.32",
                    "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
                    "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0)}

        statuses: list[str] = []

        def start_response(status, headers, exc_info=None):
            statuses.append(status)

        cases = {
            "flask": environ("last_event_id=0&timeout=0&limit=1&x=1"),
            "fast": environ("last_event_id=0&timeout=0&limit=1"),
            "nothing": environ("last_event_id=1&timeout=0"),
        }

        def run(env: dict, count: int) -> float:
            started = time.process_time()
            for _ in range(count):
                b"".join(app(dict(env), start_response))
            return (time.process_time() - started) * 1e6 / count

        for env in cases.values():  # warm-up: prepared statements, caches
            run(env, 50)
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, env in cases.items():
                statuses.clear()
                results[name].append(run(env, args.polls))
                if set(statuses) != {"200 OK"}:
                    raise SystemExit(f"{name}: unexpected answers {set(statuses)}")
        print(f"{args.polls} polls per case per round, {args.rounds} rounds; CPU us per poll in this process, "
              "best round (all rounds):")
        best = {name: min(values) for name, values in results.items()}
        for name, values in results.items():
            note = f"   ({best[name] / best['flask']:.2f}x flask)" if name != "flask" else ""
            print(f"  {name:8s} {best[name]:7.0f} us  [{', '.join(f'{v:.0f}' for v in values)}]{note}", flush=True)
    finally:
        if runtime is not None:
            runtime.close()
        if db is not None:
            db.dispose()
        stop_embedded_postgres(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
