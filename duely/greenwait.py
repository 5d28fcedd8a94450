"""psycopg's wait on the socket, made cheap under gevent.

psycopg runs every query as a generator that yields "wait until the socket is readable /
writable"; `psycopg.waiting.wait` does the waiting. Under gevent's monkey-patch psycopg picks
`wait_poll` over the patched `select.poll`, which for every wait builds a poll object, a
watcher per fd and a `Timeout` (psycopg waits in 100 ms slices so that Ctrl-C is noticed) and
tears them down again: a fifth of a web worker's CPU under load (py-spy). Here each wait is one
libev io watcher started straight on the hub with a `Waiter`: no poll object, no Timeout
(Ctrl-C and SIGTERM reach the hub anyway), and a timer only when the caller gave a timeout
(the LISTEN connection's `notifies(timeout=...)`, connection attempts).

A wait the socket can satisfy at once does not switch to the hub: a non-blocking poll(2) is
tried first. psycopg's pipeline mode waits for "readable or writable" before sending each
queued statement, and a writable socket is the rule; switching there let every other ready
greenlet of the worker run between a transaction's statements while PostgreSQL held its row
locks and waited for the next one (`Client/ClientRead` backends in the swarm: 1.5 → 11.6 on
average once the hot writes and every commit were pipelined, duely/notify.py). Only a socket
that is not ready yet parks the greenlet.

It stays cooperative (the greenlet switches to the hub while it waits, like any gevent socket)
and keeps psycopg's outage behaviour: a database that goes away closes or resets the socket,
which makes it readable, and psycopg then raises OperationalError as before.

`install()` replaces `psycopg.waiting.wait`, which psycopg's Connection looks up on every wait
(`waiting.wait(...)` in psycopg/connection.py); the connect-time `wait_conn` is left alone.
Installed only in gevent web workers (duely/web_worker.py), after gevent's patch.
"""

from __future__ import annotations

import select
import time
from typing import Any

from gevent import get_hub
from gevent.hub import Waiter
from gevent.monkey import get_original
from psycopg import errors as e
from psycopg import waiting
from psycopg.waiting import READY_R, READY_W, WAIT_R, WAIT_RW, WAIT_W

# libev's event bits (the same for gevent's libuv loop): what to watch, and what fired.
_EV_READ, _EV_WRITE = 1, 2
_WATCH = {WAIT_R: _EV_READ, WAIT_W: _EV_WRITE, WAIT_RW: _EV_READ | _EV_WRITE}
_TIMED_OUT = 0  # the timer's "events": neither bit
# poll(2) itself, not gevent's cooperative replacement: asked with a zero timeout, it never blocks.
_os_poll = get_original("select", "poll")
_POLL_FOR = {WAIT_R: select.POLLIN, WAIT_W: select.POLLOUT, WAIT_RW: select.POLLIN | select.POLLOUT}


def _ready_now(fileno: int, state: Any) -> int:
    """What the socket is ready for right now (READY_R / READY_W bits; 0: not yet), read as
    psycopg's own `wait_poll` reads poll's answer (an error or hang-up counts as both)."""
    poller = _os_poll()
    poller.register(fileno, _POLL_FOR[state])
    for _, revents in poller.poll(0):
        return (READY_R if revents & ~select.POLLOUT else 0) | (READY_W if revents & ~select.POLLIN else 0)
    return 0


def wait(gen: Any, fileno: int, interval: float = 0.0, timeout: float | None = None) -> Any:
    """Run psycopg generator `gen` on socket `fileno`, waiting cooperatively; `interval` is
    ignored (see the module docstring). Raises psycopg's `_WaitTimeout` past `timeout`."""
    hub = get_hub()
    loop = hub.loop
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        state = next(gen)
        while True:
            if ready := _ready_now(fileno, state):
                state = gen.send(ready)
                continue
            io = loop.io(fileno, _WATCH[state])
            waiter: Waiter[int] = Waiter(hub)
            io.start(waiter.switch, pass_events=True)
            timer = None
            if deadline is not None:
                timer = loop.timer(max(0.0, deadline - time.monotonic()))
                timer.start(waiter.switch, _TIMED_OUT)
            try:
                events = waiter.get()
            finally:
                io.stop()
                io.close()
                if timer is not None:
                    timer.stop()
                    timer.close()
            if events == _TIMED_OUT:
                raise e._WaitTimeout("wait timeout expired")
            ready = (READY_R if events & _EV_READ else 0) | (READY_W if events & _EV_WRITE else 0)
            state = gen.send(ready)
    except StopIteration as stop:
        return stop.value


def install() -> None:
    """Make every psycopg connection of this process wait through `wait` (call after gevent's patch)."""
    waiting.wait = wait
