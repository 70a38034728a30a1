"""Subscribers from a CSV file: UTF-8 (a BOM is allowed), refused rows named by line.

Columns: `address` (required); optional name, language, timezone, tier, lifecycle, tags
(separated by `;` or `,`), consent_source and consent_at (ISO time); any other column becomes
an attribute for templates.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .audience_import import NewSubscriber, checked

CSV_COLUMNS = (
    "address",
    "name",
    "language",
    "timezone",
    "tier",
    "lifecycle",
    "tags",
    "consent_source",
    "consent_at",
)


@dataclass
class CsvImport:
    """The people of a CSV file, the line each came from, and the rows that were refused."""

    people: list[NewSubscriber] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)


def parse_time(value: str) -> datetime:
    """An ISO date or date-time; UTC unless it names its offset."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"not an ISO date or date-time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _person(values: Mapping[str, str], consent_source: str | None) -> NewSubscriber:
    def given(name: str) -> str | None:
        return values.get(name, "").strip() or None

    tags = given("tags")
    consent_at = given("consent_at")
    attributes = {k: v.strip() for k, v in values.items() if k not in CSV_COLUMNS and v.strip()}
    return checked(
        NewSubscriber(
            address=values.get("address", "").strip(),
            name=given("name"),
            language=given("language"),
            timezone=given("timezone"),
            tier=given("tier"),
            lifecycle=given("lifecycle"),
            tags=frozenset(re.split(r"[;,]", tags)) if tags else None,
            attributes=attributes or None,
            consent_source=given("consent_source") or consent_source,
            consent_at=parse_time(consent_at) if consent_at else None,
        )
    )


def read_csv(data: bytes, consent_source: str | None = None) -> CsvImport:
    """The rows of a UTF-8 CSV file (a BOM is allowed); ValueError when the file is unusable."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"line {line}: not UTF-8 text (save the file as UTF-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in next(reader, [])]
    if "address" not in header:
        raise ValueError(f"no `address` column in the header line (found: {', '.join(header)})")
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise ValueError(f"column named twice in the header line: {', '.join(repeated)}")
    found = CsvImport()
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            raise ValueError(f"line {start}: {exc}") from None
        end = reader.line_num
        if cells is None:
            return found
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header):
            found.problems.append((start, f"{len(cells)} fields, the header has {len(header)}"))
            continue
        try:
            person = _person(dict(zip(header, cells, strict=False)), consent_source)
        except ValueError as exc:
            found.problems.append((start, str(exc)))
            continue
        if person.address in found.lines:
            first = found.lines[person.address]
            found.problems.append((start, f"{person.address} is already on line {first}"))
            continue
        found.lines[person.address] = start
        found.people.append(person)
