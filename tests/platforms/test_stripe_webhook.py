"""Stripe deliveries: the Stripe-Signature check (rotation, several v1, the 5-minute window) and the event key."""

import hashlib
import hmac
import json

from connector.platforms import stripe

SECRET = "whsec_test_9f8e7d6c5b4a"
NEW_SECRET = "whsec_test_rotated_1234"
NOW = 1_764_000_000
BODY = json.dumps({"id": "evt_1QhT7vAbCdEfGh0001", "object": "event",
                   "type": "checkout.session.completed", "data": {"object": {}}}).encode()


def sign(body, secret, t=NOW):
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def headers(value):
    return {"Stripe-Signature": value}


def test_a_signature_made_with_the_secret_within_the_window_is_valid():
    assert stripe.verify(BODY, headers(f"t={NOW},v1={sign(BODY, SECRET)}"), [SECRET], now=NOW + 10)


def test_the_header_name_is_found_whatever_its_case():
    assert stripe.verify(BODY, {"stripe-signature": f"t={NOW},v1={sign(BODY, SECRET)}"}, [SECRET], now=NOW)


def test_a_signature_with_another_secret_or_over_another_body_is_refused():
    assert not stripe.verify(BODY, headers(f"t={NOW},v1={sign(BODY, 'whsec_other')}"), [SECRET], now=NOW)
    assert not stripe.verify(BODY + b" ", headers(f"t={NOW},v1={sign(BODY, SECRET)}"), [SECRET], now=NOW)


def test_a_changed_timestamp_breaks_the_signature():
    assert not stripe.verify(BODY, headers(f"t={NOW + 1},v1={sign(BODY, SECRET)}"), [SECRET], now=NOW)


def test_during_a_rotation_either_of_our_secrets_signs():
    header = headers(f"t={NOW},v1={sign(BODY, NEW_SECRET)}")
    assert stripe.verify(BODY, header, [SECRET, NEW_SECRET], now=NOW)
    assert not stripe.verify(BODY, header, [SECRET], now=NOW)


def test_any_of_several_v1_signatures_may_match_and_v0_is_ignored():
    value = f"t={NOW},v1={'0' * 64},v1={sign(BODY, SECRET)},v0={sign(BODY, SECRET)}"
    assert stripe.verify(BODY, headers(value), [SECRET], now=NOW)
    assert not stripe.verify(BODY, headers(f"t={NOW},v0={sign(BODY, SECRET)}"), [SECRET], now=NOW)


def test_a_signature_older_than_five_minutes_is_refused():
    value = f"t={NOW},v1={sign(BODY, SECRET)}"
    assert stripe.verify(BODY, headers(value), [SECRET], now=NOW + 300)
    assert not stripe.verify(BODY, headers(value), [SECRET], now=NOW + 301)


def test_a_signature_more_than_five_minutes_in_the_future_is_refused():
    value = f"t={NOW},v1={sign(BODY, SECRET)}"
    assert stripe.verify(BODY, headers(value), [SECRET], now=NOW - 300)
    assert not stripe.verify(BODY, headers(value), [SECRET], now=NOW - 301)


def test_malformed_headers_are_refused():
    good = sign(BODY, SECRET)
    for value in ["", f"v1={good}", f"t={NOW}", f"t=abc,v1={good}", f"t={NOW},t={NOW},v1={good}",
                  f"t={NOW};v1={good}", f"t={NOW},v1", "garbage", f"t=-{NOW},v1={good}", f"t={NOW},v1=é{good}",
                  ",".join([f"t={NOW}", *[f"v1={good}"] * 100])]:
        assert not stripe.verify(BODY, headers(value), [SECRET], now=NOW), value
    assert not stripe.verify(BODY, {}, [SECRET], now=NOW)


def test_an_empty_secret_never_signs():
    value = f"t={NOW},v1={sign(BODY, '')}"
    assert not stripe.verify(BODY, headers(value), [""], now=NOW)
    assert not stripe.verify(BODY, headers(value), [], now=NOW)


def test_the_delivery_is_keyed_by_the_event_id_and_names_its_type():
    delivery = stripe.delivery(BODY, {})
    assert (delivery.store, delivery.event_key, delivery.topic, delivery.acted_on) == (
        "", "evt_1QhT7vAbCdEfGh0001", "checkout.session.completed", True)


def test_session_and_refund_events_are_acted_on_and_others_stored_and_ignored():
    def acted(kind):
        return stripe.delivery(json.dumps({"id": "evt_1", "type": kind}).encode(), {}).acted_on
    for kind in ["checkout.session.completed", "checkout.session.async_payment_succeeded",
                 "checkout.session.async_payment_failed", "checkout.session.expired",
                 "charge.refunded", "refund.created"]:
        assert acted(kind), kind
    assert not acted("customer.created")


def test_an_unreadable_body_gets_no_event_key_and_never_raises():
    for body in [b"", b"not json", b"\xff\xfe", b"[1, 2]", b'{"id": 5, "type": ["x"]}', b"[" * 100_000,
                 b'{"id": "cus_123", "type": "x"}']:
        delivery = stripe.delivery(body, {})
        assert delivery.event_key is None
        assert not delivery.acted_on
