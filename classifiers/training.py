"""Training: shared TF-IDF features, class-weighted calibrated linear heads, tuned decisions."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from tqdm import tqdm

from classifiers.data import Row, rows_sha256
from classifiers.errors import TrainingDataError
from classifiers.features import TextFeatures
from classifiers.metrics import macro_f1
from classifiers.model import DEFAULT_MAX_CHARS, HEADS, Head, LinearScorer, Model, decide

__all__ = ["TrainConfig", "train", "tune_bias", "tune_thresholds"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

_BIAS_GRID = np.round(np.arange(-1.5, 1.51, 0.1), 2)
_MIN_ROUTED = 3


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters; the defaults suit a few hundred to a few thousand messages."""

    words: tuple[int, int] = (1, 2)
    chars: tuple[int, int] = (1, 2)
    min_df: int = 1
    department_c: float = 0.3
    urgency_c: float = 0.3
    folds: int = 5
    min_class_rows: int = 5
    target_precision: float = 0.9
    tune_bias: bool = True
    max_chars: int = DEFAULT_MAX_CHARS
    random_state: int = 0

    def c_for(self, head: str) -> float:
        """Return the SVM regularisation constant of `head`."""
        return self.department_c if head == "department" else self.urgency_c

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready data."""
        return asdict(self)


def _classifier(c: float, smallest_class: int, folds: int) -> CalibratedClassifierCV:
    """Return a class-weighted LinearSVC whose scores are Platt-calibrated by inner CV."""
    return CalibratedClassifierCV(
        LinearSVC(C=c, class_weight="balanced", max_iter=20000),
        method="sigmoid",
        cv=max(2, min(folds, smallest_class)),
        ensemble=False,
    )


def tune_bias(scores: FloatArray, true: IntArray) -> FloatArray:
    """Return per-class offsets to the margins that maximise out-of-fold macro-F1."""
    size = scores.shape[1]
    bias = np.zeros(size)
    best = macro_f1(true, np.argmax(scores, axis=1), size)
    for _ in range(2):
        improved = False
        for k in range(size):
            for value in _BIAS_GRID:
                trial = bias.copy()
                trial[k] = value
                score = macro_f1(true, np.argmax(scores + trial, axis=1), size)
                if score > best + 1e-9:
                    best, bias, improved = score, trial, True
        if not improved:
            break
    return bias


def tune_thresholds(
    chosen: IntArray,
    confidence: FloatArray,
    correct: npt.NDArray[np.bool_],
    size: int,
    target: float,
) -> FloatArray:
    """Return per-label confidence thresholds: the lowest one whose precision reaches `target`."""
    thresholds = np.ones(size)
    for k in range(size):
        mask = chosen == k
        order = np.argsort(-confidence[mask], kind="stable")
        conf, hits = confidence[mask][order], correct[mask][order]
        counts = np.arange(1, len(conf) + 1)
        precision = np.cumsum(hits) / counts
        ok = np.flatnonzero((precision >= target) & (counts >= _MIN_ROUTED))
        # a cut is only valid below the last row of a run of equal confidences
        ok = ok[(ok == len(conf) - 1) | (conf[np.minimum(ok + 1, len(conf) - 1)] < conf[ok])]
        if ok.size:
            thresholds[k] = np.floor(conf[ok[-1]] * 10000) / 10000
    return thresholds


def _oof_summary(
    true: IntArray, chosen: IntArray, abstained: npt.NDArray[np.bool_], size: int
) -> dict[str, float]:
    """Return out-of-fold accuracy, macro-F1 and automatic-routing share and precision."""
    routed = ~abstained
    correct = chosen == true
    return {
        "accuracy": round(float(correct.mean()), 4),
        "macro_f1": round(macro_f1(true, chosen, size), 4),
        "routed_share": round(float(routed.mean()), 4),
        "routed_precision": round(float(correct[routed].mean()), 4) if routed.any() else 0.0,
    }


def _train_head(
    name: str, matrix: Any, labels: Sequence[str], config: TrainConfig, bar: tqdm[Any]
) -> tuple[Head, dict[str, Any]]:
    """Fit one head; out-of-fold probabilities tune its bias and thresholds."""
    classes = sorted(set(labels))
    true = np.searchsorted(classes, labels)
    smallest = int(np.bincount(true).min())
    splits = max(2, min(config.folds, smallest))
    folds = StratifiedKFold(splits, shuffle=True, random_state=config.random_state)
    proba = np.zeros((len(true), len(classes)))
    scores = np.zeros_like(proba)
    for fit_rows, test_rows in folds.split(np.zeros(len(true)), true):
        fold_smallest = int(np.bincount(true[fit_rows]).min())
        fold = _classifier(config.c_for(name), fold_smallest, config.folds)
        fold.fit(matrix[fit_rows], true[fit_rows])
        scorer = LinearScorer.from_estimator(fold)
        raw = scorer.raw(matrix[test_rows])
        proba[test_rows] = scorer.proba(raw)
        scores[test_rows] = scorer.margins(raw)
        bar.update(1)
    bias = tune_bias(scores, true) if config.tune_bias else np.zeros(len(classes))
    chosen, confidence, _ = decide(scores, proba, bias, np.zeros(len(classes)))
    thresholds = tune_thresholds(
        chosen, confidence, chosen == true, len(classes), config.target_precision
    )
    final = _classifier(config.c_for(name), smallest, config.folds)
    final.fit(matrix, np.asarray(labels))
    bar.update(1)
    head = Head(name, final, tuple(str(c) for c in final.classes_), bias, thresholds)
    summary = {
        "train_counts": dict(sorted(Counter(labels).items())),
        "target_precision": config.target_precision,
        "out_of_fold": _oof_summary(true, chosen, confidence < thresholds[chosen], len(classes)),
    }
    return head, summary


def train(
    rows: Sequence[Row],
    config: TrainConfig | None = None,
    *,
    name: str = "",
    sources: Mapping[str, str] | None = None,
    created: datetime | None = None,
    progress: bool = False,
) -> Model:
    """Train both heads on `rows` (a head learns only from rows carrying its label)."""
    config = config or TrainConfig()
    if config.min_class_rows < 3:
        raise TrainingDataError("min_class_rows must be at least 3 (calibration needs folds)")
    if not rows:
        raise TrainingDataError("no training rows")
    plans: dict[str, tuple[list[int], list[str], dict[str, int]]] = {}
    for head in HEADS:
        counts = Counter(label for row in rows if (label := row.label(head)) is not None)
        dropped = {k: v for k, v in sorted(counts.items()) if v < config.min_class_rows}
        keep = [i for i, row in enumerate(rows) if row.label(head) not in (None, *dropped)]
        labels = [str(rows[i].label(head)) for i in keep]
        if dropped:
            log.warning(
                "%s: labels with < %d rows not learnt: %s", head, config.min_class_rows, dropped
            )
        if len(set(labels)) >= 2:
            plans[head] = (keep, labels, dropped)
        elif counts:
            log.warning("%s: fewer than two learnable labels, head left out", head)
    if not plans:
        raise TrainingDataError("no head has two labels with enough rows to learn from")
    steps = 1 + sum(max(2, min(config.folds, *Counter(p[1]).values())) + 1 for p in plans.values())
    with tqdm(total=steps, desc="training", unit="step", disable=not progress) as bar:
        features = TextFeatures(config.words, config.chars, config.min_df)
        model = Model(features, {}, max_chars=config.max_chars)
        texts = [model.input_text(row.subject, row.body) for row in rows]
        matrix = model.features.fit_transform(texts).tocsr()
        bar.update(1)
        heads: dict[str, Head] = {}
        sections: dict[str, Any] = {}
        for head_name, (keep, labels, dropped) in plans.items():
            bar.set_postfix_str(head_name)
            heads[head_name], sections[head_name] = _train_head(
                head_name, matrix[keep], labels, config, bar
            )
            sections[head_name]["dropped_labels"] = dropped
    metadata = {
        "name": name,
        "created": created.isoformat() if created else None,
        "training": {
            "rows": len(rows),
            "data_sha256": rows_sha256(rows),
            "sources": dict(sources or {}),
            "config": config.to_dict(),
        },
        "heads": sections,
    }
    return Model(model.features, heads, metadata, max_chars=config.max_chars)
