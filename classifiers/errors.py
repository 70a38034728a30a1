"""Errors raised by the classifiers package; the daemon wraps them in its own tree."""

from __future__ import annotations


class ClassifierError(Exception):
    """Root of every error the classifiers package raises on purpose."""


class ModelFileError(ClassifierError):
    """Raised when a model file or its metadata is missing, unreadable or inconsistent."""


class ModelVersionError(ClassifierError):
    """Raised when a model was saved by another scikit-learn major.minor or schema version."""


class UntrustedModelError(ClassifierError):
    """Raised when a model file holds a type outside the trusted list (it is never built)."""


class TrainingDataError(ClassifierError):
    """Raised when training or evaluation data is malformed or too small to learn from."""
