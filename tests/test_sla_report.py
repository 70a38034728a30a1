"""The SLA report on SQLite and PostgreSQL: exact figures, every format, the CLI."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from daemon.database import Database
from daemon.sla_cli import add_report_parser, parse_when
from daemon.sla_report import Report, build_report, quantile
from daemon.sla_report_format import format_csv, format_html, format_json, format_table
from daemon.tables import Conversation, SlaClock, SurveyAnswer

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script> & co'


def at(day: int, hour: int, minute: int = 0, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# Eight conversations whose outcomes at NOW are worked out by hand:
#  1 billing/high: first response met (30 min), resolved in time (600), rated 5
#  2 billing/high: first response late (120), unresolved past its resolution due time
#  3 billing/low: never answered, first response overdue; still waiting
#  4 sales/low: answered in time (10); one recorded next-response breach and one live one
#  5 sales/low: opened an hour ago, nothing due yet; waiting
#  6 sales/high: opened in ISO week 2026-W01, met and resolved in time (60, 900), rated 2
#  7 (none)/normal: paused, answered in time (5), nothing else due
#  8 billing/high: opened in November, met (1000) and resolved in time (2000)
CLOCKS: list[dict[str, Any]] = [
    {
        "conversation_id": 1,
        "department": "billing",
        "urgency": "high",
        "status": "resolved",
        "opened_at": at(5, 9),
        "first_response_due": at(5, 10),
        "first_response_at": at(5, 9, 30),
        "first_response_minutes": 30.0,
        "resolution_due": at(7, 9),
        "resolved_at": at(6, 9),
        "resolution_minutes": 600.0,
    },
    {
        "conversation_id": 2,
        "department": "billing",
        "urgency": "high",
        "status": "open",
        "opened_at": at(5, 10),
        "first_response_due": at(5, 11),
        "first_response_at": at(5, 12),
        "first_response_minutes": 120.0,
        "resolution_due": at(7, 10),
    },
    {
        "conversation_id": 3,
        "department": "billing",
        "urgency": "low",
        "status": "open",
        "opened_at": at(6, 9),
        "waiting_since": at(6, 9),
        "first_response_due": at(6, 17),
        "resolution_due": at(20, 9),
    },
    {
        "conversation_id": 4,
        "department": "sales",
        "urgency": "low",
        "status": "open",
        "opened_at": at(6, 10),
        "first_response_due": at(6, 12),
        "first_response_at": at(6, 10, 10),
        "first_response_minutes": 10.0,
        "waiting_since": at(9, 8),
        "next_response_due": at(9, 16),
        "next_response_rounds": 2,
        "next_response_breaches": 1,
    },
    {
        "conversation_id": 5,
        "department": "sales",
        "urgency": "low",
        "status": "open",
        "opened_at": at(10, 11),
        "waiting_since": at(10, 11),
        "first_response_due": at(10, 15),
    },
    {
        "conversation_id": 6,
        "department": "sales",
        "urgency": "high",
        "status": "resolved",
        "opened_at": at(30, 9, month=12, year=2025),
        "first_response_due": at(30, 13, month=12, year=2025),
        "first_response_at": at(30, 10, month=12, year=2025),
        "first_response_minutes": 60.0,
        "resolution_due": at(2, 9),
        "resolved_at": at(31, 16, month=12, year=2025),
        "resolution_minutes": 900.0,
    },
    {
        "conversation_id": 7,
        "department": None,
        "urgency": "normal",
        "status": "paused",
        "opened_at": at(7, 9),
        "first_response_due": at(7, 13),
        "first_response_at": at(7, 9, 5),
        "first_response_minutes": 5.0,
        "waiting_since": at(8, 9),
    },
    {
        "conversation_id": 8,
        "department": "billing",
        "urgency": "high",
        "status": "resolved",
        "opened_at": at(1, 9, month=11, year=2025),
        "first_response_due": at(2, 9, month=11, year=2025),
        "first_response_at": at(1, 19, month=11, year=2025),
        "first_response_minutes": 1000.0,
        "resolution_due": at(10, 9, month=11, year=2025),
        "resolved_at": at(5, 9, month=11, year=2025),
        "resolution_minutes": 2000.0,
    },
]
SUBJECTS = {3: EVIL}
RATINGS = {1: 5, 6: 2}


def fill(db: Database) -> None:
    """Insert the conversations, their clocks and survey answers."""
    with db.transaction() as conn:
        for clock in CLOCKS:
            number, opened = clock["conversation_id"], clock["opened_at"]
            conn.execute(
                insert(Conversation).values(
                    id=number,
                    subject=SUBJECTS.get(number, f"Request {number}"),
                    mailbox="support",
                    status="open",
                    opened_at=opened,
                    last_message_at=opened,
                    message_count=1,
                )
            )
            conn.execute(
                insert(SlaClock).values(
                    policy="standard",
                    mailbox="support",
                    tier="ordinary",
                    calendar="office",
                    checks="[]",
                    notified="[]",
                    updated_at=opened,
                    **{"next_response_rounds": 0, "next_response_breaches": 0, **clock},
                )
            )
        for number, rating in RATINGS.items():
            conn.execute(
                insert(SurveyAnswer).values(
                    conversation_id=number, rating=rating, answered_at=NOW, channel="web"
                )
            )


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    fill(database)
    yield database
    database.dispose()


def report(db: Database, **options: Any) -> Report:
    with db.reading() as conn:
        return build_report(
            conn,
            NOW,
            options.pop("since", None),
            options.pop("until", None),
            options.pop("by", []),
            **options,
        )


def test_overall_figures(db: Database) -> None:
    result = report(db)
    total = result.total
    assert result.groups == (total,)
    assert total.conversations == 8
    first = total.first_response
    assert (first.done, first.met, first.breached) == (6, 5, 2)
    assert first.compliance_pct == pytest.approx(500 / 7)
    assert first.median_minutes == pytest.approx(45.0)  # 5 10 30 | 60 120 1000
    assert first.p90_minutes == pytest.approx(560.0)  # halfway between 120 and 1000
    res = total.resolution
    assert (res.done, res.met, res.breached) == (3, 3, 1)
    assert res.compliance_pct == pytest.approx(75.0)
    assert res.median_minutes == pytest.approx(900.0)
    assert res.p90_minutes == pytest.approx(1780.0)
    assert total.next_response_breaches == 2
    assert (total.decided, total.compliant) == (7, 4)
    assert total.compliance_pct == pytest.approx(400 / 7)
    assert total.survey_answers == 2
    assert total.survey_mean_rating == pytest.approx(3.5)
    assert result.ratings == (0, 1, 0, 0, 1)


def test_groups_by_department_and_urgency(db: Database) -> None:
    result = report(db, by=["department", "urgency"])
    keys = [group.key for group in result.groups]
    assert keys == [
        ("billing", "high"),
        ("billing", "low"),
        ("sales", "high"),
        ("sales", "low"),
        (None, "normal"),
    ]
    groups = dict(zip(keys, result.groups, strict=True))
    billing = groups["billing", "high"]
    assert billing.conversations == 3
    assert (billing.first_response.met, billing.first_response.breached) == (2, 1)
    assert billing.first_response.median_minutes == pytest.approx(120.0)
    assert billing.first_response.p90_minutes == pytest.approx(824.0)
    assert (billing.resolution.met, billing.resolution.breached) == (2, 1)
    assert billing.compliance_pct == pytest.approx(200 / 3)
    assert (billing.survey_answers, billing.survey_mean_rating) == (1, 5.0)
    unanswered = groups["billing", "low"]
    assert (unanswered.first_response.done, unanswered.first_response.breached) == (0, 1)
    assert unanswered.first_response.compliance_pct == 0.0
    assert unanswered.first_response.median_minutes is None
    sales = groups["sales", "low"]
    assert sales.conversations == 2
    assert sales.next_response_breaches == 2
    assert (sales.decided, sales.compliant) == (1, 0)
    assert sales.resolution.compliance_pct is None
    assert groups[None, "normal"].compliance_pct == 100.0
    # the total is over every group, percentiles of all values together
    assert result.total.first_response.median_minutes == pytest.approx(45.0)
    assert result.total.first_response.p90_minutes == pytest.approx(560.0)
    assert result.total.resolution.p90_minutes == pytest.approx(1780.0)
    assert result.total.survey_mean_rating == pytest.approx(3.5)


def test_since_and_until_select_by_opening(db: Database) -> None:
    since = report(db, since=at(1, 0, month=12, year=2025))
    assert since.total.conversations == 7
    assert since.total.first_response.median_minutes == pytest.approx(30.0)
    window = report(db, since=at(1, 0, month=12, year=2025), until=at(6, 0))
    assert window.total.conversations == 3  # 1, 2 and 6
    assert [w.conversation_id for w in window.worst] == []
    assert window.total.survey_answers == 2
    empty = report(db, since=at(1, 0, month=2), by=["urgency"])
    assert empty.groups == ()
    assert empty.total.conversations == 0
    assert empty.total.compliance_pct is None


def test_worst_waiting_most_overdue_first(db: Database) -> None:
    result = report(db)
    assert [w.conversation_id for w in result.worst] == [3, 4, 5, 7]
    first = result.worst[0]
    assert first.subject == EVIL
    assert (first.department, first.urgency) == ("billing", "low")
    assert first.waiting_since == at(6, 9)
    assert first.due == at(6, 17)
    assert first.overdue_minutes == pytest.approx(5460.0)
    assert result.worst[1].due == at(9, 16)
    assert result.worst[1].overdue_minutes == pytest.approx(1200.0)
    assert result.worst[2].overdue_minutes == pytest.approx(-180.0)
    assert result.worst[3].due is None
    assert [w.conversation_id for w in report(db, worst=2).worst] == [3, 4]
    assert report(db, worst=0).worst == ()


def test_weekly_series_and_histogram(db: Database) -> None:
    result = report(db)
    weeks = [(w.week, w.conversations, w.decided, w.compliant) for w in result.weeks]
    assert weeks == [("2025-W44", 1, 1, 1), ("2026-W01", 1, 1, 1), ("2026-W02", 6, 5, 2)]
    assert result.weeks[-1].compliance_pct == pytest.approx(40.0)
    counts = {(b.from_minutes, b.to_minutes): b.count for b in result.histogram}
    assert counts[0, 15] == 2
    assert counts[15, 30] == 0
    assert counts[30, 60] == 1
    assert counts[60, 120] == 1
    assert counts[120, 240] == 1
    assert counts[960, 1440] == 1
    assert counts[2880, None] == 0
    assert sum(counts.values()) == 6


def test_bad_grouping_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="cannot group by 'subject'"):
        report(db, by=["subject"])
    with pytest.raises(ValueError, match="twice"):
        report(db, by=["tier", "tier"])


def test_json_has_stable_keys_and_the_figures(db: Database) -> None:
    data = json.loads(format_json(report(db, by=["department"])))
    assert list(data) == [
        "generated_at",
        "since",
        "until",
        "by",
        "total",
        "groups",
        "worst_waiting",
        "weekly",
        "first_response_histogram",
        "survey_ratings",
    ]
    assert data["generated_at"] == "2026-01-10T12:00:00+00:00"
    assert data["by"] == ["department"]
    billing = data["groups"][0]
    assert billing["group"] == {"department": "billing"}
    assert billing["conversations"] == 4
    assert billing["first_response"] == {
        "done": 3,
        "met": 2,
        "breached": 2,
        "compliance_pct": 50.0,
        "median_minutes": 120.0,
        "p90_minutes": pytest.approx(824.0),
    }
    assert data["groups"][-1]["group"] == {"department": None}
    assert data["total"]["group"] == {}
    assert data["total"]["compliance_pct"] == pytest.approx(400 / 7)
    assert data["worst_waiting"][0]["subject"] == EVIL
    assert data["worst_waiting"][0]["due"] == "2026-01-06T17:00:00+00:00"
    assert data["survey_ratings"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}
    assert data["weekly"][0] == {
        "week": "2025-W44",
        "conversations": 1,
        "decided": 1,
        "compliant": 1,
        "compliance_pct": 100.0,
    }


def test_csv_has_one_row_per_group(db: Database) -> None:
    rows = list(csv.DictReader(io.StringIO(format_csv(report(db, by=["department", "urgency"])))))
    assert [(r["department"], r["urgency"]) for r in rows] == [
        ("billing", "high"),
        ("billing", "low"),
        ("sales", "high"),
        ("sales", "low"),
        ("", "normal"),
    ]
    first = rows[0]
    assert first["conversations"] == "3"
    assert float(first["first_response_p90_minutes"]) == pytest.approx(824.0)
    assert first["first_response_breached"] == "1"
    assert float(first["compliance_pct"]) == pytest.approx(200 / 3)
    assert first["survey_mean_rating"] == "5.0"
    assert rows[1]["first_response_median_minutes"] == ""
    assert rows[3]["next_response_breaches"] == "2"
    overall = list(csv.DictReader(io.StringIO(format_csv(report(db)))))
    assert len(overall) == 1
    assert overall[0]["conversations"] == "8"


def test_table_is_aligned_text(db: Database) -> None:
    text = format_table(report(db, by=["department", "urgency"]))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("department"))
    assert "SLA %" in header
    total = next(line for line in lines if line.startswith("total"))
    assert len(total) <= len(header) + 20
    assert "57.1" in total  # overall compliance 4/7
    assert "Longest waiting" in text
    assert "Survey: 2 answers, mean 3.50" in text


def test_html_is_self_contained_and_escaped(db: Database) -> None:
    page = format_html(report(db, by=["department", "urgency"]))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2
    assert "http" not in page.lower()
    for external in ("src=", "href=", "<link", "@import", "url("):
        assert external not in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in page
    assert "2026-W02" in page
    assert "mean rating 3.50" in page


def test_html_without_data(db: Database) -> None:
    page = format_html(report(db, since=at(1, 0, month=6)))
    assert "no data" in page
    assert "No customer is waiting" in page


def test_quantile_interpolates_and_merges_sorted_parts() -> None:
    assert quantile([[10, 20, 30, 40]], 0.5) == 25.0
    assert quantile([[10, 20, 30, 40]], 0.9) == pytest.approx(37.0)
    assert quantile([[]], 0.5) is None
    assert quantile([[7.0]], 0.9) == 7.0
    parts = [[1.0, 4.0, 9.0], [2.0, 2.0, 8.0, 20.0], [], [3.0]]
    values = sorted(v for part in parts for v in part)
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert quantile(parts, q) == pytest.approx(quantile([values], q))


def test_parse_when() -> None:
    assert parse_when("30d", NOW) == NOW - timedelta(days=30)
    assert parse_when("12w", NOW) == NOW - timedelta(weeks=12)
    assert parse_when("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_when("2026-01-05", NOW) == at(5, 0)
    assert parse_when("2026-01-05T10:00+01:00", NOW) == at(5, 9)
    with pytest.raises(ValueError, match="span"):
        parse_when("last week", NOW)


def run_cli(config: Path, *words: str) -> int:
    """`mailcare --config FILE sla report ...` through the report's own parser."""
    parser = argparse.ArgumentParser(prog="mailcare")
    parser.add_argument("--config")
    sla = parser.add_subparsers(dest="command").add_parser("sla")
    add_report_parser(sla.add_subparsers(dest="sla_command"))
    args = parser.parse_args(["--config", str(config), "sla", "report", *words])
    return int(args.func(args))


def test_cli_writes_each_format(
    db: Database, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mailcare.yaml"
    config.write_text(f"database_url: {db_url}\n")
    assert run_cli(config, "--by", "department, urgency", "--format", "json", "--worst", "1") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["by"] == ["department", "urgency"]
    assert data["total"]["conversations"] == 8
    assert [w["conversation_id"] for w in data["worst_waiting"]] == [3]
    out = tmp_path / "report.html"
    assert run_cli(config, "--since", "2025-12-01", "--format", "html", "--output", str(out)) == 0
    assert capsys.readouterr().out == ""
    assert "<svg" in out.read_text(encoding="utf-8")
    assert run_cli(config, "--since", "2025-12-01", "--until", "2026-01-06", "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["conversations"] == "3"
    assert run_cli(config) == 0
    assert "SLA report" in capsys.readouterr().out


def test_cli_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mailcare.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path / 'none.sqlite3'}\n")
    assert run_cli(config, "--by", "colour") == 2
    assert "cannot group by 'colour'" in capsys.readouterr().err
    assert run_cli(config, "--since", "yesterday") == 2
    assert "span" in capsys.readouterr().err
    assert run_cli(config, "--worst", "-1") == 2
    with pytest.raises(SystemExit) as exit_info:
        run_cli(config, "--format", "pdf")
    assert exit_info.value.code == 2
