"""Every bundled problem is solved by its reference solution, judged for real (HTTP, sandbox, Kafka)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from duely.devtaski.problems import load_problems
from tests.devtaski.helpers import assert_judged_cleanly

SOLUTIONS = Path(__file__).resolve().parent / "solutions"
LANGUAGE_BY_SUFFIX = {".py": "python", ".cpp": "cpp"}
CASES = sorted((path.stem, LANGUAGE_BY_SUFFIX[path.suffix]) for path in SOLUTIONS.iterdir() if path.suffix in LANGUAGE_BY_SUFFIX)


def test_every_problem_has_a_python_reference_and_some_have_cpp():
    slugs = {p.slug for p in load_problems().values()}
    assert slugs == {slug for slug, language in CASES if language == "python"}
    assert len([c for c in CASES if c[1] == "cpp"]) >= 3


@pytest.fixture(scope="module")
def submitted(devtaski_server, problem_by_slug) -> dict[tuple[str, str], str]:
    """All references submitted at once (they judge in parallel), by (slug, language)."""
    if not devtaski_server.running:
        devtaski_server.start()
    devtaski_server.reset_faults()
    ids = {}
    for slug, language in CASES:
        if language == "cpp" and not shutil.which("g++"):
            continue
        source = (SOLUTIONS / f"{slug}.{'py' if language == 'python' else 'cpp'}").read_text()
        ids[(slug, language)] = devtaski_server.submit(problem_by_slug[slug].id, source, language)
    return ids


@pytest.mark.parametrize("slug, language", CASES)
def test_reference_solution_is_accepted(submitted, taski_messages, problem_by_slug, slug, language):
    if (slug, language) not in submitted:
        pytest.skip("g++ is not installed")
    messages = taski_messages.wait_for(submitted[(slug, language)], timeout_secs=120)
    assert_judged_cleanly(messages, len(problem_by_slug[slug].tests), "Accepted")
