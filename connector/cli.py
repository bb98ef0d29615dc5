"""Flask commands: the worker, preview of an order, a one-off sweep, and per-store settings."""

from __future__ import annotations

import json
import sys
from decimal import Decimal

import click
from flask import Flask, current_app

from connector import issuing, jobs, operator_commands, reconcile
from connector.extensions import get_queue
from connector.invoicexpress.client import encode_json
from connector.orders import Order
from connector.plans import Plan, plan_credit, plan_sale
from connector.platforms import PLATFORMS
from connector.platforms.common import LoadError, PlatformRefused
from connector.stores_commands import stores_command


def init_app(app: Flask) -> None:
    app.cli.add_command(worker_command)
    app.cli.add_command(preview_command)
    app.cli.add_command(sweep_command)
    app.cli.add_command(stores_command)
    app.cli.add_command(reconcile.reconcile_command)
    app.cli.add_command(operator_commands.status_command)
    app.cli.add_command(operator_commands.replay_command)
    app.cli.add_command(operator_commands.backfill_command)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker_command(burst: bool) -> None:
    """Run the RQ worker with its scheduler and the sweeper (graceful on SIGTERM)."""
    from config.settings import ConfigError
    from connector import check_stores, worker

    try:
        check_stores(current_app._get_current_object())
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    worker.run(get_queue(), current_app.config["SWEEP_INTERVAL_SECONDS"], burst=burst)


@click.command("sweep")
def sweep_command() -> None:
    """Queue again every event and document whose job was lost."""
    click.echo(json.dumps(jobs.sweep()))


@click.command("preview")
@click.argument("platform", type=click.Choice(sorted(PLATFORMS)))
@click.argument("file", type=click.File("rb"))
@click.option("--topic", help="The webhook topic (defaults to the platform's paid-order topic).")
@click.option("--order", "order_file", type=click.File("rb"),
              help="For a refund: the paid order it refunds (its invoice is what the credit note corrects).")
def preview_command(platform: str, file, topic: str | None, order_file) -> None:
    """Show, as JSON, what an order event would produce. Calls nothing, writes nothing."""
    module = PLATFORMS[platform]
    topic = topic or module.PAID_TOPIC
    try:
        payload = _read_object(platform, file)
        # The environment's settings: a store's own values apply once it is live (`flask stores`).
        settings = issuing.settings_for(None)
        plan = _preview_plan(platform, payload, topic, order_file, settings)
        result = preview(plan)
    except ValueError as error:  # unreadable JSON, or the platform's load error
        click.echo(f"error: {file.name} is not a readable {platform} event: {_one_line(error)}", err=True)
        sys.exit(1)
    click.echo(json.dumps({"platform": platform, "topic": topic, **result}, indent=2, default=_json_value,
                          ensure_ascii=False))


def _preview_plan(platform: str, payload: dict, topic: str, order_file, settings) -> Plan:
    """What the worker would plan for the event's first change that owes something (or why none does)."""
    module = PLATFORMS[platform]
    if _is_pasted_refund(platform, payload):
        # A platform without a refund topic (WooCommerce) is previewed from its REST refund object.
        return _preview_refund(platform, payload, order_file, settings)
    changes = module.changes(payload, topic, settings)
    owing = [change for change in changes if change.kind != "none"]
    if not owing:
        # Owing nothing is an answer about an order: anything else pasted (a product, a coupon, `{}`) is
        # not a readable event, and loading it as an order says why.
        order = _order(module, payload, settings)
        if len(changes) == 1 and changes[0].order_id:
            # An order that owes nothing (not paid): planned as the order it is, for its totals.
            return plan_sale(order, settings, unpaid=changes[0].reason)
        return Plan(verdict="none", currency=order.currency, expected_total=order.total,
                    reasons=[change.reason for change in changes])
    change = owing[0]
    if change.kind == "refund":
        return _preview_refund(platform, module.snapshot(change, payload, None), order_file, settings)
    if change.kind == "cancellation":
        plan = Plan(verdict="none", currency=_currency(module, payload, settings), reasons=[
            "A cancellation issues nothing: an order not yet invoiced is not invoiced, a draft is deleted, "
            "and a final invoice stays (its refund becomes a credit note)."])
    elif change.fetched:
        plan = _preview_fetched_sale(platform, change, payload, settings)
    else:
        plan = plan_sale(_order(module, payload, settings), settings)
    plan.notes.extend(_refund_notes(platform, payload, [c for c in owing[1:] if c.kind == "refund"]))
    return plan


def _order(module, payload: dict, settings) -> Order:
    return issuing.order_of(module.NAME, payload, "preview", settings)


def _preview_fetched_sale(platform: str, change, payload: dict, settings) -> Plan:
    """A sale whose order the worker reads from the platform (a Stripe session's lines): planned in full from
    what was pasted when it holds that already, else held saying what the worker will read."""
    module = PLATFORMS[platform]
    try:
        source = module.snapshot(change, payload, None)  # preview never calls a platform's API
    except PlatformRefused as error:
        return Plan(verdict="hold", reasons=[f"{error}; paste the session with its line_items expanded to "
                                             "preview the whole document."])
    return plan_sale(_order(module, source, settings), settings)


def _currency(module, payload: dict, settings) -> str:
    """The order's currency, where the body is a whole order (a deletion's may hold only the order's id)."""
    try:
        return _order(module, payload, settings).currency
    except LoadError:
        return Plan(verdict="none").currency


def _is_pasted_refund(platform: str, payload: dict) -> bool:
    """Whether the platform tells the pasted object for a refund by its shape (a platform with no refund topic
    has `is_refund`)."""
    recognise = getattr(PLATFORMS[platform], "is_refund", None)
    return bool(recognise and recognise(payload))


def _refund_notes(platform: str, payload: dict, refunds: list) -> list[str]:
    """What the order's refunds will become, and how to preview each credit note."""
    module = PLATFORMS[platform]
    notes = []
    for change in refunds:
        said = (f"Refund {change.refund_id} will become a credit note on this order's invoice, "
                "once the invoice is issued.")
        try:
            module.snapshot(change, payload, None)
        except PlatformRefused:
            # Its lines are only in the platform's REST API, which preview never calls.
            notes.append(f"{said} Its lines come from the shop's REST API: save refund {change.refund_id} of "
                         f"order {change.order_id} as the API returns it, and preview its credit note with "
                         f"`flask --app wsgi preview {platform} REFUND_FILE --order ORDER_FILE` "
                         "(ORDER_FILE: this order).")
        else:
            notes.append(said)
    return notes


def _preview_refund(platform: str, source: dict, order_file, settings) -> Plan:
    module = PLATFORMS[platform]
    if order_file is None:
        refund = module.to_refund(source, store="preview", money=settings.invoice_currency)
        return Plan(verdict="hold", currency=str(refund.currency or ""), expected_total=refund.amount, reasons=[
            "A credit note corrects the order's invoice: give the paid order too (--order FILE)."])
    order_payload = _read_object(platform, order_file)
    order = _order(module, order_payload, settings)
    # Read against the order and planned by the worker's own function, so that the preview is what
    # will be issued; nothing else is credited yet.
    refund = module.to_refund(source, store="preview", money=settings.invoice_currency,
                              taxes_included=order.taxes_included, order=order_payload)
    plan = plan_credit(refund, order, settings, already_credited=Decimal(0))
    others = sorted({change.refund_id for change in module.changes(order_payload, module.PAID_TOPIC, settings)
                     if change.kind == "refund" and change.refund_id != refund.refund_id})
    if others:
        plan.notes.append(f"Counted as the order's only credit note: its other refunds ({', '.join(others)}) "
                          "leave less to credit once their credit notes are issued.")
    return plan


def _read_object(platform: str, file) -> dict:
    """The event object in `file`: a webhook body, or the platform's API answer unwrapped (preview takes
    what a person pastes)."""
    payload = json.load(file)
    if not isinstance(payload, dict):
        raise ValueError("the file does not hold a JSON object")
    return dict(PLATFORMS[platform].unwrap(payload))


def preview(plan: Plan) -> dict:
    return {
        "verdict": plan.verdict,
        "reasons": plan.reasons + plan.notes,
        "currency": plan.currency,
        "expected_total": plan.expected_total,
        "computed_total": plan.computed_total,
        # Bodies as they go on the wire: amounts are JSON numbers there, as IX's API describes them.
        "requests": json.loads(encode_json(plan.requests())),
    }


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _json_value(value):
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot show {type(value).__name__}")
