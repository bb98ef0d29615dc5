"""The RQ worker `flask worker` runs: Heroku-friendly, with its scheduler, sweeper, reconciliation and alerts."""

from __future__ import annotations

import logging
import signal
import time

from redis.exceptions import RedisError
from rq.exceptions import StopRequested
from rq.job import JobStatus
from rq.worker import HerokuWorker

from connector import jobs

logger = logging.getLogger(__name__)

SWEEP_JOB_ID = "sweep"
RECONCILE_JOB_ID = "reconcile"
# By name: the worker parent only enqueues, and need not import what the work-horse runs.
RECONCILE_JOB = "connector.reconcile.run_due"
RECONCILE_JOB_TIMEOUT = 1800  # a store's first pass may page through a busy day of orders
ALERTS_JOB_ID = "alerts"
ALERTS_JOB = "connector.alerts.run"
ALERTS_JOB_TIMEOUT = 900  # a batch of alerts, each with its SMTP and webhook timeouts
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Whether this process was told to stop (SIGTERM on every deploy, or Ctrl-C).

    Kept here rather than read from RQ: RQ records a stop differently for an idle worker (it raises
    out of `work()` and records nothing) and a busy one (a flag it reads after the job), and the
    restart loop must tell either of them apart from a lost Redis.
    """

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum, frame) -> None:
        """The signal handler while no RQ worker is running (starting, or pausing before a restart)."""
        logger.info("stop requested (signal %s)", signal.Signals(signum).name)
        self.requested = True


class ConnectorWorker(HerokuWorker):
    """An RQ worker that queues the sweeper, reconciliation and alerts on its maintenance beat, and takes no job
    once told to stop.

    The sweeper has to run even after Redis lost every job and schedule it held, so it is driven by
    the long-lived worker process rather than by a job that re-schedules itself. The worker parent
    only enqueues; the sweep itself runs in a work-horse like any job, so the parent never opens a
    database connection that forked children would share.
    """

    def __init__(self, *args, stop: StopRequest, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop = stop

    def request_stop(self, signum, frame):
        # Recorded first: what follows in RQ may raise (to leave an idle wait) or find Redis away.
        self.stop.requested = True
        try:
            super().request_stop(signum, frame)
        except RedisError:
            # RQ asks Redis whether a job is running; with Redis away there is nothing to wait for.
            raise StopRequested() from None

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        # A stop asked for before RQ's own handlers were in place, or while a job ran, ends the loop here
        # rather than with one more job.
        if self.stop.requested:
            raise StopRequested()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        queue_sweep(self.queues[0])
        queue_reconcile(self.queues[0])
        queue_alerts(self.queues[0])


def queue_sweep(queue) -> None:
    """Queue a sweep unless one is already waiting or running."""
    _queue_once(queue, jobs.sweep, SWEEP_JOB_ID, jobs.JOB_TIMEOUT, "sweep")


def queue_reconcile(queue) -> None:
    """Queue a reconciliation round unless one is already waiting or running; the round itself passes over
    only the stores whose last pass is older than RECONCILE_INTERVAL_SECONDS."""
    _queue_once(queue, RECONCILE_JOB, RECONCILE_JOB_ID, RECONCILE_JOB_TIMEOUT, "reconciliation")


def queue_alerts(queue) -> None:
    """Queue a round of alerts unless one is already waiting or running (the round is safe to run twice: each
    alert is sent once whatever the number of workers)."""
    _queue_once(queue, ALERTS_JOB, ALERTS_JOB_ID, ALERTS_JOB_TIMEOUT, "alerts")


def _queue_once(queue, job, job_id: str, timeout: int, what: str) -> None:
    """Queue a maintenance job under its fixed id, unless it is waiting or running already."""
    if jobs.job_status(job_id, queue.connection) in (JobStatus.QUEUED, JobStatus.STARTED):
        return
    try:
        queue.enqueue(job, job_id=job_id, job_timeout=timeout, result_ttl=60)
    except RedisError:
        logger.warning("%s not queued: Redis unavailable", what)


def run(queue, sweep_interval: float, burst: bool = False, max_pause: float = 30.0) -> None:
    """Work the queue until told to stop (SIGTERM: finish or hand back the current job, then return).

    RQ's worker quits when Redis goes away in the middle of a job; this starts it again, with a
    growing pause, for as long as nobody asked it to stop — so a Redis restart needs no person.
    `burst`: work what is queued, then return.
    """
    stop = StopRequest()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    pause = 1.0
    try:
        while True:
            # RQ's handlers belong to the worker they were installed for; between workers, ours.
            for signum in STOP_SIGNALS:
                signal.signal(signum, stop.handle)
            if stop.requested:
                break
            worker = None
            try:
                # Built inside the try: RQ talks to Redis already while constructing the worker, and Redis
                # may still be away when the worker is started again.
                worker = ConnectorWorker(
                    [queue], connection=queue.connection, maintenance_interval=int(sweep_interval), stop=stop,
                    # The heartbeat decides how long the worker blocks waiting for jobs; under the sweep
                    # interval, so the sweeper beat is kept even when the queue is idle.
                    worker_ttl=max(20, int(sweep_interval) // 2 + 15),
                )
                if not stop.requested:
                    worker.work(with_scheduler=True, burst=burst,
                                logging_level=logging.getLevelName(logger.getEffectiveLevel()))
            except Exception:  # the teardown after a lost connection can fail too; the loop is the remedy
                if not stop.requested:
                    logger.warning("worker stopped on an error", exc_info=True)
            if stop.requested or (burst and worker is not None):
                break
            logger.warning("worker lost its connection to Redis; starting again in %.0f s", pause)
            for signum in STOP_SIGNALS:
                signal.signal(signum, stop.handle)
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline and not stop.requested:
                time.sleep(0.2)
            pause = min(pause * 2, max_pause)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    logger.info("worker stopped" + (" on request" if stop.requested else ""))
