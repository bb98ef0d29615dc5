"""Chaos on real parts: 200 orders, duplicate deliveries, InvoiceXpress failing at random, both workers
SIGKILLed and Redis restarted mid-run — and still exactly one finalized, e-mailed document per order.

Run with -s (or -rA) to see the summary line it prints."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path

import requests

from tests.integration import services

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"
ORDERS = 200
DUPLICATE_SHARE = 0.3
SEED = 20261124
# Deliveries are paced over this long, so that the kills and the Redis restart land on work in flight.
SEND_SECONDS = 30
WORKER_DOWN_SECONDS = 3
# Longer than a worker's first pause before it reconnects (a managed Redis's restart takes longer still).
REDIS_DOWN_SECONDS = 5
# Hard deadlines, in seconds from the first delivery: with the fixtures (some 10 s) and the teardown the
# test ends within 4 minutes even when it fails. IX's faults stop at CLEAR_FAULTS_AFTER if every order
# is not complete by then: with a 10 s backoff doubling at each attempt, a document unlucky enough to
# meet four faults in a row would otherwise wait longer than the whole budget.
CLEAR_FAULTS_AFTER = 75
IX_COMPLETE_BY = 195
ROWS_DONE_BY = 205
WORKER_ARGV = [sys.executable, "-m", "flask", "--app", "wsgi", "worker"]

CREATE = r"/invoice(?:_receipt)?s\.json"
FINALIZE = r"/invoice(?:_receipt)?s/\d+/change-state\.json"
EMAIL = r"/invoice(?:_receipt)?s/\d+/email-document\.json"
# About one request in ten of each kind fails (a rule that lets a request pass hands it to the next).
# E-mail faults are "status" only: an e-mail IX sent but whose answer was lost is rightly sent again.
FAULTS = [
    {"method": "POST", "path": CREATE, "kind": "after", "status": 500, "probability": 0.04},
    {"method": "POST", "path": CREATE, "kind": "status", "status": 503, "probability": 0.03},
    {"method": "POST", "path": CREATE, "kind": "status", "status": 429, "retry_after": 1, "probability": 0.02},
    {"method": "POST", "path": CREATE, "kind": "status", "status": 429, "probability": 0.01},
    {"method": "PUT", "path": FINALIZE, "kind": "after", "status": 500, "probability": 0.05},
    {"method": "PUT", "path": FINALIZE, "kind": "status", "status": 503, "probability": 0.05},
    {"method": "PUT", "path": EMAIL, "kind": "status", "status": 503, "probability": 0.10},
]
FAULTED_CALLS = {  # the sandbox's call counter names, by what the rules above target
    "create": ("POST /invoice_receipts.json", "POST " + CREATE),
    "finalize": ("PUT /invoice_receipts/{id}/change-state.json", "PUT " + FINALIZE),
    "e-mail": ("PUT /invoice_receipts/{id}/email-document.json", "PUT " + EMAIL),
}


class WorkerExited(AssertionError):
    """A worker process the test did not kill is gone."""


def issuable_fixtures() -> list[dict]:
    cases = json.loads((FIXTURES / "cases.json").read_text())
    return [json.loads((FIXTURES / c["file"]).read_text()) for c in cases if c["expect"] == "issue"]


def build_orders() -> list[tuple[str, bytes, str]]:
    """(order name, body, event id) for ORDERS distinct paid orders made from the issuable fixtures."""
    fixtures = issuable_fixtures()
    orders = []
    for n in range(ORDERS):
        order = json.loads(json.dumps(fixtures[n % len(fixtures)]))
        name = f"#C{n + 1:04d}"
        order.update(id=7_700_000_000_000 + n, name=name, order_number=70_000 + n)
        orders.append((name, json.dumps(order).encode(), f"chaos-event-{n + 1:04d}"))
    return orders


def delivery_plan(rng: random.Random) -> tuple[list[int], int, int]:
    """The order indexes in sending order, shuffled, with DUPLICATE_SHARE of the orders delivered twice:
    half of those duplicates right behind the first delivery (so sent concurrently), half anywhere."""
    duplicated = rng.sample(range(ORDERS), round(ORDERS * DUPLICATE_SHARE))
    together = set(duplicated[: len(duplicated) // 2])
    sequence = list(range(ORDERS)) + [n for n in duplicated if n not in together]
    rng.shuffle(sequence)
    deliveries: list[int] = []
    for n in sequence:
        deliveries.append(n)
        if n in together:
            deliveries.append(n)
    return deliveries, len(duplicated), len(together)


def wait_for(condition, until: float, what: str, describe=lambda: "", check=lambda message: None):
    """Poll `condition` once a second until it holds or the monotonic clock reaches `until`; on a
    timeout, `check` may raise first to name a better cause."""
    while True:
        value = condition()
        if value or time.monotonic() >= until:
            break
        time.sleep(min(1.0, max(0.0, until - time.monotonic())))
    if not value:
        message = f"timed out waiting for {what}; {describe()}"
        check(message)
        raise AssertionError(message)
    return value


def issuing_now(log: str, ix_called: bool = False) -> bool:
    """Whether a worker's log ends inside a document's job (and past its first IX call, if asked)."""
    begun = log.rfind(": connector: connector.jobs.")
    over = max(log.rfind(marker) for marker in ("Job OK", "Successfully completed", "unhandled exception"))
    in_job = begun > over and log.startswith("connector.jobs.issue_document(", begun + 13)
    return in_job and (not ix_called or "connector.invoicexpress.client IX " in log[begun:])


def by_reference(documents: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = defaultdict(list)
    for document in documents:
        found[document["reference"]].append(document)
    return found


def test_chaos_many_orders_duplicates_ix_faults_kills_and_a_redis_restart_yield_one_document_each(
    connector, redis_server
):
    sandbox = connector.sandbox_url
    orders = build_orders()
    names = [name for name, _, _ in orders]
    deliveries, duplicates, concurrent_duplicates = delivery_plan(random.Random(SEED))
    faults = [{**rule, "regex": True, "times": None, "seed": SEED + k} for k, rule in enumerate(FAULTS)]
    requests.post(f"{sandbox}/_sandbox/faults", json=faults, timeout=5).raise_for_status()

    workers = {"worker": connector.worker, "worker2": connector.procs("worker2", WORKER_ARGV, env=connector.env)}
    workers["worker2"].wait_for_log(r"Listening on", timeout=20)
    every_worker = list(workers.values())
    killed_pids: set[int] = set()

    def exited_unasked() -> list:
        return [p for p in every_worker if p.pid not in killed_pids and not p.running]

    def check_workers(message: str = "") -> None:
        gone = exited_unasked()
        if gone:
            logs = "\n".join(f"--- {p.name} pid {p.pid} rc {p.returncode}:\n{p.output(2500)}" for p in gone)
            raise WorkerExited(f"{message}\nworker processes exited on their own: {gone}\n{logs}")

    answers: list[tuple[int, int | str]] = []
    answer_seconds: list[float] = []

    def deliver(n: int) -> None:
        _, body, event_id = orders[n]
        sent_at = time.monotonic()
        try:
            answers.append((n, connector.post(body, event_id=event_id).status_code))
        except requests.RequestException as error:
            answers.append((n, f"{type(error).__name__}: {error}"))
        answer_seconds.append(time.monotonic() - sent_at)

    killed: list[str] = []
    killed_mid_issue = 0
    redis_restarts = 0
    sent = 0
    pool = ThreadPoolExecutor(max_workers=8)
    posts: list[Future] = []

    def send_all() -> None:
        """Submit every delivery, paced evenly over SEND_SECONDS."""
        nonlocal sent
        for k, n in enumerate(deliveries):
            time.sleep(max(0.0, started + k * SEND_SECONDS / len(deliveries) - time.monotonic()))
            posts.append(pool.submit(deliver, n))
            sent = k + 1

    def when_sent(share: float) -> None:
        while sent < share * len(deliveries) and time.monotonic() < started + SEND_SECONDS + 10:
            time.sleep(0.01)

    def kill_and_restart(name: str) -> None:
        nonlocal killed_mid_issue
        worker = workers[name]
        # Aim at a document's job past its first IX call: the next ones are spaced out by the rate limit.
        aim_until = time.monotonic() + 5
        while worker.running and not issuing_now(worker.output(4000), True) and time.monotonic() < aim_until:
            time.sleep(0.005)
        if worker.running:  # one that already exited on its own is counted as such, not as killed
            killed_pids.add(worker.pid)
            services.kill_like_a_crash(worker)
            killed_mid_issue += issuing_now(worker.output(4000))  # the log as it ended
        killed.append(name)
        time.sleep(WORKER_DOWN_SECONDS)
        workers[name] = connector.procs(name, WORKER_ARGV, env=connector.env)
        every_worker.append(workers[name])
        workers[name].wait_for_log(r"Listening on", timeout=20)

    started = time.monotonic()
    summary: list[str] = []
    faults_cleared_at = None
    try:
        # Deliveries go out from a thread of their own; the chaos follows them from here, one act at a time.
        sender = threading.Thread(target=send_all, name="chaos-sender", daemon=True)
        sender.start()
        when_sent(1 / 3)
        kill_and_restart("worker")
        when_sent(1 / 2)
        redis_server.stop()
        time.sleep(REDIS_DOWN_SECONDS)
        redis_server.start()
        redis_restarts += 1
        when_sent(2 / 3)
        kill_and_restart("worker2")
        sender.join(timeout=max(1.0, started + SEND_SECONDS + 10 - time.monotonic()))
        assert not sender.is_alive(), "the deliveries did not go out in time"
        futures_wait(posts, timeout=max(1.0, started + SEND_SECONDS + 25 - time.monotonic()))
        assert all(post.done() for post in posts), "the deliveries were not answered in time"
        send_seconds = time.monotonic() - started
        connector.worker = workers["worker"]  # for the fixture's own diagnostics

        def ix_complete() -> bool:
            found = by_reference(connector.ix_documents())
            return all(any(d["status"] == "settled" and d["emails"] for d in found.get(n, ())) for n in names)

        def progress() -> str:
            states = connector.rows("SELECT state, count(*) FROM documents GROUP BY state ORDER BY state")
            events = connector.rows("SELECT status, count(*) FROM webhook_events GROUP BY status ORDER BY status")
            open_ = connector.rows(
                "SELECT id, order_ref, state, attempts, locked_until, next_attempt_at, job_id, last_error "
                "FROM documents WHERE state <> 'done' ORDER BY id LIMIT 10"
            )
            ix = Counter((d["status"], len(d["emails"])) for d in connector.ix_documents())
            return f"rows {states}, events {events}, IX (status, e-mails) {dict(ix)}, not done: {open_}"

        try:
            wait_for(ix_complete, started + CLEAR_FAULTS_AFTER, "every order at IX")
        except AssertionError:
            faults_cleared_at = time.monotonic() - started
        fault_rules = requests.get(f"{sandbox}/_sandbox/faults", timeout=5).json()
        requests.delete(f"{sandbox}/_sandbox/faults", timeout=5).raise_for_status()
        wait_for(ix_complete, started + IX_COMPLETE_BY, "every order at IX (faults off)", progress, check_workers)
        ix_seconds = time.monotonic() - started
        wait_for(
            lambda: connector.rows("SELECT state, count(*) FROM documents GROUP BY state") == [("done", ORDERS)],
            started + ROWS_DONE_BY,
            "every document row done",
            progress,
            check_workers,
        )
        time.sleep(3)  # a sweep and more: time for a late duplicate to show itself

        documents = connector.ix_documents()
        found = by_reference(documents)
        strangers = [d for d in documents if d["reference"] not in set(names)]
        duplicates_found = sum(len(found[name]) - 1 for name in names if name in found) + len(strangers)
        calls = requests.get(f"{sandbox}/_sandbox/calls", timeout=5).json()
        # Per kind of call: faults triggered, calls seen while injecting (every one meets the kind's first
        # rule), and calls in all.
        triggered: Counter[str] = Counter()
        matched: Counter[str] = Counter()
        for rule in fault_rules:
            key = f"{rule['method']} {rule['path']}"
            triggered[key] += rule["triggered"]
            matched[key] = max(matched[key], rule["matched"])
        faulted = {what: (triggered[key], matched[key], calls.get(call, 0))
                   for what, (call, key) in FAULTED_CALLS.items()}
        [(max_attempts, total_attempts)] = connector.rows("SELECT max(attempts), sum(attempts) FROM documents")
        [(retries,)] = connector.rows("SELECT count(*) FROM document_events WHERE kind = 'retry'")
        summary += [
            f"faults_injected={sum(t for t, _, _ in faulted.values())} "
            f"of {sum(m for _, m, _ in faulted.values())} calls while injecting "
            f"({', '.join(f'{k} {t}/{m}' for k, (t, m, _) in faulted.items())})",
            "faults_on=" + (f"first_{faults_cleared_at:.0f}s" if faults_cleared_at else "throughout"),
            f"calls_in_all=({', '.join(f'{k} {c}' for k, (_, _, c) in faulted.items())})",
            f"ix_documents={len(documents)}",
            f"duplicates_found={duplicates_found}",
            f"retries={retries} max_attempts={max_attempts} total_attempts={total_attempts}",
            f"seconds: sending={send_seconds:.0f} ix_complete={ix_seconds:.0f}",
        ]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        print(
            f"\nCHAOS orders={ORDERS} deliveries={len(deliveries)} duplicate_deliveries={duplicates} "
            f"(sent concurrently: {concurrent_duplicates}) webhook_answers={dict(Counter(a for _, a in answers))} "
            f"slowest_answer={max(answer_seconds, default=0):.1f}s "
            f"workers_killed={len(killed_pids)} (mid-issue: {killed_mid_issue}) "
            f"worker_exits_unasked={len(exited_unasked())} redis_restarts={redis_restarts} "
            + " ".join(summary) + f" total={time.monotonic() - started:.0f}s"
        )

    assert [a for a in answers if a[1] != 200] == [], "every delivery is answered 200 (no 5xx, no timeout)"
    assert len(answers) == len(deliveries)
    assert (killed, redis_restarts) == (["worker", "worker2"], 1)
    assert strangers == [], "no document at IX but for our orders"
    assert {name: len(found.get(name, [])) for name in names} == dict.fromkeys(names, 1), "one per order"
    for name in names:
        [document] = found[name]
        assert document["status"] == "settled", document
        assert [h["action"] for h in document["history"]].count("finalized") == 1, document["history"]
        assert len(document["emails"]) == 1, (name, document["emails"])
    assert sorted(tuple(row) for row in connector.rows("SELECT order_ref, ix_id FROM documents")) == sorted(
        (name, found[name][0]["id"]) for name in names
    )
    events = connector.rows("SELECT count(*), count(DISTINCT event_key), min(status), max(status) "
                            "FROM webhook_events")
    assert events == [(ORDERS, ORDERS, "processed", "processed")]
    # Last, so that any other failure shows as one: every worker the test did not kill is still running,
    # which is to say each came through the Redis restart on its own.
    check_workers()
