"""Prometheus metrics: counts every process adds to Redis, gauges read at scrape time, and GET /metrics."""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, abort, current_app, has_app_context, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from connector.extensions import db
from connector.invoicexpress import client as invoicexpress_client
from connector.models import Document, DocumentState, Store, as_utc
from connector.platforms import PLATFORMS, rest

logger = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

# Counts live in Redis, one hash per metric, because gunicorn workers, RQ's forked work-horses and separate
# web and worker machines share nothing else: each adds to the same hash, and any web process reads it all.
KEY_PREFIX = "connector:metrics:"
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)

WEBHOOKS = "connector_webhooks_received_total"
IX_SECONDS = "connector_invoicexpress_request_duration_seconds"
IX_ERRORS = "connector_invoicexpress_errors_total"
PLATFORM_SECONDS = "connector_platform_request_duration_seconds"
PLATFORM_ERRORS = "connector_platform_errors_total"

COUNTERS = {
    WEBHOOKS: ("Webhook deliveries answered, by platform and outcome (accepted, duplicate, ignored, ping, "
               "or the HTTP status of a refusal)", ("platform", "outcome")),
    IX_ERRORS: ("InvoiceXpress calls that failed, by status class (4xx, 5xx, or none: no answer came)",
                ("status_class",)),
    PLATFORM_ERRORS: ("Shop platform API calls that failed, by platform and status class (4xx, 5xx, or none)",
                      ("platform", "status_class")),
}
HISTOGRAMS = {
    IX_SECONDS: ("Time InvoiceXpress took to answer a call, by HTTP method", ("method",)),
    PLATFORM_SECONDS: ("Time a shop platform's API took to answer a call, by platform", ("platform",)),
}
# A webhook's 200 answers, told apart by the outcome its body names; every other answer by its status.
WEBHOOK_OUTCOMES = ("accepted", "duplicate", "ignored", "ping")
_WARN_EVERY_SECONDS = 60.0
_last_warning = -math.inf


def init_app(app: Flask) -> None:
    """Serve /metrics (when METRICS_TOKEN is set) and count the outbound calls of every client."""
    app.register_blueprint(bp)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConnectorCollector())
    app.extensions["metrics_registry"] = registry
    # One listener per process, whichever app is current when a call is made (tests build many apps).
    if observe_invoicexpress not in invoicexpress_client.OBSERVERS:
        invoicexpress_client.OBSERVERS.append(observe_invoicexpress)
    if observe_platform not in rest.OBSERVERS:
        rest.OBSERVERS.append(observe_platform)


@bp.get("/metrics")
def scrape():
    token = current_app.config.get("METRICS_TOKEN")
    if not token:
        abort(404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return Response("a valid bearer token is required\n", 401, {"WWW-Authenticate": 'Bearer realm="metrics"'},
                        content_type="text/plain; charset=utf-8")
    return Response(generate_latest(current_app.extensions["metrics_registry"]), content_type=CONTENT_TYPE_LATEST)


# --- What processes count ------------------------------------------------------------------------------

def count_webhook(platform_name: str | None, response: Response) -> None:
    """Count a webhook's answer. An unknown platform in the URL is counted as `unknown`, so that a scanner
    cannot make up label values."""
    platform = platform_name if platform_name in PLATFORMS else "unknown"
    outcome = str(response.status_code)
    if response.status_code == 200:
        body = response.get_json(silent=True)
        named = body.get("status") if isinstance(body, dict) else None
        outcome = named if named in WEBHOOK_OUTCOMES else "200"
    _write([(WEBHOOKS, _field((platform, outcome)), 1)])


def observe_invoicexpress(method: str, seconds: float, status: int | None) -> None:
    """An IX call's latency, and its failure (no answer, 4xx, 5xx) if it failed."""
    ops = _histogram(IX_SECONDS, (method.upper(),), seconds)
    if status is None or status >= 400:
        ops.append((IX_ERRORS, _field((status_class(status),)), 1))
    _write(ops)


def observe_platform(platform: str, seconds: float, status: int | None) -> None:
    """A shop platform API call's latency, and its failure if it failed."""
    name = platform.lower()
    ops = _histogram(PLATFORM_SECONDS, (name,), seconds)
    if status is None or status >= 400:
        ops.append((PLATFORM_ERRORS, _field((name, status_class(status))), 1))
    _write(ops)


def status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


def _field(labels: Iterable[str], suffix: str = "") -> str:
    return json.dumps([suffix, *labels])


def _histogram(name: str, labels: tuple[str, ...], seconds: float) -> list[tuple[str, str, float]]:
    # Each observation adds to the one bucket it falls in; the scrape makes them cumulative (and +Inf's
    # cumulative count is the observations' count).
    bucket = next(bound for bound in BUCKETS if seconds <= bound)
    return [(name, _field(labels, _bound(bucket)), 1), (name, _field(labels, "sum"), float(seconds))]


def _bound(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


def _write(ops: list[tuple[str, str, float]]) -> None:
    """Add to the counts in one pipelined round trip. Best effort: metrics never fail a webhook or a job."""
    global _last_warning
    try:
        if not has_app_context():
            return
        pipeline = current_app.extensions["queue"].connection.pipeline(transaction=False)
        for name, field, amount in ops:
            if isinstance(amount, float):
                pipeline.hincrbyfloat(KEY_PREFIX + name, field, amount)
            else:
                pipeline.hincrby(KEY_PREFIX + name, field, amount)
        pipeline.execute()
    except Exception as error:  # Redis away, or anything else: the count is lost, the work goes on
        now = time.monotonic()
        if now - _last_warning >= _WARN_EVERY_SECONDS:  # once a minute, not once a request
            _last_warning = now
            logger.warning("metrics not recorded: %s", type(error).__name__)


# --- What a scrape reads -------------------------------------------------------------------------------

class ConnectorCollector(Collector):
    """At scrape time: the counts in Redis, and gauges read from the database and the queue."""

    def collect(self) -> Iterator[Metric]:
        for part in (self._counts, self._documents, self._queue):
            try:
                yield from part()
            except Exception:
                # A scrape shows what it can read; a missing series tells the operator the rest.
                db.session.rollback()
                logger.warning("metrics: %s could not be read", part.__name__.strip("_"), exc_info=True)

    def _counts(self) -> Iterator[Metric]:
        pipeline = current_app.extensions["queue"].connection.pipeline(transaction=False)
        names = [*COUNTERS, *HISTOGRAMS]
        for name in names:
            pipeline.hgetall(KEY_PREFIX + name)
        stored = dict(zip(names, pipeline.execute(), strict=True))
        for name, (documentation, labels) in COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=labels)
            for field, value in sorted(stored[name].items()):
                _, *values = json.loads(field)
                family.add_metric(values, float(value))
            yield family
        for name, (documentation, labels) in HISTOGRAMS.items():
            yield _histogram_family(name, documentation, labels, stored[name])

    def _documents(self) -> Iterator[Metric]:
        stores = {id_: f"{platform}:{domain}" for id_, platform, domain in
                  db.session.execute(sa.select(Store.id, Store.platform, Store.domain))}
        counts = db.session.execute(sa.select(Document.store_id, Document.state, sa.func.count())
                                    .group_by(Document.store_id, Document.state))
        by_state = {(store_id, state): number for store_id, state, number in counts}
        documents = GaugeMetricFamily("connector_documents", "Documents by store and state",
                                      labels=("store", "state"))
        for store_id, store in sorted(stores.items(), key=lambda item: item[1]):
            for state in DocumentState.ALL:
                documents.add_metric((store, state), by_state.get((store_id, state), 0))
        yield documents

        oldest = db.session.execute(
            sa.select(Document.store_id, sa.func.min(Document.created_at))
            .where(Document.state.in_(DocumentState.OPEN)).group_by(Document.store_id))
        created = {store_id: as_utc(when) for store_id, when in oldest}
        now = datetime.now(UTC)
        age = GaugeMetricFamily("connector_oldest_open_document_age_seconds",
                                "Age of each store's oldest document still being issued (0: none open)",
                                labels=("store",))
        for store_id, store in sorted(stores.items(), key=lambda item: item[1]):
            when = created.get(store_id)
            age.add_metric((store,), max(0.0, (now - when).total_seconds()) if when else 0.0)
        yield age
        db.session.rollback()  # the scrape's reads hold no transaction open

    def _queue(self) -> Iterator[Metric]:
        queue = current_app.extensions["queue"]
        depth = GaugeMetricFamily("connector_queue_jobs", "Jobs waiting to run (queued), to run later "
                                  "(scheduled), and kept after failing (failed)", labels=("state",))
        depth.add_metric(("queued",), queue.count)
        depth.add_metric(("scheduled",), ScheduledJobRegistry(queue=queue).count)
        depth.add_metric(("failed",), FailedJobRegistry(queue=queue).count)
        yield depth


def _histogram_family(name: str, documentation: str, labels: tuple[str, ...],
                      stored: dict[bytes, bytes]) -> HistogramMetricFamily:
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for field, value in stored.items():
        suffix, *values = json.loads(field)
        series.setdefault(tuple(values), {})[suffix] = float(value)
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, numbers in sorted(series.items()):
        cumulative, buckets = 0.0, []
        for bound in BUCKETS:
            cumulative += numbers.get(_bound(bound), 0.0)
            buckets.append((_bound(bound), cumulative))
        family.add_metric(list(values), buckets, numbers.get("sum", 0.0))
    return family
