"""duely/greenwait.py: psycopg's waits under gevent, straight on the hub. Run in a child process
patched by gevent, as a web worker is (the test process itself is not patched)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from duely.db import psycopg_url
from tests.fixtures.stack import ROOT

_CHILD = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()
    import json, sys

    import gevent
    import psycopg
    from psycopg import waiting

    from duely import greenwait

    greenwait.install()
    url = sys.argv[1]
    out = {"installed": waiting.wait is greenwait.wait}
    conn = psycopg.connect(url, autocommit=True)
    # Cooperative: another greenlet runs while a query waits for its answer.
    conn2 = psycopg.connect(url, autocommit=True)
    ran = []
    other = gevent.spawn(lambda: ran.append(conn2.execute("SELECT 2").fetchone()[0]))
    out["query"] = conn.execute("SELECT pg_sleep(0.3), 1").fetchone()[1]
    other.join()
    out["other_ran_during_the_query"] = ran
    # A pipeline's statements leave without a switch to the hub while the socket is writable: no
    # other greenlet runs between them (a transaction's row locks would wait for it meanwhile).
    switched = []
    bystander = gevent.spawn(switched.append, "another greenlet ran")
    with conn.pipeline():
        first = conn.execute("SELECT 1")
        out["pipeline_switches_between_sends"] = list(switched)
        second = conn.execute("SELECT 2")
    out["pipelined"] = [first.fetchone()[0], second.fetchone()[0]]
    bystander.join()
    # A large query (the socket waits for writing too) and a large answer come through whole.
    big = "x" * 3_000_000
    out["big_echo_len"] = len(conn.execute("SELECT %s::text", (big,)).fetchone()[0])
    # A timed wait: LISTEN's notifies(timeout=...) returns at its timeout, and a notification
    # sent meanwhile arrives.
    conn.execute("LISTEN greenwait_test")
    out["notifies_when_idle"] = [n.payload for n in conn.notifies(timeout=0.1)]
    gevent.spawn_later(0.05, conn2.execute, "NOTIFY greenwait_test, 'hello'")
    out["notifies"] = [n.payload for n in conn.notifies(timeout=5, stop_after=1)]
    # A server that goes away is an OperationalError, not a hang.
    pid = conn.info.backend_pid
    blocked = gevent.spawn(lambda: conn.execute("SELECT pg_sleep(30)"))
    gevent.sleep(0.2)
    conn2.execute("SELECT pg_terminate_backend(%s)", (pid,))
    blocked.join(timeout=10)
    out["terminated"] = (isinstance(blocked.exception, psycopg.OperationalError) if blocked.ready()
                         else "still waiting")
    print(json.dumps(out))
    """
)


def test_psycopg_waits_on_the_gevent_hub_cooperatively_and_fails_cleanly(database_url):
    result = subprocess.run([sys.executable, "-c", _CHILD, psycopg_url(database_url)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "installed": True,
        "query": 1,
        "other_ran_during_the_query": [2],
        "pipeline_switches_between_sends": [],
        "pipelined": [1, 2],
        "big_echo_len": 3_000_000,
        "notifies_when_idle": [],
        "notifies": ["hello"],
        "terminated": True,
    }
