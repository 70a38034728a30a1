"""A self-contained Dovecot (IMAP, IMAPS/STARTTLS, LMTP) on free loopback ports, for tests."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import smtplib
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from imapclient import IMAPClient

from daemon.folders import process_alive

from .certs import TestCertificates
from .imap import Account, ImapHelpers, Security, close_client, open_client
from .net import LOOPBACK, free_port, poll_until, port_accepts, read_greeting

logger = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 300
POOL_GROWTH = 100
START_ATTEMPTS = 3
DIR_PREFIX = "mailcare-dovecot-"
STALE_AFTER = 600.0  # seconds without log activity before a dead instance's files go
STOP_GRACE = 0.1
# Dovecot refuses to touch mail as uid 0, so root runs the whole instance as this user.
ROOT_RUNS_AS = "nobody"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
LMTP_BINARIES = ("/usr/lib/dovecot/lmtp", "/usr/libexec/dovecot/lmtp")
# Capabilities a client adapts to; kept as named facts for tests.
NOTABLE_CAPABILITIES = ("IDLE", "UIDPLUS", "MOVE", "MULTIAPPEND", "SPECIAL-USE", "CONDSTORE")


def _which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def _run_user() -> tuple[str, int, int] | None:
    """(name, uid, gid) Dovecot must run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(ROOT_RUNS_AS)
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def remove_stale_directories(parent: Path, idle_for: float = STALE_AFTER) -> list[Path]:
    """Delete instance directories whose Dovecot is gone and whose log has been quiet."""
    removed = []
    for directory in parent.glob(f"{DIR_PREFIX}*"):
        try:
            pid = int((directory / "run" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid and process_alive(pid):
            continue
        log = directory / "log" / "dovecot.log"
        try:
            last_activity = (log if log.exists() else directory).stat().st_mtime
        except OSError:
            continue
        if time.time() - last_activity < idle_for:
            continue  # may be starting or restarting right now
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    if removed:
        logger.info("removed %d stale Dovecot directories", len(removed))
    return removed


def _traversable_by_others(path: Path) -> bool:
    """Tell whether every ancestor of path lets other users through (o+x)."""
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in path.resolve().parents)


class Dovecot(ImapHelpers):
    """One throwaway Dovecot instance owned by this process; stop() removes everything."""

    name = "dovecot"
    keywords = True
    special_use = True
    tls = True
    lmtp = True

    def __init__(
        self,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        idle: bool = True,
        certs: TestCertificates | None = None,
        parent_dir: str | Path | None = None,
        fsync: Literal["never", "optimized", "always"] = "never",
        start_timeout: float = 10.0,
    ) -> None:
        self.host = LOOPBACK
        self.imap_port = 0
        self.imaps_port = 0
        self.lmtp_port = 0
        self.idle = idle
        self.fsync = fsync
        self.start_timeout = start_timeout
        self.capabilities: frozenset[str] = frozenset()
        self.start_seconds = 0.0
        self._pool_size = pool_size
        self._parent_dir = Path(parent_dir or tempfile.gettempdir())
        self._certs = certs
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._accounts: list[Account] = []
        self._next_user = 1
        self._handed_out = 0
        self._capability_override = ""

    # -- availability --------------------------------------------------------------

    @staticmethod
    def missing() -> str | None:
        """Say why Dovecot cannot run here, or None when it can."""
        if _which("dovecot") is None:
            return "no dovecot binary (apt-get install dovecot-imapd dovecot-lmtpd)"
        if not any(os.access(path, os.X_OK) for path in LMTP_BINARIES):
            return "no Dovecot LMTP server (apt-get install dovecot-lmtpd)"
        if _which("doveadm") is None:
            return "no doveadm binary"
        if _which("setpriv") is None:
            return "no setpriv binary (util-linux)"
        return None

    # -- paths -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The instance directory (config, users, mail, sockets, log)."""
        if self._dir is None:
            raise RuntimeError("Dovecot has not been started")
        return self._dir

    @property
    def config_path(self) -> Path:
        """The dovecot.conf of this instance."""
        return self.directory / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        """Dovecot's own log file."""
        return self.directory / "log" / "dovecot.log"

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that issued the server certificate."""
        if self._certs is None:
            raise RuntimeError("Dovecot has not been started")
        return self._certs.ca_file

    @property
    def certs(self) -> TestCertificates:
        """The TLS material of this instance."""
        if self._certs is None:
            raise RuntimeError("Dovecot has not been started")
        return self._certs

    @property
    def running(self) -> bool:
        """True while the master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle ------------------------------------------------------------------

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Dovecot:
        """Create the instance directory and users, pick ports, start and wait until it answers."""
        reason = self.missing()
        if reason is not None:
            raise RuntimeError(f"cannot start Dovecot: {reason}")
        if self.running:
            raise RuntimeError("Dovecot is already running")
        began = time.perf_counter()
        try:
            self._prepare_directory()
            self._first_launch()
            self.capabilities = self._probe_capabilities()
            if not self.idle:
                # imap_capability replaces the whole list, so derive it from the real one.
                self._capability_override = " ".join(
                    cap for cap in sorted(self.capabilities) if cap != "IDLE"
                )
                self._write_config()
                self.restart()
                self.capabilities = self._probe_capabilities()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - began
        logger.info(
            "Dovecot up in %.0f ms: imap=%d imaps=%d lmtp=%d dir=%s",
            self.start_seconds * 1000,
            self.imap_port,
            self.imaps_port,
            self.lmtp_port,
            self._dir,
        )
        return self

    def _first_launch(self) -> None:
        """Pick free ports and launch; retry when another process grabbed one meanwhile."""
        for attempt in range(1, START_ATTEMPTS + 1):
            self.imap_port, self.imaps_port, self.lmtp_port = self._pick_ports()
            self._write_config()
            try:
                self._launch()
                return
            except _PortTaken:
                logger.warning("a Dovecot port was taken meanwhile (attempt %d)", attempt)
                if attempt == START_ATTEMPTS:
                    raise

    def restart(self) -> None:
        """Stop and start again on the same ports; mailboxes and users are kept."""
        self._terminate()
        self._launch()

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _prepare_directory(self) -> None:
        if self._dir is not None:
            return
        remove_stale_directories(self._parent_dir)
        directory = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self._parent_dir))
        directory.chmod(0o755)
        self._dir = directory
        run_user = _run_user()
        if run_user is not None and not _traversable_by_others(directory):
            raise RuntimeError(
                f"{run_user[0]} cannot reach {directory}: a parent directory is not o+x; "
                "pass parent_dir=/tmp"
            )
        for sub in ("run", "state", "log", "mail", "tls"):
            (directory / sub).mkdir()
        if self._certs is None:
            self._certs = TestCertificates.create(directory / "tls")
        self._accounts = []
        self._add_users(self._pool_size)
        self._chown(directory, *directory.rglob("*"))

    def _chown(self, *paths: Path) -> None:
        """Hand paths we wrote to the unprivileged user Dovecot runs as (when we are root)."""
        run_user = _run_user()
        if run_user is None:
            return
        _, uid, gid = run_user
        for path in paths:
            os.chown(path, uid, gid, follow_symlinks=False)

    def _pick_ports(self) -> tuple[int, int, int]:
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        imap, imaps, lmtp = sorted(ports)
        return imap, imaps, lmtp

    def _write_config(self) -> None:
        self.config_path.write_text(self._render_config())
        tls = self.directory / "tls"
        self._chown(self.config_path, *tls.iterdir())

    def _render_config(self) -> str:
        """The whole dovecot.conf; nothing under /etc/dovecot is read."""
        d = self.directory
        run_user = _run_user()
        if run_user is not None:
            user, group = run_user[0], _group_name(run_user[2])
        else:
            user, group = pwd.getpwuid(os.geteuid()).pw_name, _group_name(os.getegid())
        certs = self.certs
        tls_dir = certs.cert_file.parent
        if tls_dir != d / "tls":
            # The certificates live elsewhere (shared); copy them where Dovecot may read them.
            shutil.copyfile(certs.cert_file, d / "tls" / "server-cert.pem")
            shutil.copyfile(certs.key_file, d / "tls" / "server-key.pem")
        capability = (
            f"imap_capability = {self._capability_override}\n" if self._capability_override else ""
        )
        special = "\n".join(
            f"  mailbox {box} {{\n    special_use = \\{box}\n    auto = {auto}\n  }}"
            for box, auto in (
                ("Drafts", "subscribe"),
                ("Sent", "subscribe"),
                ("Trash", "subscribe"),
                ("Junk", "subscribe"),
                ("Archive", "no"),
            )
        )
        return f"""# generated for one test session; removed when the fixture stops
instance_name = mailcare-test-{self.imap_port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/log/dovecot.log
info_log_path = {d}/log/dovecot.log
protocols = imap lmtp
listen = {LOOPBACK}
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}

ssl = yes
ssl_cert = <{d}/tls/server-cert.pem
ssl_key = <{d}/tls/server-key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
auth_failure_delay = 0 secs

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = home={d}/mail/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = {self.fsync}
mail_max_userip_connections = 1000
mailbox_idle_check_interval = 1 secs
lmtp_save_to_detail_mailbox = yes
recipient_delimiter = +
{capability}
namespace inbox {{
  inbox = yes
  separator = /
{special}
}}

service anvil {{
  chroot =
  # Without this socket the auth process skips its per-IP penalty, which would delay
  # every login from 127.0.0.1 by 2-15 s after one test tried a wrong password.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {LOOPBACK}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {LOOPBACK}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {LOOPBACK}
    port = {self.lmtp_port}
  }}
}}
"""

    def _launch(self) -> None:
        """Start `dovecot -F` (owned by this process) and wait until every port answers."""
        if self.running:
            raise RuntimeError("Dovecot is already running")
        for port in (self.imap_port, self.imaps_port, self.lmtp_port):
            if port_accepts(port):
                raise _PortTaken(f"127.0.0.1:{port} is already in use")
        command = [_which("setpriv") or "setpriv"]
        run_user = _run_user()
        if run_user is not None:
            command += [f"--reuid={run_user[1]}", f"--regid={run_user[2]}", "--clear-groups"]
        # The master goes down with this process even if fixture teardown never runs.
        command += ["--pdeathsig", "TERM", "--", _which("dovecot") or "dovecot"]
        command += ["-F", "-c", str(self.config_path)]
        console = self.directory / "log" / "console.log"
        with console.open("ab") as out:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole on stop
            )
        proc = self._proc
        try:
            poll_until(
                lambda: True if _imap_ready(self.imap_port) else None,
                self.start_timeout,
                "Dovecot IMAP",
                alive=lambda: proc.poll() is None,
            )
            poll_until(
                lambda: True if _lmtp_ready(self.lmtp_port) else None,
                self.start_timeout,
                "Dovecot LMTP",
                alive=lambda: proc.poll() is None,
            )
            poll_until(
                lambda: True if port_accepts(self.imaps_port) else None,
                self.start_timeout,
                "Dovecot IMAPS",
                alive=lambda: proc.poll() is None,
            )
        except (TimeoutError, RuntimeError) as exc:
            log = self._log_tail()
            self._terminate()
            if "Address already in use" in log:
                raise _PortTaken(log) from exc
            raise RuntimeError(f"Dovecot did not start: {exc}\n{log}") from exc

    def _terminate(self) -> None:
        """SIGTERM the master, then SIGKILL its process group after a short grace period."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                # A clean shutdown lingers ~1 s in the log process, and up to 5 s in
                # imap-login after an aborted TLS handshake; nothing there is worth keeping.
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        if proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            logger.warning("Dovecot exited with %s:\n%s", proc.returncode, self._log_tail())
        ports = (self.imap_port, self.imaps_port, self.lmtp_port)
        poll_until(
            lambda: None if any(port_accepts(port) for port in ports) else True,
            10.0,
            "Dovecot ports to close",
        )

    def _log_tail(self, lines: int = 20) -> str:
        chunks = []
        for path in (self.directory / "log" / "console.log", self.log_path):
            try:
                chunks.extend(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                pass
        return "\n".join(chunks)

    def _probe_capabilities(self) -> frozenset[str]:
        client = self.open_client(self._probe_account())
        try:
            return frozenset(cap.decode() for cap in client.capabilities())
        finally:
            close_client(client)

    # -- accounts ----------------------------------------------------------------------

    def _probe_account(self) -> Account:
        return self._accounts[0]

    def _add_users(self, count: int) -> None:
        """Append count users (userNNN, password secret-userNNN) to the passwd-file."""
        new = []
        for _ in range(count):
            name = f"user{self._next_user:03d}"
            self._next_user += 1
            new.append(Account(name, f"secret-{name}"))
        with (self.directory / "users").open("a") as users:
            for account in new:
                users.write(f"{account.username}:{{PLAIN}}{account.password}\n")
        self._accounts.extend(new)

    def account(self) -> Account:
        """Hand out an account no one has used (user001 is kept for the fixture itself)."""
        index = self._handed_out + 1
        if index >= len(self._accounts):
            self._grow_pool()
        self._handed_out = index
        return self._accounts[index]

    def _grow_pool(self) -> None:
        """Add users while running; Dovecot sees them only after it re-reads the file."""
        logger.warning("Dovecot account pool exhausted; adding %d users", POOL_GROWTH)
        self._add_users(POOL_GROWTH)
        self._chown(self.directory / "users")
        newest = self._accounts[-1]

        def can_login() -> bool | None:
            try:
                close_client(self.open_client(newest))
            except Exception:
                return None
            return True

        poll_until(can_login, 5.0, "new Dovecot users")

    # -- clients and helpers -----------------------------------------------------------

    def open_client(
        self,
        account: Account | None = None,
        *,
        security: Security = "plain",
        **options: Any,
    ) -> IMAPClient:
        """Connect over plain IMAP, STARTTLS or implicit TLS (IMAPS), optionally logged in."""
        port = self.imaps_port if security == "implicit" else self.imap_port
        if security != "plain" and options.get("ssl_context") is None:
            options["ssl_context"] = self.certs.client_context()
        return open_client(self.host, port, account, security=security, **options)

    def lmtp_deliver(
        self, rcpt: str | Account, raw: bytes, mail_from: str = "sender@example.test"
    ) -> None:
        """Deliver raw to one recipient over LMTP (one recipient per transaction)."""
        address = rcpt.address if isinstance(rcpt, Account) else rcpt
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=10) as lmtp:
            refused = lmtp.sendmail(mail_from, [address], raw)
        if refused:
            raise RuntimeError(f"LMTP refused {address}: {refused}")

    def kick(self, account: Account | str) -> bool:
        """Drop every IMAP connection of that user; True when at least one was dropped."""
        user = account.username if isinstance(account, Account) else account
        result = subprocess.run(
            [_which("doveadm") or "doveadm", "-c", str(self.config_path), "kick", user],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        logger.debug("doveadm kick %s -> %d %s", user, result.returncode, result.stdout.strip())
        if result.returncode == 0:
            return True
        if "no users kicked" in (result.stdout + result.stderr).lower():
            return False
        raise RuntimeError(f"doveadm kick failed ({result.returncode}): {result.stderr.strip()}")


class _PortTaken(RuntimeError):
    """Raised when another process bound one of the chosen ports first."""


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def _imap_ready(port: int) -> bool:
    try:
        return read_greeting(port).startswith(b"* OK")
    except OSError:
        return False


def _lmtp_ready(port: int) -> bool:
    try:
        return read_greeting(port).startswith(b"220")
    except OSError:
        return False
