"""What the platforms' REST clients share: one GET with a timeout, a log line, a capped body, and two errors."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping

import requests

from connector.invoicexpress.client import read_capped, redact
from connector.platforms.common import PlatformRefused, PlatformUnavailable

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # a page of large orders fits many times over
_MAX_DETAIL_CHARS = 200
# Told of every request sent: (platform, seconds, HTTP status or None when no answer came). connector.metrics
# listens here, so this module stays free of Redis and Flask; a listener never raises.
OBSERVERS: list[Callable[[str, float, int | None], None]] = []


class RestClient:
    """GET requests under `base_url`, raising PlatformUnavailable when trying again later may succeed
    (timeouts, connection errors, 5xx, 408, 429) and PlatformRefused when it will not (other 4xx, an
    answer that is not JSON). Log lines and errors name the platform, the path and the status only;
    `secrets` are scrubbed from any text the server or the transport hands back."""

    def __init__(
        self,
        platform: str,
        base_url: str,
        *,
        secrets: tuple[str, ...],
        timeout: float | tuple[float, float],
        session: requests.Session | None,
        auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.platform = platform
        self.base_url = base_url
        self._auth = auth
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._timeout = timeout
        self._session = session or requests.Session()
        # Longest first, so that a secret inside another form is not half-replaced.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def get(
        self, path: str, params: Mapping[str, str] | None = None, url: str | None = None
    ) -> tuple[object, Mapping[str, str]]:
        """GET `base_url + path` (or `url`, a next page's address under base_url); its JSON and headers."""
        started = time.monotonic()
        outcome = "error"
        error: Exception | None = None
        try:
            response = self._session.get(
                url or self.base_url + path,
                params=params,
                auth=self._auth,
                headers=self._headers,
                timeout=self._timeout,
                stream=True,
            )
            with response:
                outcome = str(response.status_code)
                raw, complete = read_capped(response, MAX_RESPONSE_BYTES)
        except requests.RequestException as exc:
            outcome = type(exc).__name__
            # Built here and raised outside the except block, so that the requests exception (whose
            # text holds the URL) is neither the cause nor the context of ours.
            error = self._transport_error(path, exc)
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            logger.info("%s GET %s -> %s in %.0f ms", self.platform, path, outcome, elapsed_ms)
            for observe in OBSERVERS:
                observe(self.platform, elapsed_ms / 1000, int(outcome) if outcome.isdigit() else None)
        if error is not None:
            raise error

        status = response.status_code
        where = f"{self.platform} GET {path}"
        if 200 <= status < 300:
            if not complete:
                raise PlatformRefused(f"{where}: answer larger than {MAX_RESPONSE_BYTES} bytes")
            try:
                return json.loads(raw), response.headers
            except ValueError:
                raise PlatformRefused(f"{where}: HTTP {status} with a body that is not JSON") from None

        detail = self.redact(_error_detail(raw))[:_MAX_DETAIL_CHARS] if complete else ""
        message = f"{where}: HTTP {status}" + (f" {detail}" if detail else "")
        if status >= 500 or status in (408, 429):
            raise PlatformUnavailable(message)
        raise PlatformRefused(message)

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _transport_error(self, path: str, exc: requests.RequestException) -> Exception:
        where = f"{self.platform} GET {path}"
        if isinstance(exc, requests.ConnectTimeout):
            return PlatformUnavailable(f"{where}: timed out connecting")
        if isinstance(exc, requests.Timeout):
            return PlatformUnavailable(f"{where}: timed out waiting for the answer")
        transient = (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        )
        detail = self.redact(str(exc))[:_MAX_DETAIL_CHARS]
        if isinstance(exc, transient):
            return PlatformUnavailable(f"{where}: connection failed: {detail}")
        # An invalid URL, too many redirects: the settings, which trying again will not fix.
        return PlatformRefused(f"{where}: request not sent: {detail}")


def _error_detail(raw: bytes) -> str:
    """The error a platform's body names: WooCommerce's {"code", "message"}, Shopify's {"errors"}, Stripe's
    {"error": {"type", "code", "message"}}."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    keys = ("code", "message")
    if isinstance(payload.get("error"), dict):
        payload, keys = payload["error"], ("type", "code", "message")
    parts = [str(payload[k]) for k in keys if isinstance(payload.get(k), str) and payload[k]]
    errors = payload.get("errors")
    if isinstance(errors, str):
        parts.append(errors)
    elif isinstance(errors, dict | list):
        parts.append(json.dumps(errors, ensure_ascii=False))
    return " ".join(" ".join(parts).split())
