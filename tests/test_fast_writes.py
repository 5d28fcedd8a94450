"""The plain queue join, leave and submit answered below Flask (duely/api/fast_writes.py): the same
effects, answers, bytes and headers as the Flask views, which still answer every other form."""

from __future__ import annotations

import gzip
import json

import pytest
import requests
from sqlalchemy import text

from duely.api.fast_writes import FastWrites
from tests.conftest import TEST_SECRET_KEY
from tests.web_server import gunicorn


@pytest.fixture
def fast(app) -> FastWrites:
    middleware = app.wsgi_app.app.wsgi_app  # TrustedProxies -> FastPoll -> FastWrites -> Flask
    assert isinstance(middleware, FastWrites)
    return middleware


def answer(resp) -> tuple[int, bytes, dict[str, str]]:
    return resp.status_code, resp.get_data(), dict(resp.headers)


# A query string (which the views ignore) sends a write to Flask: the reference answer.
TO_FLASK = "?via=flask"


def submissions_of(db, user_id: int) -> list[tuple]:
    with db.transaction() as s:
        return list(s.execute(text("SELECT id, language, solution, client_temp_id FROM submissions"
                                   " WHERE user_id = :u ORDER BY submitted_at"), {"u": user_id}))


def queue_status(user) -> str:
    return user.get("/api/queue").get_json()["status"]


def test_a_plain_join_and_leave_are_answered_below_flask_as_the_views_answer(make_user, fast):
    alice, bob = make_user("fw_alice"), make_user("fw_bob")
    before = fast.answered
    quick = alice.post("/api/queue")
    assert fast.answered == before + 1 and quick.status_code == 202 and queue_status(alice) == "waiting"
    again = alice.post("/api/queue")  # idempotent: the same answer, from either path
    slow = alice.post("/api/queue" + TO_FLASK)
    assert fast.answered == before + 2
    assert answer(quick) == answer(again) == answer(slow)
    assert quick.get_json()["status"] == "waiting" and quick.get_json()["duel_id"] is None

    quick = alice.delete("/api/queue")
    assert fast.answered == before + 3 and quick.status_code == 204 and queue_status(alice) == "idle"
    bob.post("/api/queue" + TO_FLASK)
    slow = bob.delete("/api/queue" + TO_FLASK)
    assert fast.answered == before + 3 and queue_status(bob) == "idle"
    assert answer(quick) == answer(slow)
    assert answer(alice.delete("/api/queue")) == answer(slow)  # not waiting: still 204


def test_a_plain_submit_is_answered_below_flask_and_is_idempotent_across_both_paths(make_user, duel_between, fast, db):
    alice, bob = make_user("fw_sub_a"), make_user("fw_sub_b")
    duel = duel_between(alice, bob)
    url = f"/api/duels/{duel}/submit"
    before = fast.answered
    body = {"solution": "print(1) # é ✓ 😀 \"q\"", "language": "python", "client_temp_id": "k-1"}
    quick = alice.post(url, json=body)
    slow = alice.post(url + TO_FLASK, json=body)  # the same key: the same submission, the same answer
    assert fast.answered == before + 1
    assert quick.status_code == 202 and answer(quick) == answer(slow)
    assert quick.get_json()["status"] == "pending"
    stored = submissions_of(db, alice.id)
    assert [(str(r.id), r.language, r.solution, r.client_temp_id) for r in stored] == [
        (quick.get_json()["submission_id"], "python", body["solution"], "k-1")]

    # The Idempotency-Key header counts as the view counts it; another key is another submission.
    first = alice.post(url, json={"solution": "x = 2", "language": "cpp"}, headers={"Idempotency-Key": "h-1"})
    repeat = alice.post(url + TO_FLASK, json={"solution": "x = 2", "language": "cpp"}, headers={"Idempotency-Key": "h-1"})
    other = bob.post(url, json={"solution": "y", "language": "python"})
    assert fast.answered == before + 3
    assert answer(first) == answer(repeat) and first.status_code == other.status_code == 202
    assert len(submissions_of(db, alice.id)) == 2 and len(submissions_of(db, bob.id)) == 1
    slow_other = bob.post(url + TO_FLASK, json={"solution": "y", "language": "python"})
    assert slow_other.status_code == 202 and {k: v for k, v in slow_other.headers.items()} == dict(other.headers)


@pytest.mark.parametrize("case", ["bad token", "unknown duel", "not a player", "unknown language", "empty solution",
                                  "finished duel"])
def test_a_write_that_fails_gets_the_views_error_and_changes_nothing(case, make_user, duel_between, fast, db, client):
    alice, bob, carol = make_user(f"fw_e_a{len(case)}"), make_user(f"fw_e_b{len(case)}"), make_user(f"fw_e_c{len(case)}")
    duel = duel_between(alice, bob)
    who, duel_id, body = alice, duel, {"solution": "print(1)", "language": "python"}
    headers = dict(alice.headers)
    if case == "bad token":
        headers = {"Authorization": "Bearer not-a-token"}
    elif case == "unknown duel":
        duel_id = 999_999_999
    elif case == "not a player":
        who, headers = carol, dict(carol.headers)
    elif case == "unknown language":
        body["language"] = "cobol"
    elif case == "empty solution":
        body["solution"] = "   "
    elif case == "finished duel":
        assert alice.post(f"/api/duels/{duel}/resign").status_code == 202
    before = fast.answered
    quick = client.post(f"/api/duels/{duel_id}/submit", json=body, headers=headers)
    slow = client.post(f"/api/duels/{duel_id}/submit{TO_FLASK}", json=body, headers=headers)
    assert fast.answered == before
    assert answer(quick) == answer(slow) and quick.status_code >= 400
    assert quick.get_json()["error"]["code"] and quick.headers["Content-Type"] == "application/json"
    assert submissions_of(db, who.id) == []
    if case == "bad token":
        assert quick.status_code == 401
        assert answer(client.post("/api/queue", headers=headers)) == answer(client.post("/api/queue" + TO_FLASK, headers=headers))
        assert client.post("/api/queue", headers=headers).status_code == 401


def test_a_join_the_statement_declines_is_decided_by_the_view(make_user, duel_between, fast):
    alice, bob = make_user("fw_in_duel_a"), make_user("fw_in_duel_b")
    duel_between(alice, bob)
    before = fast.answered
    quick, slow = alice.post("/api/queue"), alice.post("/api/queue" + TO_FLASK)
    assert fast.answered == before
    assert quick.status_code == 409 and answer(quick) == answer(slow)
    assert queue_status(alice) != "waiting"


@pytest.mark.parametrize("form", ["no token", "not json", "malformed json", "missing field", "wrong type", "nul",
                                  "long key", "id too big", "gzip body", "join with a body"])
def test_other_forms_go_to_flask_untouched(form, make_user, duel_between, fast, client, db):
    alice, bob = make_user(f"fw_f_a{len(form)}"), make_user(f"fw_f_b{len(form)}")
    duel = duel_between(alice, bob)
    path, headers, data = f"/api/duels/{duel}/submit", {**alice.headers, "Content-Type": "application/json"}, None
    good = {"solution": "print(1)", "language": "python"}
    if form == "no token":
        headers.pop("Authorization")
    elif form == "not json":
        headers["Content-Type"] = "text/plain"
    elif form == "malformed json":
        data = b'{"solution": "print(1)", "language":'
    elif form == "missing field":
        good.pop("language")
    elif form == "wrong type":
        good["solution"] = 12
    elif form == "nul":
        good["solution"] = "a\x00b"
    elif form == "long key":
        headers["Idempotency-Key"] = "k" * 500
    elif form == "id too big":
        path = f"/api/duels/{2**63}/submit"
    elif form == "gzip body":
        data, headers["Content-Encoding"] = gzip.compress(json.dumps(good).encode()), "gzip"
    elif form == "join with a body":
        path, headers["Authorization"] = "/api/queue", make_user(f"fw_f_c{len(form)}").headers["Authorization"]
    before = fast.answered
    resp = client.post(path, data=json.dumps(good).encode() if data is None else data, headers=headers)
    assert fast.answered == before
    expected = {"no token": 401, "not json": 400, "malformed json": 400, "missing field": 400, "wrong type": 400,
                "nul": 400, "long key": 400, "id too big": 404, "gzip body": 202, "join with a body": 202}[form]
    assert resp.status_code == expected, resp.get_json()
    assert resp.headers["Content-Type"] == "application/json" and (expected < 400 or resp.get_json()["error"]["code"])
    assert len(submissions_of(db, alice.id)) == (1 if form == "gzip body" else 0)


def test_through_gunicorn_the_fast_writes_match_flasks_on_the_wire(database_url, tmp_path, make_user, duel_between, db):
    alice, bob = make_user("fw_wire_a"), make_user("fw_wire_b")
    duel = duel_between(alice, bob)
    with gunicorn(database_url, TEST_SECRET_KEY, tmp_path) as web, requests.Session() as http:
        http.headers.update(alice.headers)  # one keep-alive connection: each body must be read whole

        def both(method: str, path: str, **kw) -> list[tuple]:
            got = []
            for suffix in ("", TO_FLASK):
                resp = http.request(method, f"{web.base}{path}{suffix}", timeout=30, **kw)
                got.append((resp.status_code, resp.content,
                            {k: v for k, v in resp.headers.items() if k not in ("Date",)}))
            return got

        body = {"solution": "print(1)\n" * 200, "language": "python", "client_temp_id": "wire-1"}
        quick, slow = both("POST", f"/api/duels/{duel}/submit", json=body)
        assert quick == slow and quick[0] == 202
        quick, slow = both("POST", f"/api/duels/{duel}/submit", json={**body, "language": "cobol", "client_temp_id": None})
        assert quick == slow and quick[0] == 400
        http.headers.update(bob.headers)
        unkeyed = {"solution": body["solution"], "language": "python"}
        quick, slow = both("POST", f"/api/duels/{duel}/submit", json=unkeyed)
        assert quick[0] == slow[0] == 202 and quick[2] == slow[2] and quick[1] != slow[1]  # two submissions
        quick, slow = both("POST", "/api/queue")
        assert quick == slow and quick[0] == 409  # in a duel: the view decides
        resp = http.post(f"{web.base}/api/duels/{duel}/resign", timeout=30)
        assert resp.status_code == 202
        quick, slow = both("POST", "/api/queue")
        assert quick == slow and quick[0] == 202
        quick, slow = both("DELETE", "/api/queue")
        assert quick == slow and quick[0] == 204
    assert [r.client_temp_id for r in submissions_of(db, alice.id)] == ["wire-1"]
    assert len(submissions_of(db, bob.id)) == 2
