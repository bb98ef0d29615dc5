"""The RQ worker the `flask worker` command runs: Heroku-friendly, with the scheduler and the sweeper."""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from rq.job import JobStatus
from rq.worker import HerokuWorker

from connector import jobs

logger = logging.getLogger(__name__)

SWEEP_JOB_ID = "sweep"


class ConnectorWorker(HerokuWorker):
    """An RQ worker that also queues the sweeper on its maintenance beat.

    The sweeper has to run even after Redis lost every job and schedule it held, so it is driven by
    the long-lived worker process rather than by a job that re-schedules itself. The worker parent
    only enqueues; the sweep itself runs in a work-horse like any job, so the parent never opens a
    database connection that forked children would share.
    """

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        queue_sweep(self.queues[0])


def queue_sweep(queue) -> None:
    """Queue a sweep unless one is already waiting or running."""
    if jobs.job_status(SWEEP_JOB_ID, queue.connection) in (JobStatus.QUEUED, JobStatus.STARTED):
        return
    try:
        queue.enqueue(jobs.sweep, job_id=SWEEP_JOB_ID, job_timeout=jobs.JOB_TIMEOUT, result_ttl=60)
    except RedisError:
        logger.warning("sweep not queued: Redis unavailable")


def run(queue, sweep_interval: float, burst: bool = False) -> None:
    """Work the queue until told to stop (SIGTERM: finish or hand back the current job).

    RQ's worker quits when Redis goes away in the middle of a job; this starts it again, with a
    growing pause, for as long as nobody asked it to stop — so a Redis restart needs no person.
    """
    pause = 1.0
    while True:
        worker = None
        try:
            # Built inside the try: RQ talks to Redis already while constructing the worker, and Redis
            # may still be away when the worker is started again.
            worker = ConnectorWorker(
                [queue], connection=queue.connection, maintenance_interval=int(sweep_interval),
                # The heartbeat decides how long the worker blocks waiting for jobs; under the sweep
                # interval, so the sweeper beat is kept even when the queue is idle.
                worker_ttl=max(20, int(sweep_interval) // 2 + 15),
            )
            worker.work(with_scheduler=True, burst=burst,
                        logging_level=logging.getLevelName(logger.getEffectiveLevel()))
        except Exception:  # the teardown after a lost connection can fail too; the loop is the remedy
            logger.warning("worker stopped on an error", exc_info=True)
        stop_requested = worker is not None and worker._stop_requested
        if stop_requested or (burst and worker is not None):
            return
        logger.warning("worker lost its connection to Redis; starting again in %.0f s", pause)
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline and not (worker is not None and worker._stop_requested):
            time.sleep(0.2)  # a SIGTERM now still reaches RQ's handler, which sets the flag
        if worker is not None and worker._stop_requested:
            return
        pause = min(pause * 2, 30.0)
