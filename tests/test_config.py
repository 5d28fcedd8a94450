"""Settings: flags win over environment variables, which win over defaults."""

from __future__ import annotations

import pytest

from duely.config import Config, load_config, parse_duration, to_environ


def test_defaults_when_nothing_given():
    cfg = load_config([], {})
    assert cfg == Config()
    assert cfg.port == 5001 and cfg.duel_duration == 1800 and cfg.queue_ttl == 30
    assert cfg.max_solution_bytes == 65536 and cfg.event_retention == 7 * 86400
    assert cfg.taski_topic == "taski.submissions" and cfg.duely_consumer_group == "duely"


def test_environment_overrides_defaults():
    cfg = load_config([], {"PORT": "6000", "DUEL_DURATION": "10m", "DATABASE_URL": "postgresql://x/y"})
    assert cfg.port == 6000 and cfg.duel_duration == 600 and cfg.database_url == "postgresql://x/y"


def test_flags_override_environment():
    cfg = load_config(["--port", "7000", "--queue-ttl", "45s"], {"PORT": "6000", "QUEUE_TTL": "10"})
    assert cfg.port == 7000 and cfg.queue_ttl == 45


def test_to_environ_round_trips():
    cfg = load_config(["--port", "7000", "--event-retention", "2d", "--taski-url", "http://t"], {})
    assert load_config([], to_environ(cfg)) == cfg


@pytest.mark.parametrize("raw, secs", [("90", 90), ("90s", 90), ("5m", 300), ("2h", 7200), ("7d", 604800), ("0.5", 0.5)])
def test_parse_duration(raw, secs):
    assert parse_duration(raw) == secs


def test_bad_values_stop_with_a_message():
    with pytest.raises(SystemExit, match="PORT"):
        load_config([], {"PORT": "abc"})
    with pytest.raises(SystemExit, match="DUEL_DURATION"):
        load_config([], {"DUEL_DURATION": "soon"})


def test_readme_lists_every_setting_with_its_default():
    from pathlib import Path

    from duely.config import settings_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [row for row in settings_table().splitlines()[2:] if row not in readme]
    assert missing == [], "README settings table is stale; regenerate it with `python -m duely.config`"
