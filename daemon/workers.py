"""Runner processes: forked from a preloaded server so they start in milliseconds."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from types import FrameType

from .settings import Settings

log = logging.getLogger(__name__)

# imported once by the fork server, so a new runner process does not import them again
PRELOAD = ["daemon.app", "daemon.message", "sqlalchemy.dialects.sqlite", "psycopg"]


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
    app = build_app(settings, intake=False)
    app.start()
    while not stop.wait(0.5):
        if not _alive(main_pid):
            log.warning("the main mailcare process is gone; this runner stops")
            break
    app.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunnerProcesses:
    """Starts, watches and stops the runner processes of `mailcare run`."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.context: ForkServerContext = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.processes: list[BaseProcess] = []

    def _spawn(self) -> BaseProcess:
        process = self.context.Process(
            target=run_runner, args=(self.settings, os.getpid()), name="mailcare-runner"
        )
        process.start()
        return process

    def start(self) -> None:
        """Start the runner processes (call before any thread of this process exists)."""
        self.processes = [self._spawn() for _ in range(self.count)]

    def watch(self) -> None:
        """Replace runner processes that died."""
        for index, process in enumerate(self.processes):
            if not process.is_alive():
                log.warning(
                    "runner process %s exited with %s; starting another",
                    process.pid,
                    process.exitcode,
                )
                self.processes[index] = self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every runner process to finish its batch and exit."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(5)
