"""Alembic environment: the URL is given by duely.migrate (or DATABASE_URL)."""

from alembic import context
from sqlalchemy import create_engine, pool

from duely.config import load_config
from duely.db import sqlalchemy_url
from duely.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or load_config().database_url
if not url:
    raise SystemExit("set DATABASE_URL (or use `python -m duely.migrate`, which starts the embedded server)")

engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        # Serialise concurrent upgrades (several test sessions, two `make run`s).
        context.execute("SELECT pg_advisory_xact_lock(7201554)")
        context.run_migrations()
engine.dispose()
