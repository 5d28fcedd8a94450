"""The dev Taski's hot requests answered below Flask (duely/devtaski/fast_routes.py): the same
status, JSON and content type as the Flask views, which still answer everything else."""

from __future__ import annotations

import json
import uuid

import pytest
from werkzeug.test import Client

from duely.devtaski.app import create_devtaski_app
from duely.devtaski.fast_routes import FastRoutes, plain_pick_query
from duely.devtaski.faults import Faults
from duely.devtaski.instant import InstantJudge
from duely.devtaski.languages import available_languages
from duely.devtaski.problems import BUNDLED_DIR, load_problems
from duely.devtaski.publisher import Publisher
from duely.devtaski.service import DevTaski
from duely.devtaski.store import SubmissionStore


@pytest.fixture
def apps(tmp_path):
    """(fast, flask-only, the middleware, the faults) over one service. The judge and the
    publisher are real but not started: a queued job stays queued, nothing is published."""
    faults = Faults()
    service = DevTaski(load_problems(BUNDLED_DIR), available_languages(), SubmissionStore(tmp_path),
                       Publisher("127.0.0.1:9", "unused", faults), InstantJudge())
    flask_app = create_devtaski_app(service, faults)
    middleware = FastRoutes(flask_app, service, faults)
    return Client(middleware), Client(flask_app), middleware, faults, service


def seen(resp) -> tuple[int, object, str]:
    return resp.status_code, json.loads(resp.get_data()), resp.headers["Content-Type"]


def test_a_submission_is_answered_below_flask_as_the_view_answers_it(apps):
    fast, flask_only, middleware, _, service = apps
    task_id = next(iter(service.problems))
    body = {"submission_id": str(uuid.uuid4()), "task_id": task_id, "language": "python", "solution": "print(1)\n"}
    first = fast.post("/api/submissions", json=body)
    assert middleware.answered == 1 and service.jobs.queued() == 1
    assert seen(first) == (202, {"submission_id": body["submission_id"], "status": "queued"}, "application/json")
    # the same id again: known, not queued twice, the same answer both ways
    assert seen(fast.post("/api/submissions", json=body)) == seen(flask_only.post("/api/submissions", json=body))
    assert service.jobs.queued() == 1
    other = {**body, "submission_id": str(uuid.uuid4()), "task_id": str(task_id)}  # a numeric string is taken too
    assert seen(fast.post("/api/submissions", json=other))[0] == 202 and middleware.answered == 3


@pytest.mark.parametrize("body, content_type", [
    ('{"submission_id": "a", "task_id": 987654, "language": "python", "solution": "x"}', "application/json"),
    ('{"submission_id": "a", "task_id": 1, "language": "cobol", "solution": "x"}', "application/json"),
    ('{"submission_id": "a", "task_id": 1, "language": "python", "solution": "   "}', "application/json"),
    ('{"submission_id": "", "task_id": 1, "language": "python", "solution": "x"}', "application/json"),
    ('{"submission_id": "a", "task_id": true, "language": "python", "solution": "x"}', "application/json"),
    ('[1, 2]', "application/json"),
    ('{"submission_id": ', "application/json"),
    (b'\xff\xfe', "application/json"),
    ('{"submission_id": "a", "task_id": 1, "language": "python", "solution": "x"}', "text/plain"),
])
def test_every_refusal_is_the_views_and_changes_nothing(apps, body, content_type):
    fast, flask_only, middleware, _, service = apps
    resp = fast.post("/api/submissions", data=body, content_type=content_type)
    assert resp.status_code == 400 and middleware.answered == 0
    assert seen(resp) == seen(flask_only.post("/api/submissions", data=body, content_type=content_type))
    assert service.jobs.queued() == 0 and service.store.get("a") is None


def test_a_pick_is_answered_below_flask_as_the_view_answers_it(apps):
    fast, flask_only, middleware, _, service = apps
    ids = sorted(service.problems)
    only = ids[len(ids) // 2]
    query = f"rating=1500&exclude={','.join(str(i) for i in ids if i != only)}"
    answer = fast.get(f"/api/tasks/pick?{query}")
    assert middleware.answered == 1 and answer.get_json()["id"] == only
    assert seen(answer) == seen(flask_only.get(f"/api/tasks/pick?{query}"))
    assert fast.get("/api/tasks/pick?rating=800").status_code == 200 and middleware.answered == 2
    for odd in ("", "rating=abc", "rating=1500&rating=1500", "exclude=1", "rating=1500&exclude=x", "rating=-5",
                "rating=1500&other=1", "rating=%31500"):
        before = middleware.answered
        resp = fast.get(f"/api/tasks/pick?{odd}")
        assert middleware.answered == before, odd
        assert resp.status_code == flask_only.get(f"/api/tasks/pick?{odd}").status_code, odd


def test_an_armed_fault_switch_sends_the_request_to_flask_which_applies_it(apps):
    fast, _, middleware, faults, service = apps
    faults.configure({"server_error": {"count": 1, "status": 503}})
    task_id = next(iter(service.problems))
    body = {"submission_id": str(uuid.uuid4()), "task_id": task_id, "language": "python", "solution": "print(1)\n"}
    assert fast.post("/api/submissions", json=body).status_code == 503
    assert service.jobs.queued() == 0 and middleware.answered == 0
    assert fast.post("/api/submissions", json=body).status_code == 202 and middleware.answered == 1  # spent: fast again


def test_the_plain_pick_query():
    assert plain_pick_query("rating=1500") == (1500, set())
    assert plain_pick_query("exclude=3,4&rating=900") == (900, {3, 4})
    assert plain_pick_query("rating=900&exclude=") == (900, set())
    for odd in ("", "exclude=1", "rating=", "rating=1.5", "rating=1&x=2", "rating", "rating=١٢"):
        assert plain_pick_query(odd) is None, odd
