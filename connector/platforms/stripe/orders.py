"""Stripe Checkout Sessions: what a session or refund event owes, and a session with its lines as an `Order`.

Money: Stripe sends integers in the currency's minor unit (cents; yen themselves; thousandths of a dinar).
A session's webhook carries no lines: they are read from Stripe (`list_line_items`, taxes expanded) and
put back into the session as `line_items`, as a session retrieved with `expand=["line_items"]` has them.
Each line comes with its own tax (`taxes[].rate.percentage`, `inclusive`), so one session may mix prices
with VAT included and prices with VAT on top. The `Order` is built net when every taxed line is priced
without VAT (the invoice then shows the prices Stripe showed), gross otherwise; either way each line
comes to exactly the line's `amount_total`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, validate

from connector import fiscal
from connector.orders import Address, Customer, Line, Order, printable
from connector.platforms import common
from connector.platforms.stripe import webhook
from connector.platforms.stripe.api import ID_BODY

PLATFORM = "Stripe"
DEFAULT_TAX_ID_KEYS: tuple[str, ...] = ()  # Stripe collects tax numbers in `customer_details.tax_ids`
DEFAULT_RATE = Decimal("23")

# Stripe's currencies whose minor unit is not the hundredth (docs.stripe.com/currencies).
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())

_ZERO = Decimal(0)
_MAX_MINOR = 10**14  # far above any payment, so a garbled amount is a load error, not an overflow

DELAYED_PAYMENT = ("paid by a delayed method (e.g. Multibanco): invoiced when Stripe confirms the payment")


def exponent(currency: str) -> int:
    """How many decimals the currency's minor unit has, as Stripe counts them."""
    code = currency.upper()
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def major(minor: int, currency: str) -> Decimal:
    """A Stripe amount (an integer of minor units) in the currency's own unit: 1999 EUR → 19.99, 500 JPY → 500."""
    return Decimal(minor).scaleb(-exponent(currency))


# --- what an event means ------------------------------------------------------------------------------


def event_object(payload: Any) -> Any:
    """The object an event is about (`data.object`); a bare object (a pasted session or refund) as it is."""
    if isinstance(payload, Mapping) and payload.get("object") == "event":
        data = payload.get("data")
        return data.get("object") if isinstance(data, Mapping) else None
    return payload


def _id(value: Any, prefix: str) -> str | None:
    """A Stripe id of the given kind (`cs_`, `pi_`, `re_`), also when the object it names is expanded.

    Only of Stripe's shape (its prefix, then letters, digits and underscores): such an id goes into the
    requests the worker makes, and an odd one would fail there rather than say here why nothing is owed."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if isinstance(value, str) and value.startswith(prefix) and ID_BODY.fullmatch(value[len(prefix):]):
        return value
    return None


def _none(reason: str) -> common.Change:
    return common.Change(kind="none", reason=reason)



# A refund that failed or was cancelled gave nothing back.
_REFUNDING = ("succeeded", "pending", "requires_action")


def changes(payload: Any, topic: str, settings: Any) -> list[common.Change]:
    """What one Stripe event means for invoicing: a sale, refunds, or nothing (and why). Never raises.

    A sale is keyed by the session's payment intent, which its refunds name: a refund finds its invoice by it.
    """
    obj = printable(event_object(payload))
    if not isinstance(obj, Mapping):
        return [_none("The Stripe event carries no object: nothing is invoiced.")]
    if isinstance(payload, Mapping) and payload.get("livemode") is False \
            and not getattr(settings, "issue_test_orders", False):
        return [_none("This is an event of Stripe's test mode: test payments are not invoiced "
                      "(ISSUE_TEST_ORDERS).")]
    if topic in (webhook.SESSION_COMPLETED, webhook.SESSION_PAYMENT_SUCCEEDED,
                 webhook.SESSION_PAYMENT_FAILED, webhook.SESSION_EXPIRED):
        if _id(obj.get("id"), "cs_") is None:
            return [_none("The Stripe event is not about a Checkout Session: nothing is invoiced.")]
        return [_session_change(obj, topic)]
    if topic == webhook.PAYMENT_SUCCEEDED:
        return [_payment_change(obj, settings)]
    if topic == webhook.CHARGE_REFUNDED:
        return _charge_refunds(obj)
    if topic == webhook.REFUND_CREATED:
        return [_refund_change(obj)]
    return [_none(f"Stripe's '{printable(topic) or 'unnamed'}' event owes no document: nothing is invoiced.")]


def sale_id(session: Mapping) -> str | None:
    """The id a session's sale is kept under: its payment intent (which refunds name), else the session's own."""
    return _id(session.get("payment_intent"), "pi_") or _id(session.get("id"), "cs_")


def order_name(session: Mapping) -> str:
    """What the seller finds the sale by: their own reference, else the payment (Stripe has no order numbers)."""
    reference = session.get("client_reference_id")
    reference = reference.strip()[:60] if isinstance(reference, str) else ""
    return reference or _id(session.get("payment_intent"), "pi_") or str(session.get("id"))[:60]


def _session_change(session: Mapping, topic: str) -> common.Change:
    sale = common.Change(kind="sale", order_id=sale_id(session), fetched=True, order_name=order_name(session))
    if topic == webhook.SESSION_PAYMENT_SUCCEEDED:
        return sale
    if topic == webhook.SESSION_PAYMENT_FAILED:
        return _none("The checkout's delayed payment failed: nothing is invoiced.")
    if topic == webhook.SESSION_EXPIRED:
        return _none("The checkout expired without a payment: nothing is invoiced.")
    payment_status = session.get("payment_status")
    if payment_status == "paid":
        return sale
    if payment_status == "unpaid":
        return _none(f"The checkout was {DELAYED_PAYMENT}.")
    if payment_status == "no_payment_required":
        return _none("The checkout needed no payment: there is nothing to invoice.")
    return _none("Stripe does not say the checkout was paid: nothing is invoiced.")


def _payment_change(intent: Mapping, settings: Any) -> common.Change:
    """A succeeded payment intent: invoiced from its Checkout Session's events, or (when the store enables it)
    on one line when it belongs to no session, which the worker asks Stripe (`snapshot`)."""
    intent_id = _id(intent.get("id"), "pi_")
    if intent_id is None:
        return _none("The Stripe event is not about a payment intent: nothing is invoiced.")
    if not getattr(settings, "payment_intent_line", None):
        return _none("A Stripe payment is invoiced from its Checkout Session's events; a payment outside "
                     "Checkout gets an invoice only with PAYMENT_INTENT_LINE set (its one line's description).")
    return common.Change(kind="sale", order_id=intent_id, fetched=True, order_name=intent_id)


def _refund_change(refund: Mapping) -> common.Change:
    refund_id, intent = _id(refund.get("id"), "re_"), _id(refund.get("payment_intent"), "pi_")
    if refund_id is None:
        return _none("The Stripe event is not about a refund: nothing is credited.")
    if intent is None:
        return _none("The Stripe refund belongs to no payment intent, so to no Checkout Session: nothing is "
                     "credited.")
    if refund.get("status") not in _REFUNDING:
        return _none(f"The Stripe refund {refund_id} {_status(refund.get('status'))}: nothing is credited.")
    return common.Change(kind="refund", order_id=intent, refund_id=refund_id)


def _status(status: Any) -> str:
    return f"has the status '{status}'" if isinstance(status, str) and status else "has no status"


def _listed_refunds(charge: Mapping) -> list[Mapping] | None:
    """The refunds a charge lists (`refunds.data`), or None when it lists none (Stripe's newer API versions)."""
    refunds = charge.get("refunds")
    data = refunds.get("data") if isinstance(refunds, Mapping) else None
    return [entry for entry in data if isinstance(entry, Mapping)] if isinstance(data, list) else None


def _charge_refunds(charge: Mapping) -> list[common.Change]:
    intent = _id(charge.get("payment_intent"), "pi_")
    if intent is None:
        return [_none("The refunded Stripe charge belongs to no payment intent, so to no Checkout Session: "
                      "nothing is credited.")]
    listed = _listed_refunds(charge)
    if not listed:
        if _id(charge.get("id"), "ch_") or _id(charge.get("id"), "py_"):  # `py_`: some payment methods' charges
            # Since Stripe's API version 2022-11-15 a charge no longer lists its refunds: they are read from
            # Stripe (GET /v1/refunds?charge=…), each then credited as its own event.
            return [common.Change(kind="lookup", order_id=intent, reason="the charge's refunds")]
        return [_none("The refunded Stripe charge has no id to read its refunds by: nothing is credited.")]
    ordered = sorted(listed, key=lambda entry: (entry.get("created") if isinstance(entry.get("created"), int)
                                                else 0, str(entry.get("id"))))
    found, seen = [], set()
    for entry in ordered:
        change = _refund_change({"payment_intent": charge.get("payment_intent"), **entry})
        if change.kind == "refund" and change.refund_id not in seen:
            seen.add(change.refund_id)
            found.append(change)
    return found or [_none("None of the Stripe charge's refunds gave money back: nothing is credited.")]


# --- payload schemas ---------------------------------------------------------------------------------


def _minor(**kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=0, max=_MAX_MINOR), **kwargs)


def _optional_minor() -> fields.Integer:
    return _minor(allow_none=True, load_default=None)


class _RateSchema(common.LenientSchema):
    percentage = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0, max=100))
    inclusive = fields.Boolean(required=True)
    display_name = common.text()


class _TaxSchema(common.LenientSchema):
    amount = _minor(required=True)
    rate = fields.Nested(_RateSchema, required=True)


class _PriceSchema(common.LenientSchema):
    id = common.text()
    product = fields.Raw(allow_none=True, load_default=None)  # an id, or the product when expanded


class _LineItemSchema(common.LenientSchema):
    id = common.text()
    description = common.text()
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=common.MAX_QUANTITY))
    amount_subtotal = _minor(required=True)
    amount_discount = _minor(load_default=0)
    amount_tax = _minor(load_default=0)
    amount_total = _minor(required=True)
    price = fields.Nested(_PriceSchema, allow_none=True, load_default=None)
    # None: Stripe was not asked for them (`expand=["data.taxes"]`), which is not the same as no tax.
    taxes = fields.List(fields.Nested(_TaxSchema), allow_none=True, load_default=None)


class _LineItemsSchema(common.LenientSchema):
    data = fields.List(fields.Nested(_LineItemSchema), required=True, validate=validate.Length(min=1))
    has_more = fields.Boolean(load_default=False)


class _ShippingCostSchema(common.LenientSchema):
    amount_subtotal = _optional_minor()
    amount_tax = _minor(load_default=0)
    amount_total = _minor(required=True)
    shipping_rate = fields.Raw(allow_none=True, load_default=None)
    taxes = fields.List(fields.Nested(_TaxSchema), allow_none=True, load_default=None)


class _TotalDetailsSchema(common.LenientSchema):
    amount_discount = _minor(load_default=0)
    amount_shipping = _minor(load_default=0)
    amount_tax = _minor(load_default=0)


class _AddressSchema(common.LenientSchema):
    line1 = common.text()
    line2 = common.text()
    city = common.text()
    postal_code = common.text()
    country = common.text()


class _TaxIdSchema(common.LenientSchema):
    type = common.text()
    value = common.text()


class _CustomerDetailsSchema(common.LenientSchema):
    name = common.text()
    individual_name = common.text()
    business_name = common.text()
    email = common.text()
    address = fields.Nested(_AddressSchema, allow_none=True, load_default=None)
    tax_ids = fields.List(fields.Nested(_TaxIdSchema), allow_none=True, load_default=list)


class _ShippingDetailsSchema(common.LenientSchema):
    address = fields.Nested(_AddressSchema, allow_none=True, load_default=None)


class _CollectedSchema(common.LenientSchema):
    shipping_details = fields.Nested(_ShippingDetailsSchema, allow_none=True, load_default=None)


class _AutomaticTaxSchema(common.LenientSchema):
    enabled = fields.Boolean(allow_none=True, load_default=False)


class _SessionSchema(common.LenientSchema):
    id = fields.String(required=True, validate=validate.Regexp(r"^cs_[0-9A-Za-z_]{1,250}$"))
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    amount_total = _minor(required=True)
    payment_status = common.text()
    payment_intent = fields.Raw(allow_none=True, load_default=None)
    customer = fields.Raw(allow_none=True, load_default=None)
    client_reference_id = common.text()
    created = fields.Integer(strict=True, allow_none=True, load_default=None, validate=validate.Range(min=0))
    livemode = fields.Boolean(allow_none=True, load_default=None)
    automatic_tax = fields.Nested(_AutomaticTaxSchema, allow_none=True, load_default=None)
    customer_details = fields.Nested(_CustomerDetailsSchema, allow_none=True, load_default=None)
    shipping_details = fields.Nested(_ShippingDetailsSchema, allow_none=True, load_default=None)
    collected_information = fields.Nested(_CollectedSchema, allow_none=True, load_default=None)
    shipping_cost = fields.Nested(_ShippingCostSchema, allow_none=True, load_default=None)
    total_details = fields.Nested(_TotalDetailsSchema, allow_none=True, load_default=None)
    line_items = fields.Nested(_LineItemsSchema, required=True)


_SESSION_SCHEMA = _SessionSchema()

LINES_FROM_STRIPE = ("Stripe's session events carry no lines: they must be fetched from Stripe "
                      "(GET /v1/checkout/sessions/{id}/line_items) before the session can be invoiced")


# --- VAT rates ---------------------------------------------------------------------------------------


def _percent(value: float) -> Decimal:
    """23.0 → 23, 13.5 → 13.5: one spelling per rate, as the store's tax names are keyed."""
    rate = Decimal(str(value)).quantize(Decimal("0.0001"))
    return rate.quantize(Decimal(1)) if rate == rate.to_integral_value() else rate.normalize()


def _line_tax(taxes: Sequence[Mapping] | None, stripe_tax: bool,
              default_rate: Decimal) -> tuple[Decimal, bool, str | None]:
    """A line's VAT percentage, whether its price includes it, and (without one rate) why not."""
    if not stripe_tax:
        return default_rate, True, None
    if taxes is None:
        return _ZERO, False, ("Stripe's line does not list its taxes; the lines must be read with their taxes "
                              "(expand data.taxes)")
    charged = [tax for tax in taxes if tax["amount"] > 0] or list(taxes)
    rates = {(_percent(tax["rate"]["percentage"]), tax["rate"]["inclusive"]) for tax in charged}
    if len(charged) > 1 and any(tax["amount"] > 0 for tax in charged):
        listed = ", ".join(f"{rate} %" for rate, _ in sorted(rates))
        return _ZERO, False, f"this line carries several taxes ({listed}), which a Portuguese invoice cannot show"
    if len(rates) > 1:
        return _ZERO, False, "this line lists several tax rates and charged none of them"
    if not rates:
        return _ZERO, False, None  # Stripe Tax charged nothing on it: an exemption reason decides
    rate, inclusive = rates.pop()
    return rate, inclusive, None


def _uses_stripe_tax(data: Mapping[str, Any]) -> bool:
    """Whether the session's taxes are Stripe's (Stripe Tax or tax rates on its prices) rather than the store's."""
    if (data["automatic_tax"] or {}).get("enabled") or (data["total_details"] or {}).get("amount_tax"):
        return True
    shipping = data["shipping_cost"] or {}
    return any(line["taxes"] for line in data["line_items"]["data"]) or bool(shipping.get("taxes"))


# --- lines -------------------------------------------------------------------------------------------


def _product_key(item: Mapping[str, Any]) -> str:
    price = item["price"] or {}
    product = price.get("product")
    product_id = product.get("id") if isinstance(product, Mapping) else product
    for key in (product_id, price.get("id"), item["id"]):
        if isinstance(key, str) and key.strip():
            return key.strip()[:100]
    return "stripe-line"


def _item_line(item: Mapping[str, Any], currency: str, gross: bool, stripe_tax: bool,
               default_rate: Decimal) -> Line:
    rate, inclusive, problem = _line_tax(item["taxes"], stripe_tax, default_rate)
    subtotal, discount = major(item["amount_subtotal"], currency), major(item["amount_discount"], currency)
    after = major(item["amount_total"], currency)  # what the buyer paid for the line, VAT included
    if not gross:
        before, discount = subtotal, discount
    elif inclusive:
        before = subtotal
        discount = before - after
    else:  # a price without VAT on an invoice of gross prices: its discount takes the VAT it saved
        before = after + discount * (1 + rate / 100)
        discount = before - after
    if discount < 0:
        before, discount = before - discount, _ZERO
    quantity = Decimal(item["quantity"])
    return Line(key=_product_key(item), description=(item["description"] or "").strip() or "Product",
                unit_price=before / quantity, quantity=quantity, tax_rate=rate, discount=discount,
                kind="product", tax_problem=problem)


def _shipping_line(shipping: Mapping[str, Any] | None, currency: str, gross: bool, stripe_tax: bool,
                   default_rate: Decimal) -> Line | None:
    if not shipping or not shipping["amount_total"]:
        return None  # free shipping is not an invoice line
    total = major(shipping["amount_total"], currency)
    net = total - major(shipping["amount_tax"], currency)
    if stripe_tax and shipping["taxes"] is None:
        # The session object lists shipping's taxes only when expanded; its amounts tell the rate.
        rate, problem = _rate_of(net, total - net, currency)
    else:
        rate, _, problem = _line_tax(shipping["taxes"], stripe_tax, default_rate)
    shipping_rate = shipping["shipping_rate"]
    name = shipping_rate.get("display_name") if isinstance(shipping_rate, Mapping) else None
    return Line(key="shipping", description=(name or "").strip() or "Shipping",
                unit_price=total if gross else net, quantity=Decimal(1), tax_rate=rate, kind="shipping",
                tax_problem=problem)


def _rate_of(net: Decimal, tax: Decimal, currency: str) -> tuple[Decimal, str | None]:
    """The one Portuguese VAT rate at which `tax` is, to the minor unit, that rate of `net`."""
    if not tax:
        return _ZERO, None
    unit = Decimal(1).scaleb(-exponent(currency))
    fitting = [rate for rate in fiscal.VAT_RATES if abs(net * rate / 100 - tax) <= unit]
    if len(fitting) != 1:
        return _ZERO, "Stripe does not say the shipping's VAT rate, and its amounts fit more than one rate or none"
    return fitting[0], None


def _gross(data: Mapping[str, Any], stripe_tax: bool) -> bool:
    """Whether the order's lines are gross: unless every taxed line is priced without VAT, as Stripe showed it."""
    if not stripe_tax:
        return True  # the store's own prices, which include its VAT
    taxes = [tax for line in data["line_items"]["data"] for tax in line["taxes"] or []]
    taxes += (data["shipping_cost"] or {}).get("taxes") or []
    return not taxes or any(tax["rate"]["inclusive"] for tax in taxes)


# --- the buyer ---------------------------------------------------------------------------------------


def _tax_id(details: Mapping[str, Any], country: str) -> str | None:
    """The buyer's tax number from `tax_ids`: an EU VAT number first; the valid one written, else as typed."""
    entries = [entry for entry in details.get("tax_ids") or [] if (entry["value"] or "").strip()]
    entries.sort(key=lambda entry: (entry["type"] or "") != "eu_vat")
    for entry in entries:
        value = entry["value"].strip()
        return fiscal.find_tax_id(value, country) or value
    return None


def _customer(data: Mapping[str, Any]) -> Customer:
    # Personal data: never log anything built here.
    details = data["customer_details"] or {}
    address = details.get("address") or {}
    email = (details.get("email") or "").strip() or None
    customer_id = _id(data["customer"], "cus_")
    if customer_id:
        key = f"stripe-customer-{customer_id}"
    elif email:
        key = f"stripe-email-{hashlib.sha256(email.lower().encode()).hexdigest()[:16]}"
    else:
        key = f"stripe-session-{hashlib.sha256(data['id'].encode()).hexdigest()[:16]}"
    country = (address.get("country") or "").strip().upper()
    return Customer(
        key=key,
        name=(details.get("individual_name") or details.get("name") or "").strip(),
        email=email,
        company=(details.get("business_name") or "").strip() or None,
        address=Address(line1=(address.get("line1") or "").strip(), line2=(address.get("line2") or "").strip(),
                        city=(address.get("city") or "").strip(),
                        postal_code=(address.get("postal_code") or "").strip(), country_code=country),
        tax_id=_tax_id(details, country or _ship_to_country(data) or "PT"),
    )


def _ship_to_country(data: Mapping[str, Any]) -> str | None:
    """Where the goods go: the shipping address (where newer API versions keep it, else older), else billing."""
    collected = data["collected_information"] or {}
    for shipping in (collected.get("shipping_details"), data["shipping_details"]):
        country = ((shipping or {}).get("address") or {}).get("country") or ""
        if country.strip():
            return country.strip().upper()
    billing = ((data["customer_details"] or {}).get("address") or {}).get("country") or ""
    return billing.strip().upper() or None


# --- loading -----------------------------------------------------------------------------------------


def to_order(payload: Mapping, *, store: str, tax_id_keys: Sequence[str] = (), money: str = "presentment",
             settings: Any = None) -> Order:
    """Load a Checkout Session with its lines (the event, or the bare session) into an `Order`; or a payment
    intent of no session into a one-line order (`settings.payment_intent_line`).

    `settings`: the store's, for the VAT rate of a session without Stripe's taxes (`default_vat_rate`; its
    prices then include VAT). A session whose `payment_intent` is expanded with its latest charge's balance
    transaction gives the rate to euros of a payment in another currency. `tax_id_keys` and `money` are
    accepted for the interface's sake: Stripe keeps tax numbers in one place, and a session has one currency.

    Raises:
        LoadError: the payload is not a well-formed session with its lines; its text names fields, never values.
    """
    obj = printable(event_object(payload))
    if isinstance(obj, Mapping) and obj.get("object") == "payment_intent":
        return _payment_order(obj, store, settings)
    if isinstance(obj, Mapping) and "line_items" not in obj:
        raise common.LoadError({"line_items": [LINES_FROM_STRIPE]}, what="order", platform=PLATFORM)
    try:
        data = _SESSION_SCHEMA.load(obj)
    except ValidationError as error:
        raise common.LoadError(error.normalized_messages(), what="order", platform=PLATFORM) from None
    if data["line_items"]["has_more"]:
        raise common.LoadError({"line_items": ["only the first page of the session's lines is here: every page "
                                               "must be fetched from Stripe"]}, what="order", platform=PLATFORM)
    currency = data["currency"].upper()
    stripe_tax = _uses_stripe_tax(data)
    gross = _gross(data, stripe_tax)
    default_rate = _setting(settings, "default_vat_rate", DEFAULT_RATE)
    lines = [_item_line(item, currency, gross, stripe_tax, default_rate) for item in data["line_items"]["data"]]
    shipping = _shipping_line(data["shipping_cost"], currency, gross, stripe_tax, default_rate)
    shop_currency, shop_total = _settlement(data["payment_intent"])
    return Order(
        platform=webhook.NAME,
        store=store,
        order_id=sale_id(data),
        name=order_name(data),
        currency=currency,
        taxes_included=gross,
        total=major(data["amount_total"], currency),
        financial_status=data["payment_status"] or "",
        customer=_customer(data),
        lines=(*lines, *([shipping] if shipping else [])),
        test=data["livemode"] is False,  # a payment in Stripe's test mode is no sale
        created_at=_utc(data["created"]),
        shop_currency=shop_currency,
        shop_total=shop_total,
        ship_to_country=_ship_to_country(data),
    )


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value  # a rate of 0 is a rate


def _settlement(intent: Any) -> tuple[str | None, Decimal | None]:
    """The payment in the Stripe account's own currency (the balance transaction of the intent's latest
    charge, when expanded): what gives the rate to euros of a sale in another currency."""
    charge = intent.get("latest_charge") if isinstance(intent, Mapping) else None
    balance = charge.get("balance_transaction") if isinstance(charge, Mapping) else None
    if not isinstance(balance, Mapping):
        return None, None
    currency, amount = balance.get("currency"), balance.get("amount")
    if not isinstance(currency, str) or not currency.isalpha() or len(currency) != 3 \
            or isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= _MAX_MINOR:
        return None, None
    return currency.upper(), major(amount, currency)


class _BillingSchema(common.LenientSchema):
    name = common.text()
    email = common.text()
    address = fields.Nested(_AddressSchema, allow_none=True, load_default=None)


class _ChargeSchema(common.LenientSchema):
    billing_details = fields.Nested(_BillingSchema, allow_none=True, load_default=None)


class _PaymentIntentSchema(common.LenientSchema):
    id = fields.String(required=True, validate=validate.Regexp(r"^pi_[0-9A-Za-z_]{1,250}$"))
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    amount_received = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=_MAX_MINOR))
    status = common.text()
    customer = fields.Raw(allow_none=True, load_default=None)
    receipt_email = common.text()
    description = common.text()
    created = fields.Integer(strict=True, allow_none=True, load_default=None, validate=validate.Range(min=0))
    livemode = fields.Boolean(allow_none=True, load_default=None)
    latest_charge = fields.Raw(allow_none=True, load_default=None)


_PAYMENT_INTENT_SCHEMA = _PaymentIntentSchema()


def _payment_order(obj: Mapping, store: str, settings: Any) -> Order:
    """A payment of no Checkout Session as one line of the store's description, VAT included at its rate."""
    description = _setting(settings, "payment_intent_line", None)
    if not description:
        raise common.LoadError({"payment_intent": ["a payment outside Checkout is invoiced only with "
                                                   "PAYMENT_INTENT_LINE set"]}, what="order", platform=PLATFORM)
    try:
        data = _PAYMENT_INTENT_SCHEMA.load(obj)
        charge = obj.get("latest_charge")
        billing = (_ChargeSchema().load(charge)["billing_details"] if isinstance(charge, Mapping) else None) or {}
    except ValidationError as error:
        raise common.LoadError(error.normalized_messages(), what="order", platform=PLATFORM) from None
    if data["status"] != "succeeded":
        raise common.LoadError({"status": ["the payment has not succeeded"]}, what="order", platform=PLATFORM)
    currency = data["currency"].upper()
    total = major(data["amount_received"], currency)
    rate = _setting(settings, "payment_intent_vat_rate", None)
    rate = _setting(settings, "default_vat_rate", DEFAULT_RATE) if rate is None else rate
    # Personal data: never log anything built here.
    email = (billing.get("email") or data["receipt_email"] or "").strip() or None
    session_like = {"id": data["id"], "customer": data["customer"],
                    "customer_details": {"name": billing.get("name"), "email": email,
                                         "address": billing.get("address"), "tax_ids": []},
                    "collected_information": None, "shipping_details": None}
    shop_currency, shop_total = _settlement(obj)
    return Order(
        platform=webhook.NAME, store=store, order_id=data["id"], name=data["id"], currency=currency,
        taxes_included=True, total=total, financial_status=data["status"],
        customer=_customer(session_like),
        lines=(Line(key="payment", description=description.strip()[:200], unit_price=total, quantity=Decimal(1),
                    tax_rate=rate, kind="product"),),
        test=data["livemode"] is False, created_at=_utc(data["created"]),
        shop_currency=shop_currency, shop_total=shop_total,
    )


def _utc(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None
