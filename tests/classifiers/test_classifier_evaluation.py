"""Evaluation figures on a hand-made set, checked by hand."""

from __future__ import annotations

import json

import pytest

from classifiers.data import Row
from classifiers.evaluation import evaluate, report_from_predictions
from classifiers.model import Model, Prediction


def _prediction(department: str, abstained: bool) -> Prediction:
    return Prediction(department, 0.5, None, 0.0, abstained, True)


# true:      a a b b c
# predicted: a b b b a   (row 1 abstained)
ROWS = [Row(str(i), "s", "b", label, None, "en") for i, label in enumerate("aabbc")]
PREDICTIONS = [_prediction(p, i == 1) for i, p in enumerate("abbba")]


def test_figures_checked_by_hand() -> None:
    report = report_from_predictions(ROWS, PREDICTIONS, {"department": ["a", "b", "c"]})
    head = report.heads["department"]
    assert head.rows == 5
    assert head.accuracy == pytest.approx(3 / 5)
    # confusion, rows true a b c, columns predicted a b c
    assert head.confusion_labels == ["a", "b", "c"]
    assert head.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    figures = {c.label: c for c in head.per_class}
    assert (figures["a"].precision, figures["a"].recall, figures["a"].f1) == (0.5, 0.5, 0.5)
    assert figures["b"].precision == pytest.approx(2 / 3)
    assert figures["b"].recall == 1.0
    assert figures["b"].f1 == pytest.approx(0.8)  # 2 * (2/3) * 1 / (2/3 + 1)
    assert (figures["c"].precision, figures["c"].recall, figures["c"].f1) == (0.0, 0.0, 0.0)
    assert [c.support for c in head.per_class] == [2, 2, 1]
    assert head.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # routed: rows 0, 2, 3, 4; correct among them: 0, 2, 3
    assert head.routed_rows == 4
    assert head.routed_share == pytest.approx(4 / 5)
    assert head.routed_precision == pytest.approx(3 / 4)
    assert "urgency" not in report.heads  # no row carries an urgency label
    json.dumps(report.to_dict())


def test_labels_the_model_cannot_know_are_left_out_of_macro_f1() -> None:
    report = report_from_predictions(ROWS, PREDICTIONS, {"department": ["a", "b"]})
    head = report.heads["department"]
    assert head.macro_f1_labels == ["a", "b"]
    assert head.macro_f1 == pytest.approx((0.5 + 0.8) / 2)
    assert head.macro_f1_all_labels == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert head.unknown_label_rows == 1


def test_text_report_mentions_every_label() -> None:
    text = report_from_predictions(ROWS, PREDICTIONS, {"department": ["a", "b", "c"]}).format_text()
    assert "macro-F1 0.4333" in text
    assert "routed automatically 80.0% of rows, precision 0.7500" in text


def test_evaluate_a_model(small_model: Model, small_rows: list[Row]) -> None:
    report = evaluate(small_model, small_rows)
    assert set(report.heads) == {"department", "urgency"}
    department = report.heads["department"]
    assert department.rows == sum(1 for r in small_rows if r.department)
    assert department.accuracy > 0.9  # training rows
    assert set(department.by_language) == {"en", "zh"}
    assert sum(map(sum, department.confusion)) == department.rows
