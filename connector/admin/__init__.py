"""The operator pages under /admin: documents and their timelines, webhook events, retrying what a person fixed.

Off (every URL answers 404) unless ADMIN_PASSWORD is set. HTTP Basic, user `admin`. A POST must come from
these pages (Origin, else Referer, names this host): a browser keeps sending Basic credentials to forms posted
from other sites.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, request

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

USER = "admin"
CHALLENGE = 'Basic realm="connector"'
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    # Keeps the admin URLs out of what IX sees when a permalink is followed, but not off our own POSTs.
    "Referrer-Policy": "same-origin",
}


def plain(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message + "\n", status, headers, mimetype="text/plain")


def enabled() -> bool:
    return bool(current_app.config.get("ADMIN_PASSWORD"))


def authenticated() -> bool:
    """Whether the request carries user `admin` and the password, compared in constant time."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    # Digests first, so that neither the time nor an early exit tells the password's length.
    user_ok = hmac.compare_digest(_digest(auth.username or ""), _digest(USER))
    password_ok = hmac.compare_digest(_digest(auth.password or ""), _digest(current_app.config["ADMIN_PASSWORD"]))
    return user_ok & password_ok


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def same_origin() -> bool:
    """Whether the request's Origin (or, without one, its Referer) names this host.

    Only the host is compared: behind Heroku's router the app sees http while the browser says https.
    """
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


@bp.before_request
def guard():
    if not enabled():
        abort(404)
    if not authenticated():
        return plain(401, "Sign in as admin with ADMIN_PASSWORD.", {"WWW-Authenticate": CHALLENGE})
    if request.method not in SAFE_METHODS and not same_origin():
        return plain(403, "Refused: this form was not sent from the connector's own pages.")
    return None


@bp.after_request
def security_headers(response: Response) -> Response:
    if enabled():  # when off, /admin must look like any other unknown URL
        response.headers.update(SECURITY_HEADERS)
    return response


from connector.admin import views  # noqa: E402,F401  (the routes, registered on bp)
