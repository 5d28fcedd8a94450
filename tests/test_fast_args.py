"""The hot endpoints' fast argument loading (common.Parser, `fast_load`) gives exactly what the
schema gives for plainly valid input, and hands everything else to the schema."""

from __future__ import annotations

import pytest
from marshmallow import EXCLUDE, ValidationError
from werkzeug.datastructures import MultiDict

from duely.api.duels import SubmitSchema
from duely.api.updates import LogQuerySchema, UpdatesQuerySchema

QUERIES = [
    {}, {"last_event_id": "0"}, {"last_event_id": "42", "timeout": "25", "limit": "100"},
    {"timeout": "0"}, {"timeout": "0.5"}, {"timeout": "60"}, {"timeout": "60.000001"}, {"timeout": "61"},
    {"limit": "0"}, {"limit": "101"}, {"limit": "1"}, {"last_event_id": "9223372036854775807"},
    {"last_event_id": "9223372036854775808"}, {"last_event_id": "-1"}, {"last_event_id": "1e3"},
    {"last_event_id": " 5"}, {"last_event_id": "007"}, {"timeout": "nan"}, {"timeout": "1e1"},
    {"timeout": ".5"}, {"limit": "5", "other": "x"}, {"last_event_id": ""},
]
BODIES = [
    {"solution": "print(1)", "language": "python"},
    {"solution": "print(1)", "language": "python", "client_temp_id": None},
    {"solution": "print(1)", "language": "python", "client_temp_id": "t-1", "extra": 5},
    {"solution": "", "language": "cobol"},  # the domain refuses these, the schema does not
    {"solution": "x", "language": "python", "client_temp_id": ""},
    {"solution": "x", "language": "python", "client_temp_id": "y" * 129},
    {"solution": "x", "language": "python", "client_temp_id": "y" * 128},
    {"solution": "x\x00", "language": "python"}, {"solution": "x", "language": "python", "other": "\x00"},
    {"solution": 5, "language": "python"}, {"language": "python"}, {"solution": "x", "language": None},
    {"solution": "x", "language": "python", "client_temp_id": 7}, [], "text",
]


def schema_load(schema, data):  # webargs loads a query with unknown=EXCLUDE, as here
    try:
        return schema.load(data)
    except ValidationError:
        return None


@pytest.mark.parametrize("query", QUERIES)
def test_the_updates_query_loads_as_the_schema_does(query):
    fast = UpdatesQuerySchema.fast_load(MultiDict(query))
    if fast is not None:
        assert fast == schema_load(UpdatesQuerySchema(unknown=EXCLUDE), query)
        assert all(type(fast[k]) is type(v) for k, v in schema_load(UpdatesQuerySchema(unknown=EXCLUDE), query).items())


def test_plain_queries_take_the_fast_path_and_odd_ones_the_schema():
    assert UpdatesQuerySchema.fast_load(MultiDict({"last_event_id": "42", "timeout": "25", "limit": "100"})) == {
        "last_event_id": 42, "timeout": 25.0, "limit": 100, "wake_on_own": True}
    assert UpdatesQuerySchema.fast_load(MultiDict({"wake_on_own": "false"}))["wake_on_own"] is False
    assert LogQuerySchema.fast_load(MultiDict({"last_event_id": "42"})) == {"last_event_id": 42, "timeout": 25.0,
                                                                            "limit": 100}
    for odd in ({"limit": "0"}, {"timeout": "61"}, {"timeout": "nan"}, {"last_event_id": "-1"}, {"last_event_id": ""},
                {"wake_on_own": "no"}, {"wake_on_own": ""}):
        assert UpdatesQuerySchema.fast_load(MultiDict(odd)) is None, odd
    assert UpdatesQuerySchema.fast_load(MultiDict([("limit", "5"), ("limit", "6")])) is None
    assert UpdatesQuerySchema.fast_load(MultiDict([("wake_on_own", "1"), ("wake_on_own", "1")])) is None


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_submit_body_loads_as_the_schema_does(body):
    fast = SubmitSchema.fast_load(body)
    expected = schema_load(SubmitSchema(), body) if isinstance(body, dict) else None
    if fast is not None:
        assert fast == expected
    if expected is None:
        assert fast is None
