import base64
import copy
import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path

import pytest

from connector.orders import Address, Customer, Line, Order
from connector.platforms import common, shopify

FIXTURES = Path(__file__).parent.parent / "fixtures" / "shopify"
STORE = "loja-exemplo.myshopify.com"


def load(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def sign(body, secret):
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def paid_order():
    return load("paid_b2c_tax_included.json")


# --- signature and headers ---------------------------------------------------------------------------

BODY = (FIXTURES / "paid_b2c_tax_included.json").read_bytes()


def test_verify_accepts_a_valid_signature():
    assert shopify.verify(BODY, {"X-Shopify-Hmac-Sha256": sign(BODY, "s3cret")}, ["s3cret"])


def test_verify_rejects_a_signature_made_with_another_secret():
    assert not shopify.verify(BODY, {"X-Shopify-Hmac-Sha256": sign(BODY, "other")}, ["s3cret"])


def test_verify_rejects_a_tampered_body():
    headers = {"X-Shopify-Hmac-Sha256": sign(BODY, "s3cret")}
    assert not shopify.verify(BODY.replace(b'"59.86"', b'"5.86"'), headers, ["s3cret"])


@pytest.mark.parametrize("headers", [{}, {"X-Shopify-Hmac-Sha256": ""}, {"X-Shopify-Hmac-Sha256": "  "}])
def test_verify_rejects_a_missing_or_empty_header(headers):
    assert not shopify.verify(BODY, headers, ["s3cret"])


@pytest.mark.parametrize("secrets", [[], [""]])
def test_verify_fails_closed_without_a_usable_secret(secrets):
    # An empty key would let anyone sign: HMAC with "" is computable by all.
    headers = {"X-Shopify-Hmac-Sha256": sign(BODY, "")}
    assert not shopify.verify(BODY, headers, secrets)


def test_verify_accepts_the_second_secret_of_a_rotation_pair():
    headers = {"X-Shopify-Hmac-Sha256": sign(BODY, "old")}
    assert shopify.verify(BODY, headers, ["new", "old"])


def test_verify_finds_the_header_whatever_its_case():
    assert shopify.verify(BODY, {"x-shopify-hmac-sha256": sign(BODY, "s3cret")}, ["s3cret"])


def test_verify_rejects_a_non_ascii_header_without_raising():
    assert not shopify.verify(BODY, {"X-Shopify-Hmac-Sha256": "é" * 44}, ["s3cret"])


def test_event_key_prefers_the_event_id():
    headers = {"X-Shopify-Event-Id": "evt-1", "X-Shopify-Webhook-Id": "wh-1"}
    assert shopify.event_key(headers) == "evt-1"


def test_event_key_falls_back_to_the_webhook_id_then_none():
    assert shopify.event_key({"x-shopify-webhook-id": "wh-1"}) == "wh-1"
    assert shopify.event_key({"X-Shopify-Event-Id": "", "X-Shopify-Webhook-Id": "wh-1"}) == "wh-1"
    assert shopify.event_key({}) is None


def test_topic_and_store_read_their_headers():
    headers = {"X-Shopify-Topic": "orders/paid", "X-Shopify-Shop-Domain": "Loja-Exemplo.myshopify.com"}
    assert shopify.topic(headers) == shopify.PAID_TOPIC
    assert shopify.store(headers) == STORE
    assert shopify.topic({}) == ""
    assert shopify.store({}) == ""


# --- fixtures into orders ----------------------------------------------------------------------------


def test_b2c_tax_included_order():
    order = shopify.to_order(paid_order(), store=STORE)

    assert order == Order(
        platform="shopify",
        store=STORE,
        order_id="5801234567001",
        name="#1001",
        currency="EUR",
        taxes_included=True,
        total=Decimal("59.86"),
        financial_status="paid",
        customer=Customer(
            key="shopify-customer-7201234560001",
            name="Ana Silva",
            email="ana.silva@example.pt",
            company=None,
            address=Address("Rua Augusta 120", "3.º Esq.", "Lisboa", "1100-053", "PT"),
            tax_id=None,
        ),
        lines=(
            Line("CAN-CER-01", "Caneca de cerâmica", Decimal("9.99"), Decimal(3), Decimal(23)),
            Line("AVL-AZ-M", "Avental de linho — Azul / M", Decimal("24.90"), Decimal(1), Decimal(23)),
            Line(
                "shipping",
                "Envio standard (CTT)",
                Decimal("4.99"),
                Decimal(1),
                Decimal(23),
                kind="shipping",
            ),
        ),
        test=False,
        created_at="2026-11-20T14:32:07+00:00",
        shop_currency="EUR",
        shop_total=Decimal("59.86"),
        ship_to_country="PT",
    )
    assert sum(line.unit_price * line.quantity for line in order.lines) == order.total


def test_discount_and_nif_order():
    order = shopify.to_order(load("paid_with_discount_and_nif.json"), store=STORE)

    chair, lamp, shipping = order.lines
    assert (chair.unit_price, chair.discount) == (Decimal("149.00"), Decimal("14.90"))
    assert (lamp.unit_price, lamp.quantity, lamp.discount) == (Decimal("39.90"), Decimal(2), Decimal("7.98"))
    assert (shipping.kind, shipping.unit_price, shipping.discount) == (
        "shipping",
        Decimal("6.90"),
        Decimal(0),
    )
    assert order.total == Decimal("212.82")
    assert sum(line.unit_price * line.quantity - line.discount for line in order.lines) == order.total
    assert order.customer.tax_id == "501964843"
    assert order.customer.company == "Papelaria Exemplo, Lda"
    assert order.customer.name == "Rui Costa"


def test_tax_excluded_order():
    order = shopify.to_order(load("paid_tax_excluded.json"), store=STORE)

    assert order.taxes_included is False
    assert [line.unit_price for line in order.lines] == [Decimal("50.00"), Decimal("7.40"), Decimal("5.00")]
    assert all(line.tax_rate == 23 for line in order.lines)
    net = sum(line.unit_price * line.quantity for line in order.lines)
    assert (net, order.total) == (Decimal("112.40"), Decimal("138.25"))


def test_mixed_rates_order():
    order = shopify.to_order(load("paid_mixed_rates.json"), store=STORE)

    assert [(line.key, line.tax_rate) for line in order.lines] == [
        ("LIV-OS-MAIAS", Decimal(6)),
        ("MARC-PELE", Decimal(23)),
        ("shipping", Decimal(23)),
    ]
    assert all(line.tax_problem is None for line in order.lines)
    assert order.total == Decimal("34.00")


def test_foreign_guest_customer():
    order = shopify.to_order(load("paid_foreign_customer.json"), store=STORE)

    email_hash = hashlib.sha256(b"jose.martinez@example.es").hexdigest()[:16]
    assert order.customer == Customer(
        key=f"shopify-email-{email_hash}",
        name="José Martínez García",
        email="jose.martinez@example.es",
        address=Address("Calle de Atocha 27", "2º B", "Madrid", "28012", "ES"),
    )
    # No SKU: the variant names the product.
    assert order.lines[1].key == "shopify-variant-45678901200010"
    assert order.lines[1].description == "Toalha de mesa bordada — 150 x 250 cm"
    assert order.total == Decimal("64.30")


def test_authorized_order_loads_with_its_status_and_no_free_shipping_line():
    order = shopify.to_order(load("authorized_not_paid.json"), store=STORE)

    assert order.financial_status == "authorized"
    assert [line.kind for line in order.lines] == ["product"]
    assert order.total == Decimal("45.00")


def test_refund_body_is_not_an_order():
    with pytest.raises(shopify.LoadError) as error:
        shopify.to_order(load("refunds_create.json"), store=STORE)

    assert {"line_items", "total_price", "currency", "taxes_included"} <= set(error.value.messages)


# --- money -------------------------------------------------------------------------------------------


def _double_presentment(node):
    """Make every presentment amount twice the shop amount, in USD."""
    if isinstance(node, dict):
        if "presentment_money" in node:
            amount = Decimal(node["shop_money"]["amount"]) * 2
            node["presentment_money"] = {"amount": str(amount), "currency_code": "USD"}
        for value in node.values():
            _double_presentment(value)
    elif isinstance(node, list):
        for value in node:
            _double_presentment(value)


def test_presentment_money_wins_over_shop_money():
    payload = load("paid_with_discount_and_nif.json")
    _double_presentment(payload)
    payload["presentment_currency"] = "USD"

    order = shopify.to_order(payload, store=STORE)

    assert order.currency == "USD"
    assert order.total == Decimal("425.64")
    chair, lamp, shipping = order.lines
    assert (chair.unit_price, chair.discount) == (Decimal("298.00"), Decimal("29.80"))
    assert (lamp.unit_price, lamp.discount) == (Decimal("79.80"), Decimal("15.96"))
    assert shipping.unit_price == Decimal("13.80")


def test_shop_money_loads_every_amount_in_the_shop_currency():
    payload = load("paid_usd_presentment.json")

    paid = shopify.to_order(payload, store=STORE)
    shop = shopify.to_order(payload, store=STORE, money="shop")

    assert (paid.currency, paid.total, paid.shop_currency, paid.shop_total) == (
        "USD",
        Decimal("56.14"),
        "EUR",
        Decimal("51.78"),
    )
    assert (shop.currency, shop.total, shop.shop_currency, shop.shop_total) == (
        "EUR",
        Decimal("51.78"),
        "EUR",
        Decimal("51.78"),
    )
    assert [line.unit_price for line in paid.lines] == [Decimal("27.00"), Decimal("10.83"), Decimal("7.48")]
    assert [line.unit_price for line in shop.lines] == [Decimal("24.90"), Decimal("9.99"), Decimal("6.90")]
    assert sum(line.unit_price * line.quantity for line in shop.lines) == shop.total


def test_shop_money_takes_discounts_from_the_shop_side_too():
    payload = load("paid_with_discount_and_nif.json")
    _double_presentment(payload)
    payload["presentment_currency"] = "USD"

    order = shopify.to_order(payload, store=STORE, money="shop")

    assert (order.currency, order.total, order.shop_total) == ("EUR", Decimal("212.82"), Decimal("212.82"))
    chair, lamp, shipping = order.lines
    assert (chair.unit_price, chair.discount) == (Decimal("149.00"), Decimal("14.90"))
    assert (lamp.unit_price, lamp.discount) == (Decimal("39.90"), Decimal("7.98"))
    assert shipping.unit_price == Decimal("6.90")


def test_shop_money_falls_back_to_the_plain_fields():
    payload = load("paid_usd_presentment.json")
    del payload["total_price_set"], payload["line_items"][0]["price_set"]

    order = shopify.to_order(payload, store=STORE, money="shop")
    paid = shopify.to_order(payload, store=STORE)

    # Shopify's plain fields are shop money.
    assert (order.total, order.lines[0].unit_price) == (Decimal("51.78"), Decimal("24.90"))
    assert (paid.shop_total, paid.total, paid.lines[1].unit_price) == (
        Decimal("51.78"),
        Decimal("51.78"),
        Decimal("10.83"),
    )


def test_an_unknown_money_side_is_refused():
    with pytest.raises(ValueError, match="money"):
        shopify.to_order(paid_order(), store=STORE, money="settlement")


def test_a_malformed_shop_total_is_reported_with_its_path():
    payload = paid_order()
    payload["total_price_set"]["shop_money"]["amount"] = "lots"

    with pytest.raises(shopify.LoadError, match="total_price_set.shop_money: "):
        shopify.to_order(payload, store=STORE)


def test_plain_amounts_are_used_when_there_is_no_money_set():
    payload = paid_order()
    del payload["total_price_set"], payload["line_items"][0]["price_set"]

    order = shopify.to_order(payload, store=STORE)

    assert (order.total, order.lines[0].unit_price) == (Decimal("59.86"), Decimal("9.99"))


def test_money_is_decimal_never_float():
    order = shopify.to_order(load("paid_mixed_rates.json"), store=STORE)

    amounts = [(line.unit_price, line.discount, line.tax_rate) for line in order.lines]
    values = [order.total, *(v for triple in amounts for v in triple)]
    assert all(type(v) is Decimal for v in values)


# --- malformed orders --------------------------------------------------------------------------------


def _without_id(p):
    del p["id"]


def _price_not_numeric(p):
    p["line_items"][0]["price"] = "9,99 €"
    p["line_items"][0]["price_set"]["presentment_money"]["amount"] = "9,99 €"


def _quantity_zero(p):
    p["line_items"][1]["quantity"] = 0


def _quantity_negative(p):
    p["line_items"][1]["quantity"] = -1


def _line_items_not_a_list(p):
    p["line_items"] = {"id": 1}


def _line_items_empty(p):
    p["line_items"] = []


def _no_taxes_included(p):
    del p["taxes_included"]


@pytest.mark.parametrize(
    ("break_it", "path"),
    [
        (_without_id, "id"),
        (_price_not_numeric, "line_items.0.price"),
        (_quantity_zero, "line_items.1.quantity"),
        (_quantity_negative, "line_items.1.quantity"),
        (_line_items_not_a_list, "line_items"),
        (_line_items_empty, "line_items"),
        (_no_taxes_included, "taxes_included"),
    ],
)
def test_malformed_orders_raise_with_the_field_path(break_it, path):
    payload = paid_order()
    break_it(payload)

    with pytest.raises(shopify.LoadError) as error:
        shopify.to_order(payload, store=STORE)

    summary = str(error.value)
    assert "\n" not in summary
    assert f"{path}: " in summary
    assert isinstance(error.value, ValueError)


def test_a_body_that_is_not_an_object_raises():
    with pytest.raises(shopify.LoadError, match="Invalid input type"):
        shopify.to_order([], store=STORE)


def test_error_messages_do_not_echo_values():
    payload = paid_order()
    _price_not_numeric(payload)

    with pytest.raises(shopify.LoadError) as error:
        shopify.to_order(payload, store=STORE)

    assert "9,99" not in str(error.value)


# --- taxes and line kinds ----------------------------------------------------------------------------


def _tax_line(rate, price, title="IVA"):
    return {"title": title, "rate": rate, "price": price, "price_set": None, "channel_liable": False}


def test_a_line_with_several_taxes_gets_their_sum_and_a_tax_problem():
    payload = paid_order()
    payload["line_items"][1]["tax_lines"] = [_tax_line(0.23, "4.56"), _tax_line(0.01, "0.20", "Selo")]

    line = shopify.to_order(payload, store=STORE).lines[1]

    assert line.tax_rate == Decimal(24)
    assert line.tax_problem == (
        "this line carries several taxes (IVA 23 %, Selo 1 %), which a Portuguese invoice cannot show"
    )


def test_zero_tax_lines_are_ignored():
    payload = paid_order()
    payload["line_items"][0]["tax_lines"].append(_tax_line(0.0, "0.00", "Isento"))

    line = shopify.to_order(payload, store=STORE).lines[0]

    assert (line.tax_rate, line.tax_problem) == (Decimal(23), None)


def test_a_fractional_rate_keeps_its_decimals():
    payload = paid_order()
    payload["line_items"][0]["tax_lines"] = [_tax_line(0.135, "1.19")]

    assert shopify.to_order(payload, store=STORE).lines[0].tax_rate == Decimal("13.5")


def test_untaxed_lines_have_rate_zero():
    payload = paid_order()
    payload["line_items"][0]["taxable"] = False
    payload["line_items"][0]["tax_lines"] = []
    payload["line_items"][1]["tax_lines"] = []

    lines = shopify.to_order(payload, store=STORE).lines

    assert [(line.tax_rate, line.tax_problem) for line in lines[:2]] == [(0, None), (0, None)]


def test_a_line_marked_untaxed_that_carries_tax_is_flagged():
    payload = paid_order()
    payload["line_items"][0]["taxable"] = False

    line = shopify.to_order(payload, store=STORE).lines[0]

    assert line.tax_rate == 0
    assert line.tax_problem


def test_a_tip_line_is_a_tip():
    payload = paid_order()
    tip = copy.deepcopy(payload["line_items"][0])
    tip.update(
        id=14567890129999,
        name="Tip",
        title="Tip",
        product_id=None,
        variant_id=None,
        sku=None,
        price="2.00",
        price_set=None,
        quantity=1,
        taxable=False,
        tax_lines=[],
        variant_title=None,
    )
    payload["line_items"].append(tip)

    line = shopify.to_order(payload, store=STORE).lines[2]

    assert (line.kind, line.key, line.unit_price, line.tax_rate) == (
        "tip",
        "shopify-line-14567890129999",
        Decimal("2.00"),
        0,
    )


def test_a_line_without_an_id_is_known_by_its_sku_variant_or_place():
    payload = paid_order()
    first, second = payload["line_items"]
    for item in (first, second):
        del item["id"]
    second["sku"] = ""
    payload["line_items"].append({**second, "variant_id": None, "product_id": None, "title": "Embrulho"})

    keys = [line.key for line in shopify.to_order(payload, store=STORE).lines]

    assert keys == [first["sku"], f"shopify-variant-{second['variant_id']}", "shopify-line-position-3", "shipping"]


def test_a_gift_card_sale_is_a_gift_card_line_without_a_tax_problem():
    order = shopify.to_order(load("paid_gift_card_sale.json"), store=STORE)

    card, candle, shipping = order.lines
    assert (card.kind, card.unit_price, card.tax_rate, card.tax_problem) == (
        "gift_card",
        Decimal("50.00"),
        0,
        None,
    )
    assert (candle.kind, candle.tax_rate) == ("product", 23)
    assert shipping.kind == "shipping"


def test_a_gift_card_sale_carrying_tax_is_flagged():
    payload = load("paid_gift_card_sale.json")
    payload["line_items"][0]["tax_lines"] = [_tax_line(0.23, "9.35")]

    line = shopify.to_order(payload, store=STORE).lines[0]

    assert (line.kind, line.tax_rate) == ("gift_card", 0)
    assert line.tax_problem


def test_a_tip_line_is_recognised_by_its_tip_payment_gateway():
    order = shopify.to_order(load("paid_tip.json"), store=STORE)

    product, tip, shipping = order.lines
    assert (tip.kind, tip.description, tip.unit_price, tip.tax_rate, tip.tax_problem) == (
        "tip",
        "Tip",
        Decimal("3.00"),
        0,
        None,
    )
    assert product.kind == "product"

    payload = load("paid_tip.json")
    payload["line_items"][1].update(name="Gorjeta", title="Gorjeta")
    assert shopify.to_order(payload, store=STORE).lines[1].kind == "tip"


def test_shipping_discount_is_taken_from_its_allocations():
    payload = paid_order()
    free_shipping = {"amount": "4.99", "discount_application_index": 1}
    payload["shipping_lines"][0]["discount_allocations"] = [free_shipping]

    shipping = shopify.to_order(payload, store=STORE).lines[-1]

    assert (shipping.unit_price, shipping.discount) == (Decimal("4.99"), Decimal("4.99"))


# --- customer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nif", "NIF ", "Número de Contribuinte", "VAT Number", "tax_id"])
def test_nif_is_read_from_note_attributes_whatever_the_case(name):
    payload = paid_order()
    payload["note_attributes"] = [
        {"name": "gift_wrap", "value": "sim"},
        {"name": name, "value": " 501964843"},
    ]

    assert shopify.to_order(payload, store=STORE).customer.tax_id == "501964843"


def test_nif_keys_can_be_configured_and_empty_values_are_skipped():
    payload = paid_order()
    payload["note_attributes"] = [
        {"name": "NIF", "value": "  "},
        {"name": "Contribuinte NIF", "value": "123"},
    ]

    assert shopify.to_order(payload, store=STORE).customer.tax_id is None
    assert shopify.to_order(payload, store=STORE, tax_id_keys=["contribuinte nif"]).customer.tax_id == "123"


@pytest.mark.parametrize(
    ("company", "tax_id"),
    [
        ("Papelaria Lda - NIF 501964843", "501964843"),
        ("Exemplo Unipessoal Lda NIF 509999999", "509999999"),
        ("Exemplo Lda (NIF: 509999999)", "509999999"),
        ("509999999 Exemplo Lda", "509999999"),
        ("Exemplo Lda, PT509999999", "509999999"),  # what IX's fiscal_id takes for a buyer in Portugal
        ("Exemplo Lda pt 509999999", "509999999"),
        ("NIF: 501 964 843", "501964843"),
        ("NIPC: 501.964.843", "501964843"),
        ("Distribuciones Ejemplo SL ESB58378431", "ESB58378431"),
        ("Beispiel GmbH, USt-IdNr. DE136695976", "DE136695976"),
        ("Voorbeeld BV NL-004495445B01", "NL004495445B01"),
        ("Beispiel GmbH, USt-IdNr. DE123456789", None),  # German check digit fails
        ("Exemplo Lda, NIF 123 (ver nota)", None),  # too short to be a NIF
        ("Exemplo Lda 5099999991", None),  # ten digits: not a NIF
        ("Exemplo Lda NIF 509999998", None),  # nine digits, wrong check digit
        ("Papelaria Exemplo, Lda", None),
        ("Desk2000, Lda", None),  # "De" + digits is a word, not an upper-case VAT prefix
        ("ESTUDIO Lda", None),  # a VAT prefix but no digits
        ("", None),
    ],
)
def test_a_tax_id_is_read_from_the_billing_company(company, tax_id):
    payload = paid_order()
    payload["billing_address"]["company"] = company

    customer = shopify.to_order(payload, store=STORE).customer

    assert customer.tax_id == tax_id
    assert customer.company == (company or None)  # the company keeps its whole text


@pytest.mark.parametrize(("value", "tax_id"), [
    ("NIF: 501 964 843", "501964843"),
    ("Contribuinte 501964843", "501964843"),
    ("PT 501 964 843", "501964843"),
    ("NIPC: 501.964.843", "501964843"),
    ("123", "123"),  # no valid number in it: kept as typed, so the plan reports it invalid
])
def test_the_tax_id_attribute_is_read_with_its_label_and_spaces(value, tax_id):
    payload = paid_order()
    payload["note_attributes"] = [{"name": "NIF", "value": value}]

    assert shopify.to_order(payload, store=STORE).customer.tax_id == tax_id


def test_a_phone_number_in_the_company_is_not_a_tax_id_and_the_shipping_company_is_still_read():
    payload = paid_order()
    payload["billing_address"]["company"] = "Exemplo Lda, tel +351 912 345 675"
    payload["shipping_address"]["company"] = "Empresa X, Lda - NIF 501964843"

    assert shopify.to_order(payload, store=STORE).customer.tax_id == "501964843"


def test_the_tax_id_attribute_wins_over_the_company_then_the_shipping_company_is_read():
    payload = paid_order()
    payload["note_attributes"] = [{"name": "NIF", "value": "501964843"}]
    payload["billing_address"]["company"] = "Exemplo Lda NIF 509999999"
    assert shopify.to_order(payload, store=STORE).customer.tax_id == "501964843"

    payload["note_attributes"] = []
    payload["billing_address"]["company"] = "Exemplo Lda"
    payload["shipping_address"]["company"] = "Exemplo Lda NIF 509999999"
    customer = shopify.to_order(payload, store=STORE).customer
    assert (customer.tax_id, customer.company) == ("509999999", "Exemplo Lda")


def test_b2b_fixture_takes_the_nif_from_the_company():
    customer = shopify.to_order(load("paid_b2b_nif_in_company.json"), store=STORE).customer

    assert (customer.tax_id, customer.company) == ("509999999", "Exemplo Unipessoal Lda NIF 509999999")


def test_address_falls_back_to_the_shipping_address():
    payload = paid_order()
    payload["billing_address"] = None
    payload["shipping_address"]["city"] = "Sintra"

    customer = shopify.to_order(payload, store=STORE).customer

    assert customer.address.city == "Sintra"
    assert customer.name == "Ana Silva"  # from the customer record now
    assert customer.company is None


def test_ship_to_country_is_the_shipping_country_else_the_billing_one():
    payload = load("paid_usd_presentment.json")  # billed in the United States, shipped to Lisbon
    assert shopify.to_order(payload, store=STORE).ship_to_country == "PT"
    assert shopify.to_order(payload, store=STORE).customer.address.country_code == "US"

    payload["shipping_address"]["country_code"] = "es"
    assert shopify.to_order(payload, store=STORE).ship_to_country == "ES"

    payload["shipping_address"] = None
    assert shopify.to_order(payload, store=STORE).ship_to_country == "US"

    payload["billing_address"]["country_code"] = ""
    assert shopify.to_order(payload, store=STORE).ship_to_country is None

    payload["billing_address"] = None
    assert shopify.to_order(payload, store=STORE).ship_to_country is None


def test_customer_without_id_or_email_is_keyed_by_order():
    payload = paid_order()
    payload.update(customer=None, email="", contact_email=None, billing_address=None, shipping_address=None)

    customer = shopify.to_order(payload, store=STORE).customer

    assert customer == Customer(key="shopify-order-5801234567001", name="", email=None)


def test_email_falls_back_to_contact_email_then_the_customer_record():
    payload = paid_order()
    payload.update(email=None, contact_email="")

    assert shopify.to_order(payload, store=STORE).customer.email == "ana.silva@example.pt"


# --- the fixture catalogue ---------------------------------------------------------------------------

CASES = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))
# Fixtures written before the catalogue, without a `_comment`.
_UNCOMMENTED = {
    "authorized_not_paid.json",
    "paid_b2c_tax_included.json",
    "paid_foreign_customer.json",
    "paid_mixed_rates.json",
    "paid_tax_excluded.json",
    "paid_with_discount_and_nif.json",
}


def _amount(node, name, side):
    """An amount of a raw payload node on one side of its money set (plain field if it has none)."""
    money = (node.get(f"{name}_set") or {}).get(side) or {}
    return Decimal(money.get("amount") or node[name])


def _adds_up(order, payload, side):
    """Σ lines (unit price × quantity − discount), + the fixture's per-line taxes when tax-excluded."""
    lines = sum(line.unit_price * line.quantity - line.discount for line in order.lines)
    if not order.taxes_included:
        taxed = [*payload["line_items"], *(payload["shipping_lines"] or [])]
        lines += sum(_amount(tax, "price", side) for item in taxed for tax in item["tax_lines"])
    return abs(lines - order.total) <= Decimal("0.01") * len(order.lines)


def test_cases_name_every_order_fixture_once():
    files = [case["file"] for case in CASES]
    # Refunds and cancellations have their own tests (test_shopify_refunds.py).
    orders = sorted(p.name for p in FIXTURES.glob("*.json")
                    if p.name not in {"cases.json", "refunds_create.json"}
                    and not p.name.startswith(("refund_", "cancelled_")))

    assert sorted(files) == orders
    assert all(case["expect"] in {"issue", "hold", "none"} for case in CASES)
    assert all(case["exemption"] in {None, "M05", "M16", "M99"} for case in CASES)
    assert all(case["case"] and case["note"] and "\n" not in case["case"] for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_fixture_loads_and_adds_up(case):
    payload = load(case["file"])

    order = shopify.to_order(payload, store=STORE)
    shop = shopify.to_order(payload, store=STORE, money="shop")

    assert (order.total, order.currency) == (Decimal(case["paid_total"]), case["currency"])
    assert _adds_up(order, payload, "presentment_money")
    assert (shop.currency, shop.total) == (order.shop_currency, order.shop_total)
    assert _adds_up(shop, payload, "shop_money")
    assert case["file"] in _UNCOMMENTED or payload["_comment"].strip()


# --- the platform interface: what a delivery is, and what an event means ------------------------------


def test_a_delivery_names_its_shop_event_and_topic_and_whether_it_can_owe_a_document():
    headers = {"X-Shopify-Topic": "orders/paid", "X-Shopify-Shop-Domain": "Loja-Exemplo.myshopify.com",
               "X-Shopify-Event-Id": "evt-9"}
    delivery = shopify.delivery(BODY, headers)
    assert (delivery.store, delivery.event_key, delivery.topic, delivery.acted_on) == (STORE, "evt-9",
                                                                                       "orders/paid", True)
    assert not shopify.delivery(BODY, {**headers, "X-Shopify-Topic": "products/update"}).acted_on
    assert shopify.delivery(b"webhook_id=1", {}) != common.PING  # Shopify never pings: an empty delivery


def test_a_paid_order_is_one_sale():
    order = paid_order()
    assert shopify.changes(order, shopify.PAID_TOPIC) == [common.Change(kind="sale", order_id=str(order["id"]))]


@pytest.mark.parametrize(("name", "words"), [
    ("authorized_not_paid.json", "not paid (its payment status is 'authorized')"),
    ("pending_bank_transfer.json", "not paid (its payment status is 'pending')"),
    ("refunded_before_issue.json", "fully refunded before it was invoiced"),
])
def test_an_orders_paid_event_whose_order_is_not_paid_owes_nothing_and_says_why(name, words):
    [change] = shopify.changes(load(name), shopify.PAID_TOPIC)
    assert change.kind == "none"
    assert words in change.reason


def test_a_refund_event_is_one_refund_of_its_order():
    refund = load("refund_partial_one_line.json")
    assert shopify.changes(refund, shopify.REFUND_TOPIC) == [
        common.Change(kind="refund", order_id=str(refund["order_id"]), refund_id=str(refund["id"]))]


def test_a_refund_event_without_ids_is_a_load_error_naming_the_field():
    with pytest.raises(shopify.LoadError, match="order_id"):
        shopify.changes({"id": 5, "order_id": "5"}, shopify.REFUND_TOPIC)


def test_a_cancellation_is_a_cancellation_and_a_refund_for_each_refund_that_gave_money_back():
    payload = load("cancelled_after_payment.json")
    changes = shopify.changes(payload, shopify.CANCEL_TOPIC)
    assert changes[0] == common.Change(kind="cancellation", order_id=str(payload["id"]))
    refunds = changes[1:]
    assert refunds and all(c.kind == "refund" and c.order_id == str(payload["id"]) for c in refunds)
    # Each refund's source is its entry of the order's refunds[]; the refunds/create body is its own.
    for change in refunds:
        assert str(shopify.snapshot(change, payload)["id"]) == change.refund_id
    without_money = copy.deepcopy(payload)
    for entry in without_money["refunds"]:
        entry["transactions"] = []
    assert shopify.changes(without_money, shopify.CANCEL_TOPIC) == changes[:1]


def test_a_refund_events_source_is_its_body():
    refund = load("refund_partial_one_line.json")
    [change] = shopify.changes(refund, shopify.REFUND_TOPIC)
    assert shopify.snapshot(change, refund) == refund


def test_another_topic_owes_nothing_and_names_it():
    [change] = shopify.changes(paid_order(), "orders/updated")
    assert change.kind == "none" and "orders/updated" in change.reason


def test_the_rest_apis_envelope_is_taken_off_and_nothing_else():
    assert shopify.unwrap({"order": paid_order()}) == paid_order()
    assert shopify.unwrap({"refund": {"id": 1}}) == {"id": 1}
    two = {"order": paid_order(), "note": "x"}
    assert shopify.unwrap(two) == two


def test_no_tax_id_keys_means_shopifys_usual_ones():
    payload = load("paid_with_discount_and_nif.json")
    assert shopify.to_order(payload, store=STORE, tax_id_keys=()).customer.tax_id == \
        shopify.to_order(payload, store=STORE).customer.tax_id
