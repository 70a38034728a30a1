"""SMTP to the relay: one reusable session per sender thread, every outcome classified.

The one moment that matters is the end of DATA: until the final "." has left this host,
nothing was delivered and a failure can simply be retried; after it, until the relay's
reply is read, the message may or may not have been accepted. That window is reported
as `uncertain` and never retried on its own, so a message is never sent twice.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .interfaces import Clock
from .settings import Relay

log = logging.getLogger(__name__)

Outcome = Literal["sent", "retry", "failed", "uncertain", "withdrawn"]
# called after the relay's 354 and before the text and the final ".": False withdraws it
FinalCheck = Callable[[], bool]
_LEADING_DOT = re.compile(rb"(?m)^\.")
# an addr-spec smtplib would only re-parse (0.05 ms a message) to put it between < and >
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*(@[A-Za-z0-9.-]+)?")


def _envelope(smtp: smtplib.SMTP, verb: str, keyword: str, address: str) -> tuple[int, bytes]:
    """MAIL FROM or RCPT TO for address (the null path when empty)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        smtp.putcmd(verb, f"{keyword}:<{address}>")
        return smtp.getreply()
    return smtp.mail(address) if verb == "mail" else smtp.rcpt(address)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one message: sent, retry later, failed for good, or unknown."""

    outcome: Outcome
    detail: str = ""


class RelayBackoff:
    """How long to leave an unreachable relay alone: exponential, reset by a success.

    Shared by the threads of one sender; `what` names the mail in the log line.
    """

    def __init__(self, relay: Relay, clock: Clock, what: str = "") -> None:
        self.relay = relay
        self.clock = clock
        self.what = what
        self._lock = threading.Lock()
        self._down_until = float("-inf")
        self._failures = 0

    @property
    def failures(self) -> int:
        """Failures since the last success."""
        with self._lock:
            return self._failures

    def wait(self) -> float:
        """Seconds to go before the relay may be tried again (0 when it may be now)."""
        with self._lock:
            return max(0.0, self._down_until - self.clock.monotonic())

    def failed(self, error: str) -> None:
        """The relay could not be reached or refused the session."""
        with self._lock:
            self._failures += 1
            delay = min(self.relay.reconnect_max, 0.5 * 2 ** min(self._failures, 16))
            self._down_until = self.clock.monotonic() + delay
        log.warning("relay unavailable%s (%s); trying again in %.1fs", self.what, error, delay)

    def ok(self) -> None:
        """A session worked."""
        with self._lock:
            if self._failures:
                log.info("relay reachable again")
            self._failures = 0


class RelayUnavailable(Exception):
    """The relay cannot be reached or refuses the session; nothing was handed over."""


def _reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"[:500]


def _by_code(code: int, text: str) -> SendResult:
    if 200 <= code < 300:
        return SendResult("sent", text)
    if 400 <= code < 500:
        return SendResult("retry", text)
    return SendResult("failed", text)


def tls_context(relay: Relay) -> ssl.SSLContext:
    """A verifying TLS context (a private CA through ca_file)."""
    context = ssl.create_default_context(cafile=str(relay.ca_file) if relay.ca_file else None)
    if not relay.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpSession:
    """One SMTP connection to the relay, opened lazily and reused for many messages."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._smtp: smtplib.SMTP | None = None
        self._sent_here = 0

    def _open(self) -> smtplib.SMTP:
        relay = self.relay
        try:
            smtp: smtplib.SMTP
            if relay.tls == "implicit":
                smtp = smtplib.SMTP_SSL(
                    relay.host,
                    relay.effective_port,
                    local_hostname=relay.hostname,
                    timeout=relay.timeout,
                    context=tls_context(relay),
                )
            else:
                smtp = smtplib.SMTP(
                    relay.host,
                    relay.effective_port,
                    local_hostname=relay.hostname,
                    timeout=relay.timeout,
                )
            # a message's last, partial segment would otherwise wait for the relay's
            # (delayed) acknowledgement of the segment before it (Nagle's algorithm)
            if smtp.sock is not None:
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if relay.tls == "starttls":
                smtp.starttls(context=tls_context(relay))
                smtp.ehlo()
            if relay.username is not None and relay.password is not None:
                smtp.login(relay.username, relay.password.reveal())
        except smtplib.SMTPAuthenticationError as exc:
            raise RelayUnavailable(
                f"authentication refused: {_reply_text(exc.smtp_code, exc.smtp_error)}"
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise RelayUnavailable(_reply_text(exc.smtp_code, exc.smtp_error)) from exc
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise RelayUnavailable(f"{relay.host}:{relay.effective_port}: {exc}") from exc
        self._sent_here = 0
        return smtp

    def close(self) -> None:
        """Say QUIT if the connection is still there; never raise."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def send(
        self,
        mail_from: str,
        recipients: Sequence[str],
        raw: bytes,
        final_check: FinalCheck | None = None,
    ) -> SendResult:
        """Hand one message to the relay; raise RelayUnavailable if it cannot be reached.

        final_check runs after the relay's 354, right before the message text and its
        final "." go out, so a caller can record durably that the message is about to be
        handed over (or withdraw it: `withdrawn`).
        """
        if self._smtp is not None and self._sent_here >= self.relay.messages_per_connection:
            self.close()
        fresh = self._smtp is None
        if self._smtp is None:
            self._smtp = self._open()
        try:
            return self._transaction(self._smtp, mail_from, recipients, raw, final_check)
        except _Dropped as exc:
            # a reused connection the relay had already closed: nothing was handed over
            self.close()
            if fresh:
                raise RelayUnavailable(str(exc)) from exc
            self._smtp = self._open()
            try:
                return self._transaction(self._smtp, mail_from, recipients, raw, final_check)
            except _Dropped as again:
                self.close()
                raise RelayUnavailable(str(again)) from again
        finally:
            self._sent_here += 1

    def _transaction(
        self,
        smtp: smtplib.SMTP,
        mail_from: str,
        recipients: Sequence[str],
        raw: bytes,
        final_check: FinalCheck | None = None,
    ) -> SendResult:
        try:
            code, message = _envelope(smtp, "mail", "FROM", mail_from)
            if code != 250:
                self._reset(smtp)
                return _by_code(code, "MAIL FROM: " + _reply_text(code, message))
            accepted: list[str] = []
            refused: list[str] = []
            worst: SendResult | None = None
            for rcpt in recipients:
                code, message = _envelope(smtp, "rcpt", "TO", rcpt)
                if code in (250, 251):
                    accepted.append(rcpt)
                    continue
                result = _by_code(code, f"RCPT TO:<{rcpt}>: {_reply_text(code, message)}")
                refused.append(result.detail)
                if worst is None or result.outcome == "retry":
                    worst = result
            if not accepted:
                self._reset(smtp)
                assert worst is not None
                return worst
            code, message = smtp.docmd("DATA")
            if code != 354:
                self._reset(smtp)
                return _by_code(code, "DATA: " + _reply_text(code, message))
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _Dropped(f"connection lost before the message was sent: {exc}") from exc
        payload = _LEADING_DOT.sub(b"..", raw)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        if final_check is not None and not final_check():
            # the relay waits for the message text; closing the connection now leaves it
            # nothing to deliver
            self.close()
            return SendResult("withdrawn", "withdrawn before the message text was sent")
        try:
            smtp.send(payload + b".\r\n")
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            # sendall failed, so its last bytes (the final ".") never left: not delivered
            self.close()
            return SendResult("retry", f"connection lost while sending the message: {exc}")
        try:
            code, message = smtp.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.close()
            return SendResult("uncertain", f"no reply after the message was sent: {exc}")
        result = _by_code(code, _reply_text(code, message))
        if result.outcome == "sent" and refused:
            return SendResult("sent", result.detail + "; refused: " + "; ".join(refused))
        return result

    def _reset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except (OSError, smtplib.SMTPException):
            self.close()


class _Dropped(Exception):
    """The connection failed before the message body was handed over."""
