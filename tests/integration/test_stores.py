"""Three stores on one connector, end to end: a Shopify, a WooCommerce and a Stripe store set up with `flask
stores set`, each with its own webhook secret and IX account (three sandboxes), served by one gunicorn and one
worker whose environment holds no platform or IX setting at all; webhooks at once and twice each, deliveries
naming the wrong store, and SECRET_KEY rotated between two rounds of orders."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa

from devtools import stripe_fake, woocommerce_fake
from tests.integration import services
from tests.integration.conftest import REPO_ROOT
from tests.test_webhooks_woocommerce import woo_order

pytestmark = pytest.mark.timeout(300)

FIXTURES = REPO_ROOT / "tests" / "fixtures"

OLD_KEY = "integration-old-secret-key-0123456789"
NEW_KEY = "integration-new-secret-key-9876543210"
WRONG_KEY = "integration-wrong-secret-key-000000"

ALPHA = "alpha.myshopify.com"
BETA = "beta.example"  # the WooCommerce site's host, as its X-WC-Webhook-Source names it
GAMMA = "gamma"  # the Stripe store's chosen name: its webhooks go to /webhooks/stripe/gamma

SHOPIFY_SECRET = "alpha-shopify-webhook-secret-0123"
WOO_SECRET = "beta-woocommerce-webhook-secret-0123"
STRIPE_SECRET = "whsec_gamma_0123456789abcdef"
WOO_KEY, WOO_SECRET_KEY = "ck_beta_0123456789abcdef", "cs_beta_0123456789abcdef"
STRIPE_API_KEY = "rk_live_gamma_0123456789abcdef"
IX_KEYS = {ALPHA: "ix-key-alpha-0123456789", BETA: "ix-key-beta-0123456789", GAMMA: "ix-key-gamma-0123456789"}
PLATFORMS = {ALPHA: "shopify", BETA: "woocommerce", GAMMA: "stripe"}

# Every setting a store could take from the environment: none of them is there, so each store is served only
# with what `stores set` gave it (and a variable left in the shell that runs the tests cannot leak in).
UNSET = ("SHOPIFY_WEBHOOK_SECRET", "WOOCOMMERCE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET", "INVOICEXPRESS_ACCOUNT",
         "INVOICEXPRESS_API_KEY", "INVOICEXPRESS_BASE_URL", "WOOCOMMERCE_URL", "WOOCOMMERCE_CONSUMER_KEY",
         "WOOCOMMERCE_CONSUMER_SECRET", "STRIPE_API_KEY", "STRIPE_API_BASE_URL", "SHOPIFY_ACCESS_TOKEN",
         "SHOPIFY_API_BASE_URL", "ADMIN_PASSWORD", "METRICS_TOKEN", "SENTRY_DSN", "ALERT_EMAIL", "SMTP_URL",
         "ALERT_WEBHOOK_URL")
SECRETS = (SHOPIFY_SECRET, WOO_SECRET, STRIPE_SECRET, WOO_KEY, WOO_SECRET_KEY, STRIPE_API_KEY, *IX_KEYS.values(),
           OLD_KEY, NEW_KEY, WRONG_KEY)


def flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "wsgi", *args]


class Stores:
    """The running connector, its three stores and their sandboxes and fakes, as a user would see them."""

    def __init__(self, procs, env: dict[str, str | None], sandboxes: dict[str, str], woo, stripe):
        self.procs, self.env = procs, env
        self.sandboxes, self.woo, self.stripe = sandboxes, woo, stripe
        self.engine = sa.create_engine(env["DATABASE_URL"], poolclass=sa.pool.NullPool)
        self.web = self.worker = None
        self.url = ""

    def start(self, secret_key: str) -> None:
        """gunicorn and the worker with SECRET_KEY `secret_key`, started together."""
        env = {**self.env, "SECRET_KEY": secret_key}
        port = services.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.web = self.procs("web", [services.bin_path("gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{port}",
                                      "--workers", "2"], env=env)
        self.worker = self.procs("worker", flask("worker"), env=env)
        self.web.wait_for_http(f"{self.url}/healthz", timeout=30)
        self.worker.wait_for_log(r"Listening on", timeout=30)

    def stop(self) -> None:
        for proc in (self.web, self.worker):
            proc.terminate(timeout=15)

    def rows(self, sql: str, **params) -> list:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql), params))

    def documents(self, store: str) -> list[dict]:
        """What the store's own IX account (its sandbox) holds."""
        return requests.get(f"{self.sandboxes[store]}/_sandbox/documents", timeout=5).json()

    def all_issued(self, counts: dict[str, int]) -> bool:
        """Each sandbox holds its store's count of documents, each settled and e-mailed, and all are done here."""
        for store, count in counts.items():
            documents = self.documents(store)
            if len(documents) != count or not all(d["status"] == "settled" and d["emails"] for d in documents):
                return False
        done = self.rows("SELECT state, count(*) FROM documents GROUP BY state")
        return done == [("done", sum(counts.values()))]

    def wait_until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; documents="
                             f"{self.rows('SELECT store_id, source_key, state FROM documents')}\n"
                             f"worker log:\n{self.worker.output(6000)}")

    def events(self) -> int:
        return self.rows("SELECT count(*) FROM webhook_events")[0][0]

    # --- deliveries as each platform makes them ---------------------------------------------------------

    def post_shopify(self, order: dict, event_id: str, secret: str = SHOPIFY_SECRET, shop: str = ALPHA):
        body = json.dumps(order).encode()
        digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/paid",
                   "X-Shopify-Hmac-Sha256": digest, "X-Shopify-Shop-Domain": shop, "X-Shopify-Event-Id": event_id,
                   "X-Shopify-Webhook-Id": str(uuid.uuid4())}
        return requests.post(f"{self.url}/webhooks/shopify", data=body, headers=headers, timeout=15)

    def post_woocommerce(self, order: dict, secret: str = WOO_SECRET, site: str = BETA):
        return woocommerce_fake.deliver(f"{self.url}/webhooks/woocommerce", order, secret, topic="order.created",
                                        source=f"https://{site}/", timeout=15)

    def post_stripe(self, event: dict, secret: str = STRIPE_SECRET, path: str = f"/webhooks/stripe/{GAMMA}"):
        return stripe_fake.deliver(f"{self.url}{path}", event, secret, timeout=15)


def start_stores(clean_db: str, clean_redis: str, procs) -> Stores:
    """Three sandboxes and the two fakes, the migrations, the three stores set, then the web and the worker."""
    env: dict[str, str | None] = {
        **dict.fromkeys(UNSET), "DATABASE_URL": clean_db, "REDIS_URL": clean_redis, "SECRET_KEY": OLD_KEY,
        "DOCUMENT_LEASE_SECONDS": "4", "SWEEP_INTERVAL_SECONDS": "2", "LOG_LEVEL": "INFO",
        "RETRY_BASE_SECONDS": "2", "RECONCILE_INTERVAL_SECONDS": "2",
    }
    ports = {name: services.free_port() for name in (*IX_KEYS, "woocommerce", "stripe")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    # Everything that needs nothing else starts at once: each mostly waits on Python's imports.
    waits = []
    for store, key in IX_KEYS.items():
        proc = procs(f"sandbox-{store}", [sys.executable, "-m", "devtools.invoicexpress_sandbox", "--host",
                                          "127.0.0.1", "--port", str(ports[store]), "--api-key", key])
        waits.append((proc, f"{urls[store]}/_sandbox/documents"))
    woo = procs("woocommerce", [sys.executable, "-m", "devtools.woocommerce_fake", "--host", "127.0.0.1", "--port",
                                str(ports["woocommerce"]), "--consumer-key", WOO_KEY,
                                "--consumer-secret", WOO_SECRET_KEY])
    stripe = procs("stripe", [sys.executable, "-m", "devtools.stripe_fake", "--host", "127.0.0.1", "--port",
                              str(ports["stripe"]), "--api-key", STRIPE_API_KEY])
    waits += [(woo, f"{urls['woocommerce']}/_fake/calls"), (stripe, f"{urls['stripe']}/_fake/calls")]
    upgrade = procs("migrate", flask("db", "upgrade"), env=env)
    assert upgrade.wait(timeout=60) == 0, upgrade.output()

    def account(store: str) -> list[str]:
        return [f"invoicexpress_base_url={urls[store]}", f"invoicexpress_api_key={IX_KEYS[store]}"]

    commands = {
        ALPHA: ["--platform", "shopify", f"shopify_webhook_secret={SHOPIFY_SECRET}", *account(ALPHA)],
        BETA: ["--platform", "woocommerce", f"woocommerce_webhook_secret={WOO_SECRET}",
               f"woocommerce_url={urls['woocommerce']}", f"woocommerce_consumer_key={WOO_KEY}",
               f"woocommerce_consumer_secret={WOO_SECRET_KEY}", *account(BETA)],
        GAMMA: ["--platform", "stripe", f"stripe_webhook_secret={STRIPE_SECRET}",
                f"stripe_api_key={STRIPE_API_KEY}",
                f"stripe_api_base_url={urls['stripe']}", *account(GAMMA)],
    }
    setters = [procs(f"stores-set-{store}", flask("stores", "set", store, *args), env=env)
               for store, args in commands.items()]
    for setter in setters:
        assert setter.wait(timeout=60) == 0, setter.output()
        assert not [s for s in SECRETS if s in setter.output()], "`stores set` printed a secret"
    for proc, url in waits:
        proc.wait_for_http(url, timeout=30)
    running = Stores(procs, env, {store: urls[store] for store in IX_KEYS},
                     woocommerce_fake.Control(urls["woocommerce"], WOO_KEY, WOO_SECRET_KEY),
                     stripe_fake.Control(urls["stripe"]))
    running.start(OLD_KEY)
    return running


@pytest.fixture
def three_stores(clean_db, clean_redis, procs):
    running = start_stores(clean_db, clean_redis, procs)
    yield running
    running.engine.dispose()


# --- orders, one kind per store ---------------------------------------------------------------------------


def shopify_order(n: int) -> dict:
    order = json.loads((FIXTURES / "shopify" / "paid_b2c_tax_included.json").read_text(encoding="utf-8"))
    order_id = 5801234568000 + n
    order.update(id=order_id, admin_graphql_api_id=f"gid://shopify/Order/{order_id}", name=f"#{1000 + n}",
                 order_number=1000 + n, number=n)
    return order


def woocommerce_order(n: int) -> dict:
    # Modified a moment ago, so that reconciliation's first pass (a day back) reads it too.
    moment = (datetime.now(UTC) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
    return woo_order(order_id=4000 + n, modified=moment, date_created=moment, date_created_gmt=moment,
                     date_paid=moment, date_paid_gmt=moment)


def stripe_event(stripe, n: int) -> dict:
    """A paid session's completed event (as sent: without its lines), the session put in the fake first."""
    event = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text(encoding="utf-8"))
    session = event["data"]["object"]
    session["id"] = f"cs_live_gamma{n:04d}"
    session["payment_intent"] = f"pi_gamma{n:04d}"
    lines = session.pop("line_items")["data"]
    stripe.add_session(copy.deepcopy(session), lines)
    event["id"] = f"evt_gamma{n:04d}"
    return event


def sale_uids(store: str, order_ids) -> set[str]:
    """The IX idempotency keys of the stores' sales: `platform:store:order:<id>:receipt`."""
    return {f"{PLATFORMS[store]}:{store}:order:{order_id}:receipt" for order_id in order_ids}


class Tally:
    """Every webhook answer per store, for the asserts and the summary lines."""

    def __init__(self):
        self.answers: dict[str, list[str]] = {store: [] for store in PLATFORMS}

    def deliver_all(self, stores: Stores, first: int, count: int) -> dict[str, list]:
        """`count` new orders per store, each delivered twice, all at once; gives each store's order ids."""
        deliveries, ids = [], {store: [] for store in PLATFORMS}
        for n in range(first, first + count):
            shop, site, sale = shopify_order(n), woocommerce_order(n), stripe_event(stores.stripe, n)
            event_id = str(uuid.uuid4())
            ids[ALPHA].append(shop["id"])
            ids[BETA].append(site["id"])
            ids[GAMMA].append(sale["data"]["object"]["payment_intent"])
            for _ in range(2):
                deliveries += [(ALPHA, lambda o=shop, e=event_id: stores.post_shopify(o, e)),
                               (BETA, lambda o=site: stores.post_woocommerce(o)),
                               (GAMMA, lambda o=sale: stores.post_stripe(o))]
        with ThreadPoolExecutor(max_workers=len(deliveries)) as pool:
            answers = list(pool.map(lambda delivery: delivery[1](), deliveries))
        for (store, _), answer in zip(deliveries, answers, strict=True):
            assert answer.status_code == 200, (store, answer.status_code, answer.text)
            self.answers[store].append(answer.json()["status"])
        # The shop has the orders too: reconciliation, polling it meanwhile, finds only what the webhooks brought.
        for n in range(first, first + count):
            stores.woo.add_order(woocommerce_order(n))
        return ids

    def counts(self, store: str) -> Counter:
        return Counter(self.answers[store])


def check_issued(stores: Stores, ids: dict[str, list]) -> dict[str, dict]:
    """Each store's orders issued once each, in its own account only; gives the figures per store."""
    figures = {}
    for store in PLATFORMS:
        mine = sale_uids(store, ids[store])
        documents = stores.documents(store)
        assert sorted(d["proprietary_uid"] for d in documents) == sorted(mine), store
        assert all(d["status"] == "settled" and len(d["emails"]) == 1 for d in documents), documents
        if store == ALPHA:  # alone on its account, the store's references are its orders' names, unprefixed
            assert sorted(d["reference"] for d in documents) == [f"#{1000 + n}" for n in range(1, len(mine) + 1)]
        elsewhere = [d for other in PLATFORMS if other != store for d in stores.documents(other)
                     if d["proprietary_uid"].startswith(f"{PLATFORMS[store]}:{store}:")]
        figures[store] = {"ix_documents": len(documents), "other_accounts": len(elsewhere)}
        assert elsewhere == []
    return figures


def test_three_stores_on_one_connector_each_issue_into_their_own_account_through_a_key_rotation(three_stores):
    stores, tally = three_stores, Tally()

    # Round one: two orders per store, each delivered twice, the twelve deliveries all at once.
    ids = tally.deliver_all(stores, first=1, count=2)
    for store in PLATFORMS:
        assert tally.counts(store) == Counter(accepted=2, duplicate=2), (store, tally.answers[store])
    stores.wait_until(lambda: stores.all_issued({store: 2 for store in PLATFORMS}), timeout=90,
                      what="two invoices in each store's account")
    check_issued(stores, ids)

    # Deliveries naming one store signed with another's secret are refused; a store no one set up is unknown.
    before = stores.events()
    stray = shopify_order(90)
    refused = {
        "shopify naming alpha, signed with beta's secret": stores.post_shopify(stray, "evt-a", secret=WOO_SECRET),
        "woocommerce from beta, signed with gamma's secret": stores.post_woocommerce(woocommerce_order(90),
                                                                                    secret=STRIPE_SECRET),
        "stripe to /gamma, signed with alpha's secret": stores.post_stripe(stripe_event(stores.stripe, 90),
                                                                           secret=SHOPIFY_SECRET),
    }
    unknown = {
        "shopify naming an unknown shop, signed with alpha's": stores.post_shopify(stray, "evt-b",
                                                                                   shop="nobody.myshopify.com"),
        "woocommerce from an unknown site, signed with beta's": stores.post_woocommerce(woocommerce_order(91),
                                                                                       site="nobody.example"),
        "stripe to /stripe (no default store), signed with gamma's": stores.post_stripe(
            stripe_event(stores.stripe, 91), path="/webhooks/stripe"),
        "stripe to /stripe/nobody, signed with gamma's": stores.post_stripe(stripe_event(stores.stripe, 92),
                                                                            path="/webhooks/stripe/nobody"),
    }
    assert {what: a.status_code for what, a in refused.items()} == dict.fromkeys(refused, 401)
    assert {what: a.status_code for what, a in unknown.items()} == dict.fromkeys(unknown, 404)
    assert stores.events() == before

    # Key rotation: the web and the worker stopped, the secrets re-encrypted with a new key, which alone serves.
    stores.stop()
    wrong = {**stores.env, "SECRET_KEY": WRONG_KEY}
    refusing = [stores.procs("web-wrong-key", [services.bin_path("gunicorn"), "wsgi:app", "--bind",
                                               f"127.0.0.1:{services.free_port()}", "--workers", "1"], env=wrong),
                stores.procs("worker-wrong-key", flask("worker"), env=wrong)]
    rotate = stores.procs("rotate-key", flask("stores", "rotate-key"),
                          env={**stores.env, "SECRET_KEY": f"{NEW_KEY},{OLD_KEY}"})
    assert rotate.wait(timeout=60) == 0, rotate.output()
    assert "re-encrypted the secrets of 3 stores" in rotate.output()
    for proc in refusing:
        assert proc.wait(timeout=60) != 0, proc.output()
        said = proc.output()
        assert "cannot start" in said, said
        for store in PLATFORMS:
            assert f"store {store} ({PLATFORMS[store]})" in said and "cannot be read with SECRET_KEY" in said, said
    stores.start(NEW_KEY)

    # Round two, after the rotation: one more order per store, again twice each and all at once.
    more = tally.deliver_all(stores, first=3, count=1)
    assert tally.counts(ALPHA) == tally.counts(BETA) == tally.counts(GAMMA) == Counter(accepted=3, duplicate=3)
    stores.wait_until(lambda: stores.all_issued({store: 3 for store in PLATFORMS}), timeout=90,
                      what="the third invoice in each store's account")
    time.sleep(4)  # two sweeps and reconciliation beats: nothing more appears anywhere
    figures = check_issued(stores, {store: ids[store] + more[store] for store in PLATFORMS})
    assert stores.all_issued({store: 3 for store in PLATFORMS})
    webhook_events = dict(stores.rows(
        "SELECT s.domain, count(*) FROM webhook_events e JOIN stores s ON s.id = e.store_id "
        "WHERE e.source = 'webhook' GROUP BY s.domain"))
    assert webhook_events == dict.fromkeys(PLATFORMS, 3)
    # Reconciliation read the WooCommerce site and the Stripe account with their stores' own credentials, and
    # had nothing to read for the Shopify store (no access token).
    polled = dict(stores.rows(
        "SELECT s.domain, w.last_error FROM watermarks w JOIN stores s ON s.id = w.store_id"))
    assert polled == {BETA: None, GAMMA: None}

    logs = "".join(proc.output() for proc in (stores.web, stores.worker, *refusing, rotate))
    assert [s for s in SECRETS if s in logs] == []

    for store in PLATFORMS:
        counted = tally.counts(store)
        print(f"store={store} deliveries={len(tally.answers[store])} duplicates={counted['duplicate']} "
              f"ix_documents={figures[store]['ix_documents']} other_accounts={figures[store]['other_accounts']}")
