"""Operations: liveness with a database round trip."""

from __future__ import annotations

import logging

from flask import jsonify
from marshmallow import Schema, fields
from sqlalchemy import text

from duely import outage
from duely.api.common import Blueprint, services

log = logging.getLogger(__name__)
blp = Blueprint("health", __name__, description="Operations")


class HealthSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "unavailable"]})


@blp.route("/healthz", methods=["GET"])
@blp.doc(responses={"200": {"description": "The database answers", "content": {"application/json": {"schema": HealthSchema}}},
                    "503": {"description": "The database does not answer", "content": {"application/json": {"schema": HealthSchema}}}})
def healthz():
    """200 when the database answers, 503 otherwise."""
    try:
        services().db.read(lambda s: s.execute(text("SELECT 1")))
    except Exception:  # any failure to reach the database means "not healthy"
        log.warning("health check: database unreachable", exc_info=True)
        response = jsonify({"status": "unavailable", "error": {"code": "unavailable", "message": "database unreachable"}})
        response.status_code = 503
        response.headers["Retry-After"] = str(outage.RETRY_AFTER_UNREACHABLE_SECS)
        return response
    return jsonify({"status": "ok"})
