"""`mailcare train --from-history`: corrections teach the model; bad ones are refused."""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from classifiers.model import load_model
from daemon.database import Database
from daemon.retrain import train_from_history
from daemon.settings import Settings
from daemon.tables import Correction, Message

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "classifiers" / "corpus" / "support_messages.csv"
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def base_subset(path: Path, per_department: int = 70) -> Path:
    """A smaller base corpus (same columns), so that each test trains in seconds."""
    with CORPUS.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kept: dict[str, int] = {}
    chosen = []
    for row in rows:
        if kept.get(row["department"], 0) < per_department:
            kept[row["department"]] = kept.get(row["department"], 0) + 1
            chosen.append(row)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return path


def add_corrected(db: Database, texts: list[tuple[str, str]], label: str) -> None:
    """Messages an agent moved to department `label`."""
    with db.transaction() as conn:
        for n, (subject, body) in enumerate(texts):
            raw = f"Subject: {subject}\r\n\r\n{body}\r\n".encode()
            pk = conn.execute(
                Message.__table__.insert()
                .values(
                    dedup_key=hashlib.sha256(raw + str(n).encode()).hexdigest(),
                    sha256=hashlib.sha256(raw).hexdigest(),
                    raw=raw,
                    size=len(raw),
                    source="imap",
                    received_at=NOW,
                    state="done",
                    attempts=1,
                    subject=subject,
                    body_text=body,
                    language="en",
                    department="technical_support",
                )
                .returning(Message.__table__.c.id)
            ).scalar_one()
            conn.execute(
                Correction.__table__.insert().values(
                    message_pk=pk,
                    head="department",
                    previous="technical_support",
                    label=label,
                    source="imap-move",
                    created_at=NOW,
                )
            )


@pytest.fixture
def setup(tmp_path: Path, _sqlite_schema: Path) -> Iterator[tuple[Settings, Database, Path]]:
    from tests.conftest import _copy_sqlite

    _copy_sqlite(_sqlite_schema, tmp_path / "db.sqlite3")
    models = tmp_path / "models"
    models.mkdir()
    for suffix in (".skops", ".json"):
        shutil.copy(ROOT / "models" / f"default{suffix}", models / f"default{suffix}")
    settings = Settings.model_validate(
        {
            "database_url": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "paths": {"rules": str(ROOT / "rules.yaml"), "models": str(models)},
        }
    )
    db = Database(settings.database_url)
    yield settings, db, base_subset(tmp_path / "base.csv")
    db.dispose()


def zorblax(n: int) -> list[tuple[str, str]]:
    """A new product whose problems belong to complaints, which the model never saw."""
    return [
        (
            f"Zorblax unit {n * 7 + i} again",
            f"The zorblax {['hums', 'rattles', 'blinks', 'leaks'][i % 4]} and I am fed up, "
            f"this is the {i + 2}th zorblax problem this month.",
        )
        for i in range(n)
    ]


def test_corrections_are_learned_and_the_model_replaced(
    setup: tuple[Settings, Database, Path],
) -> None:
    settings, db, base = setup
    add_corrected(db, zorblax(50), "complaints")
    model_file = settings.paths.models / "default.skops"
    before = hashlib.sha256(model_file.read_bytes()).hexdigest()
    old = load_model(settings.paths.models / "default")
    probe = ("Zorblax unit 999 again", "The zorblax rattles and I am fed up with the zorblax.")
    assert old.predict(*probe).department != "complaints"
    report = train_from_history(settings, [str(base)], None)
    assert report["replace"], report
    assert report["corrections"] == 50 and report["held_back"]["corrections"] == 10
    learned = report["figures"]["corrections"]["department"]
    assert learned["candidate"] > learned["reference"]
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() != before
    new = load_model(settings.paths.models / "default")
    assert new.predict(*probe).department == "complaints"
    assert "history" in new.metadata["training"]["sources"]


def test_corrections_that_ruin_the_base_are_refused(
    setup: tuple[Settings, Database, Path],
) -> None:
    settings, db, base = setup
    # someone "corrected" hundreds of ordinary billing questions to sales
    with CORPUS.open(encoding="utf-8") as handle:
        billing = [
            (r["subject"], r["body"])
            for r in csv.DictReader(handle)
            if r["department"] == "billing" and r["language"] == "en"
        ][:200]
    add_corrected(db, billing, "sales")
    model_file = settings.paths.models / "default.skops"
    before = hashlib.sha256(model_file.read_bytes()).hexdigest()
    report = train_from_history(settings, [str(base)], None)
    assert not report["replace"]
    assert "department on held-back base" in report["worse"]
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == before


def test_the_command_says_when_there_is_nothing_to_learn(
    setup: tuple[Settings, Database, Path], tmp_path: Path
) -> None:
    settings, _, base = setup
    config = tmp_path / "mailcare.yaml"
    config.write_text(
        f"database_url: {settings.database_url}\n"
        f"paths: {{rules: {ROOT / 'rules.yaml'}, models: {settings.paths.models}}}\n"
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "daemon.cli", "--config", str(config)),
            *("train", "--from-history", "--data", str(base)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "no corrections recorded yet" in result.stderr
