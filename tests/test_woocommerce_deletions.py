"""A deleted WooCommerce order (`order.deleted` carries only its id) is a cancellation, as in Shopify."""

from __future__ import annotations

import pytest

from connector.models import DocumentState, EventStatus
from tests.conftest import drain
from tests.test_webhooks_woocommerce import app, documents, events, post_woo, woo_fake_url, woo_order  # noqa: F401

pytestmark = pytest.mark.usefixtures("app")


def test_an_order_deleted_before_it_was_invoiced_is_never_invoiced(post_woo, queue):  # noqa: F811
    assert post_woo({"id": 727}, "order.deleted").json["status"] == "accepted"
    drain(queue)

    [event] = events()
    assert event.status == EventStatus.PROCESSED, event.note
    [document] = documents()
    assert document.state == DocumentState.CANCELED
    assert "727" in document.order_ref

    # Its payment reaching us late issues nothing.
    post_woo(woo_order(727), "order.updated")
    drain(queue)
    assert [d.state for d in documents()] == [DocumentState.CANCELED]


def test_an_order_deleted_after_its_invoice_was_final_keeps_the_invoice(sandbox, post_woo, queue):  # noqa: F811
    post_woo(woo_order(727), "order.created")
    drain(queue)
    assert [d.state for d in documents()] == [DocumentState.DONE]

    post_woo({"id": 727}, "order.deleted")
    drain(queue)

    assert [d.state for d in documents()] == [DocumentState.DONE]
    assert events()[-1].status == EventStatus.PROCESSED
    assert "a cancellation changes nothing" in events()[-1].note
    assert len(sandbox.documents()) == 1
