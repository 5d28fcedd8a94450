"""gzip both ways (duely/api/compression.py): big lists and event batches are compressed for a
client that accepts gzip, tiny answers never; gzip request bodies are accepted with the size
limit on the decompressed body. Against the real server with a real HTTP client (requests),
plus the Flask test client where it can see inside."""

from __future__ import annotations

import gzip
import io
import json
import random
import string
import threading
import zlib

import pytest
import requests

from duely import errors
from duely.api.compression import COMPRESS_MIN_BYTES, GunzipReader
from tests.conftest import TEST_SECRET_KEY
from tests.fixtures.events import progress
from tests.web_server import gunicorn

JSON = {"Content-Type": "application/json"}
GZIP_BODY = {**JSON, "Content-Encoding": "gzip"}


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    with gunicorn(database_url, TEST_SECRET_KEY, tmp_path_factory.mktemp("web")) as web:
        yield web


def get_raw(url: str, headers: dict, **params) -> tuple[requests.Response, bytes]:
    """The answer and its body exactly as sent (not decoded by requests)."""
    resp = requests.get(url, headers=headers, params=params, stream=True, timeout=30)
    return resp, resp.raw.read(decode_content=False)


def zip_bomb(decompressed_bytes: int) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    parts = [deflate.compress(chunk) for _ in range(decompressed_bytes // len(chunk))]
    return b"".join(parts) + deflate.flush()


def solution_text(size: int) -> str:
    rnd = random.Random(7)
    lines, total = [], 0
    while total < size:
        line = "x_" + "".join(rnd.choices(string.ascii_lowercase, k=30)) + f" = {rnd.randrange(10**9)}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)[:size]


# -- answers ------------------------------------------------------------------------------------


def test_a_big_event_batch_is_gzipped_and_a_tiny_answer_is_not(server, make_poller, append_event):
    alice = make_poller()
    for i in range(40):
        last = append_event(alice.id, progress(f"Test #{i} passed " + "n" * 40))
    url = f"{server.base}/api/updates"

    resp, raw = get_raw(url, {**alice.headers, "Accept-Encoding": "gzip"}, last_event_id=0, timeout=0)
    assert resp.status_code == 200 and resp.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in resp.headers["Vary"] and resp.headers["Cache-Control"] == "no-store"
    assert int(resp.headers["Content-Length"]) == len(raw)
    batch = json.loads(gzip.decompress(raw))
    assert len(batch["events"]) == 40 and batch["last_event_id"] == last
    assert len(raw) < len(json.dumps(batch)) / 3

    resp, raw = get_raw(url, {**alice.headers, "Accept-Encoding": "identity"}, last_event_id=0, timeout=0)
    assert "Content-Encoding" not in resp.headers and json.loads(raw) == batch
    assert "Accept-Encoding" in resp.headers["Vary"]

    # Nothing new: a few bytes, sent as they are even to a client that accepts gzip.
    resp, raw = get_raw(url, {**alice.headers, "Accept-Encoding": "gzip"}, last_event_id=last, timeout=0)
    assert len(raw) < COMPRESS_MIN_BYTES
    assert "Content-Encoding" not in resp.headers and json.loads(raw) == {"events": [], "last_event_id": last}
    assert "Accept-Encoding" in resp.headers["Vary"]

    # Errors are tiny JSON too.
    resp, raw = get_raw(url, {"Accept-Encoding": "gzip"})
    assert resp.status_code == 401 and "Content-Encoding" not in resp.headers
    assert json.loads(raw)["error"]["code"] == "unauthorized"


def test_a_held_poll_is_answered_as_soon_as_an_event_arrives_and_gzipped(server, make_poller, append_event):
    alice = make_poller()
    result: dict = {}

    def poll():
        # 60 s hold, 30 s client timeout: a poll kept until its own timeout (buffered) fails here.
        result["resp"], result["raw"] = get_raw(f"{server.base}/api/updates", {**alice.headers, "Accept-Encoding": "gzip"},
                                                last_event_id=0, timeout=60)

    poller = threading.Thread(target=poll)
    poller.start()
    requests.get(f"{server.base}/api/updates", headers=alice.headers, params={"timeout": 0}, timeout=30)  # warm up
    event_id = append_event(alice.id, progress("Test #1 passed " + "l" * 3000))
    poller.join(40)
    assert not poller.is_alive()
    resp, raw = result["resp"], result["raw"]
    assert resp.status_code == 200 and resp.headers["Content-Encoding"] == "gzip"
    assert [e["id"] for e in json.loads(gzip.decompress(raw))["events"]] == [event_id]


def test_a_big_list_is_gzipped_for_a_client_that_accepts_it(server, make_poller):
    players = [make_poller() for _ in range(30)]
    resp = requests.get(f"{server.base}/api/leaderboard", headers=players[0].headers, params={"limit": 50}, timeout=30)
    assert resp.status_code == 200
    assert resp.headers["Content-Encoding"] == "gzip"  # requests sends Accept-Encoding: gzip itself
    assert {u["id"] for u in resp.json()["users"]} == {p.id for p in players}


def test_answers_under_the_threshold_are_never_compressed(client, make_user):
    alice = make_user("alice")
    resp = client.get("/api/users/me", headers={**alice.headers, "Accept-Encoding": "gzip"})
    assert resp.status_code == 200 and len(resp.data) < COMPRESS_MIN_BYTES
    assert "Content-Encoding" not in resp.headers and resp.headers["Vary"] == "Accept-Encoding"
    assert resp.get_json()["nickname"] == "alice"


# -- request bodies -----------------------------------------------------------------------------


def test_a_gzip_submission_works_end_to_end(server, make_poller, duel_between):
    alice, bob = make_poller(), make_poller()
    duel_id = duel_between(alice, bob)
    solution = solution_text(60_000)  # close to MAX_SOLUTION_BYTES (64 KiB)
    body = gzip.compress(json.dumps({"solution": solution, "language": "python", "client_temp_id": "gz-1"}).encode())
    resp = requests.post(f"{server.base}/api/duels/{duel_id}/submit", data=body, headers={**alice.headers, **GZIP_BODY},
                         timeout=30)
    assert resp.status_code == 202, resp.text
    submission_id = resp.json()["submission_id"]

    resp, raw = get_raw(f"{server.base}/api/duels/{duel_id}/submissions", {**alice.headers, "Accept-Encoding": "gzip"})
    assert resp.status_code == 200 and resp.headers["Content-Encoding"] == "gzip"
    [stored] = json.loads(gzip.decompress(raw))["submissions"]
    assert (stored["id"], stored["client_temp_id"], stored["solution"]) == (submission_id, "gz-1", solution)


def test_a_chunked_gzip_body_is_accepted(server):
    body = gzip.compress(json.dumps({"nickname": "chunky", "password": "correct horse"}).encode())
    resp = requests.post(f"{server.base}/api/users", data=iter([body[:10], body[10:]]), headers=GZIP_BODY, timeout=30)
    assert resp.status_code == 201, resp.text
    assert resp.json()["nickname"] == "chunky"


@pytest.mark.parametrize("chunked", [False, True])
def test_a_zip_bomb_is_refused_with_413(server, chunked, db):
    bomb = zip_bomb(100 << 20)  # 100 MiB of zeros in ~100 KiB, under the limit as sent
    data = iter([bomb[i:i + 16384] for i in range(0, len(bomb), 16384)]) if chunked else bomb
    resp = requests.post(f"{server.base}/api/users", data=data, headers=GZIP_BODY, timeout=30)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    assert requests.get(f"{server.base}/healthz", timeout=30).status_code == 200


def test_a_corrupt_or_cut_gzip_body_is_400_and_changes_nothing(server, db):
    good = gzip.compress(json.dumps({"nickname": "mallory", "password": "correct horse"}).encode())
    for body in (b"\x1f\x8b\x08\x00garbage-not-deflate", b"not gzip at all", good[:-12], good + b"trailing junk"):
        resp = requests.post(f"{server.base}/api/users", data=body, headers=GZIP_BODY, timeout=30)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["code"] == "bad_request" and "gzip" in resp.json()["error"]["message"]
    resp = requests.post(f"{server.base}/api/auth/login", json={"nickname": "mallory", "password": "correct horse"},
                         timeout=30)
    assert resp.status_code == 401  # no account was made


def test_an_unknown_content_encoding_is_415(server, db):
    body = json.dumps({"nickname": "brotli", "password": "correct horse"}).encode()
    for encoding in ("br", "gzip, gzip", "deflate"):
        resp = requests.post(f"{server.base}/api/users", data=body, headers={**JSON, "Content-Encoding": encoding},
                             timeout=30)
        assert resp.status_code == 415, encoding
        assert resp.json()["error"]["code"] == "unsupported_encoding"
    resp = requests.post(f"{server.base}/api/users", data=body, headers={**JSON, "Content-Encoding": "identity"}, timeout=30)
    assert resp.status_code == 201


def test_the_size_limit_applies_to_the_decompressed_body(app, client):
    limit = app.config["MAX_CONTENT_LENGTH"]
    doc = json.dumps({"nickname": "padded", "password": "correct horse"}).encode()
    at_limit = doc + b" " * (limit - len(doc))
    resp = client.post("/api/users", data=gzip.compress(at_limit), headers=GZIP_BODY)
    assert resp.status_code == 201, resp.get_json()
    resp = client.post("/api/users", data=gzip.compress(at_limit + b" "), headers=GZIP_BODY)
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "payload_too_large"


def test_a_bomb_is_not_decompressed_past_the_limit(client):
    bomb = zip_bomb(300 << 20)  # ~300 KiB as sent: under the limit on the compressed body

    class CountingInput(io.BytesIO):
        consumed = 0

        def read(self, size=-1):
            data = super().read(size)
            CountingInput.consumed += len(data)
            return data

        def readinto(self, buffer):
            n = super().readinto(buffer)
            CountingInput.consumed += n
            return n

    resp = client.post("/api/users", input_stream=CountingInput(bomb),
                       headers={**GZIP_BODY, "Content-Length": str(len(bomb))})
    assert resp.status_code == 413
    # The limit (~400 KiB decompressed) is reached within the first ~400 bytes of this bomb, so
    # reading stops after the first 16 KiB read of the ~300 KiB sent.
    assert 0 < CountingInput.consumed < len(bomb) / 10

    reader = GunzipReader(io.BytesIO(bomb), limit=1000)
    with pytest.raises(errors.PayloadTooLarge):
        reader.read()
    assert reader._produced == 1001


def test_several_gzip_members_are_one_body_and_the_json_rule_still_holds(client):
    doc = json.dumps({"nickname": "members", "password": "correct horse"}).encode()
    resp = client.post("/api/users", data=gzip.compress(doc[:10]) + gzip.compress(doc[10:]), headers=GZIP_BODY)
    assert resp.status_code == 201, resp.get_json()
    resp = client.post("/api/users", data=gzip.compress(doc), headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"})
    assert resp.status_code == 400 and "Content-Type: application/json" in resp.get_json()["error"]["message"]


def test_small_answers_get_the_vary_header_flask_compress_would_give():
    from flask import Flask, Response

    from duely.api import compression

    app = Flask("vary")
    compression.init_app(app)
    answers = {"plain": ("{}", {}), "origin": ("{}", {"Vary": "Origin"}), "both": ("{}", {"Vary": "accept-encoding"}),
               "big": ("[" + ",".join(["1"] * COMPRESS_MIN_BYTES) + "]", {})}
    app.get("/<name>")(lambda name: Response(answers[name][0], headers=answers[name][1], mimetype="application/json"))
    client = app.test_client()
    gzip_ok = {"Accept-Encoding": "gzip"}
    assert client.get("/plain", headers=gzip_ok).headers["Vary"] == "Accept-Encoding"
    assert client.get("/origin", headers=gzip_ok).headers["Vary"] == "Origin, Accept-Encoding"
    assert client.get("/both", headers=gzip_ok).headers["Vary"] == "accept-encoding"
    assert "Content-Encoding" not in client.get("/plain", headers=gzip_ok).headers
    big = client.get("/big", headers=gzip_ok)
    assert big.headers["Content-Encoding"] == "gzip" and big.headers["Vary"] == "Accept-Encoding"
    assert json.loads(gzip.decompress(big.get_data())) == [1] * COMPRESS_MIN_BYTES
