"""`mailcare train --from-history`: learn from the team's corrections, replace only if not worse.

The corrected messages (their last correction per head is the truth; a head nobody
corrected stays unlabelled) are added to the base corpus; a seeded fifth of the base and
of the corrections is held back, and a candidate is trained on the rest. The candidate
replaces the model in use only if it is not worse, per head:

- on the held-back corrections, than the model in use (which never saw them), and
- on the held-back base rows, than a baseline trained the same way on the same base rows
  without the corrections (the model in use was trained on those rows, so comparing it
  there would favour it), give or take `tolerance`.

The running daemon picks the new files up without a restart.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .database import Database
from .errors import ConfigError
from .rules import load_rules
from .settings import Settings, load_settings
from .tables import Correction, Message

log = logging.getLogger(__name__)

HOLDOUT = 0.2
ROOT = Path(__file__).resolve().parent.parent


def history_rows(db: Database) -> list[Any]:
    """Corrected messages as training rows (classifiers.data.Row)."""
    from classifiers.data import Row

    corrections = Correction.__table__
    messages = Message.__table__
    with db.reading() as conn:
        fixes = conn.execute(
            select(corrections.c.message_pk, corrections.c.head, corrections.c.label).order_by(
                corrections.c.id
            )
        ).all()
        latest: dict[int, dict[str, str]] = {}
        for pk, head, label in fixes:
            latest.setdefault(int(pk), {})[head] = label
        rows = []
        ids = sorted(latest)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for r in conn.execute(
                select(
                    messages.c.id, messages.c.subject, messages.c.body_text, messages.c.language
                ).where(messages.c.id.in_(chunk))
            ):
                labels = latest[int(r.id)]
                rows.append(
                    Row(
                        id=f"history-{r.id}",
                        subject=r.subject or "",
                        body=r.body_text or "",
                        department=labels.get("department"),
                        urgency=labels.get("urgency"),
                        language=r.language or "",
                    )
                )
    return rows


def split(rows: Sequence[Any], seed: int = 0) -> tuple[list[Any], list[Any]]:
    """(train, held back): a seeded fifth of each department held back."""
    groups: dict[str, list[Any]] = {}
    for row in rows:
        groups.setdefault(row.department or row.urgency or "", []).append(row)
    rng = random.Random(seed)
    train_rows: list[Any] = []
    held: list[Any] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: r.id)
        rng.shuffle(group)
        cut = round(len(group) * HOLDOUT)
        held.extend(group[:cut])
        train_rows.extend(group[cut:])
    return train_rows, held


def base_sources(model_path: Path, given: Sequence[str] | None) -> list[Path]:
    """The CSV files to start from: --data, else those the current model was trained on."""
    if given:
        return [Path(p) for p in given]
    metadata = json.loads(model_path.with_suffix(".json").read_text(encoding="utf-8"))
    sources = [Path(p) for p in metadata.get("training", {}).get("sources", {})]
    found = [p if p.is_absolute() else ROOT / p for p in sources]
    missing = [str(p) for p in found if not p.exists()]
    if not found or missing:
        raise ConfigError(
            f"{model_path}: its training data is not here "
            f"({', '.join(missing) or 'none recorded'}); give the base corpus with --data"
        )
    return found


def _macro_f1(model: Any, rows: Sequence[Any]) -> dict[str, float]:
    from classifiers.evaluation import evaluate

    if not rows:
        return {}
    return {head: report.macro_f1 for head, report in evaluate(model, rows).heads.items()}


def compare(
    current: Any,
    baseline: Any,
    candidate: Any,
    held_history: Sequence[Any],
    held_base: Sequence[Any],
    tolerance: float,
) -> dict[str, Any]:
    """The figures behind the decision, and the decision."""
    checks = {
        "corrections": (_macro_f1(current, held_history), _macro_f1(candidate, held_history), 0.0),
        "base": (_macro_f1(baseline, held_base), _macro_f1(candidate, held_base), tolerance),
    }
    figures: dict[str, Any] = {}
    worse: list[str] = []
    for part, (reference, new, slack) in checks.items():
        for head in sorted(reference):
            after = new.get(head)
            figures.setdefault(part, {})[head] = {"reference": reference[head], "candidate": after}
            if after is None or after < reference[head] - slack:
                worse.append(f"{head} on held-back {part}")
    return {"figures": figures, "worse": worse, "replace": not worse}


def train_from_history(
    settings: Settings,
    data: Sequence[str] | None,
    out: str | None,
    quiet: bool = True,
    tolerance: float = 0.01,
) -> dict[str, Any]:
    """Retrain with the corrections; replace the model only if it is not worse."""
    from classifiers.cli import utc_now
    from classifiers.data import data_sha256, load_csv, rows_sha256
    from classifiers.model import load_model
    from classifiers.training import TrainConfig, train

    rules = load_rules(settings.paths.rules)
    current_path = settings.paths.models / rules.routing.model
    target = Path(out) if out else current_path
    sources = base_sources(current_path, data)
    db = Database(settings.database_url)
    try:
        db.check_schema()
        history = history_rows(db)
    finally:
        db.dispose()
    if not history:
        raise ConfigError("no corrections recorded yet: nothing to learn from history")
    base = load_csv(sources)
    base_train, held_base = split(base)
    history_train, held_history = split(history)
    current = load_model(current_path)
    recorded: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in current.metadata.get("training", {}).get("config", {}).items()
        if key in TrainConfig.__dataclass_fields__
    }
    config = TrainConfig(**recorded)
    baseline = train(base_train, config, name="baseline", progress=not quiet)
    candidate = train(
        [*base_train, *history_train],
        config,
        name=target.name,
        sources={
            **{str(p): data_sha256([p]) for p in sources},
            "history": rows_sha256(history),
        },
        created=utc_now(),
        progress=not quiet,
    )
    verdict = compare(current, baseline, candidate, held_history, held_base, tolerance)
    report = {
        "base_rows": len(base),
        "corrections": len(history),
        "held_back": {"base": len(held_base), "corrections": len(held_history)},
        "model": str(target),
        **verdict,
    }
    if verdict["replace"]:
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            paths = candidate.save(Path(scratch) / target.name)
            # weights first, then the metadata naming them: a reader that sees a mix
            # refuses it and keeps the old model until both files are in place
            shutil.move(str(paths.estimators), target.with_suffix(".skops"))
            shutil.move(str(paths.metadata), target.with_suffix(".json"))
    return report


def cmd_train_from_history(args: argparse.Namespace) -> int:
    """The `mailcare train --from-history` command."""
    settings = load_settings(Path(args.config) if args.config else None)
    report = train_from_history(settings, args.data, args.out, quiet=args.quiet)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
    else:
        names = {"corrections": "the model in use", "base": "a baseline without corrections"}
        for part, heads in report["figures"].items():
            for head, f in heads.items():
                print(
                    f"{head}, held-back {part} ({report['held_back'][part]} rows): macro-F1 "
                    f"{_figure(f['candidate'])} against {_figure(f['reference'])} "
                    f"for {names[part]}"
                )
        if report["replace"]:
            print(f"replaced {report['model']} ({report['corrections']} corrections learned)")
        else:
            print(f"kept {report['model']}: the candidate is worse on {', '.join(report['worse'])}")
    return 0


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
