"""Alerts: one e-mail (to a local SMTP server) and one webhook call per problem, whoever runs them; the digest."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from rq import Queue

from config.settings import ConfigError, from_env
from connector import alerts, create_app, reconcile, worker
from connector.extensions import db
from connector.models import Alert, Document, DocumentEvent, DocumentState, Store, Watermark, WebhookEvent
from tests.conftest import settings, tables_of

SMTP_USER = "alerts-user"
SMTP_PASSWORD = "smtp-password-s3cret"
ALERT_EMAIL = "ops@example.com"
CUSTOMER_EMAIL = "maria.silva@example.pt"
CUSTOMER_NIF = "123456789"
IX_API_KEY = "test-api-key-0123456789"  # the environment's, as tests/conftest.py sets it
STORE = "test-store.myshopify.com"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MailInbox:
    """What the local SMTP server accepted, after a login with the right password."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == (SMTP_USER, SMTP_PASSWORD))

    def texts(self) -> list[str]:
        return [f"{m['Subject']}\n{m.get_content()}" for m in self.messages]


@pytest.fixture(scope="module")
def smtp_server():
    inbox = MailInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), authenticator=inbox.authenticate,
                            auth_require_tls=False)
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def mail(smtp_server):
    controller, inbox = smtp_server
    inbox.messages.clear()
    inbox.logins.clear()
    inbox.url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{controller.port}"
    return inbox


class Receiver:
    """A Slack-style incoming webhook: the JSON bodies it was posted, answering `status`."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.status = 200

    def texts(self) -> list[str]:
        return [body["text"] for body in self.bodies]


@pytest.fixture(scope="module")
def webhook_server():
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if receiver.status == 200:
                receiver.bodies.append(json.loads(body))
            self.send_response(receiver.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/services/T000/B000/hook-token-0123456789"
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def hook(webhook_server):
    webhook_server.bodies.clear()
    webhook_server.status = 200
    return webhook_server


@pytest.fixture
def environ(tmp_path, mail, hook):
    # The digest is off but where a test is about it, so that the others count only the problems' alerts.
    return settings(DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}", ALERT_EMAIL=ALERT_EMAIL,
                    SMTP_URL=mail.url, ALERT_WEBHOOK_URL=hook.url, ALERT_DIGEST_HOUR="off")


@pytest.fixture
def app(redis, environ):
    app = create_app(overrides={"REDIS_CONNECTION": redis}, environ=environ)
    with tables_of(app):
        yield app


@pytest.fixture
def other_app(app, redis, environ):
    """A second instance on the same database and Redis, as a second worker dyno (or a restarted one) is."""
    return create_app(overrides={"REDIS_CONNECTION": redis}, environ=environ)


@contextmanager
def inside(app):
    with app.app_context():
        try:
            yield
        finally:
            db.session.remove()
            db.engine.dispose()


def run_in(app, now: datetime | None = None) -> dict:
    with inside(app):
        return alerts.run(now)


def make_document(state: str, order_ref: str = "#1001", last_error: str | None = None,
                  created_at: datetime | None = None, domain: str = STORE) -> int:
    store = db.session.scalar(sa.select(Store).where(Store.domain == domain))
    if store is None:
        store = Store(platform="shopify", domain=domain)
        db.session.add(store)
        db.session.flush()
    event = WebhookEvent(store_id=store.id, platform="shopify", event_key=uuid.uuid4().hex, topic="orders/paid",
                         body=b"{}", status="processed")
    db.session.add(event)
    db.session.flush()
    document = Document(store_id=store.id, source_key=f"order:{uuid.uuid4().hex[:8]}:receipt", event_id=event.id,
                        doc_type="invoice_receipts", order_ref=order_ref, state=state,
                        proprietary_uid=uuid.uuid4().hex, last_error=last_error,
                        created_at=created_at or datetime.now(UTC))
    db.session.add(document)
    db.session.commit()
    return document.id


def set_state(document_id: int, state: str) -> None:
    db.session.get(Document, document_id).state = state
    db.session.commit()


HOLD_REASON = "The customer's tax number is not valid for their country; correct it, then retry."


def test_a_held_document_is_told_once_by_email_and_webhook_however_often_and_wherever_alerts_run(
        app, other_app, mail, hook):
    document_id = make_document(DocumentState.HELD, "#1001", HOLD_REASON)

    for instance in (app, other_app, app, other_app, app):
        run_in(instance)

    assert len(mail.messages) == 1
    assert len(hook.bodies) == 1
    message = mail.messages[0]
    assert message["To"] == ALERT_EMAIL
    assert mail.logins == [(SMTP_USER, SMTP_PASSWORD)]
    for text in (mail.texts()[0], hook.texts()[0]):
        assert STORE in text
        assert "#1001" in text
        assert f"document {document_id}" in text
        assert "tax number is not valid" in text
    assert db.session.scalar(sa.select(sa.func.count(Alert.id))) == 1


def test_a_worker_killed_while_sending_leaves_the_alert_to_another_after_its_lease(app, mail, hook):
    make_document(DocumentState.HELD, "#1001", HOLD_REASON)
    now = datetime.now(UTC)
    with inside(app):
        alerts.review(now)
        alert_id = db.session.scalar(sa.select(Alert.id))
        # A worker claims the sending and dies before it sends anything.
        assert alerts.claim(alert_id, now) is not None
        assert alerts.claim(alert_id, now) is None  # nobody else may take it meanwhile

    run_in(app, now + timedelta(seconds=30))
    assert (len(mail.messages), len(hook.bodies)) == (0, 0)

    run_in(app, now + alerts.SEND_LEASE + timedelta(seconds=1))
    run_in(app, now + alerts.SEND_LEASE + timedelta(seconds=2))
    assert (len(mail.messages), len(hook.bodies)) == (1, 1)


def test_two_workers_seeing_a_new_problem_at_once_open_one_alert(app, other_app):
    make_document(DocumentState.HELD, "#1001", HOLD_REASON)
    with inside(app):
        problem, = alerts.current_problems(datetime.now(UTC))[0]
        # Both looked before either opened it: the second finds the first one's row.
        assert alerts.open_alert(problem, datetime.now(UTC)) == 1
    with inside(other_app):
        assert alerts.open_alert(problem, datetime.now(UTC)) == 0
        assert db.session.scalar(sa.select(sa.func.count(Alert.id))) == 1


def test_a_problem_solved_then_back_is_a_second_alert(app, mail, hook):
    document_id = make_document(DocumentState.HELD, "#1001", HOLD_REASON)
    run_in(app)
    set_state(document_id, DocumentState.DONE)
    run_in(app)
    run_in(app)
    assert len(mail.messages) == 1
    assert db.session.scalar(sa.select(Alert.resolved_at)) is not None

    set_state(document_id, DocumentState.HELD)
    run_in(app)
    run_in(app)
    assert len(mail.messages) == 2
    assert len(hook.bodies) == 2


def test_a_solved_problem_not_yet_sent_is_never_sent(app, mail, hook):
    document_id = make_document(DocumentState.HELD, "#1001", HOLD_REASON)
    app.config.update(ALERT_WEBHOOK_URL=None, SMTP_URL=None)  # nowhere to send yet
    run_in(app)
    set_state(document_id, DocumentState.DONE)
    run_in(app)
    app.config.update(ALERT_WEBHOOK_URL=hook.url, SMTP_URL=mail.url)
    run_in(app)
    assert (len(mail.messages), len(hook.bodies)) == (0, 0)


def test_no_tax_number_customer_email_or_secret_in_any_alert(app, other_app, mail, hook):
    make_document(DocumentState.HELD, "#1001",
                  f"The tax number {CUSTOMER_NIF} (PT{CUSTOMER_NIF}) of {CUSTOMER_EMAIL} is not valid.")
    failed = make_document(DocumentState.FAILED, "#1002",
                           f"InvoiceXpress refused the document: api_key={IX_API_KEY} fiscal_id 123 456 789")
    make_document(DocumentState.PENDING, "#1003", f"Shopify said: {SMTP_PASSWORD}",
                  created_at=datetime.now(UTC) - timedelta(hours=3))
    with inside(app):
        db.session.add(DocumentEvent(document_id=failed, kind="failed", message="refused", status_code=422))
        db.session.commit()
    for instance in (app, other_app):
        instance.config["ALERT_DIGEST_HOUR"] = 0  # the digest goes out now, whatever the hour
        run_in(instance)

    texts = mail.texts() + hook.texts() + list(db.session.scalars(sa.select(Alert.text)))
    assert len(mail.messages) == 4  # held, failed, long open, and the store's digest
    for text in texts:
        for secret in (CUSTOMER_NIF, "123 456 789", CUSTOMER_EMAIL, IX_API_KEY, SMTP_PASSWORD, hook.url,
                       "hook-token-0123456789"):
            assert secret not in text
    joined = "\n".join(mail.texts())
    assert "#1001" in joined and "#1002" in joined and "#1003" in joined


def test_the_digest_is_sent_once_a_day_per_store(app, other_app, mail, hook):
    for instance in (app, other_app):
        instance.config["ALERT_DIGEST_HOUR"] = 8
    make_document(DocumentState.HELD, "#1001", HOLD_REASON)
    make_document(DocumentState.FAILED, "#2001", "InvoiceXpress refused the document: bad date",
                  domain="other-shop.myshopify.com")
    early = datetime(2030, 1, 10, 6, 30, tzinfo=UTC)  # 06:30 in Lisbon: before the digest hour

    def digests() -> list[str]:
        return [text for text in mail.texts() if text.startswith("[invoicing] Daily digest")]

    run_in(app, early)
    assert digests() == []
    nine = datetime(2030, 1, 10, 9, tzinfo=UTC)
    for minutes in (0, 1, 2, 600):  # 09:00 to 19:00, from either instance
        run_in(app if minutes % 2 else other_app, nine + timedelta(minutes=minutes))
    assert len(digests()) == 2
    assert any(STORE in text and "1 held" in text and "#1001" in text for text in digests())
    assert any("other-shop.myshopify.com" in text and "1 failed" in text for text in digests())

    run_in(app, datetime(2030, 1, 11, 9, tzinfo=UTC))
    run_in(other_app, datetime(2030, 1, 11, 9, 5, tzinfo=UTC))
    assert len(digests()) == 4
    # Each problem itself was told once, besides the digests.
    assert len(mail.messages) == 6
    assert len(hook.bodies) == 6


def test_the_digest_day_is_lisbons(app, mail):
    make_document(DocumentState.HELD, "#1001", HOLD_REASON)
    app.config["ALERT_DIGEST_HOUR"] = 0
    # 22:30 UTC on 31 July is 23:30 in Lisbon (summer time); 23:30 UTC is 00:30 on 1 August there: a new day.
    run_in(app, datetime(2030, 7, 31, 22, 30, tzinfo=UTC))
    run_in(app, datetime(2030, 7, 31, 23, 30, tzinfo=UTC))
    digests = [text for text in mail.texts() if "Daily digest" in text]
    assert len(digests) == 2
    assert "2030-07-31" in digests[0] and "2030-08-01" in digests[1]


def test_mail_server_down_is_tried_again_on_a_later_run_and_the_webhook_is_not_repeated(app, mail, hook):
    make_document(DocumentState.HELD, "#1001", HOLD_REASON)
    make_document(DocumentState.HELD, "#1002", HOLD_REASON)
    app.config["SMTP_URL"] = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{free_port()}"  # nobody listens

    assert run_in(app)["sent"] == 0
    assert len(hook.bodies) == 2
    with inside(app):
        errors = list(db.session.scalars(sa.select(Alert.last_error)))
    assert all(error and error.startswith("email:") for error in errors)
    assert not any(SMTP_PASSWORD in error for error in errors)

    app.config["SMTP_URL"] = mail.url
    assert run_in(app)["sent"] == 2
    run_in(app)
    assert len(mail.messages) == 2
    assert len(hook.bodies) == 2


def test_a_failing_webhook_is_tried_again_on_a_later_run(app, mail, hook):
    make_document(DocumentState.HELD, "#1001", HOLD_REASON)
    hook.status = 500
    run_in(app)
    assert (len(mail.messages), len(hook.bodies)) == (1, 0)
    hook.status = 200
    run_in(app)
    run_in(app)
    assert (len(mail.messages), len(hook.bodies)) == (1, 1)


def test_ix_refusing_a_stores_api_key_is_one_alert_for_the_store_until_a_call_succeeds(app, mail, hook):
    first = make_document(DocumentState.FAILED, "#1001", "InvoiceXpress refused the document: unauthorized")
    second = make_document(DocumentState.FAILED, "#1002", "InvoiceXpress refused the document: unauthorized")
    for document_id in (first, second):
        db.session.add(DocumentEvent(document_id=document_id, kind="failed", message="refused", status_code=401))
    db.session.commit()

    run_in(app)
    run_in(app)
    assert len(mail.messages) == 1
    text = mail.texts()[0]
    assert "refused the store's API key (HTTP 401)" in text and STORE in text
    assert "2 of the store's documents are failed" in text

    # The key is fixed: the next document gets through a step at IX.
    later = make_document(DocumentState.DONE, "#1003")
    db.session.add(DocumentEvent(document_id=later, kind="state", message="created: Created draft: 9."))
    db.session.commit()
    run_in(app)
    assert db.session.scalar(sa.select(Alert.resolved_at).where(Alert.kind == alerts.IX_KEY)) is not None


def test_a_document_open_too_long_is_told(app, mail):
    make_document(DocumentState.PENDING, "#1001", created_at=datetime.now(UTC) - timedelta(minutes=30))
    run_in(app)
    assert mail.messages == []
    app.config["ALERT_OPEN_AFTER_MINUTES"] = 20
    run_in(app)
    assert len(mail.messages) == 1
    assert "Not issued after 30 minutes: order #1001" in mail.messages[0]["Subject"]


def test_reconciliation_finding_missed_orders_says_the_webhook_is_probably_disabled(app, mail):
    make_document(DocumentState.DONE, "#1001")
    store = db.session.scalar(sa.select(Store))
    reconcile.record(store, reconcile.PassResult(store=store.domain, platform="shopify", new=3, missed=2,
                                                 watermark=datetime.now(UTC)), datetime.now(UTC))
    assert db.session.get(Watermark, store.id).last_missed == 2
    run_in(app)
    run_in(app)
    assert len(mail.messages) == 1
    assert "webhook is probably disabled" in mail.texts()[0]
    assert "found 2 orders no webhook brought" in mail.texts()[0]

    reconcile.record(store, reconcile.PassResult(store=store.domain, platform="shopify",
                                                 watermark=datetime.now(UTC)), datetime.now(UTC))
    run_in(app)
    assert db.session.scalar(sa.select(Alert.resolved_at).where(Alert.kind == alerts.MISSED)) is not None


def test_a_backed_up_queue_is_told_once_and_resolved_when_it_drains(app, mail, hook):
    app.config["ALERT_QUEUE_DEPTH"] = 4
    queue = app.extensions["queue"]
    for _ in range(5):
        queue.enqueue("connector.jobs.sweep")
    run_in(app)
    run_in(app)
    assert len(mail.messages) == 1
    assert "5 jobs waiting" in mail.texts()[0]

    for job_id in queue.job_ids:  # the workers caught up
        queue.remove(job_id)
    run_in(app)
    for _ in range(5):
        queue.enqueue("connector.jobs.sweep")
    run_in(app)
    assert len(mail.messages) == 2


def test_the_worker_beat_queues_one_alerts_round_at_a_time(redis):
    queue = Queue("default", connection=redis)
    worker.queue_alerts(queue)
    worker.queue_alerts(queue)
    assert queue.job_ids == [worker.ALERTS_JOB_ID]
    assert queue.fetch_job(worker.ALERTS_JOB_ID).func_name == "connector.alerts.run"


def test_alert_settings_are_checked_without_printing_the_mail_password():
    with pytest.raises(ConfigError) as error:
        from_env(settings(SMTP_URL=f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@", ALERT_WEBHOOK_URL="hooks.example"))
    assert "SMTP_URL must be smtp://" in str(error.value)
    assert "ALERT_WEBHOOK_URL must be an http(s) URL" in str(error.value)
    assert SMTP_PASSWORD not in str(error.value)
    with pytest.raises(ConfigError, match="ALERT_EMAIL is set: set SMTP_URL too"):
        from_env(settings(ALERT_EMAIL=ALERT_EMAIL))
    config = from_env(settings())
    assert (config["ALERT_OPEN_AFTER_MINUTES"], config["ALERT_QUEUE_DEPTH"], config["ALERT_DIGEST_HOUR"]) == (
        60, 500, 8)
    with pytest.raises(ConfigError, match="ALERT_DIGEST_HOUR must be an hour"):
        from_env(settings(ALERT_DIGEST_HOUR="25"))
