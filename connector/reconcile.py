"""Reconciliation: polling each store's platform for the orders and refunds its webhooks missed."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import click
import sqlalchemy as sa
from flask import current_app

from connector import jobs, logs
from connector.extensions import db
from connector.models import Document, Store, Watermark, as_utc, utcnow
from connector.plans import sale_key
from connector.platforms import PLATFORMS
from connector.platforms.common import PlatformRefused, PlatformUnavailable
from connector.stores import StoreConfig, UnreadableSecrets, resolve

logger = logging.getLogger(__name__)

# A store's first pass reads this far back; older orders are `--since`'s job (or backfill's).
DEFAULT_LOOK_BACK = timedelta(days=1)
# Each pass re-reads this much before the watermark: the platform's clock and the order in which its
# changes become visible are not exact, and a re-read change is only a duplicate in the inbox.
OVERLAP = timedelta(minutes=5)
DEFAULT_INTERVAL_SECONDS = 600
MAX_ERROR_LENGTH = 300


@dataclass
class PassResult:
    """What one pass over one store did, for the command's progress line, the log and the job's result."""

    store: str
    platform: str
    polled: int = 0
    new: int = 0
    duplicates: int = 0
    missed: int = 0  # orders among the new entries that no webhook brought
    watermark: datetime | None = None
    error: str | None = None

    def line(self) -> str:
        """The progress line: 'store S: 120 polled, 3 new, 117 already in, watermark …'."""
        counts = f"{self.polled} polled, {self.new} new, {self.duplicates} already in"
        mark = self.watermark.isoformat() if self.watermark else "none"
        if self.error:
            return f"store {self.store}: failed after {counts}: {self.error}; watermark {mark}"
        return f"store {self.store}: {counts}, watermark {mark}"


@dataclass(frozen=True)
class Pollable:
    """A store whose platform can be polled, with the platform's poll module and an API client for the store."""

    store: Store
    poller: ModuleType
    client: Any


def poller(platform: str) -> ModuleType | None:
    """The platform's poll module (`connector/platforms/<platform>/poll.py`), or None if it cannot poll."""
    name = f"connector.platforms.{platform}.poll"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):
            return None
        raise  # a dependency of an existing poll module is missing: that is a bug to see


def pollable_stores() -> list[Pollable]:
    """Every store whose platform can poll and whose settings hold API credentials for it.

    The store the environment's credentials name is created if no webhook has made it yet: a shop
    whose webhooks never arrived is exactly the one reconciliation is for.
    """
    platforms = set(PLATFORMS) | set(db.session.scalars(sa.select(Store.platform).distinct()))
    found = []
    for platform in sorted(platforms):
        module = poller(platform)
        if module is None:
            continue
        configured = module.configured_store(current_app.config)
        if configured:
            _store_named(platform, configured)
        for store in db.session.scalars(sa.select(Store).where(Store.platform == platform).order_by(Store.id)):
            try:
                config = resolve(store)
            except UnreadableSecrets as error:
                logger.error("reconcile skips a store: %s", error)
                continue
            client = polling_client(store, config)
            if client is not None:
                found.append(Pollable(store, module, client))
    return found


def polling_client(store: Store, config: StoreConfig) -> Any:
    """The client the store's platform API is read with for its orders, or None (no credentials it may use)."""
    module = poller(store.platform)
    if module is None:
        return None
    configured = module.configured_store(current_app.config)
    if not config.own_api and configured not in (None, store.domain):
        # The environment's credentials are one shop's: polling them for another row of it (a second URL of
        # the site, a named Stripe store) would take the same orders in twice.
        return None
    return module.api(config.api, store.domain)


def _store_named(platform: str, reference: str) -> Store:
    # The webhook intake's own lookup, so that a poll and a webhook of one shop share one store row.
    from connector.webhooks import find_or_create_store

    store = find_or_create_store(platform, reference)
    db.session.commit()
    return store


def run_pass(target: Pollable, since: datetime | None = None, now: datetime | None = None) -> PassResult:
    """One pass over one store: what changed since its watermark (or `since`) into the inbox; the watermark on.

    The watermark never moves back. A pass the platform cuts short keeps what it stored and moves the
    watermark only as far as the changes read so far are known complete (they came oldest first), and
    records the error; the next pass reads on from there.
    """
    store, module = target.store, target.poller
    now = now or utcnow()
    mark = db.session.get(Watermark, store.id)
    reached = as_utc(mark.reached) if mark is not None else None
    if since is None:
        since = reached - OVERLAP if reached is not None else now - DEFAULT_LOOK_BACK
    result = PassResult(store=store.domain, platform=store.platform)
    newest: datetime | None = None
    oldest_first = True
    missed_orders: set[str] = set()
    try:
        for polled in module.poll(target.client, since):
            result.polled += 1
            if newest is not None and polled.modified_at < newest:
                oldest_first = False
            newest = polled.modified_at if newest is None else max(newest, polled.modified_at)
            if not polled.acted_on:
                continue
            event, duplicate = _take_in(store, polled)
            if duplicate:
                result.duplicates += 1
                continue
            result.new += 1
            if module.SAME_KEYS_AS_WEBHOOKS or not _has_sale_document(store, polled.order_id):
                missed_orders.add(polled.order_id)
            jobs.enqueue_event(event.id)
    except (PlatformUnavailable, PlatformRefused) as error:
        db.session.rollback()
        result.error = short_error(error)
    result.missed = len(missed_orders)

    complete = result.error is None or oldest_first
    candidates = [value for value in (reached, newest if complete else None) if value is not None]
    result.watermark = max(candidates) if candidates else since
    record(store, result, now)

    if result.missed:
        logger.warning("reconciliation found %d orders no webhook brought for store %s: check that the shop's "
                       "webhooks are active", result.missed, store.domain)
    log = logger.warning if result.error else logger.info
    log("reconcile store=%s platform=%s polled=%d new=%d duplicates=%d watermark=%s%s", store.domain,
        store.platform, result.polled, result.new, result.duplicates, result.watermark.isoformat(),
        f" error={result.error}" if result.error else "")
    return result


def _take_in(store: Store, polled) -> tuple[Any, bool]:
    from connector.inbox import take_in

    return take_in(store.platform, store.domain, polled.event_key, polled.topic, polled.body, polled.acted_on,
                   source="poll")


def _has_sale_document(store: Store, order_id: str) -> bool:
    query = sa.select(Document.id).where(Document.store_id == store.id, Document.source_key == sale_key(order_id))
    return db.session.scalar(query.limit(1)) is not None


def record(store: Store, result: PassResult, now: datetime) -> None:
    """Store the pass on the store's watermark row: how far it reached, when it ran, what it found, its error."""
    mark = db.session.get(Watermark, store.id)
    if mark is None:
        mark = Watermark(store_id=store.id, reached=result.watermark)
        db.session.add(mark)
    mark.reached = result.watermark
    mark.last_run_at = now
    mark.last_found = result.new
    mark.last_missed = result.missed  # above 0, an alert says the shop's webhook is probably disabled
    mark.last_error = result.error
    db.session.commit()


def short_error(error: BaseException) -> str:
    """A one-line account of a platform's failure, short enough for a column and a log line.

    The platform clients' errors name the request and the status, never a credential.
    """
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:MAX_ERROR_LENGTH]


def due(target: Pollable, now: datetime, interval: timedelta) -> bool:
    mark = db.session.get(Watermark, target.store.id)
    last = as_utc(mark.last_run_at) if mark is not None else None
    return last is None or last <= now - interval


def run_due(now: datetime | None = None) -> list[dict]:
    """Job: a pass over every pollable store whose last pass is older than RECONCILE_INTERVAL_SECONDS.

    One store's failure is recorded on its watermark and never stops the others.
    """
    try:
        now = now or utcnow()
        seconds = current_app.config.get("RECONCILE_INTERVAL_SECONDS", DEFAULT_INTERVAL_SECONDS)
        interval = timedelta(seconds=float(seconds))
        results = []
        for target in pollable_stores():
            if not due(target, now, interval):
                continue
            results.append(asdict(_guarded_pass(target, now=now)))
        return results
    finally:
        db.session.remove()


def _guarded_pass(target: Pollable, since: datetime | None = None, now: datetime | None = None) -> PassResult:
    """`run_pass`, with anything unforeseen recorded on the store rather than ending the other stores' passes."""
    try:
        with logs.for_store(target.store.platform, target.store.domain):
            return run_pass(target, since=since, now=now)
    except Exception as error:  # noqa: BLE001 - one store's trouble must not stop the others
        db.session.rollback()
        # The type only: a database error's text carries the statement's parameters, i.e. the order.
        logger.error("reconcile store=%s failed: %s", target.store.domain, type(error).__name__)
        result = PassResult(store=target.store.domain, platform=target.store.platform,
                            error=f"unexpected error ({type(error).__name__})")
        mark = db.session.get(Watermark, target.store.id)
        result.watermark = as_utc(mark.reached) if mark is not None else (now or utcnow()) - DEFAULT_LOOK_BACK
        try:
            record(target.store, result, now or utcnow())
        except Exception:  # noqa: BLE001 - the database itself may be what failed
            db.session.rollback()
        return result


def parse_since(text: str) -> datetime:
    """`--since`: an ISO date or date-time; without a zone, UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date such as 2024-05-01 or 2024-05-01T10:00") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def selected(targets: list[Pollable], store_name: str | None) -> Iterator[Pollable]:
    # A one-shop deployment's store is the environment's: `default` names it whatever its key.
    for target in targets:
        if store_name in (None, "default") or target.store.domain == store_name.lower():
            yield target


@click.command("reconcile")
@click.option("--store", "store_name",
              help="The store's key (e.g. shop.example.com); every pollable store if left out.")
@click.option("--since", "since_text", metavar="ISO-DATE",
              help="Read from this date instead of the watermark (what is in already is a duplicate).")
def reconcile_command(store_name: str | None, since_text: str | None) -> None:
    """Poll the shops' platforms now for what their webhooks missed: one pass per store, one line each."""
    since = parse_since(since_text) if since_text else None
    targets = list(selected(pollable_stores(), store_name))
    if not targets:
        which = f"store {store_name} is unknown or" if store_name and store_name != "default" else "no store is"
        click.echo(f"error: {which} not pollable: set WOOCOMMERCE_URL, WOOCOMMERCE_CONSUMER_KEY and "
                   "WOOCOMMERCE_CONSUMER_SECRET, or SHOPIFY_ACCESS_TOKEN, or STRIPE_API_KEY", err=True)
        sys.exit(2)
    failed = False
    for target in targets:
        result = _guarded_pass(target, since=since)
        click.echo(result.line())
        failed |= result.error is not None
    if failed:
        sys.exit(1)
