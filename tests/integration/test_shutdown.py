"""A deploy stops the worker with SIGTERM mid-call: the document is handed back and finished once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"


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
    connector.worker.wait(timeout=30)  # Heroku's SIGKILL comes 30 s after SIGTERM
    assert time.monotonic() - stopped_at < 30
    # Handed back at once, not left for its lease to run out.
    [(locked_until, last_error)] = connector.rows("SELECT locked_until, last_error FROM documents")
    assert locked_until is None
    assert "shutdown" in last_error

    connector.start_worker()
    [document] = connector.wait_until(connector.settled_and_emailed, timeout=60, what="the document")
    assert len(document["emails"]) == 1
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("done",)], what="done")
    assert len(connector.ix_documents()) == 1
