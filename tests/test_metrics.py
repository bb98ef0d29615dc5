"""GET /metrics: behind its bearer token, showing what every process counted in Redis and what is stored."""

from __future__ import annotations

import pytest
import responses
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from connector import create_app, metrics
from connector.platforms.common import PlatformUnavailable
from connector.platforms.rest import RestClient
from tests.conftest import STORE, drain, fixture_body, settings, shopify_headers, tables_of

TOKEN = "metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def scrape(app, client):
    app.config["METRICS_TOKEN"] = TOKEN

    def read() -> dict[tuple[str, tuple], float]:
        """Every sample of a scrape, keyed by (name, sorted labels)."""
        response = client.get("/metrics", headers=AUTH)
        assert response.status_code == 200, response.data
        assert response.content_type.startswith("text/plain")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(response.get_data(as_text=True))
                for s in family.samples}

    return read


def webhooks(samples, outcome: str, platform: str = "shopify") -> float:
    return samples.get(("connector_webhooks_received_total", (("outcome", outcome), ("platform", platform))), 0)


def test_without_metrics_token_there_is_no_metrics_page(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers=AUTH).status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", TOKEN, "Bearer "])
def test_a_missing_or_wrong_token_is_refused(app, client, header):
    app.config["METRICS_TOKEN"] = TOKEN
    response = client.get("/metrics", headers={"Authorization": header} if header else {})

    assert response.status_code == 401
    assert TOKEN not in response.get_data(as_text=True)
    assert "connector_" not in response.get_data(as_text=True)


def test_a_run_shows_its_webhooks_documents_and_invoicexpress_calls(app, sandbox, post_order, queue, scrape):
    body = fixture_body("paid_b2c_tax_included.json")
    assert post_order(body, event_id="evt-1").status_code == 200
    assert post_order(body, event_id="evt-1").status_code == 200  # the shop delivering it again
    assert post_order(body, event_id="evt-2", secret="wrong").status_code == 401
    drain(queue)

    samples = scrape()

    assert webhooks(samples, "accepted") == 1
    assert webhooks(samples, "duplicate") == 1
    assert webhooks(samples, "401") == 1
    store = f"shopify:{STORE}"
    assert samples[("connector_documents", (("state", "done"), ("store", store)))] == 1
    assert samples[("connector_documents", (("state", "held"), ("store", store)))] == 0
    assert samples[("connector_oldest_open_document_age_seconds", (("store", store),))] == 0
    ix_calls = sum(v for (name, _), v in samples.items()
                   if name == "connector_invoicexpress_request_duration_seconds_count")
    # Every call IX received is counted once (create, finalize and e-mail at least), none failed.
    assert ix_calls == sum(sandbox.calls().values()) >= 3
    assert not any(name == "connector_invoicexpress_errors_total" for name, _ in samples)
    assert samples[("connector_queue_jobs", (("state", "queued"),))] == 0
    assert samples[("connector_queue_jobs", (("state", "failed"),))] == 0


def test_a_job_no_worker_took_yet_shows_as_queue_depth(app, post_order, scrape):
    assert post_order(fixture_body("paid_b2c_tax_included.json")).status_code == 200

    samples = scrape()

    # The event's job waits in the queue (no worker ran): nothing issued yet.
    assert samples[("connector_queue_jobs", (("state", "queued"),))] == 1


def test_counts_from_separate_processes_sharing_redis_add_up(app, redis, tmp_path, post_order, scrape):
    """A second app on the same Redis stands for another gunicorn worker, work-horse or machine."""
    other = create_app(overrides={"REDIS_CONNECTION": redis},
                       environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'other.db'}"))
    body = fixture_body("paid_b2c_tax_included.json")
    with tables_of(other):
        response = other.test_client().post("/webhooks/shopify", data=body, headers=shopify_headers(body))
        assert response.status_code == 200
    assert post_order(body).status_code == 200

    assert webhooks(scrape(), "accepted") == 2


@responses.activate
def test_platform_calls_count_their_latency_and_errors_by_platform(app, scrape):
    responses.get("https://shop.example/api/orders", json={"orders": []})
    responses.get("https://shop.example/api/broken", status=503)
    rest = RestClient("WooCommerce", "https://shop.example/api", secrets=(), timeout=5, session=None)
    with app.app_context():
        rest.get("/orders")
        with pytest.raises(PlatformUnavailable):
            rest.get("/broken")

    samples = scrape()

    assert samples[("connector_platform_request_duration_seconds_count", (("platform", "woocommerce"),))] == 2
    errors = ("connector_platform_errors_total", (("platform", "woocommerce"), ("status_class", "5xx")))
    assert samples[errors] == 1


def test_redis_unavailable_loses_the_count_but_not_the_call(app, monkeypatch):
    connection = app.extensions["queue"].connection

    def down(*args, **kwargs):
        raise RedisConnectionError("Redis is away")

    monkeypatch.setattr(connection, "pipeline", down)
    with app.app_context():
        metrics.observe_invoicexpress("POST", 0.2, 500)  # no exception reaches the caller
        metrics.observe_platform("Shopify", 0.2, None)
