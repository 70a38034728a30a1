"""Fixtures for the classifiers tests: a small bilingual corpus and tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from classifiers.corpus.generate import generate
from classifiers.data import Row
from classifiers.model import Model
from classifiers.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = TrainConfig(folds=3, min_class_rows=3)


@pytest.fixture(scope="session")
def tiny_config() -> TrainConfig:
    """Return settings that train in well under a second on the small rows."""
    return TINY_CONFIG


@pytest.fixture(scope="session")
def shared() -> Path:
    """Return the shared folder ($MAILCARE_SHARED or <repo>/../shared); skip if absent."""
    path = Path(os.environ.get("MAILCARE_SHARED") or REPO.parent / "shared")
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found (set MAILCARE_SHARED)")
    return path


@pytest.fixture(scope="session")
def small_rows() -> list[Row]:
    """Return 150 generated bilingual rows (deterministic)."""
    return generate(seed=7, english=90, chinese=60)


@pytest.fixture(scope="session")
def small_model(small_rows: list[Row]) -> Model:
    """Return a model trained on the small rows."""
    return train(small_rows, TINY_CONFIG, name="small")


@pytest.fixture
def saved_model(small_model: Model, tmp_path: Path) -> Path:
    """Save the small model under tmp_path and return its base path."""
    base = tmp_path / "models" / "small"
    small_model.save(base)
    return base
