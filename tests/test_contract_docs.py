"""docs/api.md is the contract: its endpoints, event types and error codes must be the code's.

The markdown is read in the two forms it is written in for people: one heading per endpoint,
"### `GET /api/updates`", and tables whose first cell is a back-quoted name (the event types
under "### Event types", the error codes under "## Errors", status first). Path parameters are
compared without their names (`{id}` in the docs, `{user_id}` in the OpenAPI document).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from duely import errors
from duely.api import create_app
from duely.api.error_handlers import _HTTP_CODES
from duely.config import Config
from duely.eventlog.types import DUEL_EVENT_TYPES, DUEL_PAYLOADS, EVENT_TYPES
from duely.web_worker import _CLIENT_ERRORS

API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"
# The OpenAPI document describes the API, not itself; the docs list it as an endpoint.
OPENAPI_DOCUMENT = ("GET", "/api/openapi.json")
# Served by the same app, deliberately outside the API and its document (docs/api.md says so).
NOT_API_ENDPOINTS = {"web.page", "static"}
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}

_ENDPOINT_HEADING = re.compile(r"^#{2,4} `([A-Z]+) (/[^`\s]*)`\s*$", re.MULTILINE)
_TABLE_NAME = re.compile(r"^\|\s*`([a-z_]+)`\s*\|", re.MULTILINE)
_ERROR_ROW = re.compile(r"^\|\s*(\d{3})\s*\|\s*`([a-z_]+)`\s*\|", re.MULTILINE)


def _section(markdown: str, heading: str) -> str:
    """The text under `heading` (a whole heading line) up to the next heading of its level or higher."""
    level = len(heading) - len(heading.lstrip("#"))
    start = markdown.index("\n" + heading + "\n") + len(heading) + 2
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(markdown, start)
    return markdown[start:end.start() if end else len(markdown)]


def _normalise(path: str) -> str:
    """`/api/users/{user_id}`, `/api/users/{id}` and Flask's `/api/users/<id:user_id>` alike."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", path)


@pytest.fixture(scope="module")
def api_md() -> str:
    return API_MD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def documented_endpoints(api_md) -> set[tuple[str, str]]:
    found = [(method, _normalise(path)) for method, path in _ENDPOINT_HEADING.findall(api_md)]
    assert len(found) == len(set(found)), f"an endpoint is documented twice: {sorted(found)}"
    assert {method for method, _ in found} <= HTTP_METHODS
    return set(found)


@pytest.fixture(scope="module")
def app():
    # The routes and the OpenAPI document are built without a database connection.
    return create_app(Config(database_url="postgresql://duely@127.0.0.1:1/unused", secret_key="docs"))


@pytest.fixture(scope="module")
def openapi(app) -> dict:
    response = app.test_client().get(OPENAPI_DOCUMENT[1])
    assert response.status_code == 200
    return response.get_json()


def _openapi_endpoints(spec: dict) -> set[tuple[str, str]]:
    return {(method.upper(), _normalise(path))
            for path, operations in spec["paths"].items() for method in operations if method.upper() in HTTP_METHODS}


def test_the_docs_and_the_openapi_document_name_the_same_endpoints(documented_endpoints, openapi):
    in_openapi = _openapi_endpoints(openapi)
    assert len(in_openapi) >= 15  # the parse found the document's paths
    assert OPENAPI_DOCUMENT in documented_endpoints
    documented = documented_endpoints - {OPENAPI_DOCUMENT}
    assert sorted(documented - in_openapi) == [], "documented in docs/api.md but not in the OpenAPI document"
    assert sorted(in_openapi - documented) == [], "in the OpenAPI document but not documented in docs/api.md"


def test_every_route_the_app_serves_is_documented_and_every_documented_one_is_served(documented_endpoints, app):
    served = {(method, _normalise(rule.rule))
              for rule in app.url_map.iter_rules() if rule.endpoint not in NOT_API_ENDPOINTS
              for method in (rule.methods or set()) & HTTP_METHODS}
    assert sorted(served - documented_endpoints) == [], "served but not documented in docs/api.md"
    assert sorted(documented_endpoints - served) == [], "documented in docs/api.md but not served"


def test_the_docs_the_code_and_the_openapi_document_name_the_same_event_types(api_md, openapi):
    documented = _TABLE_NAME.findall(_section(api_md, "### Event types"))
    assert len(documented) == len(set(documented)), "an event type is documented twice"
    assert sorted(documented) == sorted(EVENT_TYPES)
    event_type = openapi["components"]["schemas"]["Event"]["properties"]["type"]
    assert sorted(event_type["enum"]) == sorted(EVENT_TYPES)


def test_the_docs_the_code_and_the_openapi_document_name_the_same_duel_log_event_types(api_md, openapi):
    documented = _TABLE_NAME.findall(_section(api_md, "### Duel log event types"))
    assert len(documented) == len(set(documented)), "a duel-log event type is documented twice"
    assert sorted(documented) == sorted(DUEL_EVENT_TYPES)
    schemas = openapi["components"]["schemas"]
    assert sorted(schemas["DuelEvent"]["properties"]["type"]["enum"]) == sorted(DUEL_EVENT_TYPES)
    for cls in DUEL_PAYLOADS.values():  # each type's payload is in the document, under its class's name
        assert cls.__name__ in schemas and cls.__name__ in _section(api_md, "### Duel log event types")


def _error_classes(cls: type[errors.DuelyError]) -> list[type[errors.DuelyError]]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _error_classes(sub)]


def test_every_error_code_is_documented_with_its_status(api_md):
    rows = _ERROR_ROW.findall(_section(api_md, "## Errors"))
    documented = {(int(status), code) for status, code in rows}
    raised = {(cls.status, cls.code) for cls in _error_classes(errors.DuelyError)}
    assert sorted(raised - documented) == [], "a domain error is missing from docs/api.md's error table"
    # Statuses the HTTP layer answers itself (404, 405, 500, 503, ...) with their codes, where documented.
    answered = raised | {(status, code) for status, code in _HTTP_CODES.items()}
    answered |= {(status, code) for _, status, _, code, _ in _CLIENT_ERRORS}  # gunicorn's own, see duely/web_worker.py
    assert sorted(documented - answered) == [], "docs/api.md documents an error code nothing answers with"
    assert {"unauthorized", "not_found", "method_not_allowed", "internal_error", "unavailable"} <= {c for _, c in documented}
