"""WooCommerce deliveries: signature, the creation ping, the store and topic, the event key."""

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from connector.platforms import common, woocommerce

FIXTURES = Path(__file__).parent.parent / "fixtures" / "woocommerce"
# What WooCommerce sends: the compact JSON of the REST order object.
BODY = json.dumps(json.loads((FIXTURES / "paid_b2c_prices_include_tax.json").read_text()),
                  separators=(",", ":"), ensure_ascii=False).encode()


def sign(body, secret):
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def headers(signature=None, topic="order.updated", source="https://loja.exemplo.pt/"):
    sent = {"X-WC-Webhook-Source": source, "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Resource": "order",
            "X-WC-Webhook-Event": topic.split(".")[-1], "X-WC-Webhook-ID": "17",
            "X-WC-Webhook-Delivery-ID": "4f5e2a1b9c8d7e6f5a4b3c2d1e0f9a8b", "Content-Type": "application/json"}
    if signature is not None:
        sent["X-WC-Webhook-Signature"] = signature
    return sent


# --- signature ---------------------------------------------------------------------------------------


def test_a_body_signed_with_the_secret_is_accepted():
    assert woocommerce.verify(BODY, headers(sign(BODY, "wc-s3cret")), ["wc-s3cret"])


def test_a_signature_made_with_another_secret_is_refused():
    assert not woocommerce.verify(BODY, headers(sign(BODY, "another")), ["wc-s3cret"])


def test_a_tampered_body_is_refused():
    signature = sign(BODY, "wc-s3cret")
    assert not woocommerce.verify(BODY.replace(b'"49.55"', b'"4.55"'), headers(signature), ["wc-s3cret"])


def test_either_secret_of_a_rotation_is_accepted():
    assert woocommerce.verify(BODY, headers(sign(BODY, "new-secret")), ["old-secret", "new-secret"])
    assert woocommerce.verify(BODY, headers(sign(BODY, "old-secret")), ["old-secret", "new-secret"])


@pytest.mark.parametrize("saved, signed_with", [
    ("a&amp;b", "a&b"),
    ("say &quot;hi&quot; &#039;you&#039;", "say \"hi\" 'you'"),
    ("&lt;tag&gt;", "<tag>"),
    ("&#39;&#x27;&#0039;", "'''"),  # zero padding and the hex forms, as WordPress reads them
    ("&amp;lt;", "&lt;"),  # decoded once, never twice
    ("&eacute;&#65;&QUOT;", "&eacute;&#65;&QUOT;"),  # entities WordPress leaves as they are
    ("plain-secret", "plain-secret"),
])
def test_the_secret_is_entity_decoded_as_woocommerce_does_before_signing(saved, signed_with):
    assert woocommerce.verify(BODY, headers(sign(BODY, signed_with)), [saved])


def test_the_secret_as_saved_with_its_entities_is_not_what_signs():
    assert not woocommerce.verify(BODY, headers(sign(BODY, "a&amp;b")), ["a&amp;b"])


@pytest.mark.parametrize("secrets", [[], [""]])
def test_an_empty_secret_never_signs(secrets):
    assert not woocommerce.verify(BODY, headers(sign(BODY, "")), secrets)


@pytest.mark.parametrize("signature", [None, "", "   "])
def test_a_missing_or_empty_signature_is_refused(signature):
    assert not woocommerce.verify(BODY, headers(signature), ["wc-s3cret"])


def test_a_non_ascii_signature_header_is_refused_without_an_error():
    assert not woocommerce.verify(BODY, headers("assinatura-ç"), ["wc-s3cret"])


# --- the ping ----------------------------------------------------------------------------------------


def test_the_unsigned_creation_ping_is_recognised():
    ping = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "WooCommerce/9.4.2 Hookshot"}
    assert woocommerce.delivery(b"webhook_id=17", ping) == common.PING


@pytest.mark.parametrize("body", [b'{"webhook_id": 17}', b"webhook_id=17&x=1", b"webhook_id=", b""])
def test_anything_else_is_not_the_ping(body):
    assert woocommerce.delivery(body, headers()) != common.PING


def test_a_signed_form_body_is_not_taken_for_the_ping():
    # Only WooCommerce's unsigned ping is answered without a signature check.
    body = b"webhook_id=17"
    assert woocommerce.delivery(body, headers(sign(body, "wc-s3cret"))) != common.PING


# --- what a delivery names ---------------------------------------------------------------------------


def test_a_delivery_names_its_site_topic_and_order_state():
    delivery = woocommerce.delivery(BODY, headers(topic="order.updated"))
    assert delivery.store == "loja.exemplo.pt"
    assert delivery.topic == "order.updated"
    assert delivery.acted_on
    assert delivery.event_key == "order:1234:2025-11-18T14:05:40"


@pytest.mark.parametrize("source, store", [
    ("https://Loja.Exemplo.PT/", "loja.exemplo.pt"),
    ("https://loja.exemplo.pt:443/", "loja.exemplo.pt"),
    ("http://localhost:8080/", "localhost:8080"),
    ("https://exemplo.pt/loja/", "exemplo.pt"),
    ("loja.exemplo.pt", "loja.exemplo.pt"),
    ("https://loja.exemplo.pt:notaport/", ""),
    ("", ""),
])
def test_the_store_is_the_sites_host_with_a_non_default_port(source, store):
    assert woocommerce.delivery(BODY, headers(source=source)).store == store


@pytest.mark.parametrize("topic", ["order.created", "order.updated", "order.deleted", "order.restored"])
def test_order_topics_are_acted_on(topic):
    assert woocommerce.delivery(BODY, headers(topic=topic)).acted_on


@pytest.mark.parametrize("topic", ["product.updated", "coupon.created", "action.woocommerce_new_order", ""])
def test_other_topics_are_stored_and_ignored(topic):
    assert not woocommerce.delivery(BODY, headers(topic=topic)).acted_on


def test_the_same_order_state_gives_the_same_key_however_it_arrives():
    order = json.loads(BODY)
    reformatted = json.dumps(order, indent=2).encode()  # e.g. the same state polled from the REST API
    key = woocommerce.delivery(BODY, headers()).event_key
    assert key == woocommerce.delivery(reformatted, headers()).event_key
    assert key == woocommerce.event_key(order)


def test_a_later_state_of_the_order_gives_another_key():
    order = json.loads(BODY)
    later = {**order, "date_modified_gmt": "2025-11-19T08:00:00"}
    assert woocommerce.event_key(later) != woocommerce.event_key(order)


@pytest.mark.parametrize("body", [
    b"not json", b"\xff\xfe\x00", b"[1, 2]", b'{"id": "1234", "date_modified_gmt": "x"}',
    b'{"id": 1234}', b'{"id": true, "date_modified_gmt": "2025-11-18T14:05:40"}', b"[" * 100_000, b"null",
])
def test_a_body_that_is_not_an_order_state_gets_no_key_and_never_an_error(body):
    delivery = woocommerce.delivery(body, headers())
    assert delivery.event_key is None
    assert delivery.topic == "order.updated"
