"""Operator commands: `status` of the stores and the queue, `replay` of an event, `backfill` of past orders."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from typing import Any

import click
import sqlalchemy as sa
from redis.exceptions import RedisError
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from connector import issuing, jobs, logs, reconcile
from connector.extensions import db, get_queue
from connector.inbox import stored_key
from connector.models import Document, DocumentState, EventStatus, Store, Watermark, WebhookEvent, as_utc, utcnow
from connector.platforms import PLATFORMS

logger = logging.getLogger(__name__)

# How many orders a backfill reads between two progress lines (WooCommerce's page is 100).
PROGRESS_EVERY = 100


# --- status ------------------------------------------------------------------------------------------------


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status_command(as_json: bool) -> None:
    """Per store: documents by state, the oldest open one, the last webhook and reconciliation; the queue."""
    now = utcnow()
    report = {"stores": [_store_status(store, now) for store in db.session.scalars(
        sa.select(Store).order_by(Store.platform, Store.domain))], "queue": _queue_status()}
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    for one in report["stores"]:
        click.echo(_store_text(one))
    if not report["stores"]:
        click.echo("no stores yet: none has sent a webhook or been set with `stores set`")
    click.echo(_queue_text(report["queue"]))


def _store_status(store: Store, now: datetime) -> dict[str, Any]:
    counts = dict(db.session.execute(
        sa.select(Document.state, sa.func.count()).where(Document.store_id == store.id).group_by(Document.state)
    ).all())
    oldest = db.session.scalars(
        sa.select(Document).where(Document.store_id == store.id, Document.state.in_(DocumentState.OPEN))
        .order_by(Document.created_at, Document.id).limit(1)).first()
    last_webhook = db.session.scalar(sa.select(sa.func.max(WebhookEvent.received_at)).where(
        WebhookEvent.store_id == store.id, WebhookEvent.source == "webhook"))
    mark = db.session.get(Watermark, store.id)
    return {
        "platform": store.platform,
        "store": store.domain,
        "documents": {state: counts[state] for state in DocumentState.ALL if counts.get(state)},
        "oldest_open": None if oldest is None else {
            "document": oldest.id, "order": oldest.order_ref, "state": oldest.state,
            "created_at": _iso(oldest.created_at),
            "age_seconds": int((now - as_utc(oldest.created_at)).total_seconds()),
        },
        "last_webhook_at": _iso(last_webhook),
        "last_reconciliation": None if mark is None or mark.last_run_at is None else {
            "at": _iso(mark.last_run_at), "found": mark.last_found, "error": mark.last_error,
        },
    }


def _queue_status() -> dict[str, Any]:
    queue = get_queue()
    try:
        return {"queued": queue.count, "scheduled": ScheduledJobRegistry(queue=queue).count,
                "failed": FailedJobRegistry(queue=queue).count}
    except RedisError as error:
        # The type only: a connection error's text may carry the Redis URL and its password.
        return {"error": f"Redis unavailable ({type(error).__name__})"}


def _store_text(one: dict[str, Any]) -> str:
    lines = [f"{one['platform']} {one['store']}"]
    counts = ", ".join(f"{state} {count}" for state, count in one["documents"].items()) or "none yet"
    lines.append(f"  documents: {counts}")
    oldest = one["oldest_open"]
    if oldest:
        lines.append(f"  oldest open: order {oldest['order']} ({oldest['state']}, document {oldest['document']}) "
                     f"for {_age(oldest['age_seconds'])}")
    else:
        lines.append("  oldest open: none")
    lines.append(f"  last webhook: {one['last_webhook_at'] or 'never'}")
    run = one["last_reconciliation"]
    if run is None:
        lines.append("  last reconciliation: never")
    else:
        outcome = f"failed: {run['error']}" if run["error"] else f"{run['found']} new"
        lines.append(f"  last reconciliation: {run['at']} ({outcome})")
    return "\n".join(lines)


def _queue_text(queue: dict[str, Any]) -> str:
    if "error" in queue:
        return f"queue: {queue['error']}"
    return f"queue: {queue['queued']} queued, {queue['scheduled']} scheduled, {queue['failed']} failed"


def _age(seconds: int) -> str:
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


# --- replay ------------------------------------------------------------------------------------------------


@click.command("replay")
@click.argument("event_id")
@click.option("--store", "store_name", help="The store's key, when the platform's event id is in several stores.")
def replay_command(event_id: str, store_name: str | None) -> None:
    """Process a stored event again: EVENT_ID as /admin shows it, or the platform's own event id
    (X-Shopify-Event-Id, Stripe's evt_…).

    Documents are unique per order and refund, so a replay never issues one twice: it issues only what
    the event owes and is missing.
    """
    event = _event_to_replay(event_id.strip(), store_name)
    was = event.status
    event.status = EventStatus.RECEIVED
    event.processed_at = None
    before = f": {event.note}" if event.note else ""
    event.note = f"Replayed by an operator on {utcnow():%Y-%m-%d %H:%M} UTC (it was {was}{before})."[:2000]
    db.session.commit()
    jobs.enqueue_event(event.id)
    logger.info("event %s replayed (was %s)", event.id, was)
    click.echo(f"event {event.id} ({event.platform} {event.store.domain}, {event.topic}) was {was}: "
               "set back to received and queued")


def _event_to_replay(text: str, store_name: str | None) -> WebhookEvent:
    if text.isdigit():
        event = db.session.get(WebhookEvent, int(text))
        if event is not None:
            return event
    query = sa.select(WebhookEvent).join(Store).where(WebhookEvent.event_key == text).order_by(WebhookEvent.id)
    if store_name:
        query = query.where(Store.domain == store_name.lower())
    found = list(db.session.scalars(query))
    if not found:
        where = f" in store {store_name}" if store_name else ""
        _fail(f"no stored event has the id or platform event id {text!r}{where}")
    if len(found) > 1:
        listed = "\n".join(f"  event {e.id}: {e.platform} {e.store.domain}, {e.topic}, {e.status}" for e in found)
        _fail(f"the platform event id {text!r} is in several stores:\n{listed}\n"
              "name one with --store STORE, or give the event's own id")
    return found[0]


# --- backfill ----------------------------------------------------------------------------------------------


@click.command("backfill")
@click.option("--store", "store_name", default="default", show_default=True,
              help="The store's key (e.g. shop.example.com).")
@click.option("--since", "since_text", required=True, metavar="ISO-DATE",
              help="Read the shop's orders changed from this date (UTC unless the time says otherwise).")
@click.option("--dry-run", is_flag=True,
              help="Store nothing, call no IX: each order's verdict as `preview` gives it, a JSON line each.")
def backfill_command(store_name: str, since_text: str, dry_run: bool) -> None:
    """Issue the store's past paid orders, read from its platform through reconciliation.

    Safe to stop and run again with the same --since: what is in already is skipped as a duplicate, and
    no order is ever issued twice. The platform's API and IX are called at their usual rate limits.
    """
    since = reconcile.parse_since(since_text)
    targets = list(reconcile.selected(reconcile.pollable_stores(), store_name))
    if not targets:
        _fail(f"store {store_name} is unknown or cannot be polled: its platform API credentials are needed "
              "(WOOCOMMERCE_URL with its consumer key and secret, SHOPIFY_ACCESS_TOKEN, or STRIPE_API_KEY)")
    failed = False
    for target in targets:
        with logs.for_store(target.store.platform, target.store.domain):
            if dry_run:
                _dry_run(target, since)
            else:
                failed |= _backfill(target, since)
    if failed:
        sys.exit(1)


def _backfill(target: reconcile.Pollable, since: datetime) -> bool:
    """One reconciliation pass from `since`, with a progress line per batch read; True when it failed."""
    name = target.store.domain
    click.echo(f"store {name}: reading orders changed since {since.isoformat()}", err=True)
    counted = reconcile.Pollable(target.store, _Counting(target.poller, name), target.client)
    result = reconcile.run_pass(counted, since=since)
    click.echo(result.line())
    if result.error:
        click.echo(f"store {name}: stopped early; run the same command again to go on "
                   "(what is in already is a duplicate)", err=True)
    return result.error is not None


class _Counting:
    """A platform's poll module whose `poll` says every so many orders how far it has read."""

    def __init__(self, module, store: str) -> None:
        self._module, self._store = module, store

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    def poll(self, client, since: datetime):
        read = 0
        for polled in self._module.poll(client, since):
            yield polled
            read += 1
            if read % PROGRESS_EVERY == 0:
                click.echo(f"store {self._store}: {read} read, up to {polled.modified_at.isoformat()}", err=True)
        click.echo(f"store {self._store}: {read} read in all", err=True)


def _dry_run(target: reconcile.Pollable, since: datetime) -> None:
    """Each order the platform reports since `since`, previewed: nothing stored, no IX call."""
    from connector.cli import _json_value, _preview_plan, preview

    store = target.store
    settings = issuing.settings_for(store)
    module = PLATFORMS[store.platform]
    read = 0
    for polled in target.poller.poll(target.client, since):
        read += 1
        line: dict[str, Any] = {"store": store.domain, "order": polled.order_id, "topic": polled.topic,
                                "already_in": _already_in(store, polled)}
        try:
            payload = dict(module.unwrap(json.loads(polled.body)))
            line.update(preview(_preview_plan(store.platform, payload, polled.topic, None, settings)))
        except ValueError as error:
            line.update(verdict="error", reasons=[" ".join(str(error).split())])
        click.echo(json.dumps(line, default=_json_value, ensure_ascii=False))
        if read % PROGRESS_EVERY == 0:
            click.echo(f"store {store.domain}: {read} read, up to {polled.modified_at.isoformat()}", err=True)
    click.echo(f"store {store.domain}: {read} read in all (dry run: nothing stored)", err=True)
    db.session.rollback()


def _already_in(store: Store, polled) -> bool:
    key = stored_key(polled.topic, polled.event_key, polled.body)
    return db.session.scalar(sa.select(WebhookEvent.id).where(
        WebhookEvent.platform == store.platform, WebhookEvent.store_id == store.id,
        WebhookEvent.event_key == key).limit(1)) is not None


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)

