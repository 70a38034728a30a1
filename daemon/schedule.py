"""The scheduler: wakes periodic work (the SLA sweep); the state lives in the database.

Jobs only say "look now". A missed or doubled wake-up costs nothing, because every job
reads what is due from the database and records what it did there, keyed against doubles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC

from apscheduler.schedulers.background import BackgroundScheduler

from .clock import SystemClock

log = logging.getLogger(__name__)


class Scheduler:
    """Runs named jobs every so many seconds in a background thread.

    The scheduler keeps real time (a test's frozen clock would make it replay every missed
    interval); the jobs read their own clock.
    """

    def __init__(self) -> None:
        self.clock = SystemClock()
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.failures: dict[str, int] = {}

    def every(self, name: str, seconds: float, job: Callable[[], object]) -> None:
        """Run job now and then every `seconds`; a failing run is logged, the next one runs."""

        def guarded() -> None:
            try:
                job()
            except Exception:
                self.failures[name] = self.failures.get(name, 0) + 1
                log.exception("scheduled job %s failed; it runs again in %.0fs", name, seconds)

        self._scheduler.add_job(
            guarded,
            "interval",
            seconds=seconds,
            id=name,
            name=name,
            next_run_time=self.clock.now(),
            replace_existing=True,
        )

    def wake(self, name: str) -> None:
        """Run a job as soon as possible instead of waiting for its interval."""
        job = self._scheduler.get_job(name)
        if job is not None:
            job.modify(next_run_time=self.clock.now())

    def start(self) -> None:
        """Start the background thread."""
        if not self._scheduler.running:
            self._scheduler.start()

    def stop(self) -> None:
        """Stop the thread after the running job finished."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
