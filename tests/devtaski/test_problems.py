"""The bundled problem set is complete and well formed; `pick` suits the rating and avoids exclusions."""

from __future__ import annotations

import random

import pytest

from duely.devtaski.problems import BUNDLED_DIR, PICK_SPREAD_RATING, Problem, load_problems, pick

SOLUTIONS = BUNDLED_DIR.parents[2] / "tests" / "devtaski" / "solutions"


@pytest.fixture(scope="module")
def problems() -> dict[int, Problem]:
    return load_problems()


def test_bundled_set_spans_the_ratings(problems):
    difficulties = sorted(p.difficulty for p in problems.values())
    assert len(problems) >= 12
    assert difficulties[0] == 800 and difficulties[-1] == 2400


def test_every_problem_is_complete(problems):
    for problem in problems.values():
        assert len(problem.tests) >= 5, problem.slug
        assert problem.time_limit_ms > 0 and problem.memory_limit_mb > 0
        for section in ("## Input", "## Output", "## Example"):
            assert section in problem.statement, (problem.slug, section)
        assert all(t.input.strip() and t.output.strip() for t in problem.tests), problem.slug
        assert (SOLUTIONS / f"{problem.slug}.py").exists(), f"no reference solution for {problem.slug}"


def test_statement_example_is_the_first_test(problems):
    for problem in problems.values():
        first = problem.tests[0]
        assert first.input.decode().strip() in problem.statement, problem.slug
        assert first.output.decode().strip() in problem.statement, problem.slug


def test_public_task_never_carries_tests(problems):
    task = next(iter(problems.values())).public()
    assert set(task) >= {"id", "title", "statement", "time_limit_ms", "difficulty"}
    assert "tests" not in task


@pytest.mark.parametrize("rating", [0, 800, 1350, 1600, 2000, 2400, 3500])
def test_pick_is_among_the_closest_ratings(problems, rating):
    pool = list(problems.values())
    best = min(abs(p.difficulty - rating) for p in pool)
    for seed in range(20):
        chosen = pick(pool, rating, set(), random.Random(seed))
        assert abs(chosen.difficulty - rating) <= best + PICK_SPREAD_RATING


def test_pick_avoids_excluded_tasks(problems):
    pool = list(problems.values())
    kept = pool[3]
    exclude = {p.id for p in pool if p.id != kept.id}
    assert all(pick(pool, 800, exclude, random.Random(seed)) == kept for seed in range(10))


def test_pick_returns_something_when_everything_is_excluded(problems):
    pool = list(problems.values())
    assert pick(pool, 1500, {p.id for p in pool}, random.Random(1)) in pool


def test_pick_from_nothing_is_none():
    assert pick([], 1500, set(), random.Random(1)) is None


def test_pick_varies_within_the_spread(problems):
    pool = list(problems.values())
    assert len({pick(pool, 1500, set(), random.Random(seed)).id for seed in range(50)}) > 1
