"""IMAP client helpers shared by the Dovecot and pymap fixtures (imapclient underneath)."""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from imapclient import IMAPClient

logger = logging.getLogger(__name__)

Security = Literal["plain", "starttls", "implicit"]

MULTIAPPEND_BATCH = 500
MULTIAPPEND_MAX_BYTES = 4 * 1024 * 1024
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)


@dataclass(frozen=True)
class Account:
    """A mailbox login on a test server; `address` is where LMTP/SMTP delivers to it."""

    username: str
    password: str
    domain: str = "example.test"

    @property
    def address(self) -> str:
        """The e-mail address of this account."""
        return f"{self.username}@{self.domain}"


def expand_uid_set(text: str) -> list[int]:
    """Expand an IMAP sequence set such as `3:5,9` into [3, 4, 5, 9]."""
    uids: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        start, stop = int(first), int(last or first)
        step = 1 if stop >= start else -1
        uids.extend(range(start, stop + step, step))
    return uids


def appended_uids(response: bytes | str) -> list[int]:
    """Return the UIDs named by the APPENDUID code of an APPEND response (RFC 4315)."""
    raw = response.encode() if isinstance(response, str) else response
    match = _APPENDUID.search(raw)
    if match is None:
        raise ValueError(f"no APPENDUID in APPEND response {raw!r}")
    return expand_uid_set(match.group(2).decode())


def open_client(
    host: str,
    port: int,
    account: Account | None = None,
    *,
    security: Security = "plain",
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> IMAPClient:
    """Connect (and log in when account is given) with TCP_NODELAY set on the socket."""
    client = IMAPClient(
        host,
        port=port,
        ssl=security == "implicit",
        ssl_context=ssl_context,
        timeout=timeout,
    )
    try:
        # imaplib writes a literal and its CRLF in separate send() calls; without
        # TCP_NODELAY, Nagle plus delayed ACK stalls each APPEND for tens of ms.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if security == "starttls":
            client.starttls(ssl_context)
        if account is not None:
            client.login(account.username, account.password)
    except BaseException:
        close_client(client)
        raise
    return client


def close_client(client: IMAPClient) -> None:
    """Log out, or at least close the socket, without raising."""
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


def wait_for_line(
    client: IMAPClient, match: Callable[[bytes], bool], timeout: float = 5.0
) -> list[bytes]:
    """Read server lines (e.g. during IDLE) until one matches; returns the lines read.

    Blocking reads with a deadline: imapclient's idle_check() reads non-blocking and fails
    on a response split across TCP segments (mjs/imapclient#519).
    """
    sock = client.socket()
    saved = sock.gettimeout()
    deadline = time.monotonic() + timeout
    lines: list[bytes] = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching IMAP line within {timeout} s; got {lines!r}")
            sock.settimeout(remaining)
            try:
                line = client._imap.readline()  # imapclient exposes no blocking line reader
            except TimeoutError as exc:
                raise TimeoutError(
                    f"no matching IMAP line within {timeout} s; got {lines!r}"
                ) from exc
            if not line:
                raise ConnectionError(f"connection closed while waiting; got {lines!r}")
            lines.append(line.rstrip(b"\r\n"))
            if match(lines[-1]):
                return lines
    finally:
        sock.settimeout(saved)


def _batches(raws: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    """Split raws into MULTIAPPEND commands of bounded count and size."""
    start, size = 0, 0
    for index, raw in enumerate(raws):
        if index > start and (
            index - start >= MULTIAPPEND_BATCH or size + len(raw) > MULTIAPPEND_MAX_BYTES
        ):
            yield raws[start:index]
            start, size = index, 0
        size += len(raw)
    if start < len(raws):
        yield raws[start:]


class ImapHelpers:
    """Mailbox set-up helpers over a real IMAP connection; subclasses provide open_client()."""

    host: str
    imap_port: int

    def open_client(self, account: Account | None = None, **options: Any) -> IMAPClient:
        """Return a connected (and, with account, logged-in) IMAPClient."""
        return open_client(self.host, self.imap_port, account, **options)

    def append(self, account: Account, folder: str, raw: bytes, flags: Iterable[str] = ()) -> int:
        """APPEND one message and return its UID (from APPENDUID)."""
        client = self.open_client(account)
        try:
            response = client.append(folder, raw, flags=tuple(flags))
        finally:
            close_client(client)
        return appended_uids(response)[0]

    def append_many(
        self, account: Account, folder: str, raws: Iterable[bytes], flags: Iterable[str] = ()
    ) -> list[int]:
        """APPEND many messages over one connection with MULTIAPPEND; returns their UIDs."""
        messages = list(raws)
        flag_list = tuple(flags)
        uids: list[int] = []
        client = self.open_client(account)
        try:
            for batch in _batches(messages):
                items: list[dict[str, Any]] = [{"msg": raw, "flags": flag_list} for raw in batch]
                # multiappend() hands back imaplib's (type, data) pair, not the text alone.
                kind, data = client.multiappend(folder, items)
                if kind != "OK":
                    raise RuntimeError(f"MULTIAPPEND failed: {kind} {data!r}")
                uids.extend(appended_uids(b" ".join(bytes(part) for part in data)))
        finally:
            close_client(client)
        return uids

    def create_folder(self, account: Account, folder: str) -> None:
        """CREATE folder for account."""
        client = self.open_client(account)
        try:
            client.create_folder(folder)
        finally:
            close_client(client)

    def delete_folder(self, account: Account, folder: str) -> None:
        """DELETE folder (re-creating it later gives it a new UIDVALIDITY)."""
        client = self.open_client(account)
        try:
            client.delete_folder(folder)
        finally:
            close_client(client)

    def uidvalidity(self, account: Account, folder: str) -> int:
        """Return the UIDVALIDITY of folder."""
        client = self.open_client(account)
        try:
            status = client.folder_status(folder, [b"UIDVALIDITY"])
        finally:
            close_client(client)
        return int(status[b"UIDVALIDITY"])

    def fetch_all(self, account: Account, folder: str) -> dict[int, bytes]:
        """Return {uid: raw bytes} of every message in folder."""
        client = self.open_client(account)
        try:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            fetched = client.fetch(uids, [b"BODY.PEEK[]"]) if uids else {}
        finally:
            close_client(client)
        return {int(uid): bytes(data[b"BODY[]"]) for uid, data in fetched.items()}
