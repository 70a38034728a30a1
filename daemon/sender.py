"""The sender: threads that drain the outbox over pooled SMTP connections to the relay."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from .errors import StorageError
from .interfaces import Clock
from .outbox import Outbox, Outcome, Pending
from .settings import Relay
from .transport import RelayBackoff, RelayUnavailable, SendResult, SmtpSession

log = logging.getLogger(__name__)

SessionFactory = Callable[[Relay], SmtpSession]


class Sender:
    """Sends queued mail; retries 4xx with backoff, fails 5xx, never repeats an uncertain send."""

    def __init__(
        self,
        outbox: Outbox,
        relay: Relay,
        clock: Clock,
        session_factory: SessionFactory = SmtpSession,
    ) -> None:
        self.outbox = outbox
        self.relay = relay
        self.clock = clock
        self.session_factory = session_factory
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.backoff = RelayBackoff(relay, clock)
        self.sent = 0

    def wake(self) -> None:
        """New rows were queued."""
        self._wake.set()

    def start(self) -> None:
        """Mark what a dead sender left behind as uncertain, then start the connection threads."""
        try:
            self.outbox.recover()
        except StorageError as exc:
            log.error("outbox recovery: %s", exc)
        for number in range(self.relay.connections):
            thread = threading.Thread(target=self._run, name=f"sender-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the current round, close the connections."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _run(self) -> None:
        session = self.session_factory(self.relay)
        last_recovery = self.clock.monotonic()
        outcomes: list[Outcome] = []
        unsent: list[int] = []
        try:
            while not self._stop.is_set():
                pause = self.backoff.wait()
                limit = 0 if pause > 0 else self.relay.batch
                if self.clock.monotonic() - last_recovery > self.relay.claim_ttl / 2:
                    last_recovery = self.clock.monotonic()
                    self._recover()
                self._wake.clear()
                try:
                    # the last round's results and the next claim share one transaction
                    batch = self.outbox.exchange(outcomes, unsent, limit, self.relay.claim_ttl)
                except StorageError as exc:
                    # rows stay `sending`; if this persists, recovery reports them uncertain
                    log.error("outbox: %s", exc)
                    self._stop.wait(self.relay.idle_wait)
                    continue
                self.sent += sum(1 for _, state, _, _ in outcomes if state == "sent")
                outcomes, unsent = [], []
                if pause > 0:
                    self._stop.wait(min(pause, self.relay.idle_wait))
                    continue
                if not batch:
                    session.close()
                    self._wake.wait(self.relay.idle_wait)
                    continue
                self._send_round(session, batch, outcomes, unsent)
            try:
                self.outbox.exchange(outcomes, unsent, 0, 0)
            except StorageError as exc:
                log.error("outbox: cannot record the last send results: %s", exc)
        finally:
            session.close()

    def _recover(self) -> None:
        try:
            self.outbox.recover()
        except StorageError as exc:
            log.error("outbox recovery: %s", exc)

    def _send_round(
        self, session: SmtpSession, batch: list[Pending], outcomes: list[Outcome], unsent: list[int]
    ) -> None:
        for position, item in enumerate(batch):
            if self._stop.is_set():
                unsent.extend(p.id for p in batch[position:])
                return
            try:
                result = session.send(item.mail_from, item.recipients, item.raw)
            except RelayUnavailable as exc:
                self.backoff.failed(str(exc))
                unsent.extend(p.id for p in batch[position:])
                return
            self.backoff.ok()
            outcomes.append(self._settlement(item, result))

    def _settlement(self, item: Pending, result: SendResult) -> Outcome:
        if result.outcome == "sent":
            log.debug("%s sent to %s", item.message_id, ", ".join(item.recipients))
            return (item.id, "sent", result.detail if "refused" in result.detail else "", None)
        if result.outcome == "uncertain":
            log.warning("%s uncertain: %s", item.message_id, result.detail)
            return (item.id, "uncertain", result.detail, None)
        if result.outcome == "retry":
            age = self.clock.now() - item.created_at
            if age > timedelta(seconds=self.relay.give_up_after):
                log.warning(
                    "%s failed after %s of retries: %s", item.message_id, age, result.detail
                )
                return (item.id, "failed", f"gave up after {age}: {result.detail}", None)
            delay = min(self.relay.retry_max, self.relay.retry_first * 2 ** (item.attempts - 1))
            log.info("%s deferred %.0fs: %s", item.message_id, delay, result.detail)
            return (item.id, "queued", result.detail, delay)
        log.warning("%s failed: %s", item.message_id, result.detail)
        return (item.id, "failed", result.detail, None)
