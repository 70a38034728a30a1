"""Runner processes: forked from the main process at start, so they import nothing again."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from types import FrameType

from .folders import process_alive
from .settings import Settings

log = logging.getLogger(__name__)

# what a replacement runner process needs, loaded once by the fork server that starts it
PRELOAD = [
    "daemon.app",
    "daemon.message",
    "daemon.routing",
    "classifiers.handle",
    "sqlalchemy.dialects.sqlite",
    "psycopg",
]


def configure_logging(level: str) -> None:
    """The daemon's log format, at the configured level."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_runner(settings: Settings, main_pid: int) -> None:
    """A runner process: process stored mail until SIGTERM or until the main process is gone."""
    from .app import build_app

    configure_logging(settings.log_level)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides on Ctrl-C
    # the main process sends (outbox and campaigns) and sweeps
    app = build_app(settings, intake=False, sender=False, sweeper=False, campaigns=False)
    app.start()
    while not stop.wait(0.5):
        if not process_alive(main_pid):
            log.warning("the main mailcare process is gone; this runner stops")
            break
    app.stop()


class RunnerProcesses:
    """Starts, watches and stops the runner processes of `mailcare run`."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.processes: list[BaseProcess] = []
        self._replacements: BaseContext | None = None

    def _spawn(self, context: BaseContext) -> BaseProcess:
        process: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=run_runner, args=(self.settings, os.getpid()), name="mailcare-runner"
        )
        process.start()
        return process

    def start(self) -> None:
        """Fork the runner processes: call while this process has no threads and no
        database connections, so the children start from a clean copy of it."""
        fork = multiprocessing.get_context("fork")
        self.processes = [self._spawn(fork) for _ in range(self.count)]

    def _replacement_context(self) -> BaseContext:
        # with threads running, forking this process is unsafe: replacements come from a
        # fork server, a clean process started on first need
        if self._replacements is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            self._replacements = context
        return self._replacements

    def watch(self) -> None:
        """Replace runner processes that died."""
        for index, process in enumerate(self.processes):
            if not process.is_alive():
                log.warning(
                    "runner process %s exited with %s; starting another",
                    process.pid,
                    process.exitcode,
                )
                self.processes[index] = self._spawn(self._replacement_context())

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every runner process to finish its batch and exit."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(5)
