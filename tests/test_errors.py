"""Every bad request gets the contract's JSON error body and changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import text


def assert_error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.data
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def count_users(db) -> int:
    with db.transaction() as s:
        return s.execute(text("SELECT count(*) FROM users")).scalar_one()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"password": "correct horse"}, "nickname"),
        ({"nickname": "alice"}, "password"),
        ({"nickname": "al", "password": "correct horse"}, "nickname"),
        ({"nickname": "a" * 33, "password": "correct horse"}, "nickname"),
        ({"nickname": "bad name!", "password": "correct horse"}, "nickname"),
        ({"nickname": "алиса", "password": "correct horse"}, "nickname"),
        ({"nickname": 12345, "password": "correct horse"}, "nickname"),
        ({"nickname": "alice", "password": "short"}, "password"),
        ({"nickname": "alice", "password": "x" * 257}, "password"),
        ({"nickname": "alice", "password": None}, "password"),
    ],
)
def test_registration_validation_errors_name_the_field(client, db, body, field):
    err = assert_error(client.post("/api/users", json=body), 400, "validation_error")
    assert field in err["fields"]
    assert count_users(db) == 0


def test_malformed_json_is_400_bad_request(client, db):
    resp = client.post("/api/users", data="{not json", content_type="application/json")
    assert_error(resp, 400, "bad_request")
    assert count_users(db) == 0


def test_json_that_is_not_an_object_is_a_validation_error(client):
    assert_error(client.post("/api/users", json=["alice"]), 400, "validation_error")


def test_wrong_content_type_is_400(client, db):
    resp = client.post("/api/users", data="nickname=alice&password=correct+horse",
                       content_type="application/x-www-form-urlencoded")
    assert_error(resp, 400, "bad_request")
    assert count_users(db) == 0


def test_oversize_body_is_413(client, db):
    resp = client.post("/api/users", data='{"nickname": "' + "a" * 2_000_000 + '"}', content_type="application/json")
    assert_error(resp, 413, "payload_too_large")


def test_unknown_path_is_json_404(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_error(client.get("/no/such/page"), 404, "not_found")


def test_wrong_method_is_json_405_with_allow(client):
    resp = client.delete("/api/users")
    assert_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


def test_unexpected_exception_is_json_500_without_trace(app):
    @app.route("/boom")
    def boom():
        raise RuntimeError("secret internals")

    resp = app.test_client().get("/boom")
    err = assert_error(resp, 500, "internal_error")
    assert "secret internals" not in resp.get_data(as_text=True)
    assert "Traceback" not in err["message"]


def test_healthz_and_openapi(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/api/users" in spec["paths"] and "/api/auth/login" in spec["paths"]


@pytest.mark.parametrize("path", ["/api/users/9223372036854775808", "/api/duels/99999999999999999999999/submissions",
                                  "/api/users/0", "/api/duels/-1", "/api/users/007x"])
def test_ids_outside_bigint_or_malformed_are_404_not_500(client, make_user, path):
    alice = make_user("alice")
    assert_error(alice.get(path), 404, "not_found")


def test_id_query_parameters_beyond_bigint_are_validation_errors(make_user):
    alice = make_user("alice")
    resp = alice.get(f"/api/users/{alice.id}/duels?before_id=9223372036854775808")
    assert_error(resp, 400, "validation_error")
    assert alice.get(f"/api/users/{alice.id}/duels?before_id=9223372036854775807").status_code == 200


def test_nul_characters_in_bodies_are_validation_errors(client, make_user, db):
    for path, body, field in [("/api/users", {"nickname": "nul\x00nick", "password": "correct horse"}, "nickname"),
                              ("/api/auth/login", {"nickname": "alice\x00", "password": "correct horse"}, "nickname"),
                              ("/api/auth/login", {"nickname": "alice", "password": "correct\x00horse"}, "password")]:
        err = assert_error(client.post(path, json=body), 400, "validation_error")
        assert field in err["fields"]
    assert count_users(db) == 0
