"""Fixtures of the devtaski tests only (the dev Taski process fixtures are in tests/fixtures/devtaski.py)."""

from __future__ import annotations

import pytest

from duely.devtaski.problems import Problem, load_problems


@pytest.fixture(scope="session")
def problem_by_slug() -> dict[str, Problem]:
    return {p.slug: p for p in load_problems().values()}
