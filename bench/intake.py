"""Intake benchmark: N messages in Dovecot, `mailcare run` from start until all are threaded.

Prints one JSON line: mailcare's rate (stored and threaded) and, measured in the same run
on the same messages, the raw imapclient FETCH rate (the ceiling).

    python bench/intake.py [-n 5000] [--corpus DIR] [--postgres SERVER_URL] [--processes N]
                           [--replies]

With --replies every new request gets an auto-reply (rate limits off), sent over SMTP to
an aiosmtpd sink; the clock stops when the last reply has reached the sink, and the raw
SMTP send rate to the same sink (smtplib, one connection) is measured as a second ceiling.

With --postgres (e.g. postgresql://postgres@127.0.0.1:5432/postgres) the run uses a new
database on that server, dropped afterwards; otherwise a new SQLite file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from daemon.database import normalize_url, upgrade  # noqa: E402
from daemon.demo_mail import variants  # noqa: E402
from daemon.tables import Message  # noqa: E402
from tests.servers.dovecot import Dovecot  # noqa: E402
from tests.servers.imap import close_client  # noqa: E402


def from_corpus(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(directory.glob("*.eml"))]


def fetch_ceiling(server: Dovecot, account, batch: int = 500) -> float:
    """Seconds for a plain imapclient session to FETCH every message body."""
    client = server.open_client(account)
    try:
        began = time.perf_counter()
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        got = 0
        for start in range(0, len(uids), batch):
            got += len(client.fetch(uids[start : start + batch], [b"BODY.PEEK[]"]))
        elapsed = time.perf_counter() - began
    finally:
        close_client(client)
    assert got == len(uids)
    return elapsed


def addressed(raws: list[bytes]) -> list[str]:
    """Every To/Cc address of the messages: the support addresses they were sent to."""
    from email.parser import BytesHeaderParser
    from email.utils import getaddresses

    found: set[str] = set()
    parser = BytesHeaderParser()
    for raw in raws:
        headers = parser.parsebytes(raw)
        pairs = getaddresses(
            [str(v) for v in headers.get_all("to", []) + headers.get_all("cc", [])]
        )
        found.update(addr.lower() for _, addr in pairs if "@" in addr)
    return sorted(found)


def smtp_ceiling(sink, raws: list[bytes]) -> float:
    """Seconds for smtplib to send raws to the sink over one connection."""
    import smtplib

    before = sink.count
    began = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        for raw in raws:
            smtp.sendmail("", ["c@customer.example"], raw)
    elapsed = time.perf_counter() - began
    sink.wait_for(before + len(raws), timeout=60)
    return elapsed


def outbox_counts(engine) -> tuple[int, int]:
    """(outgoing rows, rows no longer queued or sending)."""
    from daemon.outbox import OUTBOX

    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one()
        settled = conn.execute(
            select(func.count())
            .select_from(OUTBOX)
            .where(OUTBOX.c.state.not_in(["queued", "sending"]))
        ).scalar_one()
    return total, settled


def session_cpu_seconds(session: int) -> float:
    """User+system CPU seconds of the live processes in a session (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Message)).scalar_one()
        done = conn.execute(
            select(func.count())
            .select_from(Message)
            .where(Message.state != "new")
            .where(Message.state != "processing")
        ).scalar_one()
    return stored, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--corpus", type=Path, help="a directory of .eml files instead")
    parser.add_argument("--postgres", help="a PostgreSQL server URL to create the database on")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--processes", type=int, help="runner processes (default: mailcare's)")
    parser.add_argument("--replies", action="store_true", help="auto-reply to every request")
    args = parser.parse_args()

    raws = from_corpus(args.corpus) if args.corpus else variants(args.n)
    work = Path(tempfile.mkdtemp(prefix="mailcare-bench-"))
    url = f"sqlite:///{work / 'bench.sqlite3'}"
    admin = None
    if args.postgres:
        admin = create_engine(normalize_url(args.postgres), isolation_level="AUTOCOMMIT")
        name = f"mailcare_bench_{os.getpid()}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        url = make_url(normalize_url(args.postgres)).set(database=name).render_as_string(False)
    upgrade(url)
    server = Dovecot(pool_size=2).start()
    try:
        account = server.account()
        began = time.perf_counter()
        server.append_many(account, "INBOX", raws)
        append_s = time.perf_counter() - began
        ceiling_s = fetch_ceiling(server, account)
        extra: dict = {}
        sink = None
        if args.replies:
            from tests.servers.smtp_sink import SmtpSink

            sink = SmtpSink().start()
            rules = {
                "version": 1,
                "identity": {"addresses": addressed(raws)},
                # every request also gets an SLA clock with targets, as in production
                "calendars": {
                    "office": {
                        "timezone": "Europe/Berlin",
                        "hours": {"mon-fri": ["09:00-12:30", "13:30-18:00"]},
                        "holidays": {"country": "DE"},
                    }
                },
                "sla": {
                    "calendar": "office",
                    "policies": [{"name": "standard", "first_response": "4h", "resolution": "40h"}],
                },
                "auto_replies": {
                    "limits": {"per_rule_window": 0, "max_per_hour": 10**9, "max_per_day": 10**9},
                    "rules": [
                        {
                            "name": "acknowledge",
                            "template": "acknowledge",
                            "from": "Acme Support <support@acme.example>",
                        }
                    ],
                },
            }
            (work / "rules.yaml").write_text(json.dumps(rules))
            extra = {
                "paths": {"rules": "rules.yaml", "templates": str(ROOT / "templates")},
                "relay": {
                    "enabled": True,
                    "host": "127.0.0.1",
                    "port": sink.port,
                    "tls": "none",
                    "idle_wait": 0.05,
                },
            }
        config = work / "mailcare.yaml"
        config.write_text(
            json.dumps(
                {
                    "database_url": url,
                    "log_level": "WARNING",
                    **extra,
                    **({"runner": {"processes": args.processes}} if args.processes else {}),
                    "mailboxes": [
                        {
                            "name": "bench",
                            "host": "127.0.0.1",
                            "port": server.imap_port,
                            "tls": "none",
                            "username": account.username,
                            "password": {"env": "BENCH_IMAP_PASSWORD"},
                        }
                    ],
                }
            )
        )
        env = dict(os.environ, BENCH_IMAP_PASSWORD=account.password)
        engine = create_engine(normalize_url(url))
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        stored_at = None
        processed_at = None
        try:
            while time.perf_counter() - started < args.timeout:
                stored, done = counts(engine)
                if stored_at is None and stored >= len(raws):
                    stored_at = time.perf_counter() - started
                if done >= len(raws):
                    processed_at = processed_at or time.perf_counter() - started
                    if sink is None:
                        break
                    total, settled = outbox_counts(engine)
                    if settled >= total and sink.count >= total:
                        break
                if proc.poll() is not None:
                    raise SystemExit(f"mailcare exited with {proc.returncode}")
                time.sleep(0.02)
            else:
                raise SystemExit("timed out")
            total_s = time.perf_counter() - started
            cpu_s = session_cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
        if sink is not None:
            replies, _ = outbox_counts(engine)
            delivered = sink.count
            sample = [m.data for m in sink.messages[:500]]
            smtp_s = smtp_ceiling(sink, sample)
            extra = {
                "replies": replies,
                "replies_delivered": delivered,
                "ceiling_smtp_send_msgs_per_s": round(len(sample) / smtp_s, 1),
            }
            sink.stop()
        engine.dispose()
    finally:
        server.stop()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()
    n = len(raws)
    print(
        json.dumps(
            {
                "bench": "intake",
                "messages": n,
                "source": str(args.corpus) if args.corpus else "generated",
                "database": url.split(":", 1)[0],
                "mailcare_msgs_per_s": round(n / total_s, 1),
                "mailcare_seconds": round(total_s, 3),
                "mailcare_cpu_seconds": round(cpu_s, 2),
                "stored_msgs_per_s": round(n / stored_at, 1) if stored_at else None,
                "processed_msgs_per_s": round(n / processed_at, 1) if processed_at else None,
                "ceiling_fetch_msgs_per_s": round(n / ceiling_s, 1),
                "ratio_to_ceiling": round(ceiling_s / total_s, 3),
                "append_msgs_per_s": round(n / append_s, 1),
                **extra,
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
