"""The IX HTTP client against a faked IX: requests sent, answers unwrapped, errors classified, key hidden."""

import ast
import io
import json
import logging
import pickle
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from connector.invoicexpress import client as client_module
from connector.invoicexpress import documents as documents_module
from connector.invoicexpress.client import (
    MAX_RESPONSE_BYTES,
    Client,
    InvoiceXpressError,
    NotFound,
    PermanentError,
    RetryableError,
    error_message,
    parse_retry_after,
)

BASE = "https://acme.app.invoicexpress.com"
# Characters that URL-encoding changes, so that the encoded form of the key is exercised too.
API_KEY = "s3cr3t/key+with=odd&chars"
ENCODED_KEY = "s3cr3t%2Fkey%2Bwith%3Dodd%26chars"


@pytest.fixture
def ix():
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def client():
    return Client(BASE, API_KEY)


def query(call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def path(call) -> str:
    return urlsplit(call.request.url).path


def sent_json(call) -> dict:
    return json.loads(call.request.body, parse_float=Decimal)


# --- requests sent ---------------------------------------------------------------------------------


def test_create_document_posts_the_body_as_given_with_the_api_key(ix, client):
    ix.post(
        f"{BASE}/invoice_receipts.json", json={"invoice_receipt": {"id": 42, "status": "draft"}}, status=201
    )
    body = {"invoice": {"date": "01/02/2026", "reference": "#1001"}, "proprietary_uid": "shop-1001"}

    document = client.create_document("invoice_receipts", body)

    assert document == {"id": 42, "status": "draft"}
    call = ix.calls[0]
    assert call.request.method == "POST"
    assert path(call) == "/invoice_receipts.json"
    assert query(call) == {"api_key": [API_KEY]}
    assert sent_json(call) == body
    assert call.request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert call.request.headers["Accept"] == "application/json"


def test_decimals_are_sent_as_exact_json_numbers(ix, client):
    ix.post(f"{BASE}/invoices.json", json={"invoice": {"id": 1}}, status=201)
    item = {
        "unit_price": Decimal("8.1220"),
        "quantity": Decimal("3"),
        "discount": Decimal("0.1") + Decimal("0.2"),
        "big": Decimal("12345678901234567890.123456789"),
        "scaled": Decimal("1E+2"),
        "name": "Café ☕",
    }
    client.create_document("invoices", {"invoice": {"items": [item]}})

    raw = ix.calls[0].request.body
    assert b'"unit_price": 8.1220' in raw
    assert b'"discount": 0.3,' in raw
    assert b'"scaled": 100' in raw
    assert b"8.122000000000001" not in raw and b"0.30000000000000004" not in raw
    sent_item = sent_json(ix.calls[0])["invoice"]["items"][0]
    assert sent_item == item  # Decimal compares by value: every digit survived
    assert isinstance(json.loads(raw)["invoice"]["items"][0]["unit_price"], float)  # a number, not a string


def test_non_finite_decimal_is_refused_before_sending(ix, client):
    with pytest.raises(ValueError):
        client.create_document("invoices", {"invoice": {"items": [{"unit_price": Decimal("NaN")}]}})
    assert len(ix.calls) == 0


def test_get_document_reads_the_type_specific_root_key(ix, client):
    ix.get(f"{BASE}/credit_notes/7.json", json={"credit_note": {"id": 7, "total": 12.3}})

    document = client.get_document("credit_notes", 7)

    assert document["id"] == 7
    assert document["total"] == Decimal("12.3")  # money read back is exact
    assert ix.calls[0].request.method == "GET"
    assert query(ix.calls[0]) == {"api_key": [API_KEY]}
    assert ix.calls[0].request.body is None


def test_get_document_reads_the_documented_invoice_root_key(ix, client):
    ix.get(f"{BASE}/invoice_receipts/8.json", json={"invoice": {"id": 8}})
    assert client.get_document("invoice_receipts", 8) == {"id": 8}


def test_get_document_accepts_a_bare_document(ix, client):
    ix.get(f"{BASE}/invoices/9.json", json={"id": 9, "status": "final"})
    assert client.get_document("invoices", 9) == {"id": 9, "status": "final"}


def test_a_success_without_a_recognisable_document_is_retryable(ix, client):
    ix.post(f"{BASE}/invoices.json", json={"something": {"else": 1}}, status=201)
    with pytest.raises(RetryableError):
        client.create_document("invoices", {"invoice": {}})


def test_unknown_document_type_is_refused_before_sending(ix, client):
    with pytest.raises(ValueError):
        client.get_document("../accounts", 1)
    with pytest.raises(TypeError):
        client.get_document("invoices", "1/../2")
    assert len(ix.calls) == 0


def test_change_state_puts_state_and_message(ix, client):
    ix.put(
        f"{BASE}/invoice_receipts/42/change-state.json",
        json={"invoice_receipt": {"id": 42, "status": "canceled"}},
    )

    document = client.change_state("invoice_receipts", 42, "canceled", "Pedido devolvido")

    assert document == {"id": 42, "status": "canceled"}
    call = ix.calls[0]
    assert call.request.method == "PUT"
    assert sent_json(call) == {"invoice": {"state": "canceled", "message": "Pedido devolvido"}}
    assert query(call) == {"api_key": [API_KEY]}
    assert call.request.headers["Content-Type"] == "application/json; charset=utf-8"


def test_change_state_without_message_sends_only_the_state(ix, client):
    ix.put(f"{BASE}/invoice_receipts/42/change-state.json", json={"invoice": {"id": 42, "status": "settled"}})

    assert client.change_state("invoice_receipts", 42, "finalized") == {"id": 42, "status": "settled"}
    assert sent_json(ix.calls[0]) == {"invoice": {"state": "finalized"}}


def test_change_state_with_an_empty_answer_returns_empty_dict(ix, client):
    ix.put(f"{BASE}/invoice_receipts/42/change-state.json", body="", status=200)
    assert client.change_state("invoice_receipts", 42, "finalized") == {}


def test_email_document_puts_the_message_and_accepts_an_empty_200(ix, client):
    ix.put(f"{BASE}/invoice_receipts/42/email-document.json", body="", status=200)
    body = {"message": {"client": {"email": "ana@example.pt", "save": "0"}, "subject": "Fatura"}}

    assert client.email_document("invoice_receipts", 42, body) is None
    call = ix.calls[0]
    assert call.request.method == "PUT"
    assert sent_json(call) == body
    assert query(call) == {"api_key": [API_KEY]}


def test_find_documents_filters_and_follows_pagination(ix, client):
    page = {
        "1": {"invoices": [{"id": 1}, {"id": 2}], "pagination": {"total_pages": 3, "current_page": 1}},
        "2": {"invoices": [{"id": 3}], "pagination": {"total_pages": 3, "current_page": 2}},
        "3": {"invoices": [{"id": 4}], "pagination": {"total_pages": 3, "current_page": 3}},
    }
    ix.add_callback(
        responses.GET,
        f"{BASE}/invoices.json",
        callback=lambda request: (
            200,
            {},
            json.dumps(page[parse_qs(urlsplit(request.url).query)["page"][0]]),
        ),
    )

    documents = client.find_documents(reference="#1001", types=["InvoiceReceipt", "CreditNote"])

    assert [d["id"] for d in documents] == [1, 2, 3, 4]
    assert [query(c)["page"] for c in ix.calls] == [["1"], ["2"], ["3"]]
    first = query(ix.calls[0])
    assert first["api_key"] == [API_KEY]
    assert first["reference"] == ["#1001"]
    assert first["type[]"] == ["InvoiceReceipt", "CreditNote"]
    assert first["status[]"] == ["draft", "sent", "settled", "canceled"]
    assert first["non_archived"] == ["true"]
    assert first["per_page"] == ["30"]
    assert all(path(c) == "/invoices.json" for c in ix.calls)


def test_find_documents_with_given_statuses_and_no_pagination(ix, client):
    ix.get(f"{BASE}/invoices.json", json={"invoices": []})

    assert client.find_documents(reference="R", types=["InvoiceReceipt"], statuses=["sent"]) == []
    assert len(ix.calls) == 1
    assert query(ix.calls[0])["status[]"] == ["sent"]


def test_list_taxes(ix, client):
    taxes = [{"id": 1, "name": "IVA23", "value": "23.0"}, {"id": 2, "name": "IVA0", "value": "0.0"}]
    ix.get(f"{BASE}/taxes.json", json={"taxes": taxes})

    assert client.list_taxes() == taxes
    assert query(ix.calls[0]) == {"api_key": [API_KEY]}


def test_base_url_trailing_slash_and_prefix_are_kept(ix):
    ix.get("https://sandbox.test/ix/taxes.json", json={"taxes": []})
    assert Client("https://sandbox.test/ix/", API_KEY).list_taxes() == []


def test_uses_the_given_session_and_timeouts(ix):
    session = requests.Session()
    seen = {}
    original = session.request

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    session.request = spy
    ix.get(f"{BASE}/taxes.json", json={"taxes": []})

    Client(BASE, API_KEY, session=session, connect_timeout=2, read_timeout=9).list_taxes()

    assert seen["timeout"] == (2, 9)
    assert seen["allow_redirects"] is False


# --- errors ----------------------------------------------------------------------------------------

ERROR_BODIES = [
    ({"errors": {"error": "Invalid API key"}}, "Invalid API key"),
    (
        {"errors": [{"error": "Name can't be blank"}, {"error": "Code can't be blank"}]},
        "Name can't be blank; Code can't be blank",
    ),
    ({"errors": ["Name can't be blank"]}, "Name can't be blank"),
    (
        {"errors": {"email": ["is invalid"], "date": ["can't be blank", "is not a date"]}},
        "email is invalid; date can't be blank; date is not a date",
    ),
    ({"name": ["is not available."]}, "name is not available."),
    ({"base": ["Tax region is empty"]}, "Tax region is empty"),
    (["payment_mechanism", "is invalid"], "payment_mechanism is invalid"),
    ({"error": "QR code not found"}, "QR code not found"),
    (
        {"error": {"code": "DOC009", "message": "Invoice has been settled so can't be changed anymore"}},
        "DOC009: Invoice has been settled so can't be changed anymore",
    ),
    (
        {"errors": {"code": "001", "message": "Sequence is already registering"}},
        "001: Sequence is already registering",
    ),
    (
        {"reason": "There's an ongoing document creation with the provided UID X"},
        "There's an ongoing document creation with the provided UID X",
    ),
    ({"message": "SAF-T failed"}, "SAF-T failed"),
    ({"errors": {"error": "Cancel message can't be blank"}, "status": 422}, "Cancel message can't be blank"),
]


@pytest.mark.parametrize(("payload", "message"), ERROR_BODIES)
def test_error_message_from_each_shape(payload, message):
    assert error_message(payload) == message


@pytest.mark.parametrize(("payload", "message"), ERROR_BODIES)
def test_422_bodies_become_permanent_errors_with_ix_words(ix, client, payload, message):
    ix.post(f"{BASE}/invoice_receipts.json", json=payload, status=422)

    with pytest.raises(PermanentError) as caught:
        client.create_document("invoice_receipts", {"invoice": {}})

    assert type(caught.value) is PermanentError
    assert caught.value.status == 422
    assert caught.value.message == message
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html><body><h1>Bad gateway</h1></body></html>", "text/html"),
        ("", "text/plain"),
        ("{not json", "application/json"),
        ("{}", "application/json"),
        ("null", "application/json"),
    ],
)
def test_unreadable_error_bodies_fall_back_to_the_status(ix, client, body, content_type):
    ix.get(f"{BASE}/invoices/1.json", body=body, status=400, content_type=content_type)

    with pytest.raises(PermanentError) as caught:
        client.get_document("invoices", 1)

    assert caught.value.message == "HTTP 400"


@pytest.mark.parametrize("status", [400, 401, 403, 405, 422])
def test_client_errors_are_permanent(ix, client, status):
    ix.get(f"{BASE}/taxes.json", json={"errors": {"error": "no"}}, status=status)

    with pytest.raises(PermanentError) as caught:
        client.list_taxes()

    assert not isinstance(caught.value, NotFound)
    assert caught.value.status == status


def test_401_is_permanent_with_ix_message(ix, client):
    ix.get(f"{BASE}/taxes.json", json={"errors": {"error": "Invalid API key"}}, status=401)

    with pytest.raises(PermanentError, match="^Invalid API key$") as caught:
        client.list_taxes()
    assert caught.value.status == 401


def test_404_is_not_found(ix, client):
    ix.get(f"{BASE}/invoice_receipts/5.json", json={"errors": {"error": "Document not found"}}, status=404)

    with pytest.raises(NotFound) as caught:
        client.get_document("invoice_receipts", 5)

    assert isinstance(caught.value, PermanentError)
    assert caught.value.status == 404
    assert caught.value.message == "Document not found"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retryable(ix, client, status):
    ix.get(f"{BASE}/invoices/1.json", body="<html>Bad gateway</html>", status=status)

    with pytest.raises(RetryableError) as caught:
        client.get_document("invoices", 1)

    assert caught.value.status == status
    assert caught.value.message == f"HTTP {status}"
    assert caught.value.retry_after is None


def test_409_creation_ongoing_is_retryable_with_ix_reason(ix, client):
    reason = "There's an ongoing document creation with the provided UID shop-1"
    ix.post(f"{BASE}/invoice_receipts.json", json={"reason": reason}, status=409)

    with pytest.raises(RetryableError) as caught:
        client.create_document("invoice_receipts", {"invoice": {}, "proprietary_uid": "shop-1"})

    assert caught.value.status == 409
    assert caught.value.message == reason


def test_429_without_retry_after(ix, client):
    ix.get(f"{BASE}/taxes.json", body="", status=429)

    with pytest.raises(RetryableError) as caught:
        client.list_taxes()

    assert caught.value.status == 429
    assert caught.value.retry_after is None


def test_429_with_retry_after_seconds(ix, client):
    ix.get(f"{BASE}/taxes.json", body="", status=429, headers={"Retry-After": "17"})

    with pytest.raises(RetryableError) as caught:
        client.list_taxes()

    assert caught.value.retry_after == 17.0


def test_429_with_retry_after_http_date(ix, client):
    when = datetime.now(UTC) + timedelta(seconds=120)
    ix.get(
        f"{BASE}/taxes.json", body="", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )

    with pytest.raises(RetryableError) as caught:
        client.list_taxes()

    assert 110 <= caught.value.retry_after <= 121


def test_503_carries_retry_after_too(ix, client):
    ix.get(f"{BASE}/taxes.json", body="", status=503, headers={"Retry-After": "5"})
    with pytest.raises(RetryableError) as caught:
        client.list_taxes()
    assert caught.value.retry_after == 5.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no wait
        ("Sun, 01 Feb 2026 10:00:30 GMT", 30.0),
    ],
)
def test_parse_retry_after(header, expected):
    now = datetime(2026, 2, 1, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == expected


@pytest.mark.parametrize(
    ("body", "status"),
    [("<html>Welcome to our proxy</html>", 200), ("", 201), ("{broken", 200), ("OK", 200)],
)
def test_a_success_that_is_not_json_is_retryable(ix, client, body, status):
    ix.post(f"{BASE}/invoice_receipts.json", body=body, status=status)

    with pytest.raises(RetryableError) as caught:
        client.create_document("invoice_receipts", {"invoice": {}})

    assert caught.value.status == status


def test_email_success_that_is_not_json_is_retryable(ix, client):
    ix.put(f"{BASE}/invoices/1/email-document.json", body="<html>captive portal</html>", status=200)
    with pytest.raises(RetryableError):
        client.email_document("invoices", 1, {"message": {}})


def test_a_redirect_is_not_followed_and_is_permanent(ix, client):
    ix.post(f"{BASE}/invoices.json", status=302, headers={"Location": f"{BASE}/login"})

    with pytest.raises(PermanentError) as caught:
        client.create_document("invoices", {"invoice": {}})

    assert caught.value.status == 302
    assert len(ix.calls) == 1


@pytest.mark.parametrize(
    ("exception", "wording"),
    [
        # The difference matters to the caller: only after a read timeout may IX have acted on the request.
        (requests.ConnectTimeout("connect timed out"), "timed out connecting"),
        (requests.ReadTimeout("read timed out"), "timed out waiting"),
    ],
)
def test_timeouts_are_retryable(ix, client, exception, wording):
    ix.get(f"{BASE}/invoices/1.json", body=exception)

    with pytest.raises(RetryableError) as caught:
        client.get_document("invoices", 1)

    assert caught.value.status is None
    assert wording in caught.value.message
    assert "GET /invoices/1.json" in caught.value.message


def test_connection_error_is_retryable(ix, client):
    ix.get(f"{BASE}/invoices/1.json", body=requests.ConnectionError("Connection refused"))

    with pytest.raises(RetryableError) as caught:
        client.get_document("invoices", 1)

    assert caught.value.status is None
    assert "Connection refused" in caught.value.message


def test_a_broken_transfer_is_retryable(ix, client):
    ix.get(f"{BASE}/invoices/1.json", body=requests.exceptions.ChunkedEncodingError("connection broken"))
    with pytest.raises(RetryableError):
        client.get_document("invoices", 1)


def test_an_invalid_url_is_permanent(ix):
    with pytest.raises(PermanentError) as caught:
        Client("not a url", API_KEY).list_taxes()
    assert caught.value.status is None


def test_errors_survive_pickling():
    # RQ and friends may pickle exceptions; the attributes the caller reads must come back.
    error = pickle.loads(pickle.dumps(RetryableError("slow down", 429, retry_after=3.0)))
    assert (type(error), error.message, error.status, error.retry_after) == (
        RetryableError,
        "slow down",
        429,
        3.0,
    )
    assert repr(error) == "RetryableError(status=429, message='slow down', retry_after=3.0)"


# --- response size ---------------------------------------------------------------------------------


class EndlessBody(io.RawIOBase):
    """A response far larger than the cap (ending only so that a client without a cap fails, not hangs),
    counting what the client pulled from it."""

    def __init__(self, size: int = 5 * MAX_RESPONSE_BYTES) -> None:
        self.served = 0
        self.size = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.served)
        buffer[:n] = b"x" * n
        self.served += n
        return n


def test_an_endless_response_is_cut_off_at_the_cap(ix, client):
    raw = EndlessBody()
    ix.get(f"{BASE}/invoices/1.json", body=io.BufferedReader(raw), status=200)

    with pytest.raises(RetryableError, match="larger than"):
        client.get_document("invoices", 1)

    assert MAX_RESPONSE_BYTES < raw.served < MAX_RESPONSE_BYTES + 1024 * 1024


def test_a_declared_oversized_response_is_not_read(ix, client):
    raw = EndlessBody()
    ix.get(
        f"{BASE}/invoices/1.json",
        body=io.BufferedReader(raw),
        status=502,
        headers={"Content-Length": str(MAX_RESPONSE_BYTES + 1)},
    )

    with pytest.raises(RetryableError) as caught:
        client.get_document("invoices", 1)

    assert caught.value.message == "HTTP 502"
    assert raw.served < MAX_RESPONSE_BYTES


# --- the API key never leaks -----------------------------------------------------------------------


def leaks(text: str) -> bool:
    return API_KEY in text or ENCODED_KEY in text or ENCODED_KEY.lower() in text


def error_texts(error: BaseException) -> list[str]:
    """Everything a traceback, a log formatter or an error tracker could print about this error."""
    texts = []
    seen = error
    while seen is not None:
        texts += [str(seen), repr(seen), *map(str, seen.args), str(vars(seen))]
        seen = seen.__cause__ or seen.__context__
    return texts


def url_with_key() -> str:
    return f"{BASE}/invoices/1.json?api_key={ENCODED_KEY}"


@pytest.mark.parametrize(
    "exception",
    [
        requests.ConnectionError(
            "HTTPSConnectionPool(host='acme.app.invoicexpress.com', port=443): "
            "Max retries exceeded with url: "
            f"/invoices/1.json?api_key={ENCODED_KEY} (Caused by NewConnectionError('refused'))"
        ),
        requests.ReadTimeout(f"Read timed out. (read timeout=30) url={url_with_key()}"),
        requests.ConnectTimeout(f"Connect timed out for {url_with_key()}"),
        requests.ConnectionError(f"raw key in the text: {API_KEY}"),
        requests.ConnectionError(f"encoded key on its own: {ENCODED_KEY}"),
        requests.ConnectionError(f"lower-case escapes: {BASE}/taxes.json?api_key={ENCODED_KEY.lower()}"),
        requests.exceptions.ChunkedEncodingError(f"broken while reading {url_with_key()}"),
        requests.exceptions.TooManyRedirects(f"Exceeded 30 redirects for {url_with_key()}"),
    ],
)
def test_api_key_is_not_in_transport_errors_or_logs(ix, client, caplog, exception):
    caplog.set_level(logging.DEBUG)
    ix.get(f"{BASE}/invoices/1.json", body=exception)

    with pytest.raises(InvoiceXpressError) as caught:
        client.get_document("invoices", 1)

    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert not any(leaks(text) for text in error_texts(caught.value))
    assert caplog.records, "the call should have been logged"
    assert not any(leaks(record.getMessage()) for record in caplog.records)


def test_api_key_is_not_in_http_errors_even_if_ix_echoes_it(ix, client, caplog):
    caplog.set_level(logging.DEBUG)
    ix.get(
        f"{BASE}/invoices/1.json",
        json={"errors": {"error": f"Invalid API key {API_KEY} for {url_with_key()}"}},
        status=401,
    )

    with pytest.raises(PermanentError) as caught:
        client.get_document("invoices", 1)

    assert caught.value.message.startswith("Invalid API key ***")
    assert not any(leaks(text) for text in error_texts(caught.value))
    assert not any(leaks(record.getMessage()) for record in caplog.records)


def test_a_long_error_message_is_shortened_without_leaving_part_of_the_key(ix, client):
    ix.get(f"{BASE}/taxes.json", json={"error": "x" * 490 + API_KEY}, status=422)

    with pytest.raises(PermanentError) as caught:
        client.list_taxes()

    assert len(caught.value.message) <= 500
    assert "s3cr3t" not in caught.value.message


def test_urllib3_request_lines_are_scrubbed(client, caplog):
    # urllib3 logs the request line, query string included, when its DEBUG logging is on. Set on its own
    # logger: an app created earlier in the same process quietens urllib3 to WARNING (connector/logs.py).
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s',
        "https",
        "acme.app.invoicexpress.com",
        443,
        "GET",
        f"/taxes.json?api_key={ENCODED_KEY}",
        "HTTP/1.1",
        200,
        5,
    )

    [record] = [r for r in caplog.records if r.name == "urllib3.connectionpool"]
    assert not leaks(record.getMessage())
    assert "api_key=***" in record.getMessage()


def test_client_repr_hides_the_key(client):
    assert not leaks(repr(client))


# --- logging ---------------------------------------------------------------------------------------


def test_each_call_is_logged_once_without_query_or_body(ix, client, caplog):
    caplog.set_level(logging.INFO, logger=client_module.__name__)
    ix.post(f"{BASE}/invoice_receipts.json", json={"invoice": {"id": 1}}, status=201)

    client.create_document(
        "invoice_receipts", {"invoice": {"client": {"email": "ana@example.pt", "fiscal_id": "123456789"}}}
    )

    [record] = [r for r in caplog.records if r.name == client_module.__name__]
    line = record.getMessage()
    assert record.levelno == logging.INFO
    assert "POST /invoice_receipts.json" in line and "201" in line and " ms" in line
    assert "?" not in line and "api_key" not in line
    assert "ana@example.pt" not in line and "123456789" not in line


def test_a_failed_call_is_logged_with_what_happened(ix, client, caplog):
    caplog.set_level(logging.INFO, logger=client_module.__name__)
    ix.get(f"{BASE}/invoices/1.json", body=requests.ReadTimeout("read timed out"))

    with pytest.raises(RetryableError):
        client.get_document("invoices", 1)

    [record] = [r for r in caplog.records if r.name == client_module.__name__]
    assert "GET /invoices/1.json" in record.getMessage() and "ReadTimeout" in record.getMessage()


# --- boundaries ------------------------------------------------------------------------------------


def top_level_imports(path) -> set[str]:
    """The top-level names a module imports, and the full name of each `from connector… import`."""
    imported = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported.add(module if module.startswith("connector") else module.split(".")[0])
    return imported


def test_client_module_imports_only_the_standard_library_requests_and_the_document_types():
    imported = top_level_imports(client_module.__file__)
    assert imported - set(sys.stdlib_module_names) == {"requests", "connector.invoicexpress"}
    # The one table of document types is itself plain Python.
    assert top_level_imports(documents_module.__file__) - set(sys.stdlib_module_names) == set()


@responses.activate
def test_update_document_puts_the_draft_body_without_proprietary_uid():
    responses.put(f"{BASE}/invoice_receipts/42.json", json={"invoice_receipt": {"id": 42, "status": "draft"}})
    client = Client(BASE, API_KEY)
    body = {"invoice": {"date": "25/11/2026", "due_date": "25/11/2026"}}

    assert client.update_document("invoice_receipts", 42, body) == {"id": 42, "status": "draft"}
    sent = responses.calls[0].request
    assert json.loads(sent.body) == body
    assert "api_key=" in sent.url


# --- the shared rate limit -------------------------------------------------------------------------


class FakeLimiter:
    """Records what the client asks of the account's rate limiter."""

    def __init__(self, refuse: Exception | None = None):
        self.acquired = 0
        self.paused: list[float] = []
        self.refuse = refuse

    def acquire(self, timeout: float = 30.0) -> float:
        if self.refuse is not None:
            raise self.refuse
        self.acquired += 1
        return 0.0

    def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


def test_every_request_takes_a_slot_from_the_limiter(ix):
    limiter = FakeLimiter()
    limited = Client(BASE, API_KEY, limiter=limiter)
    ix.get(f"{BASE}/invoices.json", json={"invoices": [{"id": 1}], "pagination": {"total_pages": 2}})
    ix.get(f"{BASE}/invoices.json", json={"invoices": [{"id": 2}], "pagination": {"total_pages": 2}})
    ix.get(f"{BASE}/taxes.json", body="", status=503)

    limited.find_documents(reference="#1001", types=["InvoiceReceipt"])
    with pytest.raises(RetryableError):
        limited.list_taxes()

    assert limiter.acquired == len(ix.calls) == 3
    assert limiter.paused == []  # only a 429 pauses everyone


def test_a_429_with_retry_after_pauses_every_worker_for_that_long(ix):
    limiter = FakeLimiter()
    ix.get(f"{BASE}/taxes.json", body="", status=429, headers={"Retry-After": "3"})

    with pytest.raises(RetryableError) as caught:
        Client(BASE, API_KEY, limiter=limiter).list_taxes()

    assert limiter.paused == [3.0]
    assert caught.value.status == 429 and caught.value.retry_after == 3.0
    assert limiter.acquired == 1


@pytest.mark.parametrize("header", [None, "0", "soon"])
def test_a_429_without_a_usable_retry_after_pauses_for_the_default(ix, header):
    limiter = FakeLimiter()
    ix.get(f"{BASE}/taxes.json", body="", status=429, headers={"Retry-After": header} if header else {})

    with pytest.raises(RetryableError):
        Client(BASE, API_KEY, limiter=limiter).list_taxes()

    assert limiter.paused == [client_module.RATE_LIMIT_PAUSE_SECONDS]


def test_when_the_limiter_gives_up_nothing_is_sent(ix):
    from connector.invoicexpress.ratelimit import RateLimitTimeout

    limiter = FakeLimiter(refuse=RateLimitTimeout("no slot within 30 s", retry_after=12.0))

    with pytest.raises(RetryableError) as caught:
        Client(BASE, API_KEY, limiter=limiter).create_document("invoice_receipts", {"invoice": {}})

    assert isinstance(caught.value, RateLimitTimeout) and caught.value.retry_after == 12.0
    assert len(ix.calls) == 0
