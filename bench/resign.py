"""SQL statements and CPU per POST /api/duels/{id}/resign, in one process (no gunicorn, no other
part of the stack): the Flask app is driven by its test client, so the figure is the app's own
work (view, domain, SQLAlchemy, psycopg) plus PostgreSQL's, without HTTP parsing.

    .venv/bin/python bench/resign.py                   # 3 rounds of 200 resigns
    .venv/bin/python bench/resign.py --resigns 100 --rounds 2 --verbose

It starts its own embedded PostgreSQL (temporary directory), seeds users with tokens and one
duel per resign straight in the database, then per round resigns each duel once and reads this
process's CPU time (time.process_time) and PostgreSQL's (all its processes, /proc) before and
after. A GET /api/duels/{id} per round is the baseline measured in the same run (a read of the
same duel object: the floor of any authenticated request that answers a duel). The figure is CPU
ms per request, best round (this box is shared). Statements are counted from PostgreSQL's own
log (log_statement = all; BEGIN and COMMIT included: each is a round trip).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from request_cpu import SECRET_KEY, Bench, logged_statements  # noqa: E402  (the same seeding and PostgreSQL's CPU)


def main(argv: list[str]) -> None:
    import argparse

    from duely.api import create_app
    from duely.config import Config
    from duely.runtime import Runtime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resigns", type=int, default=200, help="resigns per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="show one resign's statements")
    args = parser.parse_args(argv)
    count = 10  # resigns whose statements are counted
    bench = Bench(argparse.Namespace())  # its temporary directory and embedded PostgreSQL
    try:
        bench.start_database()
        players, _ = bench.seed(2 * (args.resigns * args.rounds + 20 + count), 0)
        duels_of = players[::2]  # one player per duel: the one who resigns
        config = Config(database_url=bench.url, secret_key=SECRET_KEY, log_level="WARNING")
        runtime = Runtime(config, bench.db)
        app = create_app(config, bench.db, runtime)
        client = app.test_client()

        def resign(p: dict) -> None:
            resp = client.post(f"/api/duels/{p['duel_id']}/resign", headers={"Authorization": f"Bearer {p['token']}"})
            if resp.status_code != 202:
                raise SystemExit(f"resign answered {resp.status_code}: {resp.get_data(as_text=True)}")

        def read(p: dict) -> None:
            resp = client.get(f"/api/duels/{p['duel_id']}", headers={"Authorization": f"Bearer {p['token']}"})
            if resp.status_code != 200:
                raise SystemExit(f"read answered {resp.status_code}")

        def measure(step, batch: list[dict]) -> tuple[float, float]:
            cpu, pg = time.process_time(), bench.postgres_cpu_secs()
            for p in batch:
                step(p)
            return ((time.process_time() - cpu) * 1000 / len(batch), (bench.postgres_cpu_secs() - pg) * 1000 / len(batch))

        pending = iter(duels_of)
        for p in [next(pending) for _ in range(20)]:  # warm-up: every path once, pools, caches
            read(p)
            resign(p)
        results: dict[str, list[tuple[float, float]]] = {"read": [], "resign": []}
        for _ in range(args.rounds):
            batch = [next(pending) for _ in range(args.resigns)]
            results["read"].append(measure(read, batch))
            results["resign"].append(measure(resign, batch))
        print(f"{args.resigns} requests per round, {args.rounds} rounds; CPU ms per request, best round (all rounds):")
        for name, values in results.items():
            app_ms, pg_ms = min(v[0] for v in values), min(v[1] for v in values)
            print(f"  {name:7s} app {app_ms:5.2f} ms  [{', '.join(f'{v[0]:.2f}' for v in values)}]"
                  f"   postgres {pg_ms:5.2f} ms  [{', '.join(f'{v[1]:.2f}' for v in values)}]", flush=True)

        from sqlalchemy import text

        with bench.db.autocommit() as s:
            s.execute(text("ALTER SYSTEM SET log_statement = 'all'"))
            s.execute(text("SELECT pg_reload_conf()"))
        time.sleep(0.5)
        log_path = bench.pg_dir / "log"
        start = log_path.stat().st_size
        for p in [next(pending) for _ in range(count)]:
            resign(p)
        time.sleep(0.2)
        lines = logged_statements(log_path, start)
        print(f"SQL statements per resign (PostgreSQL's log, {count} resigns): {len(lines) / count:.1f}")
        if args.verbose:
            for line in lines[: len(lines) // count]:
                print("     ", line.split("LOG:  ", 1)[1][:200])
        runtime.close()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(sys.argv[1:])
