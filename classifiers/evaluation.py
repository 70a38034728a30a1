"""Evaluation: accuracy, macro-F1, per-class figures, confusion and automatic-routing share."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from classifiers.data import Row
from classifiers.metrics import confusion, per_class
from classifiers.model import HEADS, Model, Prediction

__all__ = ["ClassFigures", "HeadReport", "Report", "evaluate", "report_from_predictions"]


@dataclass(frozen=True, slots=True)
class ClassFigures:
    """Precision, recall and F1 of one label, with its number of true rows."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class HeadReport:
    """How one head did on the rows that carry its label (top label, abstained or not)."""

    head: str
    rows: int
    accuracy: float
    # Labels with too few training rows cannot be learnt (see TrainConfig.min_class_rows):
    # macro_f1 averages over the labels the model knows that occur in the data or in the
    # predictions; macro_f1_all_labels also counts labels only the data has (as F1 = 0).
    macro_f1: float
    macro_f1_labels: list[str]
    macro_f1_all_labels: float
    unknown_label_rows: int
    routed_share: float
    routed_precision: float
    routed_rows: int
    per_class: list[ClassFigures]
    confusion_labels: list[str]
    confusion: list[list[int]]
    by_language: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Report:
    """Evaluation of every head the model has, on rows carrying that head's label."""

    rows: int
    heads: dict[str, HeadReport]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return asdict(self)

    def format_text(self) -> str:
        """Return the report as aligned plain text."""
        lines = [f"rows: {self.rows}"]
        for report in self.heads.values():
            lines.extend(_head_text(report))
        return "\n".join(lines)


def _width(text: str) -> int:
    """Return the terminal width of `text` (CJK characters take two columns)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    """Left-align `text` in `width` terminal columns."""
    return text + " " * max(0, width - _width(text))


def _head_text(report: HeadReport) -> list[str]:
    """Return the text lines of one head's report."""
    lines = [
        "",
        f"== {report.head} ({report.rows} labelled rows)",
        f"accuracy {report.accuracy:.4f}   macro-F1 {report.macro_f1:.4f} "
        f"(over {len(report.macro_f1_labels)} labels the model knows; "
        f"all labels {report.macro_f1_all_labels:.4f})",
        f"routed automatically {report.routed_share:.1%} of rows, "
        f"precision {report.routed_precision:.4f} ({report.routed_rows} rows)",
    ]
    if report.unknown_label_rows:
        lines.append(f"rows whose label the model does not know: {report.unknown_label_rows}")
    width = max([5, *(_width(c.label) for c in report.per_class)])
    lines.append(f"{'label':<{width}}  precision  recall      f1  support")
    lines.extend(
        f"{_pad(c.label, width)}  {c.precision:9.4f}  {c.recall:6.4f}  {c.f1:6.4f}  {c.support:7d}"
        for c in report.per_class
    )
    lines.append(
        "confusion (rows: true, columns: predicted): " + " | ".join(report.confusion_labels)
    )
    cell = max(5, *(len(str(v)) for row in report.confusion for v in row))
    lines.extend(
        f"{_pad(label, width)} " + " ".join(f"{v:>{cell}d}" for v in row)
        for label, row in zip(report.confusion_labels, report.confusion, strict=True)
    )
    for language, figures in sorted(report.by_language.items()):
        lines.append(
            f"language {language or '?'}: rows {figures['rows']:.0f}, accuracy "
            f"{figures['accuracy']:.4f}, macro-F1 {figures['macro_f1']:.4f}"
        )
    return lines


def _macro(true: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> float:
    """Return mean F1 over `labels` (a label with no true and no predicted row scores 0)."""
    index = {label: i for i, label in enumerate(labels)}
    extra = len(labels)
    true_index = np.array([index.get(t, extra) for t in true], dtype=np.intp)
    pred_index = np.array([index.get(p, extra) for p in pred], dtype=np.intp)
    _, _, f1, _ = per_class(confusion(true_index, pred_index, extra + 1))
    return float(f1[:extra].mean()) if extra else 0.0


def _head_report(
    head: str, known: Sequence[str], rows: Sequence[Row], predictions: Sequence[Prediction]
) -> HeadReport:
    """Compute one head's figures from rows and the predictions made for them."""
    true = [str(row.label(head)) for row in rows]
    pred = [str(getattr(p, head)) for p in predictions]
    abstained = np.array([getattr(p, f"abstained_{head}") for p in predictions], dtype=bool)
    labels = sorted(set(true) | set(pred))
    counts = confusion(
        np.searchsorted(labels, true).astype(np.intp),
        np.searchsorted(labels, pred).astype(np.intp),
        len(labels),
    )
    precision, recall, f1, support = per_class(counts)
    scored = [label for label in labels if label in set(known)]
    correct = np.array(true) == np.array(pred)
    routed = ~abstained
    by_language: dict[str, dict[str, float]] = {}
    for language in sorted({row.language for row in rows}):
        picks = [i for i, row in enumerate(rows) if row.language == language]
        sub_true, sub_pred = [true[i] for i in picks], [pred[i] for i in picks]
        sub_scored = [x for x in sorted(set(sub_true) | set(sub_pred)) if x in set(known)]
        by_language[language] = {
            "rows": float(len(picks)),
            "accuracy": float(np.mean(correct[picks])),
            "macro_f1": _macro(sub_true, sub_pred, sub_scored),
        }
    return HeadReport(
        head=head,
        rows=len(rows),
        accuracy=float(correct.mean()),
        macro_f1=_macro(true, pred, scored),
        macro_f1_labels=scored,
        macro_f1_all_labels=_macro(true, pred, labels),
        unknown_label_rows=sum(1 for t in true if t not in set(known)),
        routed_share=float(routed.mean()),
        routed_precision=float(correct[routed].mean()) if routed.any() else 0.0,
        routed_rows=int(routed.sum()),
        per_class=[
            ClassFigures(label, float(p), float(r), float(f), int(s))
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        ],
        confusion_labels=labels,
        confusion=counts.tolist(),
        by_language=by_language if len(by_language) > 1 else {},
    )


def report_from_predictions(
    rows: Sequence[Row], predictions: Sequence[Prediction], labels: Mapping[str, Sequence[str]]
) -> Report:
    """Build a report from predictions already made; `labels` are those each head knows."""
    heads: dict[str, HeadReport] = {}
    for head in HEADS:
        if head not in labels:
            continue
        picks = [i for i, row in enumerate(rows) if row.label(head) is not None]
        if picks:
            heads[head] = _head_report(
                head, labels[head], [rows[i] for i in picks], [predictions[i] for i in picks]
            )
    return Report(rows=len(rows), heads=heads)


def evaluate(model: Model, rows: Sequence[Row]) -> Report:
    """Classify `rows` with `model` and compare with their labels."""
    predictions = model.predict_many([(row.subject, row.body) for row in rows])
    return report_from_predictions(rows, predictions, model.labels)
