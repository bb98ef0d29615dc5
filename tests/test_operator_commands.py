"""The operator's commands `sweep`, `stores list` and `stores unset`: what they print and what they change
(the other `stores` commands: tests/test_stores_commands.py)."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa

from connector.extensions import db
from connector.models import Document, DocumentState, Store, WebhookEvent, utcnow
from tests.conftest import API_KEY, SHOPIFY_SECRET, STORE, drain, fixture_body


def run(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def lines(result) -> list[dict]:
    assert result.exit_code == 0, (result.output, result.exception)
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_sweep_queues_again_an_order_whose_job_redis_lost_and_says_how_many(app, sandbox, post_order, queue):
    assert post_order(fixture_body("paid_b2c_tax_included.json")).status_code == 200
    queue.connection.flushall()  # Redis restarted empty: the event's job is gone
    # Older than one sweep interval, so not taken for an event still on its way through the queue.
    db.session.execute(sa.update(WebhookEvent).values(received_at=utcnow() - timedelta(hours=1)))
    db.session.commit()
    drain(queue)
    assert sandbox.documents() == []

    assert lines(run(app, "sweep")) == [{"events": 1, "documents": 0}]
    assert lines(run(app, "sweep")) == [{"events": 0, "documents": 0}]  # already queued: not twice
    drain(queue)

    [document] = db.session.scalars(sa.select(Document)).all()
    assert document.state == DocumentState.DONE
    assert len(sandbox.documents()) == 1
    assert lines(run(app, "sweep")) == [{"events": 0, "documents": 0}]


def test_sweep_with_nothing_lost_queues_nothing(app, queue):
    assert lines(run(app, "sweep")) == [{"events": 0, "documents": 0}]
    assert queue.count == 0


def test_stores_list_shows_each_store_once_with_its_own_settings_and_no_secret(app, post_order):
    assert lines(run(app, "stores", "list")) == []
    post_order(fixture_body("paid_b2c_tax_included.json"))
    run(app, "stores", "set", "Other.myshopify.com", "document_type=invoice", "invalid_tax_id=hold")

    result = run(app, "stores", "list")

    shown = [{key: row[key] for key in ("platform", "store", "settings", "secrets", "webhook_secret",
                                        "invoicexpress")} for row in lines(result)]
    assert shown == [
        {"platform": "shopify", "store": STORE, "settings": {}, "secrets": {}, "webhook_secret": "environment",
         "invoicexpress": "environment"},
        {"platform": "shopify", "store": "other.myshopify.com",
         # The second store on the environment's IX account: its references there are its own.
         "settings": {"document_type": "invoice", "invalid_tax_id": "hold", "reference_prefix": "OTHER-"},
         "secrets": {},
         "webhook_secret": "environment", "invoicexpress": "environment"},
    ]
    assert SHOPIFY_SECRET not in result.output and API_KEY not in result.output


def test_stores_unset_goes_back_to_the_environments_value(app, sandbox, post_order, queue):
    run(app, "stores", "set", STORE, "document_type=invoice", "invalid_tax_id=hold")

    result = run(app, "stores", "unset", STORE, "document_type")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["settings"] == {"invalid_tax_id": "hold"}
    assert shown["issuing"]["document_type"] == {"value": "invoice_receipt", "from": "environment"}
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    [document] = sandbox.documents()
    assert document["type"] == "InvoiceReceipt"  # DOCUMENT_TYPE's default, not the store's former invoice


def test_stores_unset_of_an_unknown_store_fails_and_creates_none(app):
    result = run(app, "stores", "unset", "typo.myshopify.com", "document_type")

    assert result.exit_code != 0
    assert "no shopify store typo.myshopify.com" in result.output
    assert db.session.scalars(sa.select(Store)).all() == []


def test_stores_unset_of_something_that_is_not_a_setting_fails_and_changes_nothing(app):
    run(app, "stores", "set", STORE, "document_type=invoice")

    result = run(app, "stores", "unset", STORE, "colour")

    assert result.exit_code != 0
    assert "colour is not a store setting" in result.output
    assert [row["settings"] for row in lines(run(app, "stores", "list"))] == [{"document_type": "invoice"}]
