"""WSGI entry point: `gunicorn app:app` (settings come from the environment; see README)."""

from duely.api import create_app
from duely.config import load_config
from duely.db import Database
from duely.runtime import Runtime

config = load_config()
# The worker's runtime (and logging) first: create_app may log.
runtime = Runtime(config, Database(config.database_url, config.db_pool_size, config.db_max_overflow, config.db_pool_timeout,
                                  application_name="duely-web"),
                  process="web")
app = create_app(config, runtime=runtime)
