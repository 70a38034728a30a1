"""The train, evaluate and classify subcommands, run as a user would (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from classifiers.data import Row, write_csv

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m classifiers.cli ARGS` from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [sys.executable, "-m", "classifiers.cli", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_rows: list[Row]) -> Path:
    """Train a model through the CLI from a CSV that has empty label cells."""
    folder = tmp_path_factory.mktemp("cli")
    write_csv(folder / "first.csv", small_rows[:100])
    write_csv(folder / "second.csv", small_rows[100:])
    assert any(row.urgency is None for row in small_rows)
    result = _run(
        "train", "--data", str(folder / "first.csv"), "--data", str(folder / "second.csv"),
        "--out", str(folder / "models" / "cli"), "--folds", "3", "--min-class-rows", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert "training" in result.stderr.decode()  # the progress bar
    assert b"wrote" in result.stdout
    return folder


def test_train_writes_model_and_metadata(trained: Path) -> None:
    metadata = json.loads((trained / "models" / "cli.json").read_text(encoding="utf-8"))
    assert (trained / "models" / "cli.skops").is_file()
    assert {Path(p).name for p in metadata["training"]["sources"]} == {"first.csv", "second.csv"}
    assert metadata["name"] == "cli"
    assert metadata["created"]
    assert set(metadata["heads"]) == {"department", "urgency"}


def test_evaluate_json(trained: Path) -> None:
    result = _run(
        "evaluate", "--model", str(trained / "models" / "cli"),
        "--data", str(trained / "second.csv"), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["rows"] == 50
    assert 0.0 <= report["heads"]["department"]["macro_f1"] <= 1.0


def test_evaluate_text(trained: Path) -> None:
    result = _run(
        "evaluate", "--model", str(trained / "models" / "cli"), "--data", str(trained / "first.csv")
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "macro-F1" in result.stdout.decode()


def test_classify_eml_file(trained: Path) -> None:
    message = EmailMessage()
    message["Subject"] = "=?utf-8?b?5Y+R56Wo?= invoice charged twice"
    message["From"] = "a@example.com"
    message.set_content("You charged my card twice for invoice INV-2024-00002.")
    message.add_alternative("<p>You <b>charged</b> my card twice.</p>", subtype="html")
    path = trained / "mail.eml"
    path.write_bytes(message.as_bytes())
    result = _run("classify", str(path), "--model", str(trained / "models" / "cli"), "--json")
    assert result.returncode == 0, result.stderr.decode()
    answer = json.loads(result.stdout)
    assert set(answer) == {
        "department", "department_confidence", "abstained_department",
        "urgency", "urgency_confidence", "abstained_urgency",
    }  # fmt: skip


def test_classify_stdin(trained: Path) -> None:
    raw = "Subject: 订单一直没有发货\n\n我的订单还没有发货，请帮忙查一下。\n".encode()
    result = _run("classify", "--model", str(trained / "models" / "cli"), stdin=raw)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("department: ")
    assert lines[1].startswith("urgency: ")


def test_missing_model_is_one_line_error(tmp_path: Path) -> None:
    result = _run("classify", "--model", str(tmp_path / "none"), stdin=b"hello")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("error: ")
