"""Confusion-matrix metrics with explicit zero rules (no warnings, easy to check by hand)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["confusion", "macro_f1", "per_class"]

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


def confusion(true: IntArray, pred: IntArray, size: int) -> npt.NDArray[np.int64]:
    """Return counts[t, p] of rows with true index t predicted as p."""
    flat = np.bincount(true * size + pred, minlength=size * size)
    return flat.reshape(size, size).astype(np.int64)


def per_class(counts: npt.NDArray[np.int64]) -> tuple[FloatArray, FloatArray, FloatArray, IntArray]:
    """Return precision, recall, F1 and support per class; 0 where a ratio has no denominator."""
    hits = np.diag(counts).astype(np.float64)
    predicted = counts.sum(axis=0).astype(np.float64)
    support = counts.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return precision, recall, f1, support.astype(np.intp)


def macro_f1(true: IntArray, pred: IntArray, size: int) -> float:
    """Return the unweighted mean F1 over classes that occur in `true` or `pred`."""
    counts = confusion(true, pred, size)
    _, _, f1, support = per_class(counts)
    present = (support > 0) | (counts.sum(axis=0) > 0)
    return float(f1[present].mean()) if present.any() else 0.0
