"""Flask commands: the worker, preview of an order, and a one-off sweep."""

from __future__ import annotations

import json
import sys
from decimal import Decimal

import click
from flask import Flask, current_app

from connector import invoicing, jobs
from connector.extensions import get_queue
from connector.invoicexpress.client import encode_json
from connector.platforms import PLATFORMS


def init_app(app: Flask) -> None:
    app.cli.add_command(worker_command)
    app.cli.add_command(preview_command)
    app.cli.add_command(sweep_command)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker_command(burst: bool) -> None:
    """Run the RQ worker with its scheduler and the sweeper (graceful on SIGTERM)."""
    from connector import worker

    worker.run(get_queue(), current_app.config["SWEEP_INTERVAL_SECONDS"], burst=burst)


@click.command("sweep")
def sweep_command() -> None:
    """Queue again every event and document whose job was lost."""
    click.echo(json.dumps(jobs.sweep()))


@click.command("preview")
@click.argument("platform", type=click.Choice(sorted(PLATFORMS)))
@click.argument("file", type=click.File("rb"))
@click.option("--topic", help="The webhook topic (defaults to the platform's paid-order topic).")
def preview_command(platform: str, file, topic: str | None) -> None:
    """Show, as JSON, what an order event would produce. Calls nothing, writes nothing."""
    module = PLATFORMS[platform]
    topic = topic or module.PAID_TOPIC
    try:
        payload = json.load(file)
        if not isinstance(payload, dict):
            raise ValueError("the file does not hold a JSON object")
        if topic != module.PAID_TOPIC:
            plan = invoicing.Plan(verdict="none", reasons=[f"The connector does not act on '{topic}' events yet."],
                                  currency=str(payload.get("currency") or ""))
        else:
            order = module.to_order(payload, store="preview", tax_id_keys=current_app.config["TAX_ID_KEYS"])
            plan = invoicing.plan_receipt(order, invoicing.tax_settings())
        result = preview(plan)
    except ValueError as error:  # unreadable JSON, or the platform's load error
        click.echo(f"error: {file.name} is not a readable {platform} event: {_one_line(error)}", err=True)
        sys.exit(1)
    click.echo(json.dumps({"platform": platform, "topic": topic, **result}, indent=2, default=_json_value,
                          ensure_ascii=False))


def preview(plan: invoicing.Plan) -> dict:
    return {
        "verdict": plan.verdict,
        "reasons": plan.reasons,
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
