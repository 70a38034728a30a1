"""IMAP intake: one worker thread per folder, IDLE where possible, UID cursor in the ledger."""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from .errors import LeaseLostError, MailSourceError
from .folders import FolderLedger
from .imap_routes import FolderRoutes, RoutingSource, move_uids
from .inbox import Arrival, Inbox
from .interfaces import Clock
from .settings import Mailbox

if TYPE_CHECKING:
    from .routing import Forwarder
    from .sla_imap import SlaFolders

log = logging.getLogger(__name__)

Connector = Callable[[Mailbox], Any]
NEWS = (b"EXISTS", b"RECENT")
IDLE_SLICE = 1.0
FETCH_BYTES = 32 * 1024 * 1024  # at most this much mail in memory per FETCH
UNFETCHABLE_AFTER = 3


def connect_imap(mailbox: Mailbox) -> IMAPClient:
    """Open, secure and log in an IMAP connection as the mailbox settings say."""
    context = ssl.create_default_context(cafile=str(mailbox.ca_file) if mailbox.ca_file else None)
    if not mailbox.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        client = IMAPClient(
            mailbox.host,
            port=mailbox.effective_port,
            ssl=mailbox.tls == "implicit",
            ssl_context=context,
            timeout=mailbox.timeout,
        )
    except (OSError, ssl.SSLError) as exc:
        raise MailSourceError(f"{mailbox.name}: cannot connect to {mailbox.host}: {exc}") from exc
    try:
        if mailbox.tls == "starttls":
            client.starttls(context)
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.login(mailbox.username, mailbox.password.reveal())
    except Exception:
        _close(client)
        raise
    return client


def _close(client: Any) -> None:
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


class Backoff:
    """Exponential backoff with jitter, reset after a good session."""

    def __init__(self, first: float = 1.0, ceiling: float = 60.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self.current = first

    def next(self) -> float:
        delay = self.current * random.uniform(0.8, 1.2)
        self.current = min(self.current * 2, self.ceiling)
        return delay

    def reset(self) -> None:
        self.current = self.first


class FolderWorker(threading.Thread):
    """Keeps one IMAP folder drained into the inbox for as long as it holds the folder lease."""

    def __init__(
        self,
        mailbox: Mailbox,
        folder: str,
        inbox: Inbox,
        ledger: FolderLedger,
        clock: Clock,
        stop: threading.Event,
        connect: Connector = connect_imap,
        lease_retry: float = 5.0,
        routing: RoutingSource | None = None,
        sla: SlaFolders | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        super().__init__(name=f"imap:{mailbox.name}/{folder}", daemon=True)
        self.mailbox = mailbox
        self.folder = folder
        self.inbox = inbox
        self.ledger = ledger
        self.clock = clock
        self.stop = stop
        self.connect = connect
        self.lease_retry = lease_retry
        self.backoff = Backoff()
        self.folder_id = ledger.ensure(mailbox.name, folder)
        self.synced = threading.Event()
        self._refusals: dict[int, int] = {}
        self._careful: tuple[int, int] = (0, -1)
        # routes to carry out; with routing, also the sweep that learns corrections from moves
        self.routes = FolderRoutes(
            inbox.db,
            clock,
            ledger,
            mailbox,
            folder,
            self.folder_id,
            self._renew,
            routing,
            sla,
            forwarder,
        )
        self.nudged = threading.Event()

    def run(self) -> None:
        holding = False
        while not self.stop.is_set():
            try:
                holding = self.ledger.acquire(self.folder_id)
            except Exception as exc:
                log.error("%s: cannot take the folder lease: %s", self.name, exc)
                holding = False
            if not holding:
                self.stop.wait(self.lease_retry)
                continue
            try:
                self.session()
            except LeaseLostError as exc:
                log.warning("%s: %s; another process polls this folder now", self.name, exc)
                holding = False
                self.stop.wait(self.lease_retry)
            except Exception as exc:
                delay = self.backoff.next()
                text = f"{type(exc).__name__}: {exc}"
                log.warning("%s: %s; reconnecting in %.1fs", self.name, text, delay)
                try:
                    self.ledger.record_error(self.folder_id, text)
                except Exception as inner:
                    log.error("%s: cannot record the error: %s", self.name, inner)
                self.stop.wait(delay)
        if holding:
            try:
                self.ledger.release(self.folder_id)
            except Exception as exc:
                log.warning("%s: cannot release the lease: %s", self.name, exc)

    def session(self) -> None:
        """One connection: select, catch up, then wait for news until stopped."""
        client = self.connect(self.mailbox)
        try:
            capabilities = set(client.capabilities())
            selected = client.select_folder(self.folder)
            uidvalidity = int(selected[b"UIDVALIDITY"])
            cursor = self.ledger.begin_sync(self.folder_id, uidvalidity)
            self.dispose_pending(client, uidvalidity, capabilities)
            use_idle = self.mailbox.idle == "auto" and b"IDLE" in capabilities
            while not self.stop.is_set():
                cursor = self.catch_up(client, uidvalidity, cursor, capabilities)
                if self.routes.run(client, uidvalidity, capabilities, selected):
                    cursor = self.catch_up(client, uidvalidity, cursor, capabilities)
                exists = selected.get(b"EXISTS")
                self.ledger.record_success(
                    self.folder_id,
                    int(exists) if exists is not None else None,
                    _int_or_none(selected.get(b"UIDNEXT")),
                )
                self.backoff.reset()
                self.synced.set()
                if use_idle:
                    self.wait_idle(client)
                else:
                    self.wait_poll(client)
        finally:
            _close(client)

    def catch_up(self, client: Any, uidvalidity: int, cursor: int, capabilities: set[bytes]) -> int:
        """Fetch and store every message above the cursor; return the new cursor."""
        uids = sorted(u for u in client.search(["UID", f"{cursor + 1}:*"]) if u > cursor)
        for chunk in self._chunks(client, uids):
            if self.stop.is_set():
                break
            arrivals, highest = self._fetch(client, chunk)
            if highest <= cursor:
                raise MailSourceError(f"server did not return UID {chunk[0]}; retrying")
            disposition = "none" if self.mailbox.disposition.action == "leave" else "pending"
            self.inbox.store_imap(
                folder_id=self.folder_id,
                mailbox=self.mailbox.name,
                owner=self.ledger.owner,
                uidvalidity=uidvalidity,
                arrivals=arrivals,
                highest_uid=highest,
                disposition=disposition,
            )
            cursor = highest
            self._renew()  # a long first sync must not outlive the lease
            if disposition == "pending":
                stored = [a.uid for a in arrivals if a.uid is not None and a.problem is None]
                self.dispose(client, stored, uidvalidity, capabilities)
            if highest != chunk[-1]:
                raise MailSourceError("incomplete FETCH; reconnecting to retry")
        return cursor

    def _chunks(self, client: Any, uids: Sequence[int]) -> Iterator[list[int]]:
        """Split UIDs into FETCH batches bounded by count and by total size."""
        step = self.mailbox.fetch_batch
        careful = [uid for uid in uids if self._careful[0] <= uid <= self._careful[1]]
        for uid in careful:
            yield [uid]
        self._careful = (0, -1)
        uids = [uid for uid in uids if uid not in set(careful)]
        for start in range(0, len(uids), step):
            chunk = list(uids[start : start + step])
            sizes = client.fetch(chunk, [b"RFC822.SIZE"])
            batch: list[int] = []
            total = 0
            for uid in chunk:
                size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
                if batch and total + size > FETCH_BYTES:
                    yield batch
                    batch, total = [], 0
                batch.append(uid)
                total += size
            if batch:
                yield batch

    def _fetch(self, client: Any, chunk: list[int]) -> tuple[list[Arrival], int]:
        """FETCH a batch; return what arrived and the highest UID the cursor may move to."""
        try:
            response = client.fetch(chunk, [b"BODY.PEEK[]"])
        except IMAPClientAbortError as exc:
            # The connection died. Some servers drop it on a message they cannot read:
            # after the reconnect, go through this stretch one message at a time.
            if len(chunk) == 1:
                given_up = self._unfetchable(chunk[0], f"connection lost: {exc}")
                if given_up[0]:
                    return given_up
            self._careful = (chunk[0], chunk[-1])
            raise
        except IMAPClientError as exc:
            if len(chunk) == 1:
                return self._unfetchable(chunk[0], str(exc))
            log.warning(
                "%s: FETCH of %d messages failed (%s); one at a time", self.name, len(chunk), exc
            )
            arrivals: list[Arrival] = []
            highest = chunk[0] - 1
            for uid in chunk:
                got, top = self._fetch(client, [uid])
                if top < uid:
                    break
                arrivals += got
                highest = top
            return arrivals, highest
        arrivals = [
            Arrival(bytes(response[uid][b"BODY[]"]), uid)
            for uid in chunk
            if uid in response and response[uid].get(b"BODY[]") is not None
        ]
        received = {a.uid for a in arrivals}
        missing = [uid for uid in chunk if uid not in received]
        if not missing:
            return arrivals, chunk[-1]
        still_there = [u for u in client.search(["UID", _uid_set(missing)]) if u in set(missing)]
        if not still_there:
            return arrivals, chunk[-1]  # expunged meanwhile: nothing to keep
        first = min(still_there)
        if len(chunk) == 1:
            return self._unfetchable(first, "the server lists it but returns no body")
        # the server has a message it did not return: stop before it, retry it alone later
        log.warning("%s: UID %s not returned by FETCH; retrying", self.name, first)
        return [a for a in arrivals if a.uid is not None and a.uid < first], first - 1

    def _unfetchable(self, uid: int, why: str) -> tuple[list[Arrival], int]:
        """A message the server keeps refusing: after a few tries, record it and move on."""
        self._refusals[uid] = self._refusals.get(uid, 0) + 1
        if self._refusals[uid] < UNFETCHABLE_AFTER:
            log.warning("%s: UID %s could not be fetched (%s); will retry", self.name, uid, why)
            return [], uid - 1
        log.error(
            "%s: UID %s refused %d times (%s); quarantined without its bytes",
            self.name,
            uid,
            self._refusals[uid],
            why,
        )
        reason = f"imap: the server refused to return UID {uid} {self._refusals[uid]} times: {why}"
        return [Arrival(b"", uid, problem=reason[:2000])], uid

    def dispose_pending(self, client: Any, uidvalidity: int, capabilities: set[bytes]) -> None:
        """Finish dispositions that a crash or an error interrupted."""
        if self.mailbox.disposition.action == "leave":
            return
        uids = self.inbox.pending_dispositions(self.folder_id, uidvalidity)
        if uids:
            self.dispose(client, uids, uidvalidity, capabilities)

    def dispose(
        self, client: Any, uids: Sequence[int], uidvalidity: int, capabilities: set[bytes]
    ) -> None:
        """Flag or move stored messages on the server; never delete."""
        if not uids:
            return
        rule = self.mailbox.disposition
        if rule.action == "flag":
            client.add_flags(list(uids), [rule.flag], silent=True)
        elif rule.action == "move":
            assert rule.folder is not None
            move_uids(client, uids, rule.folder, capabilities)
        self.inbox.mark_disposed(self.folder_id, uidvalidity, uids)

    def wait_idle(self, client: Any) -> None:
        """IDLE until the server reports news, the lease is renewed, or we are nudged or stop."""
        client.idle()
        try:
            deadline = self.clock.monotonic() + self.mailbox.idle_refresh
            renew_every = max(1.0, self.ledger.ttl.total_seconds() / 3)
            next_renew = self.clock.monotonic() + renew_every
            while not self.stop.is_set() and self.clock.monotonic() < deadline:
                if self.nudged.is_set():
                    self.nudged.clear()
                    return
                waited = time.monotonic()
                responses = client.idle_check(timeout=IDLE_SLICE)
                if any(r and r[0] == b"BYE" for r in responses):
                    raise MailSourceError("the server closed the connection (BYE)")
                if any(len(r) > 1 and r[1] in NEWS for r in responses):
                    return
                if not responses and time.monotonic() - waited < IDLE_SLICE / 2:
                    # readable but no response: imapclient swallows EOF this way
                    raise MailSourceError("the connection was closed during IDLE")
                if self.clock.monotonic() >= next_renew:
                    # a cycle at each renewal: routes classified in another process, and
                    # mail that came just before IDLE began, which servers may not announce
                    self._renew()
                    return
        finally:
            client.idle_done()

    def wait_poll(self, client: Any) -> None:
        """Sleep for the poll interval (renewing the lease), then ask the server."""
        deadline = self.clock.monotonic() + self.mailbox.poll_interval
        renew_every = max(1.0, self.ledger.ttl.total_seconds() / 3)
        while not self.stop.is_set():
            left = deadline - self.clock.monotonic()
            if left <= 0:
                break
            self.stop.wait(min(left, renew_every))
            self._renew()
        client.noop()

    def _renew(self) -> None:
        if not self.ledger.renew(self.folder_id):
            raise LeaseLostError(f"folder {self.mailbox.name}/{self.folder}: lease lost")


def _uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(uid) for uid in uids)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


class ImapSource:
    """Starts and stops a FolderWorker for every configured folder."""

    def __init__(
        self,
        mailboxes: Sequence[Mailbox],
        inbox: Inbox,
        ledger: FolderLedger,
        clock: Clock,
        connect: Connector = connect_imap,
        lease_retry: float = 5.0,
        routing: RoutingSource | None = None,
        sla: Callable[[Mailbox], SlaFolders] | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.workers = [
            FolderWorker(
                box,
                folder,
                inbox,
                ledger,
                clock,
                self.stop_event,
                connect,
                lease_retry,
                routing,
                sla(box) if sla is not None and folder == box.folders[0] else None,
                forwarder,
            )
            for box in mailboxes
            for folder in box.folders
        ]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def wake(self) -> None:
        """Have every worker leave IDLE and carry out pending routes (call after classifying)."""
        for worker in self.workers:
            worker.nudged.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for worker in self.workers:
            worker.join(timeout)
