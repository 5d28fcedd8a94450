"""Every event a duel emits matches its payload definition (duely/eventlog/types.py): all
fields present, with the right types, nothing more; and the OpenAPI document carries them."""

from __future__ import annotations

import dataclasses
import json

import pytest
from marshmallow import ValidationError

from duely.eventlog.types import EVENT_TYPES, PAYLOADS, EventType, Opponent, payload_schema
from duely.matchmaking import rounds
from duely.taski import TaskiClient
from tests.test_challenges import CHALLENGE_EVENT_TYPES
from tests.test_submissions import submit
from tests.test_verdicts import apply, msg

WRONG = "print(0)\n"


def log_of(user) -> list[dict]:
    """The user's whole log, as the API serves it."""
    events: list[dict] = []
    while True:
        body = user.get(f"/api/updates?last_event_id={len(events)}&timeout=0").get_json()
        if not body["events"]:
            return events
        events += body["events"]


def check(event: dict) -> None:
    """Raises ValidationError unless `event["data"]` is exactly its type's payload."""
    payload_schema(PAYLOADS[EventType(event["type"])])().load(event["data"])


def test_every_event_of_a_whole_duel_matches_its_payload_definition(make_user, db, config, devtaski):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    assert carol.post("/api/queue").status_code == 202
    assert carol.delete("/api/queue").status_code == 204  # queue_left, reason "left"
    for u in (alice, bob):
        assert u.post("/api/queue").status_code == 202
    assert rounds.run_round(db, config, TaskiClient(devtaski.url, timeout_secs=5)) == 1
    duel_id = alice.get("/api/queue").get_json()["duel_id"]

    wrong = submit(alice, duel_id, WRONG, client_temp_id="w1").get_json()["submission_id"]
    bobs = submit(bob, duel_id, WRONG).get_json()["submission_id"]  # client_temp_id null
    apply(db, msg(wrong, 1, "update", "Test #1 passed"))
    apply(db, msg(wrong, 2, "verdict", "Wrong Answer on test #2"))
    apply(db, msg(bobs, 1, "verdict", "Compilation Error"))
    good = submit(alice, duel_id).get_json()["submission_id"]
    apply(db, msg(good, 1, "update", "Test #1 passed"))
    apply(db, msg(good, 2, "verdict", "Accepted"))

    logs = {u.nickname: log_of(u) for u in (alice, bob, carol)}
    seen = set()
    for nickname, events in logs.items():
        for event in events:
            try:
                check(event)
            except ValidationError as exc:
                pytest.fail(f"{nickname}'s {event['type']} event does not match its payload: {exc.messages}\n{event}")
            seen.add(event["type"])
    # the duel covered every type but the challenges' (tests/test_challenges.py checks those)
    assert seen == EVENT_TYPES - CHALLENGE_EVENT_TYPES
    assert [e["type"] for e in logs["alice"]][-1] == [e["type"] for e in logs["bob"]][-1] == "duel_finished"


def test_the_check_refuses_a_missing_an_extra_and_a_mistyped_field():
    data = {"duel_id": 1, "opponent": {"user_id": 2, "nickname": "bob", "rating": 1500, "provisional": True},
            "task": {"id": "sum", "title": None}, "deadline": "2026-11-22T17:00:00Z",
            "stakes": {"1": {"win": 12, "draw": 0, "loss": -12}, "2": {"win": 12, "draw": 0, "loss": -12}},
            "rated": True}
    check({"type": "duel_started", "data": data})
    broken = [
        {k: v for k, v in data.items() if k != "deadline"},
        {**data, "stakes": 3},
        {**data, "duel_id": "1"},
        {**data, "duel_id": True},
        {**data, "opponent": {**data["opponent"], "rating": None}},
        {**data, "task": {"id": 1.5, "title": "A + B"}},
        {**data, "opponent": {**data["opponent"], "provisional": 1}},
        {**data, "stakes": {"1": {"win": 12, "draw": 0}}},
        {k: v for k, v in data.items() if k != "rated"},
    ]
    for bad in broken:
        with pytest.raises(ValidationError):
            check({"type": "duel_started", "data": bad})


def test_the_openapi_document_describes_each_event_types_data(client):
    spec = client.get("/api/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    refs = [one["$ref"] for one in schemas["Event"]["properties"]["data"]["oneOf"]]
    assert refs == [f"#/components/schemas/{cls.__name__}" for cls in PAYLOADS.values()]
    for cls in PAYLOADS.values():
        documented = schemas[cls.__name__]
        names = [f.name for f in dataclasses.fields(cls)]
        assert list(documented["properties"]) == names and sorted(documented["required"]) == sorted(names)
    assert schemas["DuelStarted"]["properties"]["opponent"] == {"$ref": "#/components/schemas/Opponent"}
    assert list(schemas["Opponent"]["properties"]) == [f.name for f in dataclasses.fields(Opponent)]
    json.dumps(spec)  # plain JSON throughout
