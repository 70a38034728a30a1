"""A trained model: shared features, one calibrated head per label, thresholds to abstain."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV

from classifiers.errors import ModelFileError
from classifiers.features import TextFeatures
from classifiers.persist import ModelPaths, read_model, write_model
from classifiers.text import extract_text

__all__ = ["HEADS", "Head", "LinearScorer", "Model", "Prediction", "decide", "load_model"]

log = logging.getLogger(__name__)

HEADS = ("department", "urgency")
DEFAULT_MAX_CHARS = 4000

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Prediction:
    """The decision for one message; a head with no model or low confidence abstains."""

    department: str | None
    department_confidence: float
    urgency: str | None
    urgency_confidence: float
    abstained_department: bool
    abstained_urgency: bool
    department_scores: dict[str, float] = field(default_factory=dict)
    urgency_scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LinearScorer:
    """Margins and Platt-calibrated probabilities straight from a head's fitted parameters.

    scikit-learn's own predict_proba validates its input once per calibrator, which costs
    milliseconds per message; this computes the same numbers with two array operations.
    """

    weights: FloatArray
    intercept: FloatArray
    slope: FloatArray
    offset: FloatArray
    n_labels: int

    @classmethod
    def from_estimator(cls, estimator: CalibratedClassifierCV) -> LinearScorer:
        """Read the parameters of a fitted single-split sigmoid CalibratedClassifierCV."""
        (calibrated,) = estimator.calibrated_classifiers_
        svm = calibrated.estimator
        if calibrated.method != "sigmoid" or list(svm.classes_) != list(estimator.classes_):
            raise ModelFileError("head is not a sigmoid-calibrated linear model over its labels")
        return cls(
            weights=np.ascontiguousarray(np.asarray(svm.coef_, dtype=np.float64).T),
            intercept=np.asarray(svm.intercept_, dtype=np.float64),
            slope=np.array([float(c.a_) for c in calibrated.calibrators]),
            offset=np.array([float(c.b_) for c in calibrated.calibrators]),
            n_labels=len(estimator.classes_),
        )

    def raw(self, matrix: Any) -> FloatArray:
        """Return the SVM decision values (one column for two labels)."""
        return np.asarray(matrix @ self.weights, dtype=np.float64) + self.intercept

    def margins(self, raw: FloatArray) -> FloatArray:
        """Return one margin column per label (two labels: minus and plus the decision)."""
        return np.column_stack((-raw[:, 0], raw[:, 0])) if self.n_labels == 2 else raw

    def proba(self, raw: FloatArray) -> FloatArray:
        """Return calibrated probabilities, normalised over labels as scikit-learn does."""
        positive = expit(-(self.slope * raw + self.offset))
        if self.n_labels == 2:
            proba = np.column_stack((1.0 - positive[:, 0], positive[:, 0]))
        else:
            total = positive.sum(axis=1, keepdims=True)
            uniform = np.full_like(positive, 1.0 / self.n_labels)
            proba = np.divide(positive, total, out=uniform, where=total != 0)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        return proba


def decide(
    scores: FloatArray, proba: FloatArray, bias: FloatArray, thresholds: FloatArray
) -> tuple[npt.NDArray[np.intp], FloatArray, npt.NDArray[np.bool_]]:
    """Return (label index, calibrated confidence, abstained): margins plus bias pick."""
    chosen = np.argmax(scores + bias, axis=1)
    confidence = proba[np.arange(len(chosen)), chosen]
    return chosen, confidence, confidence < thresholds[chosen]


@dataclass(frozen=True, slots=True)
class Head:
    """One label's classifier: margins plus a bias pick the label, calibration gives confidence."""

    name: str
    estimator: CalibratedClassifierCV
    labels: tuple[str, ...]
    bias: FloatArray
    thresholds: FloatArray
    scorer: LinearScorer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorer", LinearScorer.from_estimator(self.estimator))

    def decide(
        self, matrix: Any
    ) -> tuple[npt.NDArray[np.intp], FloatArray, npt.NDArray[np.bool_], FloatArray]:
        """Return (label index, confidence, abstained, probabilities) per row of features."""
        raw = self.scorer.raw(matrix)
        proba = self.scorer.proba(raw)
        chosen, confidence, abstained = decide(
            self.scorer.margins(raw), proba, self.bias, self.thresholds
        )
        return chosen, confidence, abstained, proba

    def describe(self) -> dict[str, Any]:
        """Return the JSON-ready decision parameters of this head."""
        return {
            "labels": list(self.labels),
            "bias": {
                label: round(float(b), 4) for label, b in zip(self.labels, self.bias, strict=True)
            },
            "thresholds": {
                label: float(t) for label, t in zip(self.labels, self.thresholds, strict=True)
            },
        }


def _head_from_metadata(name: str, estimator: Any, section: Mapping[str, Any]) -> Head:
    """Rebuild a head from its estimator and the decision parameters in the metadata."""
    labels = tuple(str(label) for label in estimator.classes_)
    if list(labels) != list(section.get("labels", [])):
        raise ModelFileError(f"head {name!r}: labels in metadata differ from the model file")
    try:
        bias = np.array([float(section["bias"][label]) for label in labels])
        thresholds = np.array([float(section["thresholds"][label]) for label in labels])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"head {name!r}: bias or threshold missing: {exc}") from exc
    return Head(name, estimator, labels, bias, thresholds)


class Model:
    """Features shared by the heads plus the heads; saving only adds file facts to metadata."""

    def __init__(
        self,
        features: Any,
        heads: Mapping[str, Head],
        metadata: Mapping[str, Any] | None = None,
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        unknown = set(heads) - set(HEADS)
        if unknown:
            raise ValueError(f"unknown head(s): {', '.join(sorted(unknown))}")
        self.features = features
        self.heads: dict[str, Head] = dict(heads)
        self.max_chars = max_chars
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        """Return the labels each head can predict."""
        return {name: head.labels for name, head in self.heads.items()}

    @property
    def sha256(self) -> str:
        """Return the hash of the model file this model was saved to or loaded from."""
        return str(self.metadata.get("model_sha256", ""))

    def input_text(self, subject: str, body: str) -> str:
        """Return exactly the text the features see for this message."""
        return extract_text(subject, body)[: self.max_chars]

    def predict(self, subject: str, body: str) -> Prediction:
        """Classify one message."""
        return self.predict_many([(subject, body)])[0]

    def predict_many(self, items: Sequence[tuple[str, str]]) -> list[Prediction]:
        """Classify (subject, body) pairs in one vectorised pass."""
        if not items:
            return []
        matrix = self.features.transform([self.input_text(s, b) for s, b in items])
        decided: dict[
            str, tuple[list[str | None], list[float], list[bool], list[dict[str, float]]]
        ] = {}
        for name in HEADS:
            head = self.heads.get(name)
            if head is None:
                decided[name] = (
                    [None] * len(items),
                    [0.0] * len(items),
                    [True] * len(items),
                    [{} for _ in items],
                )
                continue
            chosen, confidence, abstained, proba = head.decide(matrix)
            decided[name] = (
                [head.labels[i] for i in chosen],
                confidence.tolist(),
                abstained.tolist(),
                [dict(zip(head.labels, row, strict=True)) for row in proba.tolist()],
            )
        dep, urg = decided["department"], decided["urgency"]
        return [
            Prediction(
                department=dep[0][i],
                department_confidence=dep[1][i],
                urgency=urg[0][i],
                urgency_confidence=urg[1][i],
                abstained_department=dep[2][i],
                abstained_urgency=urg[2][i],
                department_scores=dep[3][i],
                urgency_scores=urg[3][i],
            )
            for i in range(len(items))
        ]

    def save(self, path: str | os.PathLike[str]) -> ModelPaths:
        """Write `<path>.skops` and `<path>.json`; the metadata gains the archive's sha256."""
        estimators: dict[str, Any] = {"features": self.features}
        estimators.update({name: head.estimator for name, head in self.heads.items()})
        metadata = dict(self.metadata)
        metadata["max_chars"] = self.max_chars
        metadata["heads"] = {
            name: {**metadata.get("heads", {}).get(name, {}), **head.describe()}
            for name, head in self.heads.items()
        }
        paths, self.metadata = write_model(path, estimators, metadata)
        return paths


def load_model(path: str | os.PathLike[str]) -> Model:
    """Load `models/NAME` (or its .skops/.json file) without executing code from the file."""
    estimators, metadata = read_model(path)
    features = estimators.get("features")
    if not isinstance(features, TextFeatures):
        raise ModelFileError(f"{path}: the model file holds no TextFeatures extractor")
    for name in HEADS:
        if name in estimators and not isinstance(estimators[name], CalibratedClassifierCV):
            raise ModelFileError(f"{path}: head {name!r} is not a calibrated classifier")
    sections = metadata.get("heads", {})
    heads = {
        name: _head_from_metadata(name, estimators[name], sections.get(name, {}))
        for name in HEADS
        if name in estimators
    }
    model = Model(
        features, heads, metadata, max_chars=int(metadata.get("max_chars", DEFAULT_MAX_CHARS))
    )
    log.info("loaded model %s (sha256 %s)", Path(path), model.sha256[:12])
    return model
