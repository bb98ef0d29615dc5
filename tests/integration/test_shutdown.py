"""A deploy stops the worker with SIGTERM, idle or mid-call; only a lost Redis makes it start again."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import redis

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"
REDIS_LOST = "lost its connection to Redis"


def worker_states(connector) -> list[bytes]:
    """What RQ says each worker is doing (idle: blocked waiting for a job)."""
    client = redis.Redis.from_url(connector.env["REDIS_URL"])
    try:
        return [client.hget(key, "state") for key in client.smembers("rq:workers")]
    finally:
        client.close()


def test_sigterm_to_an_idle_worker_ends_it_with_status_0_and_takes_no_job_after(connector):
    worker = connector.worker
    # Past its first sweep, the worker waits on Redis for a job: idle, as most of a deploy finds it.
    worker.wait_for_log(r"Job OK \(sweep\)", timeout=30)
    connector.wait_until(lambda: worker_states(connector) == [b"idle"], what="the worker to wait for a job")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0  # Heroku's SIGKILL comes 30 s after SIGTERM
    worker.wait_group_gone(timeout=10)  # its scheduler too
    assert REDIS_LOST not in worker.output()
    assert "worker stopped on request" in worker.output()

    # An order arriving after the stop waits for the next worker rather than a stopping one.
    connector.post((FIXTURES / "paid_b2c_tax_included.json").read_bytes())
    time.sleep(3)
    assert connector.ix_documents() == []
    connector.start_worker()
    connector.wait_until(connector.settled_and_emailed, what="the document, by the new worker")


def test_sigterm_mid_step_hands_the_document_back_and_it_is_finished_once(connector):
    # IX takes longer to finalize than Heroku's grace period allows the job.
    connector.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state\.json", regex=True, kind="delay",
                    seconds=12, times=1)
    connector.post((FIXTURES / "paid_b2c_tax_included.json").read_bytes())
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("created",)],
                         what="the draft to be created")
    time.sleep(0.5)  # the finalize call is in flight

    stopped_at = time.monotonic()
    connector.worker.send_signal(signal.SIGTERM)
    assert connector.worker.wait(timeout=30) == 0  # Heroku's SIGKILL comes 30 s after SIGTERM
    assert time.monotonic() - stopped_at < 30
    assert REDIS_LOST not in connector.worker.output()
    # Handed back at once, not left for its lease to run out.
    [(locked_until, last_error)] = connector.rows("SELECT locked_until, last_error FROM documents")
    assert locked_until is None
    assert "shutdown" in last_error

    connector.start_worker()
    [document] = connector.wait_until(connector.settled_and_emailed, timeout=60, what="the document")
    assert len(document["emails"]) == 1
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("done",)], what="done")
    assert len(connector.ix_documents()) == 1


def test_redis_lost_mid_job_the_worker_starts_again_and_still_stops_on_sigterm(connector, redis_server):
    connector.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state\.json", regex=True, kind="delay",
                    seconds=4, times=1)
    connector.post((FIXTURES / "paid_b2c_tax_included.json").read_bytes())
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("created",)],
                         what="the draft to be created")
    redis_server.stop()
    try:
        connector.worker.wait_for_log(REDIS_LOST, timeout=60)
    finally:
        redis_server.start()  # empty: the sweeper re-queues from the database
    [document] = connector.wait_until(connector.settled_and_emailed, timeout=90,
                                      what="the document, once the worker started again")
    assert len(document["emails"]) == 1
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("done",)], what="done")
    assert len(connector.ix_documents()) == 1

    mark = connector.worker.mark()
    connector.worker.send_signal(signal.SIGTERM)
    assert connector.worker.wait(timeout=30) == 0
    assert REDIS_LOST not in connector.worker.output()[mark:]


def test_a_burst_worker_works_what_is_queued_then_exits(connector):
    connector.worker.send_signal(signal.SIGTERM)
    assert connector.worker.wait(timeout=30) == 0
    connector.post((FIXTURES / "paid_b2c_tax_included.json").read_bytes())
    connector.wait_until(lambda: connector.rows("SELECT count(*) FROM documents") == [(0,)]
                         and connector.rows("SELECT count(*) FROM webhook_events") == [(1,)], what="the event")

    burst = connector.procs("burst", [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--burst"],
                            env=connector.env)
    assert burst.wait(timeout=60) == 0, burst.output()
    assert REDIS_LOST not in burst.output()
    [document] = connector.settled_and_emailed() or [None]
    assert document is not None, connector.ix_documents()
    assert connector.rows("SELECT state FROM documents") == [("done",)]


def test_sigterm_while_redis_is_away_still_ends_the_worker(connector, redis_server):
    worker = connector.worker
    worker.wait_for_log(r"Job OK \(sweep\)", timeout=30)
    mark = worker.mark()
    redis_server.stop()
    try:
        worker.wait_for_log(r"could not connect to Redis|lost its connection to Redis", timeout=60, since=mark)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        redis_server.start()
    worker.wait_group_gone(timeout=10)
