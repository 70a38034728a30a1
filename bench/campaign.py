"""Campaign delivery throughput against its ceiling, measured in the same run.

N subscribers (default 20,000) get one campaign through the real engine (freeze, claims,
durable marks, per-recipient rendering, pooled SMTP connections) to an aiosmtpd sink that
runs in its own process. The ceiling: the same number of pre-built messages sent over the
same number of connections (the project's SMTP session class, one thread per connection)
to the same sink, with no database and no rendering. Prints one JSON line.

    python bench/campaign.py [--recipients 20000] [--connections 4] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = """Subject: {{ campaign.name | title }}: news for {{ subscriber.name or "you" }}

Hello {{ subscriber.name or "there" }},

our December news: new opening hours over the holidays, a faster returns process and a
voucher for you: {{ coupon }}. Read more at https://example.com/news/december.

Kind regards,
{{ company.name }}
Unsubscribe: {{ unsubscribe_url }}
"""
HTML = """<html><body><h1>December news</h1>
<p>Hello <b>{{ subscriber.name or "there" }}</b>,</p>
<p>new opening hours over the holidays, a faster returns process and a voucher for you:
<strong>{{ coupon }}</strong>.</p>
<p><a href="https://example.com/news/december">Read more</a></p>
<p style="font-size:small"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""


def _sink(port_out: Any, count: Any, ready: Any) -> None:
    """Child process: an aiosmtpd server that counts accepted messages."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with count.get_lock():
                count.value += 1
            return "250 2.0.0 OK"

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="sink", data_size_limit=None),
            host="127.0.0.1",
            port=0,
        )
        port_out.value = server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not complete")
        time.sleep(0.005)


def ceiling(port: int, connections: int, messages: list[tuple[str, bytes]], count: Any) -> float:
    """Seconds to push pre-built messages over `connections` SMTP sessions."""
    from daemon.settings import Relay
    from daemon.transport import SmtpSession

    relay = Relay(enabled=True, host="127.0.0.1", port=port, tls="none")
    shares = [messages[n::connections] for n in range(connections)]
    before = count.value

    def push(share: list[tuple[str, bytes]]) -> None:
        session = SmtpSession(relay)
        try:
            for rcpt, raw in share:
                session.send("news@example.com", [rcpt], raw)
        finally:
            session.close()

    threads = [threading.Thread(target=push, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: count.value >= before + len(messages), 60)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--database-url", help="default: a new SQLite file")
    args = parser.parse_args()

    from sqlalchemy import func, select

    from daemon.app import build_campaign_sender, build_identity
    from daemon.campaign_config import CampaignDefinition
    from daemon.campaign_ledger import RUNS, SENDS
    from daemon.campaign_mime import Person
    from daemon.clock import SystemClock
    from daemon.database import Database, upgrade
    from daemon.folders import new_owner_id
    from daemon.keys import instance_key
    from daemon.render import TemplateStore
    from daemon.rules import Rules, RulesFile
    from daemon.settings import Settings
    from tests.test_campaigns import add_subscribers

    workdir = Path(tempfile.mkdtemp(prefix="mailcare-bench-campaign-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    upgrade(url)
    context = multiprocessing.get_context("spawn")
    port, count, ready = context.Value("i", 0), context.Value("l", 0), context.Event()
    sink = context.Process(target=_sink, args=(port, count, ready), daemon=True)
    sink.start()
    ready.wait(30)
    try:
        folder = workdir / "templates" / "campaigns" / "december"
        folder.mkdir(parents=True)
        (folder / "default.txt").write_text(TEXT, encoding="utf-8")
        (folder / "default.html").write_text(HTML, encoding="utf-8")
        rules = Rules.model_validate(
            {
                "identity": {"company": {"name": "Example Ltd"}},
                "marketing": {
                    "from": "Example News <news@example.com>",
                    "unsubscribe_address": "unsubscribe@example.com",
                    "lists": {"news": {"title": "Example News", "double_opt_in": False}},
                    "throttle": {"per_second": 1_000_000, "burst": 10_000},
                    "connections": args.connections,
                    "batch": args.batch,
                },
            }
        )
        settings = Settings.model_validate(
            {
                "database_url": url,
                "relay": {
                    "enabled": True,
                    "host": "127.0.0.1",
                    "port": port.value,
                    "tls": "none",
                },
                "http": {"enabled": True, "port": 0, "public_url": "https://example.com/mc"},
                "paths": {"templates": str(workdir / "templates")},
            }
        )
        db = Database(url)
        add_subscribers(db, args.recipients)
        rules_file = RulesFile(workdir / "absent.yaml", rules)
        clock = SystemClock()
        sender = build_campaign_sender(
            settings,
            rules_file,
            db,
            clock,
            new_owner_id(),
            TemplateStore(workdir / "templates"),
            build_identity(settings, rules, db),
            instance_key(db, "message-id"),
        )
        definition = CampaignDefinition.model_validate(
            {
                "name": "december",
                "list": "news",
                "template": "december",
                "variables": {"coupon": "XMAS26"},
            }
        )
        sender.book.save(definition, schedule=True)
        freeze_started = time.perf_counter()
        [started] = sender.book.start_due()
        freeze_s = time.perf_counter() - freeze_started
        # the ceiling's messages: the same mail, built before its clock starts
        prepared = sender.composers.get(started.run_id)
        now = clock.now()
        prebuilt = [
            (
                f"person{n:05d}@example.org",
                prepared.composer.build(
                    Person(n + 1, f"person{n:05d}@example.org", f"Person {n}", "en"),
                    f"ceiling.{n}@example.com",
                    now,
                ),
            )
            for n in range(args.recipients)
        ]
        cpu = time.process_time()
        ceiling_s = ceiling(port.value, args.connections, prebuilt, count)
        ceiling_cpu = time.process_time() - cpu

        before = count.value
        cpu = time.process_time()
        send_started = time.perf_counter()
        sender.start()

        def finished() -> bool:
            if count.value < before + args.recipients:
                return False
            with db.reading() as conn:
                status = conn.execute(select(RUNS.c.status)).scalar()
            return status in ("finished", "finished_with_failures")

        wait_for(finished, 600)
        send_s = time.perf_counter() - send_started
        send_cpu = time.process_time() - cpu
        sender.stop()
        with db.reading() as conn:
            states = dict(
                conn.execute(select(SENDS.c.state, func.count()).group_by(SENDS.c.state)).all()
            )
        db.dispose()
        engine_rate = args.recipients / send_s
        ceiling_rate = args.recipients / ceiling_s
        print(
            json.dumps(
                {
                    "bench": "campaign",
                    "backend": "postgresql" if url.startswith("postgres") else "sqlite",
                    "recipients": args.recipients,
                    "connections": args.connections,
                    "freeze_s": round(freeze_s, 3),
                    "send_s": round(send_s, 3),
                    "engine_msgs_per_s": round(engine_rate, 1),
                    "ceiling_msgs_per_s": round(ceiling_rate, 1),
                    "ratio_to_ceiling": round(engine_rate / ceiling_rate, 3),
                    "sink_received": count.value - before,
                    "engine_cpu_ms_per_msg": round(send_cpu / args.recipients * 1000, 3),
                    "ceiling_cpu_ms_per_msg": round(ceiling_cpu / args.recipients * 1000, 3),
                    "states": states,
                    "avg_message_bytes": sum(len(raw) for _, raw in prebuilt) // len(prebuilt),
                }
            )
        )
    finally:
        sink.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
