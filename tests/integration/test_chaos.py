"""Chaos on real parts: 200 orders, duplicate deliveries (the same event twice, and the same order under
two event ids at once), InvoiceXpress failing at random, both workers SIGKILLed mid-issue and Redis
restarted mid-run — and still exactly one finalized, e-mailed document per order, each with its own
order's reference, client and total. The test also proves its chaos happened: every kind of fault
struck, a kill caught a document half-issued, and the faults stayed on while documents were issued.

Run with -s (or -rA) to see the summary line it prints."""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import redis
import requests
import sqlalchemy as sa

from connector.models import DocumentState
from tests.integration import services

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"
ORDERS = 200
DUPLICATE_SHARE = 0.3
# Orders (among those not otherwise duplicated) sent twice at the same instant under two event ids, as
# Shopify does when two webhook subscriptions fire or an app re-sends: the inbox sees two events.
TWIN_ORDERS = 10
SEED = 20261124
# Deliveries are paced over this long, so that the kills and the Redis restart land on work in flight.
SEND_SECONDS = 30
WORKER_DOWN_SECONDS = 3
# Longer than a worker's first pause before it reconnects (a managed Redis's restart takes longer still).
REDIS_DOWN_SECONDS = 5
# Hard deadlines, in seconds from the first delivery: with the fixtures (some 10 s) and the teardown the
# test ends within 4 minutes even when it fails. IX's faults stop at CLEAR_FAULTS_AFTER if every order
# is not complete by then: with a backoff doubling at each attempt (10 s first in production), a document
# unlucky enough to meet many faults in a row would otherwise wait longer than the whole budget.
CLEAR_FAULTS_AFTER = 75
IX_COMPLETE_BY = 195
ROWS_DONE_BY = 205
WORKER_ARGV = [sys.executable, "-m", "flask", "--app", "wsgi", "worker"]

CREATE = r"/invoice(?:_receipt)?s\.json"
FINALIZE = r"/invoice(?:_receipt)?s/\d+/change-state\.json"
EMAIL = r"/invoice(?:_receipt)?s/\d+/email-document\.json"
# About one request in ten of each kind fails (a rule that lets a request pass hands it to the next).
# E-mail faults are "status" only: an e-mail IX sent but whose answer was lost is rightly sent again.
# Each rule's seed is one (the sandbox draws once per request the rule sees) under which it strikes
# within the first 15 requests it sees: a slow machine makes fewer calls while the faults are on, and
# every kind must still strike.
FAULTS = [
    {"method": "POST", "path": CREATE, "kind": "after", "status": 500, "probability": 0.04, "seed": SEED},
    {"method": "POST", "path": CREATE, "kind": "status", "status": 503, "probability": 0.03, "seed": SEED + 1},
    {"method": "POST", "path": CREATE, "kind": "status", "status": 429, "retry_after": 1, "probability": 0.02,
     "seed": SEED + 12},
    # Rarer, and striking once early on: without a Retry-After the connector pauses every call to the
    # account for 10 s, and more such pauses would only stretch the run.
    {"method": "POST", "path": CREATE, "kind": "status", "status": 429, "probability": 0.01, "seed": SEED + 1413},
    {"method": "PUT", "path": FINALIZE, "kind": "after", "status": 500, "probability": 0.05, "seed": SEED + 24},
    {"method": "PUT", "path": FINALIZE, "kind": "status", "status": 503, "probability": 0.05, "seed": SEED + 5},
    {"method": "PUT", "path": EMAIL, "kind": "status", "status": 503, "probability": 0.10, "seed": SEED + 6},
]
CALLED = {CREATE: "create", FINALIZE: "finalize", EMAIL: "e-mail"}
CALL_COUNTERS = {  # the sandbox's call counter names, by what the rules above target
    "create": "POST /invoice_receipts.json",
    "finalize": "PUT /invoice_receipts/{id}/change-state.json",
    "e-mail": "PUT /invoice_receipts/{id}/email-document.json",
}


def fault_name(rule: dict) -> str:
    """E.g. "create 429 (Retry-After)", "finalize 500 after the work"."""
    retry = "" if rule["status"] != 429 else " (Retry-After)" if rule.get("retry_after") else " (no Retry-After)"
    return f"{CALLED[rule['path']]} {rule['status']}{retry}{' after the work' if rule['kind'] == 'after' else ''}"


def fault_struck(rule: dict) -> bool:
    """Whether the rule reached the connector at least once; an "after" fault only counts where IX did
    the work it then claimed to have failed (not where IX refused the request anyway)."""
    return rule["landed"] > 0 if rule["kind"] == "after" else rule["triggered"] > 0


def total(rules: list[dict], counter: str) -> int:
    """A counter ("matched", "triggered") summed over the fault rules."""
    return sum(rule[counter] for rule in rules)


class WorkerExited(AssertionError):
    """A worker process the test did not kill is gone."""


class Generated(NamedTuple):
    """One order the test sends, and what its IX document must say."""

    name: str
    body: bytes
    event_id: str
    client: str
    email: str
    fiscal_id: str | None
    total: Decimal


def issuable_cases() -> list[tuple[dict, dict]]:
    """(case, order) for each fixture the connector issues a document for."""
    cases = json.loads((FIXTURES / "cases.json").read_text())
    return [(c, json.loads((FIXTURES / c["file"]).read_text())) for c in cases if c["expect"] == "issue"]


def build_orders() -> list[Generated]:
    """ORDERS distinct paid orders made from the issuable fixtures, each from a buyer of its own (name,
    e-mail, customer id), so that a document showing another order's client is caught."""
    cases = issuable_cases()
    orders = []
    for n in range(ORDERS):
        case, fixture = cases[n % len(cases)]
        order = json.loads(json.dumps(fixture))
        tag = f"C{n + 1:04d}"
        email = f"cliente.{tag.lower()}@example.pt"
        order.update(id=7_700_000_000_000 + n, name=f"#{tag}", order_number=70_000 + n, email=email)
        if order.get("contact_email"):
            order["contact_email"] = email
        if order.get("customer"):
            order["customer"].update(id=8_800_000_000_000 + n, email=email)
        billing = order["billing_address"]
        billing.update(name=f"Cliente {tag}", first_name="Cliente", last_name=tag)
        company = billing.get("company")
        # A buyer who gave a company's tax number is billed as the company (without the number some
        # write into the company field); anyone else by their own name.
        client = re.sub(r"\s*NIF\s*\d+$", "", company) if case["fiscal_id"] and company else billing["name"]
        orders.append(Generated(f"#{tag}", json.dumps(order).encode(), f"chaos-event-{n + 1:04d}", client,
                                email, case["fiscal_id"], Decimal(case["paid_total"])))
    return orders


def delivery_plan(rng: random.Random) -> tuple[list[tuple[int, str | None]], int, int, list[int]]:
    """The deliveries in sending order, shuffled, as (order index, twin event id or None): DUPLICATE_SHARE
    of the orders delivered twice under their one event id, half of those right behind the first
    delivery (so sent concurrently), half anywhere; and TWIN_ORDERS others delivered twice at the same
    instant, the second time under an event id of its own."""
    duplicated = rng.sample(range(ORDERS), round(ORDERS * DUPLICATE_SHARE))
    together = set(duplicated[: len(duplicated) // 2])
    twins = set(rng.sample(sorted(set(range(ORDERS)) - set(duplicated)), TWIN_ORDERS))
    sequence = list(range(ORDERS)) + [n for n in duplicated if n not in together]
    rng.shuffle(sequence)
    deliveries: list[tuple[int, str | None]] = []
    for n in sequence:
        deliveries.append((n, None))
        if n in together:
            deliveries.append((n, None))
        if n in twins:
            deliveries.append((n, f"chaos-event-{n + 1:04d}-again"))
    return deliveries, len(duplicated), len(together), sorted(twins)


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


IX_CALL_LINE = re.compile(r"connector\.invoicexpress\.client( store=\S+)? IX ")


def issuing_now(log: str, ix_called: bool = False) -> bool:
    """Whether a worker's log ends inside a document's job (and past its first IX call, if asked)."""
    begun = log.rfind(": connector: connector.jobs.")
    over = max(log.rfind(marker) for marker in ("Job OK", "Successfully completed", "unhandled exception"))
    in_job = begun > over and log.startswith("connector.jobs.issue_document(", begun + 13)
    # The IX client's line names the document's store before its message ("… client store=shopify:… IX …").
    return in_job and (not ix_called or IX_CALL_LINE.search(log, begun) is not None)


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
    names = [order.name for order in orders]
    deliveries, duplicates, concurrent_duplicates, twins = delivery_plan(random.Random(SEED))
    faults = [{**rule, "regex": True, "times": None} for rule in FAULTS]
    requests.post(f"{sandbox}/_sandbox/faults", json=faults, timeout=5).raise_for_status()
    # (act, the fault rules in force with their counters, IX documents made) at each act of the chaos.
    acts: list[tuple[str, list[dict], int]] = []

    def note_act(act: str) -> list[dict]:
        rules = requests.get(f"{sandbox}/_sandbox/faults", timeout=5).json()
        acts.append((act, rules, len(connector.ix_documents())))
        return rules

    note_act("faults on")

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

    def deliver(n: int, event_id: str, barrier: threading.Barrier | None) -> None:
        try:
            if barrier is not None:  # an order's two events leave together
                barrier.wait(timeout=10)
            sent_at = time.monotonic()
            answers.append((n, connector.post(orders[n].body, event_id=event_id).status_code))
            answer_seconds.append(time.monotonic() - sent_at)
        except (requests.RequestException, threading.BrokenBarrierError) as error:
            answers.append((n, f"{type(error).__name__}: {error}"))

    # A twin delivery follows its order's first one: both wait on one barrier, to be sent at one instant.
    barriers: list[threading.Barrier | None] = [None] * len(deliveries)
    for k, (_, twin_event) in enumerate(deliveries):
        if twin_event:
            barriers[k - 1] = barriers[k] = threading.Barrier(2)

    redis_client = redis.Redis.from_url(connector.env["REDIS_URL"], socket_timeout=2)

    def caught_mid_issue(pid: int) -> dict | None:
        """What the frozen worker `pid` was doing, if a document's issue: RQ's record of its current job
        names a document whose row is still open and leased to it."""
        try:
            job = next((redis_client.hget(key, "current_job") for key in redis_client.smembers("rq:workers")
                        if redis_client.hget(key, "pid") == str(pid).encode()), None)
        except redis.RedisError:
            return None
        if not job or not job.startswith(b"document-"):
            return None
        with connector.engine.connect() as connection:
            row = connection.execute(
                sa.text("SELECT order_ref, state, locked_until > now() AS leased FROM documents "
                        "WHERE job_id = :job"),
                {"job": job.decode()},
            ).first()
        if row is None or row.state not in DocumentState.OPEN or not row.leased:
            return None
        return {"job": job.decode(), "order": row.order_ref, "state": row.state}

    kills: list[tuple[str, dict | None]] = []
    redis_restarts = 0
    sent = 0
    pool = ThreadPoolExecutor(max_workers=8)
    posts: list[Future] = []

    def send_all() -> None:
        """Submit every delivery, paced evenly over SEND_SECONDS."""
        nonlocal sent
        for k, (n, twin_event) in enumerate(deliveries):
            time.sleep(max(0.0, started + k * SEND_SECONDS / len(deliveries) - time.monotonic()))
            posts.append(pool.submit(deliver, n, twin_event or orders[n].event_id, barriers[k]))
            sent = k + 1

    def when_sent(share: float) -> None:
        while sent < share * len(deliveries) and time.monotonic() < started + SEND_SECONDS + 10:
            time.sleep(0.01)

    def kill_and_restart(name: str) -> None:
        worker = workers[name]
        # Aim at a document's job past its first IX call (the next ones are spaced out by the rate limit),
        # then freeze the worker and read what it has written down: the kill lands on that very state.
        caught = None
        aim_until = time.monotonic() + 8
        while worker.running and time.monotonic() < aim_until:
            if issuing_now(worker.output(4000), True):
                frozen = services.freeze(worker)
                caught = caught_mid_issue(worker.pid)
                if caught:
                    break
                services.thaw(frozen)
            time.sleep(0.005)
        if worker.running:  # one that already exited on its own is counted as such, not as killed
            killed_pids.add(worker.pid)
            services.kill_like_a_crash(worker)
        kills.append((name, caught))
        time.sleep(WORKER_DOWN_SECONDS)
        workers[name] = connector.procs(name, WORKER_ARGV, env=connector.env)
        every_worker.append(workers[name])
        workers[name].wait_for_log(r"Listening on", timeout=20)
        note_act(f"{name} killed")

    started = time.monotonic()
    summary: list[str] = []
    fault_rules: list[dict] = []
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
        note_act("Redis restarted")
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
            pass
        complete_with_faults = ix_complete()
        fault_rules = note_act("faults off")
        requests.delete(f"{sandbox}/_sandbox/faults", timeout=5).raise_for_status()
        faults_seconds = time.monotonic() - started
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
        clients = {c["code"]: c for c in requests.get(f"{sandbox}/_sandbox/clients", timeout=5).json()}
        [(max_attempts, total_attempts)] = connector.rows("SELECT max(attempts), sum(attempts) FROM documents")
        [(retries,)] = connector.rows("SELECT count(*) FROM document_events WHERE kind = 'retry'")
        summary += [
            f"faults_struck={total(fault_rules, 'triggered')} (struck/seen: "
            + ", ".join(f"{fault_name(r)} {r['triggered']}/{r['matched']}" for r in fault_rules)
            + ")",
            f"faults_on={faults_seconds:.0f}s"
            + (" (until every order was at IX)" if complete_with_faults else ""),
            "acts=(" + ", ".join(f"{act} at faults {total(rules, 'triggered')} docs {made}"
                                 for act, rules, made in acts) + ")",
            f"calls_in_all=({', '.join(f'{k} {calls.get(c, 0)}' for k, c in CALL_COUNTERS.items())})",
            f"ix_documents={len(documents)}",
            f"duplicates_found={duplicates_found}",
            f"retries={retries} max_attempts={max_attempts} total_attempts={total_attempts}",
            f"seconds: sending={send_seconds:.0f} ix_complete={ix_seconds:.0f}",
        ]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        redis_client.close()
        print(
            f"\nCHAOS orders={ORDERS} deliveries={len(deliveries)} duplicate_deliveries={duplicates} "
            f"(sent concurrently: {concurrent_duplicates}) twin_event_orders={len(twins)} "
            f"webhook_answers={dict(Counter(a for _, a in answers))} "
            f"slowest_answer={max(answer_seconds, default=0):.1f}s "
            f"workers_killed={len(killed_pids)} (mid-issue: {[c for _, c in kills if c]}) "
            f"worker_exits_unasked={len(exited_unasked())} redis_restarts={redis_restarts} "
            + " ".join(summary) + f" total={time.monotonic() - started:.0f}s"
        )

    # The chaos happened. Every kind of fault configured struck at least once...
    assert [fault_name(r) for r in fault_rules if not fault_struck(r)] == [], "a kind of fault never struck"
    # ...the rules were all in force at every act, and between one act and the next they met IX calls
    # and documents were made at IX (Redis's restart aside: while it is away no job starts), faults
    # striking before the first act and after the last: the faults were on from the first delivery to
    # the end of the chaos and beyond, not switched off early...
    configured = [fault_name(rule) for rule in faults]
    in_force = {act: [fault_name(r) for r in rules] for act, rules, _ in acts}
    assert in_force == {act: configured for act in in_force}
    issuing = [(act, rules, made) for act, rules, made in acts if act != "Redis restarted"]
    between = [  # (acts, IX calls the rules met, faults struck, documents made)
        (f"{a} -> {b}", total(rb, "matched") - total(ra, "matched"),
         total(rb, "triggered") - total(ra, "triggered"), mb - ma)
        for (a, ra, ma), (b, rb, mb) in zip(issuing, issuing[1:], strict=False)
    ]
    assert [(phase, seen, made) for phase, seen, _, made in between if seen <= 0 or made <= 0] == [], between
    assert between[0][2] > 0 and between[-1][2] > 0, f"no fault struck at the start or at the end: {between}"
    assert complete_with_faults or faults_seconds >= CLEAR_FAULTS_AFTER, "faults off before the time they are due"
    # ...and a kill landed on a document half-issued, as the worker's own records had it at that instant.
    assert [name for name, _ in kills] == ["worker", "worker2"]
    assert any(caught for _, caught in kills), f"no kill caught a document mid-issue: {kills}"

    assert [a for a in answers if a[1] != 200] == [], "every delivery is answered 200 (no 5xx, no timeout)"
    assert len(answers) == len(deliveries)
    assert redis_restarts == 1
    assert strangers == [], "no document at IX but for our orders"
    assert {name: len(found.get(name, [])) for name in names} == dict.fromkeys(names, 1), "one per order"
    # A worker killed while its document was final and being e-mailed may have had IX send the e-mail before
    # the kill left no record of it: the next worker sends it again (IX says nothing of e-mails already sent),
    # so that document alone may carry a second e-mail. Every other carries exactly one.
    emailing_when_killed = {caught["order"] for _, caught in kills if caught and caught["state"] == "finalized"}
    for name in names:
        [document] = found[name]
        assert document["status"] == "settled", document
        assert [h["action"] for h in document["history"]].count("finalized") == 1, document["history"]
        allowed = (1, 2) if name in emailing_when_killed else (1,)
        assert len(document["emails"]) in allowed, (name, document["emails"])
    # Each document is its own order's: client, tax number, total, and the e-mail went to that buyer.
    wrong = []
    for order in orders:
        [document] = found[order.name]
        client = document["document"]["client"]
        shown = (client["name"], client["email"], clients.get(client["code"], {}).get("fiscal_id") or None,
                 Decimal(str(document["totals"]["total"])), [e["to"] for e in document["emails"]])
        wanted = (order.client, order.email, order.fiscal_id, order.total, [order.email])
        if shown != wanted:
            wrong.append((order.name, shown, wanted))
    assert wrong == [], "(order, IX document shows, the order says): " + repr(wrong[:5])
    assert sorted(tuple(row) for row in connector.rows("SELECT order_ref, ix_id FROM documents")) == sorted(
        (name, found[name][0]["id"]) for name in names
    )
    # Both events of a twin order reached the inbox (so only the documents' own guard kept them to one
    # document), and every event was processed.
    bodies = connector.rows("SELECT body FROM webhook_events")
    events = Counter(json.loads(bytes(body))["name"] for (body,) in bodies)
    assert events == Counter({name: 1 + (n in twins) for n, name in enumerate(names)})
    assert connector.rows("SELECT count(DISTINCT event_key), min(status), max(status) FROM webhook_events") == [
        (ORDERS + len(twins), "processed", "processed")
    ]
    # Last, so that any other failure shows as one: every worker the test did not kill is still running,
    # which is to say each came through the Redis restart on its own.
    check_workers()
