"""Redis or PostgreSQL away: nothing is lost, the shop is told to retry only when we could not store."""

from __future__ import annotations

from pathlib import Path

import requests

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"


def test_redis_away_the_webhook_is_still_accepted_and_issued_once_redis_is_back(connector, redis_server):
    body = (FIXTURES / "paid_b2c_tax_included.json").read_bytes()
    redis_server.stop()
    try:
        answer = connector.post(body)
        assert answer.status_code == 200, answer.text
        assert connector.rows("SELECT status FROM webhook_events") == [("received",)]
        health = requests.get(f"{connector.url}/healthz", timeout=10)
        assert health.status_code == 503
        assert health.json()["queue"] == "unavailable"
    finally:
        redis_server.start()  # empty: every job Redis held is gone

    [document] = connector.wait_until(connector.settled_and_emailed, timeout=90,
                                      what="the document, queued by the sweeper after Redis came back")
    assert len(document["emails"]) == 1
    assert connector.rows("SELECT state FROM documents") == [("done",)]


def test_database_away_the_shop_gets_503_and_its_retry_is_issued(connector, postgres):
    body = (FIXTURES / "paid_with_discount_and_nif.json").read_bytes()
    postgres.stop()
    try:
        answer = connector.post(body, event_id="evt-outage")
        assert answer.status_code == 503
        assert requests.get(f"{connector.url}/healthz", timeout=10).status_code == 503
    finally:
        postgres.start()

    # The shop retries the same event; connections are re-established behind the scenes.
    connector.wait_until(lambda: connector.post(body, event_id="evt-outage").status_code == 200, timeout=30,
                         what="the intake to answer 200 again")
    [document] = connector.wait_until(connector.settled_and_emailed, timeout=60, what="the document")
    assert len(document["emails"]) == 1
    assert connector.rows("SELECT count(*) FROM webhook_events") == [(1,)]


def test_database_away_while_the_worker_issues_then_it_resumes(connector, postgres):
    # IX is slow to finalize; the database goes away meanwhile and comes back.
    connector.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state\.json", regex=True, kind="delay",
                    seconds=2, times=1)
    connector.post((FIXTURES / "paid_b2c_tax_included.json").read_bytes())
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("created",)],
                         what="the draft to be created")
    postgres.stop()
    try:
        connector.wait_until(lambda: [d for d in connector.ix_documents() if d["status"] == "settled"],
                             what="IX to finalize while our database is away")
    finally:
        postgres.start()
    [document] = connector.wait_until(connector.settled_and_emailed, timeout=90,
                                      what="the e-mail, once the database is back")
    assert len(document["emails"]) == 1
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("done",)], what="done")
