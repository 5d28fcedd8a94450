"""gunicorn settings for Duely's web process, from the same config as everything else."""

from duely.config import load_config

_config = load_config()

bind = f"{_config.host}:{_config.port}"
workers = _config.workers
worker_class = "gevent"
worker_connections = _config.worker_connections
# Held long-polls (up to 60 s) are answered at once on shutdown, so a short grace is enough.
graceful_timeout = 10
timeout = 90
keepalive = 75
accesslog = None
loglevel = _config.log_level.lower()
