"""WSGI entry point: `gunicorn app:app` (settings come from the environment; see README)."""

from duely.api import create_app, web_database
from duely.config import load_config
from duely.runtime import Runtime

config = load_config()
# The worker's runtime (and logging) first: create_app may log.
runtime = Runtime(config, web_database(config), process="web")
app = create_app(config, runtime=runtime)
