"""Fixtures for the integration tier: real PostgreSQL, Redis and subprocesses, all on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

# Import the helpers as tests.integration.services whatever pytest's import mode or whether
# tests/ has __init__.py files, so conftest and test modules share one module (and one registry).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from devtools import stripe_fake as stripe_fake_server  # noqa: E402
from devtools import woocommerce_fake  # noqa: E402
from tests.integration import services  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # Also registered in pyproject.toml; repeated so this directory works without it (e.g. --strict-markers).
    config.addinivalue_line("markers", "integration: real PostgreSQL, Redis and processes")
    # CI timeouts send SIGTERM, which by default kills pytest without running fixture finalisers or
    # atexit hooks and would leave the daemonised postmaster behind; turn it into an interrupt.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"received signal {signum}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, not just ours: only mark tests in this tree.
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


class ExternalService:
    """An already-running server named by an env var: usable, but the tests can't stop/start it."""

    managed = False

    def __init__(self, url: str, env_var: str):
        self.url = url
        self.env_var = env_var

    def __repr__(self) -> str:
        return f"<ExternalService {self.env_var}={self.url}>"

    def stop(self, *args, **kwargs) -> None:
        pytest.skip(f"outage simulation needs a server started by the tests, not {self.env_var}")

    start = stop

    def ensure_running(self) -> None:
        pass

    def output(self, tail: int | None = None) -> str:
        return f"(external server from {self.env_var}; no log available)"


def _sqlalchemy_psycopg_url(url: str) -> str:
    # Accept the libpq-style URLs people keep in their shells; SQLAlchemy's default for
    # postgresql:// is psycopg2, which this project doesn't install.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """Session-wide PostgreSQL: ``.url`` (postgresql+psycopg://...), ``.stop(mode)``, ``.start()``."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield ExternalService(_sqlalchemy_psycopg_url(external), "TEST_DATABASE_URL")
        return
    server = services.start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """Session-wide Redis: ``.url`` (redis://127.0.0.1:PORT/0), ``.stop()``, ``.start()``."""
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        yield ExternalService(external, "TEST_REDIS_URL")
        return
    server = services.start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clean_db(postgres) -> str:
    """An empty ``public`` schema; returns the database URL."""
    # A previous test may have left the server stopped after simulating an outage.
    postgres.ensure_running()
    services.reset_schema(postgres.url)
    return postgres.url


@pytest.fixture
def clean_redis(redis_server) -> str:
    """An empty Redis (FLUSHALL); returns the Redis URL."""
    redis_server.ensure_running()
    services.flush_redis(redis_server.url)
    return redis_server.url


@pytest.fixture
def procs(tmp_path: Path):
    """Factory ``procs(name, argv, env=None, cwd=REPO_ROOT) -> services.Proc``; every process group
    it started is SIGKILLed when the test ends, and their logs are printed (shown if the test failed)."""
    started: list[services.Proc] = []

    def start(
        name: str,
        argv: list[str],
        env: dict[str, str | None] | None = None,
        cwd: str | os.PathLike = REPO_ROOT,
    ) -> services.Proc:
        # The repo root on PYTHONPATH so `python -m connector...`, gunicorn and rq can import the app.
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {"PYTHONPATH": pythonpath, **(env or {})}
        proc = services.Proc(name, argv, logdir=tmp_path / "procs", env=env, cwd=cwd)
        started.append(proc)
        return proc

    yield start

    errors = []
    for proc in started:
        try:
            proc.kill()
        except Exception as exc:  # noqa: BLE001 - kill the rest before reporting
            errors.append(exc)
        print(f"----- {proc.name} {proc.argv} rc={proc.returncode} ({proc.log_path})\n{proc.output(20000)}")
    if errors:
        raise errors[0]


# --- The running connector: sandbox, migrations, gunicorn and an RQ worker process -------------------

SECRET = "integration-shopify-secret"
API_KEY = "integration-ix-key"


class Connector:
    """The running connector and the sandbox it issues to, as a user would see them."""

    def __init__(self, procs, env: dict[str, str], web_port: int, sandbox_url: str):
        self.procs = procs
        self.env = env
        self.url = f"http://127.0.0.1:{web_port}"
        self.sandbox_url = sandbox_url
        self.engine = sa.create_engine(env["DATABASE_URL"], poolclass=sa.pool.NullPool)
        self.worker = None

    def start_worker(self, wait: bool = True):
        argv = [sys.executable, "-m", "flask", "--app", "wsgi", "worker"]
        self.worker = self.procs("worker", argv, env=self.env)
        if wait:
            self.worker.wait_for_log(r"Listening on", timeout=30)
        return self.worker

    def post(self, body: bytes, event_id: str | None = None, secret: str = SECRET, topic="orders/paid"):
        digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        headers = {
            "Content-Type": "application/json", "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": digest,
            "X-Shopify-Shop-Domain": "integration.myshopify.com",
            "X-Shopify-Event-Id": event_id or str(uuid.uuid4()), "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        }
        return requests.post(f"{self.url}/webhooks/shopify", data=body, headers=headers, timeout=10)

    def rows(self, sql: str) -> list:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql)))

    def ix_documents(self) -> list[dict]:
        return requests.get(f"{self.sandbox_url}/_sandbox/documents", timeout=5).json()

    def fault(self, **rule) -> None:
        requests.post(f"{self.sandbox_url}/_sandbox/faults", json=[rule], timeout=5).raise_for_status()

    def wait_until(self, condition, timeout: float = 60, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        logs = self.worker.output(6000) if self.worker else ""
        raise AssertionError(f"timed out waiting for {what}; documents={self.rows('SELECT * FROM documents')}"
                             f"\nworker log:\n{logs}")

    def settled_and_emailed(self):
        """IX's documents once all are settled and e-mailed and our own records say done, else None.

        IX's side alone is not enough: the e-mail lands a moment before the row moves to done.
        """
        documents = self.ix_documents()
        if not documents or not all(d["status"] == "settled" and d["emails"] for d in documents):
            return None
        states = {state for (state,) in self.rows("SELECT state FROM documents")}
        return documents if states == {"done"} else None


def start_connector(clean_db: str, clean_redis: str, procs, **extra_env: str):
    """The sandbox, migrations, gunicorn and a worker, with `extra_env` over the usual settings."""
    sandbox_port, web_port = services.free_port(), services.free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = {
        "DATABASE_URL": clean_db, "REDIS_URL": clean_redis, "SHOPIFY_WEBHOOK_SECRET": SECRET,
        "INVOICEXPRESS_API_KEY": API_KEY, "INVOICEXPRESS_BASE_URL": sandbox_url,
        "DOCUMENT_LEASE_SECONDS": "4", "SWEEP_INTERVAL_SECONDS": "2", "LOG_LEVEL": "INFO",
        # Retries after about 2, 4 and 8 s: the backoff's doubling is what is tested, not its first wait.
        "RETRY_BASE_SECONDS": "2",
        **extra_env,
    }
    # Started two at a time (each waits mostly on Python's imports): the sandbox with the migrations, then
    # the web with the worker, which both need the schema.
    sandbox = procs("sandbox", [sys.executable, "-m", "devtools.invoicexpress_sandbox", "--host", "127.0.0.1",
                                "--port", str(sandbox_port), "--api-key", API_KEY])
    upgrade = procs("migrate", [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], env=env)
    assert upgrade.wait(timeout=60) == 0, upgrade.output()
    sandbox.wait_for_http(f"{sandbox_url}/_sandbox/documents", timeout=20)
    web = procs("web", [services.bin_path("gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{web_port}",
                        "--workers", "2"], env=env)
    running = Connector(procs, env, web_port, sandbox_url)
    running.start_worker(wait=False)
    web.wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout=30)
    running.worker.wait_for_log(r"Listening on", timeout=30)
    return running


@pytest.fixture
def connector(clean_db, clean_redis, procs):
    running = start_connector(clean_db, clean_redis, procs)
    yield running
    running.engine.dispose()


# --- WooCommerce: its REST API faked in a process, and the connector with WooCommerce on ----------------

WOO_SECRET = "integration-woocommerce-secret"
WOO_CONSUMER_KEY = "ck_integration_0123456789"
WOO_CONSUMER_SECRET = "cs_integration_0123456789"


@pytest.fixture
def woo_fake(procs) -> woocommerce_fake.Control:
    """`python -m devtools.woocommerce_fake` on a port of its own, with the consumer key and secret below."""
    port = services.free_port()
    fake = procs("woocommerce", [sys.executable, "-m", "devtools.woocommerce_fake", "--host", "127.0.0.1",
                                 "--port", str(port), "--consumer-key", WOO_CONSUMER_KEY,
                                 "--consumer-secret", WOO_CONSUMER_SECRET])
    url = f"http://127.0.0.1:{port}"
    fake.wait_for_http(f"{url}/_fake/calls", timeout=20)
    return woocommerce_fake.Control(url, WOO_CONSUMER_KEY, WOO_CONSUMER_SECRET)


class WooConnector(Connector):
    """The running connector with WooCommerce on, its REST API the fake's."""

    def __init__(self, running: Connector, woo: woocommerce_fake.Control):
        self.__dict__.update(running.__dict__)
        self.woo = woo

    def post_woocommerce(self, order: dict, topic: str = "order.created", secret: str = WOO_SECRET):
        """Deliver `order` as WooCommerce does (its JSON, headers and signature), from the fake's site."""
        return woocommerce_fake.deliver(f"{self.url}/webhooks/woocommerce", order, secret, topic=topic,
                                        source=f"{self.woo.url}/")


@pytest.fixture
def woo_connector(clean_db, clean_redis, procs, woo_fake):
    running = start_connector(
        clean_db, clean_redis, procs, WOOCOMMERCE_WEBHOOK_SECRET=WOO_SECRET, WOOCOMMERCE_URL=woo_fake.url,
        WOOCOMMERCE_CONSUMER_KEY=WOO_CONSUMER_KEY, WOOCOMMERCE_CONSUMER_SECRET=WOO_CONSUMER_SECRET,
        RECONCILE_INTERVAL_SECONDS="2", WOOCOMMERCE_READ_TIMEOUT="3",
    )
    yield WooConnector(running, woo_fake)
    running.engine.dispose()


# --- Stripe: its REST API faked in a process, and the connector with Stripe on --------------------------

STRIPE_SECRET = "whsec_integration_0123456789"
STRIPE_API_KEY = "rk_live_integration_0123456789"
# Short, so that a slow answer from the fake is a read timeout to the connector within a test's time.
STRIPE_READ_TIMEOUT = 1


@pytest.fixture
def stripe_fake(procs) -> stripe_fake_server.Control:
    """`python -m devtools.stripe_fake` on a port of its own, taking the API key below."""
    port = services.free_port()
    fake = procs("stripe", [sys.executable, "-m", "devtools.stripe_fake", "--host", "127.0.0.1",
                            "--port", str(port), "--api-key", STRIPE_API_KEY])
    url = f"http://127.0.0.1:{port}"
    fake.wait_for_http(f"{url}/_fake/calls", timeout=20)
    return stripe_fake_server.Control(url)


class StripeConnector(Connector):
    """The running connector with Stripe on, its REST API the fake's."""

    def __init__(self, running: Connector, stripe: stripe_fake_server.Control):
        self.__dict__.update(running.__dict__)
        self.stripe = stripe

    def post_stripe(self, event: dict, secret: str = STRIPE_SECRET, store: str | None = None):
        """Deliver `event` as Stripe does (its JSON, headers and a fresh signature) to the store's endpoint."""
        path = "/webhooks/stripe" if store is None else f"/webhooks/stripe/{store}"
        return stripe_fake_server.deliver(f"{self.url}{path}", event, secret)


@pytest.fixture
def stripe_connector(clean_db, clean_redis, procs, stripe_fake):
    running = start_connector(
        clean_db, clean_redis, procs, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET, STRIPE_API_KEY=STRIPE_API_KEY,
        STRIPE_API_BASE_URL=stripe_fake.url, STRIPE_READ_TIMEOUT=str(STRIPE_READ_TIMEOUT),
    )
    yield StripeConnector(running, stripe_fake)
    running.engine.dispose()
