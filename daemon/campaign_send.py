"""The campaign sender: threads with pooled SMTP connections drain the send ledger.

Exactly once, as far as SMTP allows: a row is claimed (nothing sent yet), its message is
built and the relay is asked for it up to DATA's 354, then one durable transaction marks
it `sending` and records the result of the row marked before it, and only then do the
text and its final "." go out. The mark, the text and the reply happen under one lock per
process, so at any moment at most one row of this process is `sending` without a known
result: a crash leaves at most one `uncertain` recipient, however many connections are
open. Everything else a crash leaves is `claimed` and goes back to the queue.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update

from .campaign_config import CampaignDefinition
from .campaign_ledger import CAMPAIGNS, RUNS, Claimed, Result, SendLedger
from .campaign_mime import CampaignComposer, Links
from .campaigns import CampaignBook, sender_of
from .compose import split_mailbox
from .database import Database
from .errors import MailcareError, StorageError, TemplateError
from .interfaces import Clock
from .render import TemplateStore
from .rules import Rules
from .screening import Identity
from .settings import Relay
from .transport import RelayBackoff, RelayUnavailable, SendResult, SmtpSession

log = logging.getLogger(__name__)

SessionFactory = Callable[[Relay], SmtpSession]
_DEFERRAL = re.compile(r"(?:^|: )4\d\d\b")
_DEAD_MAILBOX = re.compile(r"\b5\.1\.[0-9]{1,3}\b")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A run's definition, envelope sender and composer."""

    definition: CampaignDefinition
    mail_from: str
    composer: CampaignComposer


class Composers:
    """One composer per run, built on first use (the MIME skeleton once per run)."""

    def __init__(
        self,
        db: Database,
        rules: Callable[[], Rules],
        templates: TemplateStore,
        identity: Identity,
        unsubscribe_key: bytes,
        public_url: str | None,
    ) -> None:
        self.db = db
        self.rules = rules
        self.templates = templates
        self.identity = identity
        self.unsubscribe_key = unsubscribe_key
        self.public_url = public_url
        self._cache: dict[int, Prepared] = {}
        self._lock = threading.Lock()

    def get(self, run_id: int) -> Prepared:
        """The prepared run (TemplateError, CampaignError when it cannot be built)."""
        with self._lock:
            found = self._cache.get(run_id)
            if found is not None:
                return found
            with self.db.reading() as conn:
                text = conn.execute(
                    select(CAMPAIGNS.c.definition)
                    .join(RUNS, RUNS.c.campaign_id == CAMPAIGNS.c.id)
                    .where(RUNS.c.id == run_id)
                ).scalar_one()
            definition = CampaignDefinition.from_json(text)
            rules = self.rules()
            sender = sender_of(definition, rules)
            listed = rules.marketing.lists.get(definition.list)
            composer = CampaignComposer(
                definition,
                run_id,
                self.templates,
                sender=sender,
                reply_to=definition.reply_to or rules.marketing.reply_to,
                list_title=(listed.title if listed and listed.title else definition.list),
                company={
                    "name": rules.identity.company.name,
                    "signature": rules.identity.company.signature,
                },
                links=Links(
                    self.unsubscribe_key, self.public_url, rules.marketing.unsubscribe_address
                ),
                loop=(self.identity.loop_header, self.identity.loop_token),
            )
            prepared = Prepared(definition, split_mailbox(sender)[1], composer)
            self._cache[run_id] = prepared
            return prepared

    def forget(self) -> None:
        """Drop every composer (templates or rules changed)."""
        with self._lock:
            self._cache.clear()


class CampaignSender:
    """Sends campaign mail through the relay; shares the ledger with every other process."""

    def __init__(
        self,
        ledger: SendLedger,
        book: CampaignBook,
        composers: Composers,
        relay: Relay,
        clock: Clock,
        rules: Callable[[], Rules],
        session_factory: SessionFactory = SmtpSession,
        starts_runs: bool = True,
    ) -> None:
        self.ledger = ledger
        self.starts_runs = starts_runs
        self.book = book
        self.composers = composers
        self.relay = relay
        self.clock = clock
        self.rules = rules
        self.session_factory = session_factory
        self._window = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: list[Result] = []
        self._early: list[Result] = []
        # results whose rows a mark settled but whose side effects (throttle, suppression)
        # the next exchange applies
        self._effects: list[Result] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.backoff = RelayBackoff(relay, clock, " for campaign mail")
        self._housekeeping_at = 0.0
        self.sent = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Recover what a dead sender left, then open the connection threads."""
        self._stop.clear()
        self.housekeeping(force=True)
        for number in range(self.rules().marketing.connections):
            thread = threading.Thread(target=self._run, name=f"campaign-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the message in hand, settle results, close the connections."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        try:
            results = self._take() + self._take_early()
            self.ledger.exchange(results, 0, 0, self.rules().marketing.throttle)
        except StorageError as exc:
            log.error("campaign sends: cannot record the last results: %s", exc)
        self.ledger.close()

    def wake(self) -> None:
        """A run started or was resumed."""
        self._wake.set()

    def housekeeping(self, force: bool = False) -> None:
        """Start due occurrences, recover dead claims, close finished runs (rate-limited)."""
        now = time.monotonic()  # a cadence in real time, like the scheduler's
        if not force and now < self._housekeeping_at:
            return
        self._housekeeping_at = now + 2.0
        templates = self.composers.templates
        if templates.changed():
            templates.reload()
            self.composers.forget()
        try:
            self.ledger.recover()
            if self.starts_runs and self.book.start_due():
                self._wake.set()
            self.ledger.finish_runs()
        except MailcareError as exc:
            log.error("campaign housekeeping: %s", exc)

    def _finish(self) -> None:
        try:
            self.ledger.finish_runs()
        except MailcareError as exc:
            log.error("campaign runs: %s", exc)

    # -- the connection threads ----------------------------------------------------------

    def _take(self) -> list[Result]:
        """Results of rows that reached `sending` (the next mark settles them)."""
        with self._pending_lock:
            taken, self._pending = self._pending, []
        return taken

    def _take_early(self) -> list[Result]:
        """Results of rows never marked `sending`, and side effects of settled ones."""
        with self._pending_lock:
            taken = self._effects + self._early
            self._effects, self._early = [], []
        return taken

    def _put_back(self, results: list[Result]) -> None:
        with self._pending_lock:
            self._pending[:0] = results

    def _add(self, result: Result, marked: bool) -> None:
        with self._pending_lock:
            (self._pending if marked else self._early).append(result)

    def _flush(self) -> bool:
        """Settle the results marks have not yet taken (when no mark is coming soon)."""
        with self._window:
            results = self._take()
            if not results:
                return False
            try:
                self.ledger.exchange(results, 0, 0, self.rules().marketing.throttle)
            except StorageError as exc:
                self._put_back(results)
                log.error("campaign sends: %s", exc)
                return False
        return True

    def _run(self) -> None:
        session = self.session_factory(self.relay)
        try:
            while not self._stop.is_set():
                self.housekeeping()
                pause = self.backoff.wait()
                if pause > 0:
                    self._stop.wait(min(pause, 1.0))
                    continue
                marketing = self.rules().marketing
                self._wake.clear()
                # results of marked rows stay for the next mark: settling them here would
                # open a moment with two `sending` rows (see the module docstring)
                results = self._take_early()
                try:
                    batch, wait = self.ledger.exchange(
                        results, marketing.batch, marketing.lease, marketing.throttle
                    )
                except StorageError as exc:
                    with self._pending_lock:
                        self._early[:0] = results
                    log.error("campaign sends: %s", exc)
                    self._stop.wait(1.0)
                    continue
                if not batch:
                    if self._flush() or results:
                        self._finish()  # the last results of a run may just have landed
                    if wait <= 0:
                        session.close()
                    self._wake.wait(min(wait, 1.0) if wait > 0 else 1.0)
                    continue
                self._send_batch(session, batch)
        finally:
            session.close()

    def _send_batch(self, session: SmtpSession, batch: list[Claimed]) -> None:
        for index, row in enumerate(batch):
            if self._stop.is_set() or self.backoff.wait() > 0:
                for rest in batch[index:]:
                    self._add(Result(rest.id, rest.address, "released"), False)
                return
            try:
                prepared = self.composers.get(row.run_id)
                raw = prepared.composer.build(row.person, row.message_id, self.clock.now())
            except (TemplateError, MailcareError) as exc:
                self._stop_run(row.run_id, exc)
                for rest in batch[index:]:
                    self._add(Result(rest.id, rest.address, "released"), False)
                return
            self._deliver(session, row, prepared, raw)

    def _deliver(self, session: SmtpSession, row: Claimed, prepared: Prepared, raw: bytes) -> None:
        held = marked = False

        def final_check() -> bool:
            nonlocal held, marked
            self._window.acquire()
            held = True
            results = self._take()
            try:
                marked = self.ledger.mark(row.id, results)
            except StorageError as exc:
                self._put_back(results)
                log.error("%s: not sent, the database is unavailable: %s", row.message_id, exc)
                return False
            effects = [r for r in results if r.deferred or r.hard]
            if effects:
                with self._pending_lock:
                    self._effects.extend(effects)
            return marked

        try:
            try:
                outcome = session.send(prepared.mail_from, [row.address], raw, final_check)
            except RelayUnavailable as exc:
                self.backoff.failed(str(exc))
                self._add(Result(row.id, row.address, "released", str(exc)), marked)
                return
            self.backoff.ok()
            self._add(self._result(row, prepared.definition, outcome), marked)
        finally:
            if held:
                self._window.release()

    def _result(self, row: Claimed, definition: CampaignDefinition, outcome: SendResult) -> Result:
        detail = outcome.detail
        if outcome.outcome == "sent":
            self.sent += 1
            return Result(row.id, row.address, "sent", detail)
        if outcome.outcome == "withdrawn":
            return Result(row.id, row.address, "released", detail)
        if outcome.outcome == "uncertain":
            if definition.resend_uncertain:
                return Result(row.id, row.address, "queued", detail, definition.retry_after)
            log.warning("%s: uncertain: %s", row.message_id, detail)
            return Result(row.id, row.address, "uncertain", detail)
        if outcome.outcome == "failed":
            hard = bool(_DEAD_MAILBOX.search(detail))
            log.info("%s: refused for good: %s", row.message_id, detail)
            return Result(row.id, row.address, "failed", detail, hard=hard)
        deferred = bool(_DEFERRAL.search(detail))
        if row.attempts >= definition.max_attempts:
            return Result(
                row.id,
                row.address,
                "failed",
                f"gave up after {row.attempts} attempts: {detail}",
                deferred=deferred,
            )
        delay = definition.retry_after * 2 ** max(0, row.attempts - 1)
        return Result(row.id, row.address, "queued", detail, delay, deferred=deferred)

    def _stop_run(self, run_id: int, error: Exception) -> None:
        """A run whose mail cannot be built is paused, with the reason, instead of failing all."""
        log.error("campaign run %d paused: %s", run_id, error)
        try:
            with self.ledger.db.transaction() as conn:
                conn.execute(
                    update(RUNS)
                    .where(RUNS.c.id == run_id, RUNS.c.status == "running")
                    .values(status="paused", detail=f"paused: {error}"[:2000])
                )
        except StorageError as exc:
            log.error("campaign run %d: cannot pause: %s", run_id, exc)
        self.composers.forget()
