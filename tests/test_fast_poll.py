"""The plain GET /api/updates answered below Flask (duely/api/fast_poll.py): the same answers,
bytes and headers as the Flask view, which still answers every other form of the request."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest
import requests
from sqlalchemy import text

from duely import eventlog
from duely.api.fast_poll import FastPoll, plain_bearer, plain_query
from duely.api.updates import EventSchema, UpdatesQuerySchema, UpdatesSchema
from duely.clock import isoformat
from duely.eventlog.types import DuelStarted, Opponent, PlayerStakes, TaskRef, payload_schema
from tests.conftest import TEST_SECRET_KEY
from tests.fixtures.events import progress
from tests.web_server import gunicorn

# Characters JSON must escape or that are easy to get wrong: quotes, backslash, controls, the
# line separators JavaScript chokes on, accents, a character outside the BMP.
TRICKY = 'é "q" \\ \n\t\x01 \u2028\u2029 ✓ 😀 </script>'


@pytest.fixture
def fast(app) -> FastPoll:
    middleware = app.wsgi_app.app  # TrustedProxies -> FastPoll -> Flask
    assert isinstance(middleware, FastPoll)
    return middleware


def answer(resp) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of an answer, headers as a set of what matters to a client."""
    return resp.status_code, resp.get_data(), dict(resp.headers)


def both_ways(client, fast, headers: dict, query: str):
    """The answer of the fast path and of the Flask view to the same poll (an unknown query
    argument, which the schema ignores, sends it to Flask)."""
    before = fast.answered
    quick = client.get(f"/api/updates?{query}", headers=headers)
    slow = client.get(f"/api/updates?{query}&x=1", headers=headers)
    return quick, slow, fast.answered - before


def test_a_plain_poll_is_answered_below_flask_with_the_views_bytes_and_headers(client, fast, make_poller, append_event):
    alice = make_poller()
    quick, slow, answered = both_ways(client, fast, alice.headers, "last_event_id=0&timeout=0")
    assert answered == 1
    assert answer(quick) == answer(slow)
    assert quick.get_json() == {"events": [], "last_event_id": 0}
    assert quick.headers["Cache-Control"] == "no-store" and quick.headers["Vary"] == "Accept-Encoding"
    assert quick.headers["Content-Type"] == "application/json"

    first = append_event(alice.id, progress(TRICKY))
    append_event(alice.id)
    for query in ("last_event_id=0&timeout=0", "timeout=0&limit=1", f"last_event_id={first}&timeout=0.5&limit=100"):
        quick, slow, answered = both_ways(client, fast, {**alice.headers, "Accept-Encoding": "gzip"}, query)
        assert answered == 1 and answer(quick) == answer(slow), query
        assert quick.status_code == 200 and quick.get_json()["events"]


def test_the_body_is_what_the_schemas_describe_with_unicode_and_nested_payloads(client, fast, make_poller, db):
    alice = make_poller()
    payload = DuelStarted(
        duel_id=7, opponent=Opponent(user_id=2, nickname=TRICKY, rating=1500, provisional=True),
        task=TaskRef(id=12, title=TRICKY), deadline=dt.datetime(2026, 12, 3, 15, 0, 0, 120000, tzinfo=dt.UTC),
        stakes={str(alice.id): PlayerStakes(win=12, draw=0, loss=-12), "2": PlayerStakes(win=11, draw=1, loss=-13)},
        rated=True)
    with db.transaction() as s:
        event_id = eventlog.append(s, alice.id, payload)
        created_at = s.execute(text("SELECT created_at FROM events WHERE user_id = :u"), {"u": alice.id}).scalar_one()
    before = fast.answered
    resp = client.get("/api/updates?timeout=0", headers=alice.headers)
    assert fast.answered == before + 1 and resp.status_code == 200
    body = json.loads(resp.get_data().decode("utf-8"))  # strict UTF-8 JSON
    assert UpdatesSchema().dump(body) == body and UpdatesSchema().validate(body) == {}
    (event,) = body["events"]
    assert list(event) == ["id", "type", "created_at", "data"] and EventSchema().validate(event) == {}
    assert event["id"] == event_id == body["last_event_id"] and event["type"] == "duel_started"
    assert event["created_at"] == isoformat(created_at)
    # The stored payload comes back as it was written, and its own schema takes it.
    assert event["data"] == json.loads(json.dumps(payload.data()))
    assert event["data"]["opponent"]["nickname"] == TRICKY and event["data"]["task"]["title"] == TRICKY
    payload_schema(DuelStarted)().load(event["data"])


def test_the_polls_errors_are_the_apps_error_answers(client, fast, make_poller, append_event, db):
    alice = make_poller()
    append_event(alice.id)
    append_event(alice.id)
    # Ahead of the log: 400.
    quick, slow, answered = both_ways(client, fast, alice.headers, "last_event_id=5&timeout=0")
    assert answered == 0 and answer(quick) == answer(slow)
    assert quick.status_code == 400 and quick.get_json()["error"]["code"] == "bad_request"
    # Pruned: 410 with the id to continue from.
    with db.transaction() as s:
        s.execute(text("DELETE FROM events WHERE user_id = :u AND id = 1"), {"u": alice.id})
    quick, slow, _ = both_ways(client, fast, alice.headers, "last_event_id=0&timeout=0")
    assert answer(quick) == answer(slow)
    assert quick.status_code == 410 and quick.get_json()["error"]["last_event_id"] == 2
    # A bad token, a revoked one: 401, at once even for a long timeout.
    quick, slow, _ = both_ways(client, fast, {"Authorization": "Bearer nope"}, "timeout=30")
    assert answer(quick) == answer(slow) and quick.status_code == 401
    with db.transaction() as s:
        s.execute(text("UPDATE auth_tokens SET revoked_at = now() WHERE user_id = :u"), {"u": alice.id})
    quick, slow, _ = both_ways(client, fast, alice.headers, "last_event_id=2&timeout=30")
    assert answer(quick) == answer(slow) and quick.status_code == 401
    assert quick.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "headers", "status"), [
    ("GET", "/api/updates?timeout=0&timeout=0", {}, 200),  # twice: the schema decides
    ("GET", "/api/updates?limit=0", {}, 400),
    ("GET", "/api/updates?timeout=1e-1", {}, 200),  # valid for the schema, not plain: Flask answers it
    ("GET", "/api/updates?timeout=%30", {}, 200),
    ("GET", "/api/updates/?timeout=0", {}, 404),
    ("HEAD", "/api/updates?timeout=0", {}, 200),
    ("POST", "/api/updates?timeout=0", {}, 405),
    ("GET", "/api/updates?timeout=0", {"Content-Encoding": "br"}, 415),
    ("GET", "/api/updates?timeout=0", {"Authorization": "Basic abc"}, 401),
    ("GET", "/api/updates?timeout=0", {"Authorization": "Bearer "}, 401),
])
def test_every_other_form_of_the_request_is_flasks(client, fast, make_poller, method, path, headers, status):
    alice = make_poller()
    before = fast.answered
    resp = client.open(path, method=method, headers={**alice.headers, **headers})
    assert resp.status_code == status
    assert fast.answered == before
    if method != "HEAD":
        assert resp.is_json


def test_a_bearer_token_is_read_as_the_view_reads_it():
    assert plain_bearer("Bearer abc") == "abc" and plain_bearer("bearer  abc ") == "abc"
    assert plain_bearer("BEARER abc") == "abc"
    for header in (None, "", "Bearer", "Bearer ", "Basic abc", "Bearerabc"):
        assert plain_bearer(header) is None, header


@pytest.mark.parametrize("query", [
    "", "last_event_id=0", "last_event_id=42&timeout=25&limit=100", "timeout=25.0", "limit=101", "timeout=61",
    "timeout=60.000001", "last_event_id=9223372036854775808", "last_event_id=", "limit=5&other=x", "limit=5&limit=5",
    "timeout=.5", "last_event_id=007", "timeout=1.", "a=&b=", "&timeout=1", "timeout=1&", "timeout=1;limit=2",
    "wake_on_own=false", "wake_on_own=true&timeout=25", "wake_on_own=0", "wake_on_own=1", "wake_on_own=2",
    "wake_on_own=", "wake_on_own=false&wake_on_own=false", "timeout=true", "limit=false",
])
def test_a_plain_query_loads_as_the_schema_does(query):
    from urllib.parse import parse_qsl

    from marshmallow import EXCLUDE, ValidationError

    loaded = plain_query(query)
    if loaded is None:
        return
    pairs = parse_qsl(query, keep_blank_values=True)
    assert len({name for name, _ in pairs}) == len(pairs)
    try:
        expected = UpdatesQuerySchema(unknown=EXCLUDE).load(dict(pairs))
    except ValidationError:
        pytest.fail(f"{query!r} is not valid, yet plain")
    assert loaded == expected and all(type(loaded[k]) is type(v) for k, v in expected.items())


def test_the_plain_queries_clients_send_take_the_fast_path():
    assert plain_query("last_event_id=42&timeout=25.0&limit=100") == {"last_event_id": 42, "timeout": 25.0, "limit": 100,
                                                                      "wake_on_own": True}
    assert plain_query("") == {"last_event_id": 0, "timeout": 25.0, "limit": 100, "wake_on_own": True}
    assert plain_query("last_event_id=7&timeout=25.0&limit=100&wake_on_own=false") == {
        "last_event_id": 7, "timeout": 25.0, "limit": 100, "wake_on_own": False}
    for odd in ("limit=5&limit=5", "limit=5&other=x", "timeout=%30", "limit=0", "timeout=1;limit=2"):
        assert plain_query(odd) is None, odd


def test_through_gunicorn_the_fast_answer_matches_flasks_on_the_wire(database_url, tmp_path, make_poller, append_event):
    alice = make_poller()
    for i in range(30):  # a batch big enough to be gzipped
        append_event(alice.id, progress(f"Test #{i} passed " + "n" * 40))
    with gunicorn(database_url, TEST_SECRET_KEY, tmp_path) as web:
        url = f"{web.base}/api/updates"
        for accept, params in (("gzip", {"last_event_id": 0, "timeout": 0}),
                               ("identity", {"last_event_id": 0, "timeout": 0}),
                               ("gzip", {"last_event_id": 29, "timeout": 0})):
            got = []
            for extra in ({}, {"x": 1}):
                resp = requests.get(url, headers={**alice.headers, "Accept-Encoding": accept},
                                    params={**params, **extra}, stream=True, timeout=30)
                raw = resp.raw.read(decode_content=False)
                got.append((resp.status_code, raw, {k: v for k, v in resp.headers.items() if k not in ("Date",)}))
            assert got[0] == got[1], (accept, params)
            status, raw, headers = got[0]
            body = json.loads(gzip.decompress(raw) if headers.get("Content-Encoding") == "gzip" else raw)
            assert status == 200 and (headers.get("Content-Encoding") == "gzip") == (accept == "gzip" and params["last_event_id"] == 0)
            assert len(body["events"]) == 30 - params["last_event_id"]
