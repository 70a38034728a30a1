"""The web endpoint over real HTTP (uvicorn on loopback): health, metrics, survey answers."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.app import App, build_app
from daemon.clock import FrozenClock
from daemon.http import HttpServer, build_http_app
from daemon.settings import Http
from daemon.sla import NewEvent
from daemon.tables import SurveyAnswer
from tests.helpers import fetch, make_mail, settings_for
from tests.test_sla import MONDAY, ROOT, RULES, STEPS, deliver, mails

ANSWERS = SurveyAnswer.__table__


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[App]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES % {"first": "120"}, encoding="utf-8")
    settings = settings_for(
        db_url,
        paths={"rules": str(rules), "templates": str(ROOT / "templates")},
        relay={"enabled": True, "host": "127.0.0.1", "port": 2525, "tls": "none"},
        runner={"idle_wait": 0.05, "processes": 1, "steps": STEPS},
        http={"enabled": True, "port": 0, "public_url": "https://help.acme.example/mc/"},
    )
    application = build_app(settings, clock=FrozenClock(MONDAY), intake=False, sender=False)
    yield application
    application.db.dispose()


@pytest.fixture
def web(app: App) -> Iterator[str]:
    from daemon.keys import instance_key

    server = HttpServer(
        Http(port=0),
        build_http_app(app.db, app.clock, instance_key(app.db, "survey"), lambda: app.rules),
    )
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def resolved_survey_links(app: App) -> list[str]:
    deliver(app, make_mail())
    assert app.sla is not None
    with app.db.transaction() as conn:
        app.sla.record(conn, [NewEvent("r", 1, "resolved", app.clock.now(), "command")])
    [survey] = mails(app, "survey")
    text = survey.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return [word for word in text.split() if word.startswith("https://help.acme.example/mc/")]


def answers(app: App) -> list[tuple[int, int, str]]:
    with app.db.reading() as conn:
        rows = conn.execute(
            select(ANSWERS.c.conversation_id, ANSWERS.c.rating, ANSWERS.c.channel)
        ).all()
    return [(int(a), int(b), str(c)) for a, b, c in rows]


def test_health_and_metrics(app: App, web: str) -> None:
    deliver(app, make_mail())
    status, body = fetch(f"{web}/healthz")
    assert status == 200 and '"ok"' in body
    status, body = fetch(f"{web}/metrics")
    assert status == 200
    assert "mailcare_messages_stored_total 1.0" in body
    assert 'mailcare_queue_messages{state="done"} 1.0' in body
    assert 'mailcare_outbox_messages{state="queued"} 1.0' in body
    assert 'mailcare_sla_conversations{state="open"} 1.0' in body


def test_a_survey_link_shows_a_page_and_only_the_post_records_the_rating(
    app: App, web: str
) -> None:
    links = resolved_survey_links(app)
    assert len(links) == 5  # one link per rating, to the public address
    local = links[3].replace("https://help.acme.example/mc", web)
    status, body = fetch(local)
    assert status == 200 and "4 (good)" in body and 'method="post"' in body
    assert answers(app) == []  # a GET (a link preview, a scanner) records nothing
    status, body = fetch(local, "POST")
    assert status == 200 and "We received your rating: 4" in body
    assert answers(app) == [(1, 4, "web")]
    # changing one's mind: the latest answer counts
    fetch(links[1].replace("https://help.acme.example/mc", web), "POST")
    assert answers(app) == [(1, 2, "web")]


def test_forged_and_expired_survey_tokens_are_refused(app: App, web: str) -> None:
    links = resolved_survey_links(app)
    token = links[4].rsplit("/", 1)[1]
    forged = token[:-1] + ("a" if token[-1] != "a" else "b")
    for method in ("GET", "POST"):
        status, body = fetch(f"{web}/survey/{forged}", method)
        assert status == 404 and "not valid" in body
    assert isinstance(app.clock, FrozenClock)
    app.clock.advance(timedelta(days=40))  # past sla.survey.valid_for (30 days)
    status, _ = fetch(f"{web}/survey/{token}", "POST")
    assert status == 404
    assert answers(app) == []


def test_mail_survey_links_use_mailto_without_the_web_endpoint(db_url: str, tmp_path: Path) -> None:
    from tests.test_sla import make_app

    plain = make_app(db_url, tmp_path, FrozenClock(MONDAY))
    try:
        deliver(plain, make_mail())
        assert plain.sla is not None
        with plain.db.transaction() as conn:
            plain.sla.record(conn, [NewEvent("r", 1, "resolved", plain.clock.now(), "command")])
        [survey] = mails(plain, "survey")
        text = survey.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert text.count("mailto:support@acme.example?subject=") == 5
        assert "https://" not in text
    finally:
        plain.db.dispose()


def test_the_daemon_serves_the_endpoint_while_it_runs(db_url: str, tmp_path: Path) -> None:
    settings = settings_for(
        db_url,
        paths={"rules": str(ROOT / "rules.yaml"), "templates": str(ROOT / "templates")},
        runner={"idle_wait": 0.05, "processes": 1, "steps": STEPS},
        http={"enabled": True, "port": 0},
    )
    daemon = build_app(settings)
    daemon.start()
    try:
        assert daemon.http is not None
        status, body = fetch(f"http://127.0.0.1:{daemon.http.port}/healthz")
        assert status == 200 and '"ok"' in body
    finally:
        daemon.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{daemon.http.port}/healthz", timeout=2)
