"""The web client: `GET /` serves the single page, `/static/...` its CSS and JS modules.

The page talks to the server only through the public JSON API (docs/api.md); nothing here
reads the database or needs a token. The routes are added to the app in the blueprint's
record hook rather than with `blp.route`, so flask-smorest leaves them out of the OpenAPI
document (it is the API's description, and these are not API endpoints).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from flask import Response, send_from_directory
from flask.blueprints import BlueprintSetupState

from duely.api.common import Blueprint

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_DIR = WEB_DIR / "static"
PAGE_NAME = "index.html"
NONCE_PLACEHOLDER = "{{csp_nonce}}"

# The page needs nothing from elsewhere and never evaluates server text as HTML or code;
# the policy makes the browser hold it to that. The one inline thing it allows is a <style>
# element carrying this answer's nonce: the code editor (CodeMirror, static/editor.js) puts
# the styles it generates in one, with the nonce it reads from the page's csp-nonce meta tag.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

blp = Blueprint("web", __name__, description="The web page at / and its static files (not part of the JSON API)")


def page() -> Response:
    # A fresh nonce for every answer, so one seen once is worth nothing later.
    nonce = secrets.token_urlsafe(18)
    html = (WEB_DIR / PAGE_NAME).read_text(encoding="utf-8").replace(NONCE_PLACEHOLDER, nonce)
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.format(nonce=nonce)
    return _revalidate(response)


def static_file(filename: str) -> Response:
    return _revalidate(send_from_directory(STATIC_DIR, filename))


def _revalidate(response: Response) -> Response:
    # Small files, no build step and no hashed names: let the browser revalidate (ETag) every
    # time, so a deploy is picked up on the next reload.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@blp.record_once
def _add_routes(state: BlueprintSetupState) -> None:
    app = state.app
    app.add_url_rule("/", "web.page", page, methods=["GET"])
    # Flask gives every app a `static` endpoint at /static/<path:filename> (for duely/static,
    # which does not exist): that endpoint serves these files instead.
    app.static_folder = str(STATIC_DIR)
    if "static" in app.view_functions:
        app.view_functions["static"] = static_file
    else:
        app.add_url_rule(f"{app.static_url_path}/<path:filename>", "static", static_file, methods=["GET"])
