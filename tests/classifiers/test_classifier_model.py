"""Model files: round trip, abstention, refused types and versions, hot swap."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
import skops.io

from classifiers.data import Row
from classifiers.errors import ModelFileError, ModelVersionError, UntrustedModelError
from classifiers.handle import ModelHandle
from classifiers.model import Model, load_model
from classifiers.persist import model_paths, write_model
from classifiers.training import TrainConfig, train

MESSAGES = [
    ("Charged twice", "You charged my card twice for invoice INV-2024-00001."),
    ("紧急：系统宕机", "生产系统全部宕机，所有用户都没法工作。"),
    ("Dark mode?", "It would be great to have a dark mode. Just an idea."),
]


def _edit_metadata(base: Path, change: dict[str, Any]) -> None:
    """Rewrite keys of a saved model's JSON metadata."""
    path = model_paths(base).metadata
    document = json.loads(path.read_text(encoding="utf-8"))
    document.update(change)
    path.write_text(json.dumps(document), encoding="utf-8")


def test_round_trip_gives_same_predictions(small_model: Model, saved_model: Path) -> None:
    loaded = load_model(saved_model)
    assert loaded.labels == small_model.labels
    assert loaded.predict_many(MESSAGES) == small_model.predict_many(MESSAGES)
    assert loaded.metadata["model_sha256"] == small_model.sha256
    assert loaded.metadata["versions"]["scikit-learn"]
    for name in (
        saved_model,
        model_paths(saved_model).estimators,
        model_paths(saved_model).metadata,
    ):
        assert load_model(name).sha256 == small_model.sha256


def test_prediction_fields(small_model: Model) -> None:
    prediction = small_model.predict(*MESSAGES[0])
    assert prediction.department in small_model.labels["department"]
    assert prediction.urgency in small_model.labels["urgency"]
    assert set(prediction.department_scores) == set(small_model.labels["department"])
    assert sum(prediction.urgency_scores.values()) == pytest.approx(1.0)
    assert prediction.department_confidence == prediction.department_scores[prediction.department]
    assert small_model.predict_many([]) == []


def test_abstains_below_threshold(small_model: Model) -> None:
    head = small_model.heads["department"]
    first = small_model.predict(*MESSAGES[0])
    confidence = first.department_confidence
    at_confidence = np.full(len(head.labels), confidence)
    just_above = np.full(len(head.labels), np.nextafter(confidence, 2.0))
    for thresholds, abstains in ((at_confidence, False), (just_above, True)):
        heads = dict(small_model.heads)
        heads["department"] = replace(head, thresholds=thresholds)
        prediction = Model(small_model.features, heads).predict(*MESSAGES[0])
        assert prediction.abstained_department is abstains
        assert prediction.department == first.department  # the top label is still reported
        assert prediction.abstained_urgency == first.abstained_urgency


def test_missing_head_abstains(small_rows: list[Row], tiny_config: TrainConfig) -> None:
    rows = [replace(row, urgency=None) for row in small_rows]
    model = train(rows, tiny_config)
    prediction = model.predict(*MESSAGES[0])
    assert "urgency" not in model.heads
    assert prediction.urgency is None
    assert prediction.abstained_urgency is True
    assert prediction.urgency_scores == {}


class Intruder:
    """A type no model file may hold; building it would flip `built`."""

    built = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        Intruder.built = True


def test_untrusted_type_refused(small_model: Model, tmp_path: Path) -> None:
    base = tmp_path / "evil"
    write_model(base, {"features": small_model.features, "extra": Intruder()}, {"heads": {}})
    with pytest.raises(UntrustedModelError, match="Intruder"):
        load_model(base)
    assert Intruder.built is False


def test_scikit_learn_estimator_of_wrong_kind_refused(small_model: Model, tmp_path: Path) -> None:
    base = tmp_path / "odd"
    write_model(base, {"features": small_model.heads["department"].estimator}, {"heads": {}})
    with pytest.raises(ModelFileError, match="TextFeatures"):
        load_model(base)


def test_scikit_learn_version_mismatch(saved_model: Path) -> None:
    _edit_metadata(saved_model, {"versions": {"scikit-learn": "0.24.2"}})
    with pytest.raises(ModelVersionError, match=r"scikit-learn 0\.24\.2"):
        load_model(saved_model)


def test_patch_version_difference_loads(saved_model: Path) -> None:
    major, minor = sklearn.__version__.split(".")[:2]
    _edit_metadata(saved_model, {"versions": {"scikit-learn": f"{major}.{minor}.999"}})
    assert load_model(saved_model).labels


def test_schema_mismatch(saved_model: Path) -> None:
    _edit_metadata(saved_model, {"schema_version": 99})
    with pytest.raises(ModelVersionError, match="schema"):
        load_model(saved_model)


def test_archive_hash_mismatch(saved_model: Path) -> None:
    _edit_metadata(saved_model, {"model_sha256": "0" * 64})
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(saved_model)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nothing")


def test_only_expected_types_need_trust(saved_model: Path) -> None:
    untrusted = skops.io.get_untrusted_types(file=model_paths(saved_model).estimators)
    assert set(untrusted) == {
        "classifiers.features.TextFeatures",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
    }


def test_hot_swap(small_rows: list[Row], saved_model: Path, tiny_config: TrainConfig) -> None:
    handle = ModelHandle(saved_model)
    old = handle.model
    assert handle.reload_if_changed() is False
    # a retrained model whose departments are renamed: its predictions must differ
    renamed = [
        replace(r, department=f"x_{r.department}" if r.department else None) for r in small_rows
    ]
    train(renamed, tiny_config).save(saved_model)
    assert handle.reload_if_changed() is True
    assert handle.model is not old
    assert handle.predict(*MESSAGES[0]).department == f"x_{old.predict(*MESSAGES[0]).department}"
    assert handle.reload_if_changed() is False


def test_broken_new_file_keeps_old_model(saved_model: Path) -> None:
    handle = ModelHandle(saved_model)
    old = handle.model
    _edit_metadata(saved_model, {"versions": {"scikit-learn": "0.1.0"}})
    assert handle.reload_if_changed() is False
    assert handle.model is old
    assert isinstance(handle.last_error, ModelVersionError)
    assert handle.reload_if_changed() is False  # the same broken files are not retried


def test_swap_while_predicting(
    small_rows: list[Row], saved_model: Path, tiny_config: TrainConfig
) -> None:
    handle = ModelHandle(saved_model)
    failures: list[BaseException] = []
    stop = threading.Event()

    def classify() -> None:
        while not stop.is_set():
            try:
                assert len(handle.predict_many(MESSAGES)) == len(MESSAGES)
            except BaseException as exc:
                failures.append(exc)
                return

    workers = [threading.Thread(target=classify) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        train(small_rows[:120], tiny_config).save(saved_model)
        assert handle.reload_if_changed() is True
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []


@pytest.mark.parametrize("head_name", ["department", "urgency"])
def test_fast_scorer_matches_scikit_learn(small_model: Model, head_name: str) -> None:
    head = small_model.heads[head_name]
    matrix = small_model.features.transform([small_model.input_text(*m) for m in MESSAGES])
    raw = head.scorer.raw(matrix)
    assert np.allclose(head.scorer.proba(raw), head.estimator.predict_proba(matrix))
    svm = head.estimator.calibrated_classifiers_[0].estimator
    assert np.allclose(raw, svm.decision_function(matrix).reshape(len(MESSAGES), -1))


def test_fast_scorer_matches_scikit_learn_for_two_labels(
    small_rows: list[Row], tiny_config: TrainConfig
) -> None:
    rows = [replace(r, urgency="high" if r.urgency == "emergency" else "low") for r in small_rows]
    model = train(rows, tiny_config)
    head = model.heads["urgency"]
    assert head.labels == ("high", "low")
    matrix = model.features.transform([r.subject + "\n" + r.body for r in small_rows[:20]])
    raw = head.scorer.raw(matrix)
    assert raw.shape == (20, 1)
    assert np.allclose(head.scorer.proba(raw), head.estimator.predict_proba(matrix))
    svm = head.estimator.calibrated_classifiers_[0].estimator
    expected = np.asarray(svm.predict(matrix))
    assert list(np.array(head.labels)[np.argmax(head.scorer.margins(raw), axis=1)]) == list(
        expected
    )
