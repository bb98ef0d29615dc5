"""The Stripe REST client against the local fake: sessions, lines, refunds, payments, events, its errors."""

from __future__ import annotations

import json
import logging
import threading

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from connector.platforms.common import PlatformRefused, PlatformUnavailable
from connector.platforms.stripe import webhook
from connector.platforms.stripe.api import StripeAPI
from devtools import stripe_fake

KEY = "rk_test_51Nabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ"
SESSION = "cs_test_a1B2c3D4e5F6"


@pytest.fixture
def base_url():
    with stripe_fake.running(KEY) as url:
        yield url


@pytest.fixture
def fake(base_url):
    return stripe_fake.Control(base_url)


@pytest.fixture
def client(base_url):
    return StripeAPI(KEY, base_url=base_url, timeout=(2, 5))


def line(n: int, percentage: float = 23.0) -> dict:
    return {
        "id": f"li_{n:04d}",
        "description": f"Item {n}",
        "quantity": 1,
        "amount_subtotal": 1000 + n,
        "amount_total": 1230 + n,
        "taxes": [{"amount": 230, "rate": {"id": "txr_pt", "percentage": percentage, "inclusive": False}}],
    }


def test_every_line_of_a_long_session_is_read_in_order_over_several_pages(fake, client):
    fake.add_session({"id": SESSION, "payment_status": "paid"}, [line(n) for n in range(235)])

    items = client.session_line_items(SESSION)
    pages = [c for c in fake.calls() if c["path"] == f"checkout/sessions/{SESSION}/line_items"]

    assert [item["id"] for item in items] == [f"li_{n:04d}" for n in range(235)]
    assert len(pages) == 3
    assert [p["query"].get("starting_after") for p in pages] == [None, "li_0099", "li_0199"]
    assert all(p["query"]["limit"] == "100" for p in pages)


def test_each_line_comes_with_its_taxes_expanded(fake, client):
    fake.add_session({"id": SESSION}, [line(1, 23.0), line(2, 6.0)])

    items = client.session_line_items(SESSION)

    assert [item["taxes"][0]["rate"]["percentage"] for item in items] == [23.0, 6.0]
    assert items[0]["taxes"][0]["rate"]["inclusive"] is False


def test_without_expanding_the_fake_leaves_taxes_out_as_stripe_does(base_url, fake):
    fake.add_session({"id": SESSION}, [line(1)])

    answer = requests.get(f"{base_url}/v1/checkout/sessions/{SESSION}/line_items",
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=5)

    assert answer.status_code == 200 and "taxes" not in answer.json()["data"][0]


def test_a_session_without_lines_gives_an_empty_list(fake, client):
    fake.add_session({"id": SESSION}, [])

    assert client.session_line_items(SESSION) == []


def test_a_session_is_read_as_stripe_gives_it(fake, client):
    fake.add_session({"id": SESSION, "payment_status": "unpaid", "amount_total": 4990, "currency": "eur",
                      "payment_intent": "pi_3Abc"}, [line(1)])

    session = client.get_session(SESSION)

    assert session["object"] == "checkout.session" and session["payment_status"] == "unpaid"
    assert session["amount_total"] == 4990 and "line_items" not in session


def test_a_payment_intent_is_found_back_to_its_session(fake, client):
    fake.add_session({"id": "cs_test_other", "payment_intent": "pi_3Other"})
    fake.add_session({"id": SESSION, "payment_intent": "pi_3Abc", "amount_total": 4990, "currency": "eur",
                      "payment_status": "paid"})

    assert client.session_of_payment_intent("pi_3Abc")["id"] == SESSION
    assert client.session_of_payment_intent("pi_3Nowhere") is None
    intent = client.get_payment_intent("pi_3Abc")
    assert intent["object"] == "payment_intent" and intent["amount"] == 4990 and intent["status"] == "succeeded"


def test_every_refund_of_a_charge_is_read_newest_first_and_no_other(fake, client):
    for n in range(130):
        fake.add_refund({"id": f"re_{n:04d}", "charge": "ch_3Abc", "amount": 100 + n,
                         "created": 1_700_000_000 + n})
    fake.add_refund({"id": "re_elsewhere", "charge": "ch_3Other", "amount": 500})

    refunds = client.refunds_of_charge("ch_3Abc")

    assert [r["id"] for r in refunds] == [f"re_{n:04d}" for n in reversed(range(130))]
    assert sum(r["amount"] for r in refunds) == sum(100 + n for n in range(130))
    assert len([c for c in fake.calls() if c["path"] == "refunds"]) == 2


def test_a_charge_without_refunds_has_none(client):
    assert client.refunds_of_charge("ch_3Abc") == []


def test_a_wrong_key_is_refused_and_the_key_is_in_no_log_nor_error(base_url, fake, caplog):
    fake.add_session({"id": SESSION}, [line(1)])
    wrong = "rk_test_51Nzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz9876"
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PlatformRefused) as refused:
        StripeAPI(wrong, base_url=base_url, timeout=(2, 5)).session_line_items(SESSION)

    assert "401" in str(refused.value) and "line_items" in str(refused.value)
    assert wrong not in str(refused.value) and wrong not in caplog.text
    assert "Stripe GET" in caplog.text


def test_an_unknown_session_is_refused(client):
    with pytest.raises(PlatformRefused) as refused:
        client.get_session("cs_test_missing")

    assert "404" in str(refused.value)


def test_stripes_error_type_and_code_are_in_the_message(client):
    with pytest.raises(PlatformRefused) as refused:
        client.get_session("cs_test_missing")

    assert "invalid_request_error" in str(refused.value) and "resource_missing" in str(refused.value)


@pytest.mark.parametrize("status", ["500", "503", "429"])
def test_server_errors_and_rate_limits_are_worth_trying_again(fake, client, caplog, status):
    fake.add_session({"id": SESSION}, [line(1)])
    fake.faults({"path": "line_items", "kind": status, "times": 1})
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PlatformUnavailable) as unavailable:
        client.session_line_items(SESSION)

    assert status in str(unavailable.value)
    assert KEY not in str(unavailable.value) and KEY not in caplog.text
    # The fault was used up: the next attempt reads the lines.
    assert [item["id"] for item in client.session_line_items(SESSION)] == ["li_0001"]


def test_a_timeout_is_worth_trying_again(base_url, fake, caplog):
    fake.add_refund({"id": "re_1", "charge": "ch_3Abc", "amount": 100})
    fake.faults({"path": "^refunds$", "kind": "timeout", "seconds": 2, "times": 1})
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PlatformUnavailable) as unavailable:
        StripeAPI(KEY, base_url=base_url, timeout=(1, 0.3)).refunds_of_charge("ch_3Abc")

    assert "timed out" in str(unavailable.value)
    assert KEY not in str(unavailable.value) and KEY not in caplog.text


def test_nothing_listens_is_worth_trying_again(caplog):
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PlatformUnavailable) as unavailable:
        StripeAPI(KEY, base_url="http://127.0.0.1:9", timeout=(1, 1)).get_session(SESSION)

    assert KEY not in str(unavailable.value) and KEY not in caplog.text


@pytest.mark.parametrize("bad", ["cs_../refunds", "cs_test_a/b", "pi_3Abc", "", "cs_", "cs_x?limit=1", None, 7])
def test_ids_that_could_change_the_path_are_refused_before_any_request(fake, client, bad):
    with pytest.raises(ValueError):
        client.session_line_items(bad)
    with pytest.raises(ValueError):
        client.get_session(bad)

    assert fake.calls() == []


def test_a_refund_of_a_payment_intent_id_in_place_of_a_charge_is_refused(fake, client):
    with pytest.raises(ValueError):
        client.refunds_of_charge("pi_3Abc")

    assert fake.calls() == []


class _Answering(requests.Session):
    """A transport that answers every GET with the same list page, as a misbehaving server might."""

    def __init__(self, page: dict) -> None:
        super().__init__()
        self.page = page
        self.calls = 0

    def get(self, url, **kwargs):  # noqa: ARG002
        self.calls += 1
        answer = requests.Response()
        answer.status_code = 200
        answer._content = json.dumps(self.page).encode()
        answer._content_consumed = True
        return answer


@pytest.mark.parametrize("data", [[], [{"id": "re_1", "object": "refund", "amount": 1}]])
def test_a_list_that_always_says_there_is_more_without_moving_on_is_refused(data):
    transport = _Answering({"object": "list", "data": data, "has_more": True})

    with pytest.raises(PlatformRefused) as refused:
        StripeAPI(KEY, base_url="http://stripe.invalid", session=transport).refunds_of_charge("ch_3Abc")

    assert "cursor" in str(refused.value) and transport.calls <= 2


def test_an_answer_that_is_not_a_list_is_refused():
    transport = _Answering({"object": "checkout.session", "id": SESSION})

    with pytest.raises(PlatformRefused) as refused:
        StripeAPI(KEY, base_url="http://stripe.invalid", session=transport).session_line_items(SESSION)

    assert "not the list" in str(refused.value)


def test_a_delivery_is_signed_as_stripe_signs_it(fake):
    event = {"id": "evt_1", "object": "event", "type": "checkout.session.completed",
             "data": {"object": {"id": SESSION, "object": "checkout.session", "payment_status": "paid"}}}
    body = stripe_fake.encode(event)

    header = stripe_fake.sign(body, "whsec_test", t=1_700_000_000)

    assert header.startswith("t=1700000000,v1=")
    assert webhook.verify(body, {"Stripe-Signature": header}, ["whsec_test"], now=1_700_000_010)
    assert not webhook.verify(body, {"Stripe-Signature": header}, ["whsec_other"], now=1_700_000_010)


def test_a_delivery_reaches_its_url_with_a_signature_the_connector_accepts():
    received: list[tuple[bytes, dict]] = []

    @Request.application
    def endpoint(request):
        received.append((request.get_data(), dict(request.headers)))
        return Response("ok")

    server = make_server("127.0.0.1", 0, endpoint)
    threading.Thread(target=server.handle_request, daemon=True).start()
    event = {"id": "evt_2", "object": "event", "type": "refund.created", "data": {"object": {"id": "re_1"}}}

    answer = stripe_fake.deliver(f"http://127.0.0.1:{server.server_port}/webhooks/stripe", event, "whsec_test")
    server.server_close()

    body, headers = received[0]
    assert answer.status_code == 200 and json.loads(body) == event
    assert headers["Content-Type"].startswith("application/json")
    assert webhook.verify(body, headers, ["whsec_test"])


PAID_SESSION = {
    "id": SESSION, "payment_intent": "pi_3Abc", "amount_total": 4990, "currency": "eur", "payment_status": "paid",
    "customer_details": {"name": "Ana Ferreira", "email": "ana@example.pt", "phone": None,
                         "address": {"line1": "Rua Augusta 100", "city": "Lisboa", "postal_code": "1100-053",
                                     "country": "PT", "line2": None, "state": None}},
}


def test_a_payment_comes_with_its_charge_billing_and_settlement_expanded(fake, client):
    fake.add_session(PAID_SESSION)

    intent = client.payment_intent_with_charge("pi_3Abc")
    charge = intent["latest_charge"]
    [asked] = [c for c in fake.calls() if c["path"] == "payment_intents/pi_3Abc"]

    assert asked["query"] == {"expand[]": "latest_charge.balance_transaction"}
    assert charge["object"] == "charge" and charge["id"].startswith("ch_")
    assert charge["payment_intent"] == "pi_3Abc"
    assert charge["billing_details"]["name"] == "Ana Ferreira"
    assert charge["billing_details"]["email"] == "ana@example.pt"
    assert charge["billing_details"]["address"]["postal_code"] == "1100-053"
    settled = charge["balance_transaction"]
    assert (settled["amount"], settled["currency"], settled["exchange_rate"]) == (4990, "eur", None)
    # The charge is the same one whenever it is read.
    assert client.payment_intent_with_charge("pi_3Abc")["latest_charge"]["id"] == charge["id"]


@pytest.mark.parametrize(("currency", "amount", "rate", "euro_cents"), [
    ("jpy", 4500, 0.0062, 2790),  # zero-decimal: 4500 is ¥4500
    ("usd", 1999, 0.9235, 1846),  # 18.460765 EUR
    ("gbp", 1, 1.005, 1),  # 0.01005 EUR: to the cent
    ("usd", 10, 0.05, 1),  # 0.005 EUR: a half cent rounds up
])
def test_a_payment_in_another_currency_settles_in_euros_at_the_rate_to_the_cent(
    fake, client, currency, amount, rate, euro_cents
):
    fake.add_session({**PAID_SESSION, "currency": currency, "amount_total": amount})
    fake.set_exchange_rates({currency: rate})

    intent = client.payment_intent_with_charge("pi_3Abc")
    settled = intent["latest_charge"]["balance_transaction"]

    assert (intent["amount"], intent["currency"]) == (amount, currency)
    assert (settled["amount"], settled["currency"], settled["exchange_rate"]) == (euro_cents, "eur", rate)


def test_a_payment_outside_checkout_is_read_with_its_charge_and_has_no_session(fake, client):
    fake.add_payment_intent({"id": "pi_3Direct", "amount": 2500, "currency": "eur", "status": "succeeded",
                             "description": "Consultoria",
                             "billing_details": {"name": "Rui Costa", "email": "rui@example.pt"}})

    intent = client.payment_intent_with_charge("pi_3Direct")

    assert intent["description"] == "Consultoria" and intent["amount"] == 2500
    assert intent["latest_charge"]["billing_details"]["name"] == "Rui Costa"
    assert intent["latest_charge"]["balance_transaction"]["amount"] == 2500
    assert client.session_of_payment_intent("pi_3Direct") is None


def test_a_payment_still_processing_has_a_charge_but_no_settlement_yet(fake, client):
    fake.add_session({**PAID_SESSION, "payment_status": "unpaid"})

    charge = client.payment_intent_with_charge("pi_3Abc")["latest_charge"]

    assert charge["status"] == "pending" and charge["balance_transaction"] is None


def test_a_payment_never_attempted_has_no_charge(fake, client):
    fake.add_payment_intent({"id": "pi_3Open", "amount": 900, "status": "requires_payment_method"})

    assert client.payment_intent_with_charge("pi_3Open")["latest_charge"] is None


def test_a_refund_shows_on_the_charge_it_was_made_of(fake, client):
    fake.add_session(PAID_SESSION)
    charge_id = client.payment_intent_with_charge("pi_3Abc")["latest_charge"]["id"]
    fake.add_refund({"id": "re_1", "charge": charge_id, "payment_intent": "pi_3Abc", "amount": 990})

    assert client.payment_intent_with_charge("pi_3Abc")["latest_charge"]["amount_refunded"] == 990


@pytest.mark.parametrize("answer", [
    {"id": "pi_3Abc", "object": "payment_intent", "latest_charge": "ch_3Abc"},  # not expanded
    {"id": "pi_3Abc", "object": "payment_intent",
     "latest_charge": {"id": "ch_3Abc", "object": "charge", "balance_transaction": "txn_1"}},
    {"id": "cs_test_1", "object": "checkout.session"},
])
def test_a_payment_answered_without_the_expansions_asked_for_is_refused(answer):
    transport = _Answering(answer)

    with pytest.raises(PlatformRefused):
        StripeAPI(KEY, base_url="http://stripe.invalid", session=transport).payment_intent_with_charge("pi_3Abc")


def test_an_unknown_payment_is_refused(client):
    with pytest.raises(PlatformRefused) as refused:
        client.payment_intent_with_charge("pi_3Nowhere")

    assert "404" in str(refused.value)


def test_events_of_the_types_asked_created_after_the_time_are_read_newest_first_over_pages(fake, client):
    for n in range(120):
        fake.add_event({"id": f"evt_{n:04d}", "type": "charge.refunded", "created": 1_700_000_000 + n})
    fake.add_event({"id": "evt_other", "type": "customer.created", "created": 1_700_000_050})
    fake.add_event({"id": "evt_session", "type": "checkout.session.completed", "created": 1_700_000_200})

    events = client.events(["charge.refunded", "checkout.session.completed"], 1_700_000_009)
    pages = [c for c in fake.calls() if c["path"] == "events"]

    assert [e["id"] for e in events] == ["evt_session", *(f"evt_{n:04d}" for n in reversed(range(10, 120)))]
    assert len(pages) == 2 and pages[0]["query"]["created[gt]"] == "1700000009"
    assert pages[1]["query"]["starting_after"] == "evt_0021"


def test_events_are_asked_for_each_type_as_stripe_reads_arrays(base_url):
    asked: list[str] = []

    class Recording(requests.Session):
        def get(self, url, **kwargs):
            prepared = requests.Request("GET", url, params=kwargs.get("params")).prepare()
            asked.append(prepared.url)
            return super().get(url, **kwargs)

    StripeAPI(KEY, base_url=base_url, session=Recording()).events(["refund.created", "charge.refunded"], 5)

    assert "types%5B%5D=refund.created&types%5B%5D=charge.refunded" in asked[0]


@pytest.mark.parametrize(("types", "after"), [
    ([], 0),
    ([f"type.n{n}" for n in range(21)], 0),
    (["charge.*"], 0),  # a wildcard is `type`'s, not `types[]`'s
    (["charge.refunded&limit=1"], 0),
    (["charge.refunded"], -1),
    (["charge.refunded"], True),
    (["charge.refunded"], "1700000000"),
])
def test_an_events_list_stripe_would_not_take_is_refused_before_any_request(fake, client, types, after):
    with pytest.raises(ValueError):
        client.events(types, after)

    assert fake.calls() == []


def test_twenty_event_types_are_asked_for_in_one_list(fake, client):
    fake.add_event({"id": "evt_1", "type": "type.n19", "created": 10})

    assert [e["id"] for e in client.events([f"type.n{n}" for n in range(20)], 0)] == ["evt_1"]
