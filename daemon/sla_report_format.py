"""The SLA report's output: aligned text, CSV and JSON, and the cells the HTML page shares."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from .clock import utc
from .sla_report import GroupStats, Report, Waiting


def _plain(value: Any) -> Any:
    """Dataclass values as JSON values: instants as ISO 8601 UTC, tuples as lists."""
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _group_json(by: tuple[str, ...], group: GroupStats) -> dict[str, Any]:
    data = asdict(group)
    return {"group": dict(zip(by, data.pop("key"), strict=True)), **data}


def report_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON values (the structure format_json documents)."""
    data: dict[str, Any] = _plain(
        {
            "generated_at": report.generated_at,
            "since": report.since,
            "until": report.until,
            "by": report.by,
            "total": _group_json((), report.total),
            "groups": [_group_json(report.by, group) for group in report.groups],
            "worst_waiting": [asdict(w) for w in report.worst],
            "weekly": [asdict(w) for w in report.weeks],
            "first_response_histogram": [asdict(b) for b in report.histogram],
            "survey_ratings": {str(r): n for r, n in enumerate(report.ratings, start=1)},
        }
    )
    return data


def format_json(report: Report) -> str:
    """JSON with these keys, always present (null where there is nothing to measure).

    generated_at, since, until (ISO 8601 UTC or null); by (list of columns); total and
    groups[]: {group: {column: value}, conversations, first_response and resolution:
    {done, met, breached, compliance_pct, median_minutes, p90_minutes},
    next_response_breaches, decided, compliant, compliance_pct, survey_answers,
    survey_mean_rating}; worst_waiting[]: {conversation_id, subject, department, urgency,
    waiting_since, due, overdue_minutes}; weekly[]: {week, conversations, decided, compliant,
    compliance_pct}; first_response_histogram[]: {from_minutes, to_minutes, count};
    survey_ratings: {"1".."5": count}.
    """
    return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}_"))
        else:
            flat[prefix + name] = value
    return flat


def format_csv(report: Report) -> str:
    """One row per group: the by columns, then the group's JSON figures flattened (a_b)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for index, group in enumerate(report.groups or (report.total,)):
        data = asdict(group)
        flat = _flat({"key": dict(zip(report.by, data.pop("key"), strict=True))} | data)
        values = {name.removeprefix("key_"): value for name, value in flat.items()}
        if index == 0:
            writer.writerow(values)
        writer.writerow("" if v is None else v for v in values.values())
    return out.getvalue()


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for people: '-' when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def _aligned(rows: list[list[str]], left: int) -> list[str]:
    """Rows as lines: the first `left` columns flush left, the others flush right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if index < left else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def group_cells(group: GroupStats) -> list[str]:
    """The figures of a group as table cells (after the group's own columns)."""
    first, res = group.first_response, group.resolution
    survey = (
        f"{group.survey_answers} × {fmt(group.survey_mean_rating, 2)}"
        if group.survey_answers
        else "-"
    )
    return [
        str(group.conversations),
        f"{first.met}/{first.breached}",
        fmt(first.compliance_pct),
        fmt(first.median_minutes),
        fmt(first.p90_minutes),
        f"{res.met}/{res.breached}",
        fmt(res.compliance_pct),
        fmt(res.median_minutes),
        fmt(res.p90_minutes),
        str(group.next_response_breaches),
        fmt(group.compliance_pct),
        survey,
    ]


GROUP_HEADINGS = [
    "conv",
    "1st met/breach",
    "1st %",
    "1st med",
    "1st p90",
    "res met/breach",
    "res %",
    "res med",
    "res p90",
    "next breach",
    "SLA %",
    "survey",
]
WAITING_HEADINGS = ["id", "subject", "department", "urgency", "waiting since", "due", "overdue"]


def period(report: Report) -> str:
    """The report's period in words."""
    since = report.since.strftime("%Y-%m-%d %H:%M") if report.since else "the beginning"
    until = report.until.strftime("%Y-%m-%d %H:%M") if report.until else "now"
    return f"conversations opened from {since} until {until} (UTC)"


def waiting_cells(w: Waiting) -> list[str]:
    """A waiting conversation as table cells."""
    subject = w.subject if len(w.subject) <= 48 else w.subject[:47] + "…"
    return [
        str(w.conversation_id),
        subject,
        w.department or "-",
        w.urgency or "-",
        utc(w.waiting_since).strftime("%Y-%m-%d %H:%M"),
        utc(w.due).strftime("%Y-%m-%d %H:%M") if w.due else "-",
        "-" if w.overdue_minutes is None else f"{w.overdue_minutes:.0f} min",
    ]


def format_table(report: Report) -> str:
    """The report as aligned plain text."""
    lines = [f"SLA report, {period(report)}; minutes are business minutes", ""]
    rows = [[*report.by, *GROUP_HEADINGS]]
    rows += [[v or "-" for v in g.key] + group_cells(g) for g in report.groups]
    if report.by:
        rows.append(["total", *[""] * (len(report.by) - 1), *group_cells(report.total)])
    lines += _aligned(rows, len(report.by))
    if report.worst:
        lines += ["", "Longest waiting (overdue in wall-clock minutes):"]
        waiting = [WAITING_HEADINGS] + [waiting_cells(w) for w in report.worst]
        lines += _aligned(waiting, 4)
    answers = sum(report.ratings)
    if answers:
        counts = ", ".join(f"{r}: {n}" for r, n in enumerate(report.ratings, start=1))
        lines += [
            "",
            f"Survey: {answers} answers, mean {fmt(report.total.survey_mean_rating, 2)} ({counts})",
        ]
    return "\n".join(lines) + "\n"


def format_html(report: Report) -> str:
    """A self-contained HTML page with charts as inline SVG."""
    from .sla_report_html import render_html

    return render_html(report)


FORMATTERS = {"table": format_table, "csv": format_csv, "json": format_json, "html": format_html}
