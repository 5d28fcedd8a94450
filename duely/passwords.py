"""Password hashing (scrypt), kept off the gevent event loop.

One scrypt costs ~130 ms of CPU. Run on a gevent worker's event loop it would freeze every held
poll and request of that worker meanwhile, so under gevent each hash runs in a small thread pool
of its own (`hashlib.scrypt` releases the GIL while it works) and the calling greenlet waits
cooperatively. The pool is bounded: a burst of registrations or logins queues for a slot instead
of taking every core from the event loop. Its threads also run at a lower CPU priority (nice
+10; on Linux niceness is per thread), so when the cores are busy the event loops that answer
everyone else get them first and the hashes take what is left. Outside gevent (tests, scripts)
it is a plain call.

Never call these while holding a database connection: a request waiting for a hashing slot
would hold that connection for as long as the queue is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from werkzeug.security import check_password_hash, generate_password_hash

T = TypeVar("T")

# Checked against when the nickname is unknown, so that a miss costs as much as a hit.
DUMMY_HASH = "scrypt:32768:8:1$duely$" + "0" * 128

_threads = 2
_pool: Any = None
HASH_THREAD_NICENESS = 10


def configure(threads: int) -> None:
    """Hashes computed at once by this process (PASSWORD_HASH_THREADS); takes effect for a pool
    not yet created."""
    global _threads
    _threads = max(1, threads)


def _forget_pool() -> None:
    global _pool
    _pool = None


# A thread pool does not survive a fork (gunicorn forks workers from a master that may have one).
os.register_at_fork(after_in_child=_forget_pool)


def _under_gevent() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def _at_low_priority(fn: Callable[..., T], *args: Any) -> T:
    try:
        # PRIO_PROCESS with 0 is the calling thread on Linux; raising niceness needs no privilege.
        os.setpriority(os.PRIO_PROCESS, 0, HASH_THREAD_NICENESS)
    except OSError:
        pass
    return fn(*args)


def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    global _pool
    if not _under_gevent():
        return fn(*args)
    if _pool is None:
        from gevent.threadpool import ThreadPool

        _pool = ThreadPool(_threads)
    # apply() waits for a free thread (cooperatively, in arrival order) and then for the result;
    # the hub keeps serving other greenlets all the while.
    return _pool.apply(_at_low_priority, (fn, *args))


def hash_password(password: str) -> str:
    return _off_loop(generate_password_hash, password, "scrypt")


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a None hash (unknown user) costs the same and is False."""
    ok = _off_loop(check_password_hash, password_hash or DUMMY_HASH, password)
    return ok and password_hash is not None
