"""The problem set: loading the bundled problems from disk and picking one for a rating.

A problem is a directory `<slug>/` holding `problem.json` (id, title, difficulty,
time_limit_ms, memory_limit_mb), `statement.md` and `tests/NN.in` + `tests/NN.out`.
Everything is read once at start; `pick` is pure so it is trivially testable.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent / "problems"
PICK_SPREAD_RATING = 200  # tasks this close to the best match are all fair picks, for variety
MIN_TESTS = 1


@dataclass(frozen=True)
class TestCase:
    input: bytes
    output: bytes


@dataclass(frozen=True)
class Problem:
    id: int
    slug: str
    title: str
    statement: str
    difficulty: int
    time_limit_ms: int
    memory_limit_mb: int
    tests: tuple[TestCase, ...]

    def public(self) -> dict:
        """The task object of the contract (no tests, ever)."""
        return {"id": self.id, "title": self.title, "statement": self.statement, "time_limit_ms": self.time_limit_ms,
                "difficulty": self.difficulty, "memory_limit_mb": self.memory_limit_mb}


class ProblemSetError(ValueError):
    """The problem directory is not well formed (the service refuses to start with it)."""


def load_problem(directory: Path) -> Problem:
    try:
        meta = json.loads((directory / "problem.json").read_text())
        statement = (directory / "statement.md").read_text()
    except (OSError, ValueError) as exc:
        raise ProblemSetError(f"{directory}: {exc}") from exc
    tests = []
    for input_path in sorted((directory / "tests").glob("*.in")):
        output_path = input_path.with_suffix(".out")
        if not output_path.exists():
            raise ProblemSetError(f"{input_path} has no {output_path.name}")
        tests.append(TestCase(input_path.read_bytes(), output_path.read_bytes()))
    if len(tests) < MIN_TESTS:
        raise ProblemSetError(f"{directory}: no tests")
    try:
        return Problem(id=int(meta["id"]), slug=directory.name, title=str(meta["title"]), statement=statement,
                       difficulty=int(meta["difficulty"]), time_limit_ms=int(meta["time_limit_ms"]),
                       memory_limit_mb=int(meta.get("memory_limit_mb", 256)), tests=tuple(tests))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProblemSetError(f"{directory}/problem.json: {exc!r}") from exc


def load_problems(root: Path = BUNDLED_DIR) -> dict[int, Problem]:
    """Every problem under `root`, by id. Duplicate ids are an error, not a silent overwrite."""
    problems: dict[int, Problem] = {}
    if not root.is_dir():
        raise ProblemSetError(f"{root} is not a directory")
    for directory in sorted(p for p in root.iterdir() if (p / "problem.json").exists()):
        problem = load_problem(directory)
        if problem.id in problems:
            raise ProblemSetError(f"task id {problem.id} used by both {problems[problem.id].slug} and {problem.slug}")
        problems[problem.id] = problem
    return problems


def pick(problems: Sequence[Problem], rating: int, exclude: Collection[int], rng: random.Random) -> Problem | None:
    """A problem suited to `rating`: the closest difficulty (any within PICK_SPREAD_RATING of the
    closest, at random), avoiding `exclude` unless every problem is excluded. None when empty."""
    pool = [p for p in problems if p.id not in exclude] or list(problems)
    if not pool:
        return None
    best = min(abs(p.difficulty - rating) for p in pool)
    near = [p for p in pool if abs(p.difficulty - rating) <= best + PICK_SPREAD_RATING]
    return rng.choice(sorted(near, key=lambda p: p.id))
