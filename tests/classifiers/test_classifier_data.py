"""CSV loading: empty label cells become None; missing columns are a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers.data import Row, load_csv, rows_sha256, write_csv
from classifiers.errors import TrainingDataError


def test_empty_label_cells(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "id,subject,body,department,urgency,language,source\n"
        "1,Invoice,Charged twice,billing,,en,x\n"
        '2,发票,"抬头错了,请重开",,important,zh,x\n'
        "3,Hi,,  ,  ,en,x\n",
        encoding="utf-8",
    )
    rows = load_csv(path)
    assert rows == [
        Row("1", "Invoice", "Charged twice", "billing", None, "en"),
        Row("2", "发票", "抬头错了,请重开", None, "important", "zh"),
        Row("3", "Hi", "", None, None, "en"),
    ]


def test_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,subject,body,department\n1,a,b,c\n", encoding="utf-8")
    with pytest.raises(TrainingDataError, match="urgency"):
        load_csv(path)


def test_write_then_read(tmp_path: Path) -> None:
    rows = [Row("a", "s", "line 1\nline 2", "sales", None, "en")]
    write_csv(tmp_path / "out.csv", rows)
    assert load_csv([tmp_path / "out.csv"]) == rows
    assert rows_sha256(rows) == rows_sha256(load_csv(tmp_path / "out.csv"))
