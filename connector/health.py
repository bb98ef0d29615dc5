"""GET /healthz: is the database reachable, is the queue reachable."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from connector.extensions import db, get_queue

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    report = {"database": "ok", "queue": "ok"}
    try:
        db.session.execute(sa.text("SELECT 1"))
    except SQLAlchemyError:
        db.session.rollback()
        report["database"] = "unavailable"
    try:
        queue = get_queue()
        queue.connection.ping()
        report["queued_jobs"] = queue.count
    except RedisError:
        report["queue"] = "unavailable"
    healthy = report["database"] == "ok" and report["queue"] == "ok"
    return jsonify(report), 200 if healthy else 503
