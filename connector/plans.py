"""What an order owes: the InvoiceXpress document it must produce, or why none, or why a person must look.

Pure decisions from the order and the store's settings; no I/O. Preview and the worker both use it,
so what a store owner previews is what is issued."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from connector import fiscal
from connector.invoicexpress import documents, schemas
from connector.invoicexpress.countries import IX_COUNTRY_NAMES
from connector.invoicexpress.totals import CENT, HALF_CENT, document_total, fit_unit_prices
from connector.orders import Line, Order

LISBON = ZoneInfo("Europe/Lisbon")
UNIT_PRICE_PLACES = Decimal("0.0001")  # IX keeps 4 decimals of a unit price
DISCOUNT_PLACES = Decimal("0.0001")
RATE_PLACES = Decimal("0.000001")
CONSUMER = "Consumidor final"


@dataclass(frozen=True)
class Settings:
    """How one store's documents are issued (environment defaults with the store's own values over them)."""

    tax_names: dict[Decimal, str]
    tax_exemption_reason: str | None = None
    invalid_tax_id: str = "consumer"  # consumer | hold
    document_type: str = "invoice_receipt"  # invoice_receipt | invoice
    sequence_id: str | None = None
    issue_test_orders: bool = False
    tax_id_keys: tuple[str, ...] = ()
    invoice_currency: str = "presentment"  # presentment | shop
    paid_statuses: tuple[str, ...] = ("processing", "completed")  # WooCommerce statuses that mean paid
    default_vat_rate: Decimal = Decimal(23)  # Stripe: the rate of sessions without Stripe's taxes
    payment_intent_line: str | None = None  # Stripe: a payment outside Checkout's one-line description
    payment_intent_vat_rate: Decimal | None = None  # that line's rate (None: default_vat_rate)
    reference_prefix: str | None = None  # before order names and customer codes at IX (stores sharing one)

    @property
    def tax_rates(self) -> dict[str, Decimal]:
        return {name: rate for rate, name in self.tax_names.items()}


@dataclass
class Plan:
    """The document an order owes, or why it owes none (`none`) or cannot be issued as is (`hold`)."""

    verdict: str  # issue | hold | none
    reasons: list[str] = field(default_factory=list)  # why hold / none
    notes: list[str] = field(default_factory=list)  # what was decided on the owner's behalf
    doc_type: str = documents.INVOICE_RECEIPT.path
    source_key: str = ""
    currency: str = "EUR"
    expected_total: Decimal | None = None
    computed_total: Decimal | None = None
    create_body: dict | None = None
    email_body: dict | None = None
    tax_rates: dict[str, Decimal] = field(default_factory=dict)  # the tax names the body uses → rates

    def requests(self) -> list[dict]:
        """The IX calls issuing this document makes, in order (ids shown as {id})."""
        if self.verdict != "issue":
            return []
        path = f"/{self.doc_type}"
        calls = [
            {"method": "POST", "path": f"{path}.json", "body": self.create_body},
            {"method": "PUT", "path": f"{path}/{{id}}/change-state.json",
             "body": schemas.change_state_request("finalized")},
        ]
        if self.email_body:
            calls.append({"method": "PUT", "path": f"{path}/{{id}}/email-document.json", "body": self.email_body})
        return calls


def proprietary_uid(platform: str, store: str, source_key: str) -> str:
    """Our idempotency key at IX: stable for one obligation of one store, whoever computes it."""
    return f"{platform}:{store}:{source_key}"


def sale_key(order_id: str) -> str:
    """The obligation a paid order creates: one sale document, whatever its type."""
    return f"order:{order_id}:receipt"


def plan_sale(order: Order, settings: Settings, today: date | None = None, unpaid: str | None = None) -> Plan:
    """Decide what an order owes: one invoice receipt (or invoice), nothing, or a hold.

    Whether the order is paid is its platform's to say (`changes`); `unpaid` is its reason when it is not.
    """
    plan = Plan(verdict="issue", doc_type=documents.FOR_SALES[settings.document_type].path,
                source_key=sale_key(order.order_id), currency=order.currency, expected_total=order.total,
                tax_rates=settings.tax_rates)
    if order.test and not settings.issue_test_orders:
        return _none(plan, "This is a test order; test orders are not invoiced (ISSUE_TEST_ORDERS).")
    if unpaid:
        return _none(plan, unpaid)

    buyer_country = order.customer.address.country_code or order.ship_to_country
    tax_id = fiscal.parse_tax_id(order.customer.tax_id, buyer_country)
    if order.customer.tax_id and tax_id is None:
        if settings.invalid_tax_id == "hold":
            plan.reasons.append("The tax number the customer gave is not valid for their country; correct it, "
                                "or let such orders go to the final consumer (INVALID_TAX_ID=consumer).")
        else:
            plan.notes.append("The tax number the customer gave is not valid; the invoice is issued to the "
                              "final consumer.")

    exchange_rate = _exchange_rate(order, plan)
    exemptions: dict[str, list[str]] = {}
    items = []
    exact_total = Decimal(0)  # what the lines come to before anybody rounds
    for line in order.lines:
        item = _item(line, order, settings, tax_id, plan.reasons, exemptions)
        if item is not None:
            items.append(item)
            exact_total += charged_gross(line, order.taxes_included, settings.tax_rates[item.tax_name])
    if not items and not plan.reasons:
        plan.reasons.append("The order has no lines to invoice.")
    if len(exemptions) > 1:
        listed = "; ".join(f"{code} for {', '.join(lines)}" for code, lines in sorted(exemptions.items()))
        plan.reasons.append(f"The order needs several VAT exemption reasons ({listed}), and an invoice can "
                            "carry only one.")
    if plan.reasons:
        plan.verdict = "hold"
        return plan

    issue_date = today or datetime.now(LISBON).date()
    exemption = next(iter(exemptions), None)
    document = schemas.Document(
        date=issue_date, due_date=issue_date, reference=_prefixed(settings, order.name),
        client=_client(order, tax_id, settings.reference_prefix),
        items=tuple(items), tax_exemption=exemption,
        currency_code=None if order.currency == "EUR" else order.currency,
        rate=None if exchange_rate is None else str(exchange_rate), sequence_id=settings.sequence_id,
    )
    return _finish(plan, document, order, order.total, settings, exact_total)


# The shape of address IX accepts for a client or an e-mail; it refuses anything else with a 422, which
# would leave the order with no document at all.
EMAIL_ADDRESS = re.compile(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+")


def customer_email(order: Order) -> str | None:
    """The customer's e-mail address, or None when there is none IX would accept."""
    email = (order.customer.email or "").strip()
    return email if EMAIL_ADDRESS.fullmatch(email) else None


def email_body(order: Order, doc_type: str = documents.INVOICE_RECEIPT.path) -> dict | None:
    """The e-mail IX sends the order's customer with a document of `doc_type`, or None without an address."""
    email = customer_email(order)
    if not email:
        return None
    if doc_type == documents.CREDIT_NOTE.path:
        return schemas.email_request(
            email, subject=f"Nota de crédito da encomenda {order.name}",
            body=f"Segue em anexo a nota de crédito do reembolso da encomenda {order.name}.")
    kind = "fatura-recibo" if doc_type == documents.INVOICE_RECEIPT.path else "fatura"
    return schemas.email_request(
        email,
        subject=f"{kind.capitalize()} da encomenda {order.name}",
        body=f"Obrigado pela sua compra. Segue em anexo a {kind} da encomenda {order.name}.",
    )


def charged_gross(line: Line, taxes_included: bool, rate: Decimal) -> Decimal:
    """What the shop charged for a line, VAT included, before anybody rounds."""
    charged = line.unit_price * line.quantity - line.discount
    return charged if taxes_included else charged * (1 + rate / 100)


def _none(plan: Plan, reason: str) -> Plan:
    plan.verdict = "none"
    plan.reasons.append(reason)
    return plan


def _exchange_rate(order: Order, plan: Plan) -> Decimal | None:
    """Units of the invoice currency per euro, from the two totals the shop sent."""
    if order.currency == "EUR":
        return None
    if order.shop_currency == "EUR" and order.shop_total:
        return (order.total / order.shop_total).quantize(RATE_PLACES, ROUND_HALF_UP)
    plan.reasons.append(f"The order was paid in {order.currency} and the store's own currency is "
                        f"{order.shop_currency or 'unknown'}: there is no rate to euros to put on the invoice.")
    return None


def _item(line: Line, order: Order, settings: Settings, tax_id, reasons: list[str],
          exemptions: dict[str, list[str]]) -> schemas.Item | None:
    label = f"'{line.description or line.key}'"
    if line.tax_problem:
        reasons.append(f"Line {label}: {line.tax_problem}")
        return None
    gross = line.unit_price * line.quantity
    if gross == 0:
        return None  # a free item or free shipping: nothing to invoice on that line
    if line.discount < 0 or line.discount > gross:
        reasons.append(f"Line {label} has a discount of {line.discount}, outside 0 to {gross}.")
        return None
    rate = Decimal(0) if line.kind in ("tip", "gift_card") else line.tax_rate
    if rate == 0:
        if line.kind in ("tip", "gift_card"):
            code = fiscal.NOT_SUBJECT
        else:
            code = fiscal.zero_rate_exemption(order.ship_to_country, tax_id, settings.tax_exemption_reason)
        if code is None:
            reasons.append(f"Line {label} has no VAT, and no exemption reason applies: set the store's "
                           "TAX_EXEMPTION_REASON (e.g. M10 for the small-business regime) or charge VAT.")
            return None
        exemptions.setdefault(code, []).append(label)
    tax_name = settings.tax_names.get(rate)
    if tax_name is None:
        reasons.append(f"Line {label} has VAT at {rate} %, and no InvoiceXpress tax name is set for that "
                       "rate (INVOICEXPRESS_TAX_NAMES).")
        return None
    unit_price = line.unit_price / (1 + rate / 100) if order.taxes_included else line.unit_price
    return schemas.Item(
        name=line.key[:100],
        description=line.description or line.key,
        unit_price=unit_price.quantize(UNIT_PRICE_PLACES, ROUND_HALF_UP),
        quantity=line.quantity,
        tax_name=tax_name,
        discount=(line.discount / gross * 100).quantize(DISCOUNT_PLACES, ROUND_HALF_UP),
        unit="service" if line.kind in ("shipping", "fee", "tip") else "unit",
    )


def _finish(plan: Plan, document: schemas.Document, order: Order, paid: Decimal, settings: Settings,
            exact_total: Decimal) -> Plan:
    """The request body for `document`, its total made to equal `paid` (or held), and its e-mail."""
    body = schemas.create_request(document, proprietary_uid(order.platform, order.store, plan.source_key))
    _fit_total(body, paid, order.currency, settings, plan, exact_total)
    plan.create_body = body
    plan.computed_total = document_total(body["invoice"]["items"], settings.tax_rates)
    if plan.reasons:
        plan.verdict = "hold"
    plan.email_body = email_body(order, plan.doc_type)
    if order.customer.email and plan.email_body is None:
        plan.notes.append("The customer's e-mail is not a valid address; the document is issued without it "
                          "and not e-mailed.")
    return plan


def _fit_total(body: dict, paid: Decimal, currency: str, settings: Settings, plan: Plan,
               exact_total: Decimal) -> None:
    """Make IX's total equal what was paid, or hold with both totals."""
    items = body["invoice"]["items"]
    # The shop rounds each line's VAT to the cent, IX rounds the document once: half a cent per line
    # at most. A larger gap means the shop's own figures do not add up, which no price adjustment
    # may hide.
    tolerance = HALF_CENT * len(items)
    fitted = fit_unit_prices(items, settings.tax_rates, paid) \
        if abs(paid - exact_total) <= tolerance else None
    if fitted is None:
        total = document_total(items, settings.tax_rates)
        plan.reasons.append(
            f"The invoice would total {total} {currency} but the customer paid {paid} "
            f"{currency}; it is held so that no invoice shows a wrong amount."
        )
        return
    body["invoice"]["items"] = fitted
    if document_total(fitted, settings.tax_rates) != paid:  # never issue what was not paid
        plan.reasons.append(f"The invoice total cannot be made to equal the {paid} {currency} "
                            "the customer paid.")


def _prefixed(settings: Settings, text: str, longest: int = 100) -> str:
    return f"{settings.reference_prefix or ''}{text}"[:longest]


def _client(order: Order, tax_id: fiscal.TaxId | None, prefix: str | None = None) -> schemas.Client:
    customer = order.customer
    address = customer.address
    country = IX_COUNTRY_NAMES.get(address.country_code.upper())
    postal_code = address.postal_code.strip()
    if country == "Portugal":
        digits = re.sub(r"\D", "", postal_code)
        # IX refuses a Portuguese postal code not written DDDD-DDD.
        postal_code = f"{digits[:4]}-{digits[4:]}" if len(digits) == 7 else ""
    company = _without_tax_id(customer.company or "", customer.tax_id)
    name = customer.name.strip() or company
    if tax_id and company:
        name = company  # a buyer who gave a company's number is the company
    if tax_id:
        # One IX client per tax number: IX will not change the number of a client that has documents.
        code = f"NIF-{tax_id.number}"
    elif name:
        # A store's own customer numbers and e-mails: another store on the account has its own clients.
        code = f"{prefix or ''}{customer.key}"
    else:
        name = code = CONSUMER
    return schemas.Client(
        name=name[:150],
        code=code[:50],
        email=customer_email(order),
        address=" ".join(part for part in (address.line1, address.line2) if part) or None,
        city=address.city or None,
        postal_code=postal_code or None,
        country=country,
        fiscal_id=tax_id.number if tax_id else None,
    )


def _without_tax_id(company: str, raw_tax_id: str | None) -> str:
    """The company's name without the tax number some checkouts make buyers type into the same field."""
    if raw_tax_id:
        digits = re.escape(re.sub(r"^[A-Za-z]{2}", "", raw_tax_id))
        company = re.sub(rf"[\s,;:–-]*(?:NIF|NIPC|VAT|CIF|Contribuinte)?[\s:.º#n]*(?:[A-Za-z]{{2}})?\s*{digits}",
                         "", company, flags=re.IGNORECASE)
    return company.strip(" ,;:–-")


# --- Credit notes ---------------------------------------------------------------------------------


def credit_note_key(refund_id: str) -> str:
    return f"refund:{refund_id}:credit_note"


def plan_credit(refund, sale: Order, settings: Settings, already_credited: Decimal,
                today: date | None = None) -> Plan:
    """What a refund owes, for the worker and for preview alike: nothing when its order's own invoice would
    not be issued, else the credit note against that invoice, with `already_credited` (other credit notes
    of the same invoice) no longer left to credit."""
    sale_plan = plan_sale(sale, settings, today)
    if sale_plan.verdict == "none":
        why = " ".join(sale_plan.reasons)
        return Plan(verdict="none", currency=sale.currency,
                    reasons=[f"The order's own invoice would not be issued, so there is nothing to credit: {why}"])
    return plan_credit_note(refund, sale, settings, left_to_credit=sale_plan.expected_total - already_credited,
                            today=today)


def plan_credit_note(refund, sale: Order, settings: Settings, left_to_credit: Decimal,
                     today: date | None = None) -> Plan:
    """The credit note a refund owes against the sale's invoice: what was given back, line by line and
    VAT rate by VAT rate, never more than what is left to credit on that invoice."""
    plan = Plan(verdict="issue", doc_type=documents.CREDIT_NOTE.path, source_key=credit_note_key(refund.refund_id),
                currency=sale.currency, expected_total=refund.amount, tax_rates=settings.tax_rates)
    if refund.amount <= 0:
        return _none(plan, "The refund gave no money back.")
    if refund.currency and refund.currency.upper() != sale.currency:
        plan.reasons.append(f"The refund is in {refund.currency} but the invoice is in {sale.currency}.")
    if refund.amount > left_to_credit:
        plan.reasons.append(f"The refund of {refund.amount} {sale.currency} is more than the {left_to_credit} "
                            f"{sale.currency} left to credit on the order's invoice.")
    sale_plan = plan_sale(dataclasses.replace(sale, test=False), settings, today)
    if sale_plan.create_body is None:
        plan.reasons.append("The order's own invoice cannot be planned: " + " ".join(sale_plan.reasons))
    if plan.reasons:
        plan.verdict = "hold"
        return plan
    sale_invoice = sale_plan.create_body["invoice"]
    exemption = sale_invoice.get("tax_exemption")

    items: list[schemas.Item] = []
    exact_total = Decimal(0)
    given_back = [line for line in refund.lines if line.kind != "adjustment"]
    for line in given_back + _allocate_by_rate(refund, sale):
        if line.amount <= 0:
            continue
        if line.tax_rate == 0 and exemption is None:
            plan.reasons.append(f"Refunded line '{line.description}' has no VAT and the invoice carries no "
                                "exemption reason.")
            continue
        tax_name = settings.tax_names.get(line.tax_rate)
        if tax_name is None:
            plan.reasons.append(f"Refunded line '{line.description}' has VAT at {line.tax_rate} %, and no "
                                "InvoiceXpress tax name is set for that rate.")
            continue
        net = line.amount / (1 + line.tax_rate / 100)
        items.append(schemas.Item(
            name=line.key[:100], description=line.description or line.key,
            unit_price=(net / line.quantity).quantize(UNIT_PRICE_PLACES, ROUND_HALF_UP),
            quantity=line.quantity, tax_name=tax_name,
            # What the shop kept (a restocking fee) comes off every line alike.
            discount=(refund.restocking_fee / _given_back(refund) * 100).quantize(DISCOUNT_PLACES, ROUND_HALF_UP)
            if refund.restocking_fee else Decimal(0),
            unit="service" if line.kind in ("shipping", "adjustment") else "unit",
        ))
        exact_total += line.amount
    exact_total -= refund.restocking_fee
    if not items and not plan.reasons:
        plan.reasons.append("The refund names nothing that was invoiced.")
    if plan.reasons:
        plan.verdict = "hold"
        return plan

    issue_date = today or datetime.now(LISBON).date()
    client = sale_invoice["client"]
    document = schemas.Document(
        date=issue_date, due_date=issue_date, reference=_prefixed(settings, f"{sale.name} R{refund.refund_id}"),
        client=schemas.Client(**client), items=tuple(items), tax_exemption=exemption,
        observations=f"Devolução da encomenda {sale.name}",
        currency_code=sale_invoice.get("currency_code"), rate=sale_invoice.get("rate"),
        sequence_id=settings.sequence_id,
    )
    return _finish(plan, document, sale, refund.amount, settings, exact_total)


def _given_back(refund) -> Decimal:
    return sum((line.amount for line in refund.lines), Decimal(0))


def _allocate_by_rate(refund, sale: Order) -> list:
    """Money given back without naming lines, spread over the sale's VAT rates as the sale was."""
    from connector.orders import RefundLine

    extra = sum((line.amount for line in refund.lines if line.kind == "adjustment"), Decimal(0))
    if extra <= 0:
        return []
    by_rate: dict[Decimal, Decimal] = {}
    for line in sale.lines:
        rate = Decimal(0) if line.kind in ("tip", "gift_card") else line.tax_rate
        by_rate[rate] = by_rate.get(rate, Decimal(0)) + charged_gross(line, sale.taxes_included, rate)
    whole = sum(by_rate.values())
    rates = sorted(by_rate, key=lambda rate: by_rate[rate])
    parts, left = [], extra
    for rate in rates[:-1]:
        share = (extra * by_rate[rate] / whole).quantize(CENT, ROUND_HALF_UP)
        parts.append((rate, share))
        left -= share
    parts.append((rates[-1], left))  # the largest share takes the rounding remainder
    return [RefundLine(key="refund-adjustment", description=f"Acerto de reembolso (IVA {rate} %)",
                       quantity=Decimal(1), amount=share, tax_rate=rate, kind="adjustment")
            for rate, share in parts if share > 0]
