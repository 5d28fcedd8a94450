"""The HTTP contract of the dev Taski: tasks, languages, submissions and what makes one unjudgeable."""

from __future__ import annotations

import shutil
import uuid

import pytest

from duely.devtaski.problems import PICK_SPREAD_RATING
from duely.languages import LANGUAGES
from tests.devtaski.helpers import assert_judged_cleanly

SLOW_SOLVE = "import time\ntime.sleep(0.15)\na, b = map(int, input().split())\nprint(a + b)\n"


def all_tasks(devtaski, problem_by_slug) -> list[dict]:
    return [devtaski.get(f"/api/tasks/{p.id}").json() for p in problem_by_slug.values()]


def assert_error(resp, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]["code"] and body["error"]["message"] == body["message"]
    return body["message"]


def test_get_task_by_id(devtaski, problem_by_slug):
    problem = problem_by_slug["a-plus-b"]
    resp = devtaski.get(f"/api/tasks/{problem.id}")
    assert resp.status_code == 200
    task = resp.json()
    assert task["id"] == problem.id and task["title"] == problem.title and task["difficulty"] == problem.difficulty
    assert task["time_limit_ms"] == problem.time_limit_ms and "## Example" in task["statement"]


def test_unknown_task_is_404(devtaski):
    assert_error(devtaski.get("/api/tasks/987654"), 404)
    assert_error(devtaski.get("/api/tasks/abc"), 404)


@pytest.mark.parametrize("rating", [800, 1500, 2400])
def test_pick_suits_the_rating(devtaski, problem_by_slug, rating):
    best = min(abs(t["difficulty"] - rating) for t in all_tasks(devtaski, problem_by_slug))
    for _ in range(5):
        resp = devtaski.get("/api/tasks/pick", params={"rating": rating})
        assert resp.status_code == 200
        assert abs(resp.json()["difficulty"] - rating) <= best + PICK_SPREAD_RATING


def test_pick_honours_exclude(devtaski, problem_by_slug):
    tasks = all_tasks(devtaski, problem_by_slug)
    kept = tasks[len(tasks) // 2]
    exclude = ",".join(str(t["id"]) for t in tasks if t["id"] != kept["id"])
    for rating in (800, 2400):
        assert devtaski.get("/api/tasks/pick", params={"rating": rating, "exclude": exclude}).json()["id"] == kept["id"]


def test_pick_with_everything_excluded_still_gives_a_task(devtaski, problem_by_slug):
    exclude = ",".join(str(t["id"]) for t in all_tasks(devtaski, problem_by_slug))
    assert devtaski.get("/api/tasks/pick", params={"rating": 1500, "exclude": exclude}).status_code == 200


@pytest.mark.parametrize("params", [{}, {"rating": "high"}, {"rating": 1500, "exclude": "1,x"}])
def test_pick_with_bad_parameters_is_400(devtaski, params):
    assert_error(devtaski.get("/api/tasks/pick", params=params), 400)


def test_languages(devtaski):
    languages = devtaski.get("/api/languages").json()["languages"]
    assert {"id": "python", "name": "Python 3"} in languages
    assert ({"id": "cpp", "name": "C++17"} in languages) == bool(shutil.which("g++"))


def test_languages_agree_with_duelys(devtaski):
    """Two lists on purpose: Duely's (duely/languages.py, what players pick from and what
    docs/taski.md says Taski accepts) and the dev Taski's own (duely/devtaski/languages.py), since
    the dev Taski stands in for an external service that keeps its own. They must agree: the dev
    Taski judges exactly Duely's languages, under the same names (C++ only where g++ is installed)."""
    served = {lang["id"]: lang["name"] for lang in devtaski.get("/api/languages").json()["languages"]}
    assert served == {lang_id: name for lang_id, name in LANGUAGES.items() if lang_id != "cpp" or shutil.which("g++")}


def body(**overrides) -> dict:
    return {"submission_id": str(uuid.uuid4()), "task_id": 1, "language": "python", "solution": "print(1)", **overrides}


@pytest.mark.parametrize("payload, why", [
    (body(task_id=987654), "unknown task"),
    (body(language="cobol"), "unknown language"),
    (body(solution="   \n\t"), "empty solution"),
    (body(solution="#" * 300_000), "larger than"),
    (body(task_id="one"), "task_id"),
    (body(task_id=True), "task_id"),
    (body(submission_id=""), "submission_id"),
    (body(solution=None), "solution"),
    ([1, 2], "JSON object"),
])
def test_what_can_never_be_judged_is_400_with_a_message(devtaski, payload, why):
    assert why in assert_error(devtaski.post("/api/submissions", json=payload), 400)


def test_a_body_that_is_not_json_is_400(devtaski):
    assert_error(devtaski.post("/api/submissions", data="{nope", headers={"Content-Type": "application/json"}), 400)


def test_a_rejected_submission_leaves_no_trace(devtaski, taski_messages):
    payload = body(language="cobol")
    assert devtaski.post("/api/submissions", json=payload).status_code == 400
    assert devtaski.get(f"/admin/submissions/{payload['submission_id']}").status_code == 404
    assert taski_messages.settle(payload["submission_id"], 0.3) == []


def test_resending_while_judging_judges_nothing_twice(devtaski, taski_messages, problem_by_slug):
    problem = problem_by_slug["a-plus-b"]
    sid = devtaski.submit(problem.id, SLOW_SOLVE)
    for _ in range(3):
        resp = devtaski.post("/api/submissions", json=body(submission_id=sid, task_id=problem.id, solution=SLOW_SOLVE))
        assert resp.status_code == 202 and resp.json()["status"] in ("queued", "judging")
    taski_messages.verdict(sid)
    assert_judged_cleanly(taski_messages.settle(sid, 0.5), len(problem.tests), "Accepted")
    assert devtaski.state(sid)["judgings"] == 1


def test_resending_a_judged_submission_republishes_its_verdict(devtaski, taski_messages, problem_by_slug):
    problem = problem_by_slug["a-plus-b"]
    sid = devtaski.submit(problem.id, "print(0)")
    first = taski_messages.verdict(sid)
    resp = devtaski.post("/api/submissions", json=body(submission_id=sid, task_id=problem.id, solution="print(0)"))
    assert resp.status_code == 202 and resp.json()["status"] == "judged"
    messages = taski_messages.wait_for(sid, lambda ms: sum(m["type"] == "verdict" for m in ms) == 2)
    assert [m for m in messages if m["type"] == "verdict"] == [first, first]  # same seq, same message
    assert [m for m in taski_messages.settle(sid, 0.3) if m["type"] == "update"] == []
    assert devtaski.state(sid)["judgings"] == 1


def test_health_reports_the_judges(devtaski):
    health = devtaski.get("/healthz").json()
    assert health["status"] == "ok" and health["tasks"] >= 12
    assert len(health["workers"]) == 2 and all(w["uid"] > 0 for w in health["workers"])


def test_pick_without_any_task_is_404(tmp_path):
    """In-process: a dev Taski whose problem set is empty (the bundled one never is)."""
    from duely.devtaski.app import create_devtaski_app
    from duely.devtaski.faults import Faults
    from duely.devtaski.service import DevTaski
    from duely.devtaski.store import SubmissionStore

    class Nowhere:
        def submit(self, job): ...
        def queued(self): return 0
        def workers(self): return []
        def publish(self, message): ...
        def backlog(self): return 0

    app = create_devtaski_app(DevTaski({}, {}, SubmissionStore(tmp_path), Nowhere(), Nowhere()), Faults())
    resp = app.test_client().get("/api/tasks/pick?rating=1500")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
