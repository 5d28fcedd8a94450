"""Apply Alembic migrations: `python -m duely.migrate` (uses DATABASE_URL or the embedded server)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> AlembicConfig:
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def main(argv: list[str] | None = None) -> None:
    from duely.config import load_config
    from duely.infra import start_embedded_postgres

    config = load_config(argv if argv is not None else sys.argv[1:])
    url = config.database_url or start_embedded_postgres(Path(config.data_dir) / "pg")
    upgrade(url)


if __name__ == "__main__":
    main()
