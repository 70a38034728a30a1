"""The SLA report as one self-contained HTML page: inline CSS, charts as inline SVG."""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import Environment
from markupsafe import Markup

from .sla_report import Bucket, Report, Week
from .sla_report_format import (
    GROUP_HEADINGS,
    WAITING_HEADINGS,
    fmt,
    group_cells,
    period,
    waiting_cells,
)

WIDTH, HEIGHT, MARGIN = 720, 260, 40
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>SLA report</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #888; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
</style>
</head>
<body>
<h1>SLA report</h1>
<p>{{ period }}. Generated {{ generated }}. Minutes are business minutes unless noted.</p>
<h2>Compliance by {{ by_words }}</h2>
<table>
<tr>{% for h in headings %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr{% if row.total %} class="total"{% endif %}>
{%- for cell in row.labels %}<td>{{ cell }}</td>{% endfor -%}
{%- for cell in row.cells %}<td class="n">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
<div class="charts">
<figure><figcaption>First response, business minutes (conversations)</figcaption>
{{ histogram }}</figure>
<figure><figcaption>Compliance per ISO week of opening (%)</figcaption>
{{ weekly }}</figure>
</div>
<h2>Longest waiting</h2>
{% if worst %}<p>Overdue in wall-clock minutes; negative: not yet due.</p>
<table>
<tr>{% for h in waiting_headings %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in worst %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% else %}<p>No customer is waiting.</p>{% endif %}
<h2>Satisfaction survey</h2>
{% if answers %}<p>{{ answers }} answers, mean rating {{ mean }}.</p>
<table>
<tr><th>rating</th>{% for r in ratings %}<th>{{ loop.index }}</th>{% endfor %}</tr>
<tr><td>answers</td>{% for r in ratings %}<td class="n">{{ r }}</td>{% endfor %}</tr>
</table>
{% else %}<p>No survey answers.</p>{% endif %}
</body>
</html>
"""


def _bars(labels: Sequence[str], values: Sequence[float], top: float, colour: str) -> Markup:
    """A bar chart as SVG: one bar per value, value over bar, label under it."""
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    parts = [
        Markup('<svg width="{}" height="{}" viewBox="0 0 {} {}" role="img">').format(
            WIDTH, HEIGHT, WIDTH, HEIGHT
        ),
        Markup('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#888"/>').format(
            MARGIN, HEIGHT - MARGIN, WIDTH - MARGIN, HEIGHT - MARGIN
        ),
    ]
    if not values:
        parts.append(
            Markup('<text x="{}" y="{}" text-anchor="middle">no data</text>').format(
                WIDTH / 2, HEIGHT / 2
            )
        )
    step = inner_w / max(1, len(values))
    every = max(1, len(values) // 12)  # at most about a dozen labels under the axis
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = 0.0 if top <= 0 else inner_h * value / top
        x = MARGIN + index * step
        y = HEIGHT - MARGIN - height
        centre = f"{x + step / 2:.1f}"
        parts.append(
            Markup(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {}</title></rect>'
            ).format(
                f"{x + step * 0.1:.1f}",
                f"{y:.1f}",
                f"{step * 0.8:.1f}",
                f"{height:.1f}",
                colour,
                label,
                f"{value:g}",
            )
        )
        if len(values) <= 24:
            parts.append(
                Markup('<text x="{}" y="{}" text-anchor="middle">{}</text>').format(
                    centre, f"{y - 3:.1f}", f"{value:.0f}"
                )
            )
        if index % every == 0:
            parts.append(
                Markup('<text x="{}" y="{}" text-anchor="middle">{}</text>').format(
                    centre, HEIGHT - MARGIN + 14, label
                )
            )
    parts.append(Markup("</svg>"))
    return Markup("\n").join(parts)


def _minutes(value: float) -> str:
    return f"{value / 60:g}h" if value >= 60 else f"{value:g}m"


def histogram_svg(buckets: Sequence[Bucket]) -> Markup:
    """The first-response distribution as an SVG bar chart."""
    labels = [
        f"≥{_minutes(b.from_minutes)}"
        if b.to_minutes is None
        else f"{_minutes(b.from_minutes)}–{_minutes(b.to_minutes)}"
        for b in buckets
    ]
    counts = [b.count for b in buckets]
    return _bars(labels, counts, max(counts, default=0), "#4a7bb7")


def weekly_svg(weeks: Sequence[Week]) -> Markup:
    """Overall compliance per week as an SVG bar chart (weeks with nothing decided left out)."""
    decided = [w for w in weeks if w.compliance_pct is not None]
    values = [w.compliance_pct or 0.0 for w in decided]
    return _bars([w.week for w in decided], values, 100.0, "#5a9e6f")


def render_html(report: Report) -> str:
    """The whole page."""
    keys = [[value or "-" for value in group.key] for group in report.groups]
    rows = [
        {"labels": key, "cells": group_cells(group), "total": False}
        for key, group in zip(keys, report.groups, strict=True)
    ]
    if report.by:
        total_keys = ["total", *[""] * (len(report.by) - 1)]
        rows.append({"labels": total_keys, "cells": group_cells(report.total), "total": True})
    template = Environment(autoescape=True, keep_trailing_newline=True).from_string(PAGE)
    return template.render(
        period=period(report)[0].upper() + period(report)[1:],
        generated=report.generated_at.strftime("%Y-%m-%d %H:%M UTC"),
        by_words=", ".join(report.by) or "all conversations",
        headings=[*report.by, *GROUP_HEADINGS],
        rows=rows,
        histogram=histogram_svg(report.histogram),
        weekly=weekly_svg(report.weeks),
        worst=[waiting_cells(w) for w in report.worst],
        waiting_headings=WAITING_HEADINGS,
        answers=sum(report.ratings),
        mean=fmt(report.total.survey_mean_rating, 2),
        ratings=report.ratings,
    )
