"""The daemon's web endpoint (one small ASGI app): health, Prometheus metrics, survey answers.

Endpoints are plain functions, which Starlette runs in its thread pool: they use the
database, which blocks.

Survey links follow the rule for every link in mail: a GET only shows what would happen
(mail scanners and link previews fetch links), the customer's POST records it.
"""

from __future__ import annotations

import html
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Table, func, select, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .database import Database
from .errors import MailcareError
from .interfaces import Clock
from .outbox import OUTBOX
from .rules import Rules
from .settings import Http
from .status import collect
from .suppressions import SUPPRESSIONS
from .survey import LABELS, Rating, find_rating, record_rating
from .tables import CampaignRun, CampaignSend

log = logging.getLogger(__name__)

RUNS: Table = CampaignRun.__table__  # type: ignore[assignment]
SENDS: Table = CampaignSend.__table__  # type: ignore[assignment]

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;max-width:36em;margin:3em auto;padding:0 1em}}
button{{font-size:1.1em;padding:.5em 1.2em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A small self-contained page; title and body must already be escaped."""
    return HTMLResponse(_PAGE.format(title=title, body=body), status_code=status)


def private_page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A page whose address holds a token: never cached or indexed, never sent on."""
    response = page(title, body, status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


class DatabaseCollector(Collector):
    """Metrics read from the database at scrape time, so they cover every process."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        status = collect(self.db, self.clock)
        stored = CounterMetricFamily(
            "mailcare_messages_stored", "Messages stored by the intake", labels=[]
        )
        stored.add_metric([], sum(status.queue.values()))
        yield stored
        queue = GaugeMetricFamily(
            "mailcare_queue_messages", "Inbox messages by state", labels=["state"]
        )
        for state, count in status.queue.items():
            queue.add_metric([state], count)
        yield queue
        outbox = GaugeMetricFamily(
            "mailcare_outbox_messages", "Outgoing mail by state", labels=["state"]
        )
        for state, count in status.outbox.items():
            outbox.add_metric([state], count)
        yield outbox
        sent = CounterMetricFamily(
            "mailcare_mail_sent", "Outgoing mail accepted by the relay, by kind", labels=["kind"]
        )
        with self.db.reading() as conn:
            for kind, count in conn.execute(
                select(OUTBOX.c.kind, func.count())
                .where(OUTBOX.c.state == "sent")
                .group_by(OUTBOX.c.kind)
            ):
                sent.add_metric([kind], count)
        yield sent
        lag = GaugeMetricFamily(
            "mailcare_folder_lag_seconds",
            "Seconds since the folder was last in sync",
            labels=["mailbox", "folder"],
        )
        failing = GaugeMetricFamily(
            "mailcare_folder_failing",
            "1 when the folder's last attempt failed",
            labels=["mailbox", "folder"],
        )
        for folder in status.folders:
            labels = [folder.mailbox, folder.folder]
            if folder.lag_seconds is not None:
                lag.add_metric(labels, folder.lag_seconds)
            broken = folder.last_error_at is not None and (
                folder.last_success_at is None or folder.last_error_at > folder.last_success_at
            )
            failing.add_metric(labels, 1.0 if broken else 0.0)
        yield lag
        yield failing
        clocks = GaugeMetricFamily(
            "mailcare_sla_conversations",
            "Unresolved conversations by clock state",
            labels=["state"],
        )
        for state, count in status.sla.items():
            clocks.add_metric([state], count)
        yield clocks
        yield from self._marketing()

    def _marketing(self) -> Iterator[Metric]:
        with self.db.reading() as conn:
            sends = conn.execute(select(SENDS.c.state, func.count()).group_by(SENDS.c.state)).all()
            runs = conn.execute(select(RUNS.c.status, func.count()).group_by(RUNS.c.status)).all()
            scopes = conn.execute(
                select(SUPPRESSIONS.c.scope, SUPPRESSIONS.c.reason, func.count()).group_by(
                    SUPPRESSIONS.c.scope, SUPPRESSIONS.c.reason
                )
            ).all()
        sent = CounterMetricFamily(
            "mailcare_campaign_mail_sent", "Campaign mail accepted by the relay", labels=[]
        )
        sent.add_metric([], sum(count for state, count in sends if state == "sent"))
        yield sent
        recipients = GaugeMetricFamily(
            "mailcare_campaign_recipients",
            "Campaign recipients of every run, by state",
            labels=["state"],
        )
        for state, count in sends:
            recipients.add_metric([state], count)
        yield recipients
        by_status = GaugeMetricFamily(
            "mailcare_campaign_runs", "Campaign runs by status", labels=["status"]
        )
        for status, count in runs:
            by_status.add_metric([status], count)
        yield by_status
        suppressed = GaugeMetricFamily(
            "mailcare_suppressed_addresses",
            "Suppressed addresses by scope (all, marketing, list) and reason",
            labels=["scope", "reason"],
        )
        for scope, reason, count in scopes:
            suppressed.add_metric(["list" if scope.startswith("list:") else scope, reason], count)
        yield suppressed


def build_http_app(
    db: Database,
    clock: Clock,
    survey_key: bytes,
    rules: Callable[[], Rules],
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The ASGI app: /healthz, /metrics, /survey/{token} and the routes other parts add
    (unsubscribe, subscription confirmation)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db, clock))

    def healthz(request: Request) -> Response:
        try:
            with db.reading() as conn:
                conn.execute(text("SELECT 1"))
        except MailcareError as exc:
            log.warning("health check: %s", exc)
            return JSONResponse({"status": "database unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    def rating_of(request: Request) -> Rating | None:
        token = str(request.path_params["token"])
        return find_rating(survey_key, token, clock.now(), rules().sla.survey.valid_for)

    def survey(request: Request) -> Response:
        rating = rating_of(request)
        if rating is None:
            body = "<p>This link is not valid, or it has expired.</p>"
            return page("Link not valid", body, status=404)
        label = html.escape(LABELS["en"][rating.rating - 1])
        if request.method == "GET":
            body = (
                f"<p>Your rating: <strong>{rating.rating} ({label})</strong>.</p>"
                '<form method="post"><button type="submit">Send my rating</button></form>'
            )
            return page("How did we do?", body)
        with db.transaction() as conn:
            record_rating(conn, rating, clock.now(), None, "web")
        log.info(
            "survey answer %d for conversation %d (web)", rating.rating, rating.conversation_id
        )
        return page("Thank you", f"<p>We received your rating: {rating.rating} ({label}).</p>")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/survey/{token}", survey, methods=["GET", "POST"]),
            *extra_routes,
        ]
    )


class HttpServer:
    """Serves the app with uvicorn in a thread, on a socket bound before start() returns."""

    def __init__(self, settings: Http, app: Any) -> None:
        self.settings = settings
        self.app = app
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self._port

    def start(self) -> None:
        """Bind, then serve in a background thread."""
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, self.settings.port))
        sock.listen(128)
        self._socket = sock
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False, server_header=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
