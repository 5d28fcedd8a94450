"""The web client's routes: the page at `/` and its static files, outside the JSON API."""

from __future__ import annotations

import re

import pytest

from duely.api.web import STATIC_DIR


def test_page_is_served_without_a_token(client):
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert '<script type="module" src="/static/app.js"></script>' in html
    assert 'href="/static/style.css"' in html
    policy = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy


def test_page_has_a_fresh_style_nonce_for_the_editor(client):
    """The one inline style the policy admits is the editor's <style> element, carrying the
    nonce of that very answer, which the page finds in its csp-nonce meta tag."""
    nonces = []
    for _ in range(2):
        resp = client.get("/")
        policy = resp.headers["Content-Security-Policy"]
        (nonce,) = re.findall(r"style-src 'self' 'nonce-([\w-]{20,})';", policy)
        assert f'<meta name="csp-nonce" nonce="{nonce}">' in resp.get_data(as_text=True)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert re.search(r"script-src 'self';", policy)     # no nonce for scripts
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


def test_page_refers_only_to_its_own_files(client):
    html = client.get("/").get_data(as_text=True)
    for ref in re.findall(r'(?:src|href)="([^"#]+)"', html):
        assert ref.startswith("/static/"), ref
        assert client.get(ref).status_code == 200, ref


@pytest.mark.parametrize(("name", "mimetype"), [
    ("app.js", "text/javascript"),
    ("api.js", "text/javascript"),
    ("style.css", "text/css"),
    ("vendor/codemirror.js", "text/javascript"),
    ("favicon.svg", "image/svg+xml"),
])
def test_static_files_have_their_content_types(client, name, mimetype):
    resp = client.get(f"/static/{name}")
    assert resp.status_code == 200
    assert resp.mimetype == mimetype
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-cache"


def test_every_module_import_is_a_served_file(client):
    imports = 0
    for path in STATIC_DIR.glob("*.js"):
        for target in re.findall(r'^import [^;]*? from "\./([\w./-]+)";$', path.read_text(), re.M):
            assert client.get(f"/static/{target}").status_code == 200, (path.name, target)
            imports += 1
    assert imports >= 10


def test_the_vendored_editor_says_how_it_was_built():
    """One generated file, named with its package versions and how to rebuild it."""
    head = (STATIC_DIR / "vendor" / "codemirror.js").read_text(encoding="utf-8")[:2000]
    assert "web-build/build.sh" in head
    for package in ("@codemirror/view@", "@codemirror/lang-python@", "@codemirror/lang-cpp@"):
        assert package in head


def test_unknown_files_and_api_paths_stay_json_errors(client):
    for path in ("/api/nope", "/api/duels/1/nope", "/static/nope.js", "/nope"):
        resp = client.get(path)
        assert resp.status_code == 404, path
        assert resp.is_json and resp.get_json()["error"]["code"] == "not_found", path


def test_static_path_cannot_escape_its_directory(client):
    resp = client.get("/static/..%2F..%2Fapi%2Fweb.py")  # decoded: /static/../../api/web.py
    assert resp.status_code == 404 and resp.is_json


def test_page_accepts_only_get(client):
    resp = client.post("/", json={})
    assert resp.status_code == 405
    assert resp.get_json()["error"]["code"] == "method_not_allowed"


def test_api_still_needs_a_token(client):
    resp = client.get("/api/users/me")
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"


def test_openapi_document_leaves_the_page_out(client):
    spec = client.get("/api/openapi.json").get_json()
    assert "/" not in spec["paths"]
    assert not [p for p in spec["paths"] if p.startswith("/static")]
    assert "/api/users" in spec["paths"]
