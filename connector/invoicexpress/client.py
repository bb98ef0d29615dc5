"""The HTTP client for InvoiceXpress: requests, exact JSON bodies, and errors sorted into retryable or not."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import quote, quote_plus

import requests

from connector.invoicexpress import documents

logger = logging.getLogger(__name__)

DEFAULT_STATUSES = ("draft", "sent", "settled", "canceled")
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
PER_PAGE = 30
# How long every worker holds off after a 429 that came without a Retry-After (IX documents none).
RATE_LIMIT_PAUSE_SECONDS = 10.0

_CHUNK_BYTES = 64 * 1024
_REDACTED = "***"
# Belt and braces: whatever encoding the key ends up in, the query parameter itself is recognisable.
_API_KEY_PARAM = re.compile(r"(api_key(?:=|%3D))[^&\s'\"<>]*", re.IGNORECASE)
# Rails renders some validation errors as an [attribute, message] pair rather than a sentence.
_ATTRIBUTE = re.compile(r"^[a-z][a-z0-9_.\[\]]*$")
_MAX_MESSAGE_CHARS = 500
# Told of every request sent: (method, seconds, HTTP status or None when no answer came). connector.metrics
# listens here, so this module stays free of Redis and Flask; a listener never raises.
OBSERVERS: list[Callable[[str, float, int | None], None]] = []


class InvoiceXpressError(Exception):
    """Something went wrong talking to IX.

    `status` is the HTTP status, or None when no answer came back. `message` is IX's own words when
    it gave any, otherwise a short description; it never contains the API key.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class RetryableError(InvoiceXpressError):
    """The same request may well succeed later: a timeout, a dropped connection, 5xx, 429, 409, or an
    unreadable success. `retry_after` is IX's requested wait in seconds, when it sent one."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, message={self.message!r}, "
            f"retry_after={self.retry_after!r})"
        )


class PermanentError(InvoiceXpressError):
    """IX refused the request for good (400, 401, 403, 422, other 4xx): sending it again will not help."""


class NotFound(PermanentError):
    """IX answered 404: the document (or the endpoint) does not exist."""


class RequestLimiter(Protocol):
    """What the client needs of a rate limiter (ratelimit.RateLimiter is the real one; this module stays
    free of Redis and of the rest of the connector)."""

    def acquire(self, timeout: float = ...) -> float: ...

    def pause(self, seconds: float) -> None: ...


class Client:
    """One IX account. Each method makes one HTTP call (find_documents one per page) and either returns
    the decoded answer or raises an InvoiceXpressError subclass. It never retries: the caller decides.

    JSON numbers in answers are decoded as Decimal, so money read back from IX is exact.

    With a `limiter`, each request first takes a slot from the account's shared budget, and a 429 pauses
    every worker that shares it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        limiter: RequestLimiter | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._secrets = _secret_forms(api_key)
        self._session = session if session is not None else requests.Session()
        self._timeout = (connect_timeout, read_timeout)
        self._limiter = limiter
        _register_secrets(self._secrets)

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"

    def create_document(self, doc_type: str, body: Mapping) -> dict:
        """POST /{doc_type}.json with `body` as given ({"invoice": {...}, "proprietary_uid": ...})."""
        payload = self._request("POST", f"/{_checked_type(doc_type)}.json", body=body)
        return self._document(doc_type, payload)

    def get_document(self, doc_type: str, document_id: int) -> dict:
        payload = self._request("GET", _document_path(doc_type, document_id, ".json"))
        return self._document(doc_type, payload)

    def update_document(self, doc_type: str, document_id: int, body: Mapping) -> dict:
        """PUT /{doc_type}/{id}.json: replace a draft with `body` ({"invoice": {...}}, never a proprietary_uid).

        IX replaces the whole draft, so the body must carry everything the draft should keep."""
        payload = self._request("PUT", _document_path(doc_type, document_id, ".json"), body=body, allow_empty=True)
        return _unwrap(doc_type, payload) or {}

    def change_state(self, doc_type: str, document_id: int, state: str, message: str | None = None) -> dict:
        """Move a document to `state` ("finalized", "canceled", ...); returns the document, or {} when IX
        answered without one."""
        invoice = {"state": state}
        if message is not None:
            invoice["message"] = message
        payload = self._request(
            "PUT",
            _document_path(doc_type, document_id, "/change-state.json"),
            body={"invoice": invoice},
            allow_empty=True,
        )
        # The state change has happened once IX says 2xx; a body we cannot place must not turn that into
        # an error, or a retry would try to finalize twice.
        return _unwrap(doc_type, payload) or {}

    def email_document(self, doc_type: str, document_id: int, body: Mapping) -> None:
        """PUT /{doc_type}/{id}/email-document.json with `body` ({"message": {...}}).

        IX answers 200 with an empty body."""
        self._request(
            "PUT", _document_path(doc_type, document_id, "/email-document.json"), body=body, allow_empty=True
        )

    def find_documents(
        self, *, reference: str, types: list[str], statuses: list[str] | None = None
    ) -> list[dict]:
        """Every non-archived document with this `reference`, of the given `types` ("InvoiceReceipt",
        "CreditNote", ...) and `statuses` (IX's list vocabulary: "sent" means final), all pages."""
        params: list[tuple[str, str]] = [("reference", reference)]
        params += [("type[]", t) for t in types]
        params += [("status[]", s) for s in (DEFAULT_STATUSES if statuses is None else statuses)]
        params += [("non_archived", "true"), ("per_page", str(PER_PAGE))]

        documents: list[dict] = []
        page, total_pages = 1, 1
        while page <= total_pages:
            payload = self._request("GET", "/invoices.json", params=[*params, ("page", str(page))])
            if not isinstance(payload, dict) or not isinstance(payload.get("invoices"), list):
                raise RetryableError("IX answered the document list without a list of invoices", 200)
            documents += payload["invoices"]
            if page == 1:
                # Fixed from the first page so that a misbehaving total can never make this loop forever.
                total_pages = int_or(((payload.get("pagination") or {}).get("total_pages")), 1)
            page += 1
        return documents

    def list_taxes(self) -> list[dict]:
        payload = self._request("GET", "/taxes.json")
        if not isinstance(payload, dict) or not isinstance(payload.get("taxes"), list):
            raise RetryableError("IX answered the tax list without a list of taxes", 200)
        return payload["taxes"]

    def list_sequences(self) -> list[dict]:
        """GET /sequences.json: the account's series, each with its own id and one id per document type."""
        payload = self._request("GET", "/sequences.json")
        if not isinstance(payload, dict) or not isinstance(payload.get("sequences"), list):
            raise RetryableError("IX answered the sequence list without a list of sequences", 200)
        return payload["sequences"]

    def _document(self, doc_type: str, payload: object) -> dict:
        document = _unwrap(doc_type, payload)
        if document is None:
            # Without an id we cannot record the document; a retry is safe because create carries its
            # proprietary_uid and get is a read.
            raise RetryableError("IX answered without a recognisable document", 200)
        return document

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: Mapping | None = None,
        allow_empty: bool = False,
    ) -> object:
        """Send one request and return its decoded JSON (None for an allowed empty body), or raise."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
            data = encode_json(body)

        if self._limiter is not None:
            # Raises RateLimitTimeout (retryable) before anything is sent when the account's budget
            # does not free up in time.
            waited = self._limiter.acquire()
            if waited >= 1:
                logger.info("IX %s %s waited %.1f s for the account's rate limit", method, path, waited)

        started = time.monotonic()
        outcome = "error"
        error: InvoiceXpressError | None = None
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                params=[("api_key", self._api_key), *(params or [])],
                data=data,
                headers=headers,
                timeout=self._timeout,
                stream=True,
                # A redirect would silently turn a POST into a GET; IX does not redirect API calls.
                allow_redirects=False,
            )
            with response:
                outcome = str(response.status_code)
                raw, complete = read_capped(response)
        except requests.RequestException as exc:
            outcome = type(exc).__name__
            # Built here but raised outside the except block, so that neither __cause__ nor __context__
            # carries the requests exception, whose text holds the URL with the key.
            error = self._transport_error(method, path, exc)
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            logger.info("IX %s %s -> %s in %.0f ms", method, path, outcome, elapsed_ms)
            for observe in OBSERVERS:
                observe(method, elapsed_ms / 1000, int(outcome) if outcome.isdigit() else None)
        if error is not None:
            raise error

        status = response.status_code
        if 200 <= status < 300:
            if not complete:
                raise RetryableError(f"IX answer larger than {MAX_RESPONSE_BYTES} bytes", status)
            if not raw.strip():
                if allow_empty:
                    return None
                raise RetryableError("IX answered with an empty body", status)
            try:
                return json.loads(raw, parse_float=Decimal)
            except ValueError:
                raise RetryableError("IX answered with a body that is not JSON", status) from None

        message = None
        if complete:
            try:
                message = error_message(json.loads(raw, parse_float=Decimal))
            except ValueError:
                pass
        # Redacted before it is shortened, so that a cut can never leave half a key unrecognised.
        message = self._redact(message)[:_MAX_MESSAGE_CHARS] if message else f"HTTP {status}"
        failure = _error_for_status(status, message, response.headers.get("Retry-After"))
        if status == 429 and self._limiter is not None:
            # Every worker on this account holds off, not just this one. A Retry-After of 0 counts as
            # none: resuming at once after a 429 would only earn the next one.
            self._limiter.pause(getattr(failure, "retry_after", None) or RATE_LIMIT_PAUSE_SECONDS)
        raise failure

    def _transport_error(self, method: str, path: str, exc: requests.RequestException) -> InvoiceXpressError:
        if isinstance(exc, requests.ConnectTimeout):
            return RetryableError(f"{method} {path}: timed out connecting to InvoiceXpress")
        if isinstance(exc, requests.Timeout):
            # Worth saying: the request may have reached IX, so a create may exist already.
            return RetryableError(f"{method} {path}: timed out waiting for InvoiceXpress to answer")
        detail = self._redact(str(exc))[:_MAX_MESSAGE_CHARS]
        transient = (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        )
        if isinstance(exc, transient):
            return RetryableError(f"{method} {path}: connection to InvoiceXpress failed: {detail}")
        # Invalid URL, too many redirects and the like: our configuration, which a retry will not fix.
        return PermanentError(f"{method} {path}: request not sent: {detail}")

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


def encode_json(value: object) -> bytes:
    """JSON for IX, with Decimal written as the exact number it holds (never via float)."""
    return _encode(value).encode("utf-8")


def _encode(value: object) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be sent to InvoiceXpress as a number")
        # Fixed-point rather than str(): "1E+2" is valid JSON but not every parser takes it kindly.
        return format(value, "f")
    if isinstance(value, Mapping):
        items = (f"{json.dumps(_key(k), ensure_ascii=False)}: {_encode(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_encode(v) for v in value) + "]"
    # str, int, float, bool and None: json already writes these exactly.
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")


def error_message(payload: object) -> str | None:
    """One readable message from any of the error shapes IX uses (several joined with "; ")."""
    messages: list[str] = []
    for message in _messages(payload):
        message = " ".join(message.split())
        if message and message not in messages:
            messages.append(message)
    return "; ".join(messages) or None


def _messages(value: object, field: str | None = None) -> list[str]:
    if isinstance(value, str):
        return [f"{field} {value}" if field else value]
    if isinstance(value, list):
        pair = field is None and len(value) == 2 and all(isinstance(v, str) for v in value)
        if pair and _ATTRIBUTE.match(value[0]):
            return [f"{value[0]} {value[1]}"]
        return [m for v in value for m in _messages(v, field)]
    if isinstance(value, dict):
        for key in ("errors", "error", "message", "reason"):
            if key in value:
                found = _messages(value[key])
                code = value.get("code")
                if found and key == "message" and isinstance(code, str | int) and str(code):
                    found = [f"{code}: {m}" for m in found]
                return found
        # Rails validation errors: {"attribute": ["message", ...]}; "base" errors are already sentences.
        return [m for k, v in value.items() for m in _messages(v, None if k == "base" else str(k))]
    if value is None:
        return []
    return [f"{field} {value}" if field else str(value)]


def _error_for_status(status: int, message: str, retry_after_header: str | None) -> InvoiceXpressError:
    # 409 is IX still creating a document with this proprietary_uid; 408 is a timeout by another name.
    if status >= 500 or status in (408, 409, 429):
        return RetryableError(message, status, parse_retry_after(retry_after_header))
    if status == 404:
        return NotFound(message, status)
    return PermanentError(message, status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, in either of its forms (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def read_capped(response: requests.Response, max_bytes: int = MAX_RESPONSE_BYTES) -> tuple[bytes, bool]:
    """The body, up to `max_bytes`, and whether it was complete (a streamed response is read in chunks)."""
    if int_or(response.headers.get("Content-Length"), 0) > max_bytes:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            return b"", False
        chunks.append(chunk)
    return b"".join(chunks), True


def _unwrap(doc_type: str, payload: object) -> dict | None:
    """The document inside an answer: IX documents the root key "invoice", but real accounts answer with
    the singular type ("invoice_receipt", "credit_note"), and some answers are the bare document."""
    if not isinstance(payload, dict):
        return None
    if "id" in payload:
        return payload
    for key in ("invoice", documents.BY_PATH[doc_type].key if doc_type in documents.BY_PATH else ""):
        if isinstance(payload.get(key), dict):
            return payload[key]
    return None


def _checked_type(doc_type: str) -> str:
    if doc_type not in documents.BY_PATH:
        raise ValueError(f"unknown InvoiceXpress document type {doc_type!r}")
    return doc_type


def _document_path(doc_type: str, document_id: int, suffix: str) -> str:
    if isinstance(document_id, bool) or not isinstance(document_id, int):
        raise TypeError(f"document_id must be an int, not {type(document_id).__name__}")
    return f"/{_checked_type(doc_type)}/{document_id}{suffix}"


def int_or(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _secret_forms(api_key: str) -> tuple[str, ...]:
    if not api_key:
        return ()
    forms = {api_key, quote(api_key, safe=""), quote(api_key), quote_plus(api_key)}
    # Longest first, so that an encoded form is not half-replaced through a shorter one it contains.
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every given secret form, and any api_key query value, replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return _API_KEY_PARAM.sub(lambda m: m.group(1) + _REDACTED, text)


class _RedactingFilter(logging.Filter):
    """urllib3 logs each request line, query string included, at DEBUG: scrub the key from those records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text, tuple(sorted(self.secrets, key=len, reverse=True)))
        if clean != text:
            record.msg, record.args = clean, None
        return True


_urllib3_filter = _RedactingFilter()


def _register_secrets(secrets: tuple[str, ...]) -> None:
    _urllib3_filter.secrets.update(secrets)
    # A logger's filters see only records created on that very logger, so each one is named.
    for name in ("urllib3.connectionpool", "urllib3.util.retry"):
        logging.getLogger(name).addFilter(_urllib3_filter)
