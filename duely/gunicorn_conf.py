"""gunicorn settings for Duely's web process, from the same config as everything else."""

from duely.config import load_config

_config = load_config()

bind = f"{_config.host}:{_config.port}"
workers = _config.workers
# gunicorn's gevent worker, answering the requests gunicorn rejects itself with JSON, not HTML.
worker_class = "duely.web_worker.JsonErrorsGeventWorker"
worker_connections = _config.worker_connections
# The same trusted proxies the app believes X-Forwarded-For from (duely/api/proxy.py); gunicorn
# uses them for X-Forwarded-Proto.
forwarded_allow_ips = _config.forwarded_allow_ips
# Held long-polls (up to 60 s) are answered at once on shutdown, so a short grace is enough.
graceful_timeout = 10
timeout = 90
keepalive = 75
accesslog = None
loglevel = _config.log_level.lower()
# gunicorn 27's control socket sits at one fixed path per user: several Duely servers on one
# machine (tests, two checkouts) would fight over it, and nothing here uses it.
control_socket_disable = True


# -- shutdown: answer held long polls at once (docs/api.md, "Event log"; docs/events.md) --------
# SIGTERM (graceful) only sets `worker.alive = False`; gunicorn then waits up to graceful_timeout
# for open requests, and a held poll would sit there until its own timeout. So the worker's
# SIGTERM handler is wrapped to also wake every waiter; SIGINT/SIGQUIT (fast stop) go through
# `worker_int`. The wake-up runs in its own greenlet: a signal handler may interrupt a greenlet
# that holds the listener's lock.


def _answer_held_polls_soon(worker) -> None:
    import gevent

    from duely.runtime import Runtime

    runtime = getattr(worker, "duely_runtime", None)  # the app's, kept by JsonErrorsGeventWorker.load_wsgi
    if isinstance(runtime, Runtime):
        gevent.spawn(runtime.shutdown)


def _check_connection_budget() -> None:
    # In a worker, after gevent's patch (psycopg must not be imported before it), off its boot path.
    import gevent

    from duely.db import check_connection_budget, connection_budget
    from duely.eventlog.reader import READ_CONNECTIONS_PER_PROCESS

    needed = connection_budget(_config.workers, _config.db_pool_size, _config.db_max_overflow, READ_CONNECTIONS_PER_PROCESS)
    if _config.database_url:
        gevent.spawn(check_connection_budget, _config.database_url, needed)


# Database connections a worker opens as it starts (at most its pool's size): 8 took the cold
# start's p99 of `bench/updates.py --parts actions` from 83-585 ms to 22-52 ms, 1 to 54-62 ms.
CONNECTIONS_OPENED_AT_START = 8


def _open_database_connections(worker) -> None:
    # Off the boot path, in a greenlet: the first requests after a (re)start then find connections
    # ready instead of queueing behind their set-up (Database.open_connections).
    import logging

    import gevent

    from duely.runtime import Runtime

    runtime = getattr(worker, "duely_runtime", None)
    if not isinstance(runtime, Runtime):
        return

    def open_them() -> None:
        try:
            runtime.db.open_connections(CONNECTIONS_OPENED_AT_START)
        except Exception:  # a database down at start: requests answer 503 as usual, and retry it
            logging.getLogger("duely.web").warning("could not open database connections at start", exc_info=True)

    gevent.spawn(open_them)


def post_worker_init(worker):
    import signal

    if worker.age == 1:  # the first worker of this server checks, once
        _check_connection_budget()

    from duely.gcfreeze import freeze_startup_heap

    freeze_startup_heap()  # the app is loaded by now (gunicorn's load_wsgi runs before this hook)
    _open_database_connections(worker)

    graceful_exit = worker.handle_exit

    def handle_exit(sig, frame):
        graceful_exit(sig, frame)
        _answer_held_polls_soon(worker)

    worker.handle_exit = handle_exit
    signal.signal(signal.SIGTERM, handle_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn's init_signals does


def worker_int(worker):
    _answer_held_polls_soon(worker)


def post_request(worker, req, environ, resp):
    # A stopping worker ends each connection once its answer is out: a client's idle keep-alive
    # connection would otherwise hold the worker up to graceful_timeout.
    if not worker.alive:
        import socket

        sock = environ.get("gunicorn.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
