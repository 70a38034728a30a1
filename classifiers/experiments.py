"""Reproducible cross-validation figures for the shipped models (and `--save` to rebuild them).

    python -m classifiers.experiments [--dataset NAME ...] [--seeds 0 1 2] [--save models]

Each fold trains with `classifiers.training.train` on the other folds only (features,
calibration, bias and thresholds included) and predicts the held-out fold; figures are
computed once over the pooled out-of-fold predictions, then averaged over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from classifiers.cli import utc_now
from classifiers.data import Row, data_sha256, load_csv
from classifiers.evaluation import report_from_predictions
from classifiers.model import HEADS, Prediction
from classifiers.training import TrainConfig, train

__all__ = ["DATASETS", "Dataset", "cross_validate", "main", "shared_dir"]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
_FIGURES = ("accuracy", "macro_f1", "macro_f1_all_labels", "routed_share", "routed_precision")


@dataclass(frozen=True, slots=True)
class Dataset:
    """A training file (relative to the shared folder or the repo) and its chosen settings."""

    name: str
    path: str
    in_shared: bool
    config: TrainConfig


DATASETS: dict[str, Dataset] = {
    "endava-en": Dataset(
        "endava-en",
        "data/endava_it_tickets_en/train.csv",
        True,
        TrainConfig(words=(1, 2), min_df=3, department_c=0.3, urgency_c=0.3),
    ),
    "tipdm-zh": Dataset(
        "tipdm-zh",
        "data/tipdm2020c_gov_messages_zh/train.csv",
        True,
        TrainConfig(chars=(1, 2), department_c=1.0),
    ),
    "default": Dataset(
        "default",
        "classifiers/corpus/support_messages.csv",
        False,
        TrainConfig(words=(1, 2), chars=(1, 2), department_c=0.3, urgency_c=0.3),
    ),
}


def shared_dir() -> Path:
    """Return the shared data folder: $MAILCARE_SHARED, else `<repo>/../shared`."""
    return Path(os.environ.get("MAILCARE_SHARED") or _REPO.parent / "shared")


def _strata(rows: Sequence[Row], folds: int) -> list[str]:
    """Return a stratification key per row: department|urgency, falling back when rare."""
    keys: list[list[str]] = [
        [f"{r.department}|{r.urgency}", f"{r.department}|", f"|{r.urgency}"] for r in rows
    ]
    strata = [""] * len(rows)
    for level in range(3):
        pending = [i for i, s in enumerate(strata) if not s]
        counts = Counter(keys[i][level] for i in pending)
        for i in pending:
            if counts[keys[i][level]] >= folds:
                strata[i] = keys[i][level]
    # rows rare on every level join the largest stratum, so every stratum fills every fold
    largest = Counter(s for s in strata if s).most_common(1)
    return [s or (largest[0][0] if largest else "all") for s in strata]


def cross_validate(
    rows: Sequence[Row], config: TrainConfig, folds: int = 5, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Return pooled out-of-fold figures per head for one seed."""
    strata = _strata(rows, folds)
    predictions: list[Prediction | None] = [None] * len(rows)
    known: dict[str, set[str]] = {}
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for number, (fit, test) in enumerate(splitter.split(np.zeros(len(rows)), strata), start=1):
        model = train([rows[i] for i in fit], replace(config, random_state=seed))
        for head, labels in model.labels.items():
            known.setdefault(head, set()).update(labels)
        fold_predictions = model.predict_many([(rows[i].subject, rows[i].body) for i in test])
        for i, prediction in zip(test, fold_predictions, strict=True):
            predictions[i] = prediction
        log.info("seed %d fold %d/%d done", seed, number, folds)
    done = [p for p in predictions if p is not None]
    report = report_from_predictions(rows, done, {h: sorted(v) for h, v in known.items()})
    return {
        head: {key: getattr(figures, key) for key in _FIGURES} | {"rows": figures.rows}
        for head, figures in report.heads.items()
    }


def _summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Average each figure over seeds, with its population standard deviation."""
    summary: dict[str, dict[str, Any]] = {}
    for head in HEADS:
        runs = [run[head] for run in per_seed if head in run]
        if runs:
            summary[head] = {"rows": int(runs[0]["rows"]), "seeds": len(runs)} | {
                key: {
                    "mean": round(mean(r[key] for r in runs), 4),
                    "std": round(pstdev(r[key] for r in runs), 4),
                }
                for key in _FIGURES
            }
    return summary


def _resolve(dataset: Dataset, shared: Path) -> Path:
    """Return the dataset's file path."""
    return (shared if dataset.in_shared else _REPO) / dataset.path


def main(argv: list[str] | None = None) -> int:
    """Print cross-validation figures per dataset and head; optionally save final models."""
    parser = argparse.ArgumentParser(prog="python -m classifiers.experiments")
    parser.add_argument("--dataset", nargs="*", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--save", type=Path, metavar="DIR", help="train on all rows, save DIR/NAME")
    parser.add_argument("--json", action="store_true", help="print one JSON object per dataset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    shared = shared_dir()
    for name in args.dataset:
        dataset = DATASETS[name]
        path = _resolve(dataset, shared)
        if not path.exists():
            print(f"{name}: {path} not found, skipped", file=sys.stderr)
            continue
        rows = load_csv(path)
        per_seed = [cross_validate(rows, dataset.config, args.folds, seed) for seed in args.seeds]
        summary = _summarise(per_seed)
        if args.json:
            print(json.dumps({"dataset": name, "folds": args.folds, "heads": summary}))
        else:
            _print_summary(name, args.folds, summary)
        if args.save:
            model = train(
                rows,
                dataset.config,
                name=name,
                sources={dataset.path: data_sha256([path])},
                created=utc_now(),
            )
            model.metadata["cross_validation"] = {
                "folds": args.folds,
                "seeds": args.seeds,
                "heads": summary,
            }
            saved = model.save(args.save / name)
            print(f"  saved {saved.estimators}")
    return 0


def _print_summary(name: str, folds: int, summary: dict[str, dict[str, Any]]) -> None:
    """Print one line per head."""
    for head, figures in summary.items():
        cells = "  ".join(
            f"{key} {figures[key]['mean']:.3f}±{figures[key]['std']:.3f}" for key in _FIGURES
        )
        print(
            f"{name} {head} ({figures['rows']} rows, {folds}-fold x {figures['seeds']} seeds): "
            f"{cells}"
        )


if __name__ == "__main__":
    sys.exit(main())
