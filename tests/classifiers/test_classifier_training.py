"""Training: rare labels, single-label heads, thresholds and bias tuning."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from classifiers.data import Row
from classifiers.errors import TrainingDataError
from classifiers.training import TrainConfig, train, tune_bias, tune_thresholds


def test_rare_labels_are_not_learnt(small_rows: list[Row], tiny_config: TrainConfig) -> None:
    rows = [*small_rows, replace(small_rows[0], id="rare", department="legal")]
    model = train(rows, tiny_config)
    assert "legal" not in model.labels["department"]
    assert model.metadata["heads"]["department"]["dropped_labels"] == {"legal": 1}


def test_metadata(small_rows: list[Row], tiny_config: TrainConfig) -> None:
    model = train(small_rows, tiny_config, name="x", sources={"a.csv": "ab" * 32})
    training = model.metadata["training"]
    assert training["rows"] == len(small_rows)
    assert len(training["data_sha256"]) == 64
    assert training["sources"] == {"a.csv": "ab" * 32}
    assert training["config"]["folds"] == 3
    out_of_fold = model.metadata["heads"]["urgency"]["out_of_fold"]
    assert set(out_of_fold) == {"accuracy", "macro_f1", "routed_share", "routed_precision"}


def test_no_learnable_head() -> None:
    rows = [Row(str(i), "s", "b", "only", None, "en") for i in range(10)]
    with pytest.raises(TrainingDataError, match="two labels"):
        train(rows)


def test_thresholds_reach_target_precision() -> None:
    # label 0: confidences 0.9 0.8 0.7 0.6 0.5 with correctness T T T F T
    chosen = np.zeros(5, dtype=np.intp)
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, True, True, False, True])
    thresholds = tune_thresholds(chosen, confidence, correct, 2, target=0.75)
    # at 0.7: 3/3; at 0.6: 3/4 = 0.75; at 0.5: 4/5 = 0.8 -> lowest passing cut is 0.5
    assert thresholds[0] == pytest.approx(0.5)
    assert thresholds[1] == 1.0  # never predicted: never routed automatically
    strict = tune_thresholds(chosen, confidence, correct, 2, target=0.95)
    assert strict[0] == pytest.approx(0.7)


def test_bias_helps_a_starved_class() -> None:
    # class 1 always scores 0.2 below class 0, though half the rows belong to it
    scores = np.array([[1.0, 0.8], [1.0, 0.8], [0.0, -1.0], [0.0, -1.0]])
    true = np.array([1, 1, 0, 0])
    bias = tune_bias(scores, true)
    assert np.array_equal(np.argmax(scores + bias, axis=1), true)
