"""WSGI entry point: `gunicorn app:app` (settings come from the environment; see README)."""

from duely import logs
from duely.api import create_app
from duely.config import load_config

config = load_config()
logs.setup(config.log_level, "web")
app = create_app(config)
