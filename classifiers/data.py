"""Labelled rows and their CSV form: id, subject, body, department, urgency, language."""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from classifiers.errors import TrainingDataError

__all__ = ["CSV_COLUMNS", "Row", "data_sha256", "load_csv", "rows_sha256", "write_csv"]

log = logging.getLogger(__name__)

CSV_COLUMNS = ("id", "subject", "body", "department", "urgency", "language")
_REQUIRED = frozenset({"subject", "body", "department", "urgency"})


@dataclass(frozen=True, slots=True)
class Row:
    """One labelled message; an empty label means the row does not train that head."""

    id: str
    subject: str
    body: str
    department: str | None = None
    urgency: str | None = None
    language: str = ""

    def label(self, head: str) -> str | None:
        """Return the label of `head` ("department" or "urgency"), None when unlabelled."""
        value: str | None = getattr(self, head)
        return value


def _cell(record: dict[str, str | None], key: str) -> str:
    """Return a stripped cell, empty when the column or the value is missing."""
    value = record.get(key)
    return value.strip() if value else ""


def load_csv(paths: str | Path | Sequence[str | Path]) -> list[Row]:
    """Read rows from one or more UTF-8 CSV files; extra columns are ignored."""
    if isinstance(paths, str | Path):
        paths = [paths]
    rows: list[Row] = []
    for path in paths:
        with Path(path).open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = _REQUIRED - set(reader.fieldnames or ())
            if missing:
                raise TrainingDataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            for number, record in enumerate(reader, start=2):
                rows.append(
                    Row(
                        id=_cell(record, "id") or f"{Path(path).name}:{number}",
                        subject=record.get("subject") or "",
                        body=record.get("body") or "",
                        department=_cell(record, "department") or None,
                        urgency=_cell(record, "urgency") or None,
                        language=_cell(record, "language"),
                    )
                )
        log.debug("read %s: %d rows so far", path, len(rows))
    return rows


def write_csv(path: str | Path, rows: Iterable[Row]) -> None:
    """Write rows with the standard columns (None labels as empty cells)."""
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    row.id,
                    row.subject,
                    row.body,
                    row.department or "",
                    row.urgency or "",
                    row.language,
                ]
            )


def data_sha256(paths: Sequence[str | Path]) -> str:
    """Return the sha256 of the training files' bytes, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def rows_sha256(rows: Iterable[Row]) -> str:
    """Return a sha256 over the rows' fields, independent of how they were stored."""
    digest = hashlib.sha256()
    for row in rows:
        fields = (row.id, row.subject, row.body, row.department or "", row.urgency or "")
        digest.update("\x1f".join((*fields, row.language)).encode("utf-8") + b"\x1e")
    return digest.hexdigest()
