"""Model files: a skops archive of fitted estimators plus JSON metadata, checked on load."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import scipy
import sklearn
import skops
import skops.io

from classifiers.errors import ModelFileError, ModelVersionError, UntrustedModelError

__all__ = [
    "SCHEMA_VERSION",
    "TRUSTED_TYPES",
    "ModelPaths",
    "library_versions",
    "model_paths",
    "read_model",
    "write_model",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Every type a model file may hold beyond skops' own safe defaults; anything else is refused
# before a single object is built.
TRUSTED_TYPES: tuple[str, ...] = (
    "classifiers.features.TextFeatures",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


@dataclass(frozen=True, slots=True)
class ModelPaths:
    """The two files of a model: `<name>.skops` (estimators) and `<name>.json` (metadata)."""

    estimators: Path
    metadata: Path


def model_paths(path: str | os.PathLike[str]) -> ModelPaths:
    """Map `models/NAME`, `models/NAME.skops` or `models/NAME.json` to both file paths."""
    base = Path(path)
    if base.suffix in {".skops", ".json"}:
        base = base.with_suffix("")
    return ModelPaths(base.with_name(base.name + ".skops"), base.with_name(base.name + ".json"))


def library_versions() -> dict[str, str]:
    """Return the versions of the libraries a model file depends on."""
    return {
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def _major_minor(version: str) -> tuple[str, ...]:
    """Return ("1", "9") for "1.9.1"."""
    return tuple(version.split(".")[:2])


def _atomic_write(target: Path, data: bytes) -> None:
    """Write bytes to a sibling temporary file, fsync it, then rename it over `target`."""
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_model(
    path: str | os.PathLike[str], estimators: Mapping[str, Any], metadata: Mapping[str, Any]
) -> tuple[ModelPaths, dict[str, Any]]:
    """Save estimators, then metadata naming the archive hash; return paths and metadata."""
    paths = model_paths(path)
    paths.estimators.parent.mkdir(parents=True, exist_ok=True)
    archive = skops.io.dumps(dict(estimators), compression=zipfile.ZIP_DEFLATED)
    document = {
        **metadata,
        "schema_version": SCHEMA_VERSION,
        "versions": library_versions(),
        "model_file": paths.estimators.name,
        "model_sha256": hashlib.sha256(archive).hexdigest(),
    }
    _atomic_write(paths.estimators, archive)
    text = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    _atomic_write(paths.metadata, text.encode("utf-8"))
    log.info("wrote model %s (%d bytes)", paths.estimators, len(archive))
    return paths, document


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a model's JSON metadata (schema and scikit-learn version)."""
    paths = model_paths(path)
    try:
        document = json.loads(paths.metadata.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFileError(f"{paths.metadata}: model metadata not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{paths.metadata}: unreadable model metadata: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelFileError(f"{paths.metadata}: metadata is not a JSON object")
    schema = document.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ModelVersionError(
            f"{paths.metadata}: schema version {schema!r}, this release reads {SCHEMA_VERSION}"
        )
    saved = str(document.get("versions", {}).get("scikit-learn", "unknown"))
    if _major_minor(saved) != _major_minor(sklearn.__version__):
        raise ModelVersionError(
            f"{paths.metadata}: saved with scikit-learn {saved}, running {sklearn.__version__}; "
            "retrain the model with this version"
        )
    return document


def read_model(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load (estimators, metadata), refusing mismatched versions, hashes and untrusted types."""
    paths = model_paths(path)
    metadata = read_metadata(paths.metadata)
    try:
        archive = paths.estimators.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{paths.estimators}: cannot read model file: {exc}") from exc
    if hashlib.sha256(archive).hexdigest() != metadata.get("model_sha256"):
        raise ModelFileError(
            f"{paths.estimators}: sha256 differs from {paths.metadata.name} "
            "(files from different trainings, or a write in progress)"
        )
    try:
        untrusted = skops.io.get_untrusted_types(data=archive)
    except Exception as exc:
        raise ModelFileError(f"{paths.estimators}: not a skops archive: {exc}") from exc
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedModelError(
            f"{paths.estimators}: refusing to load unexpected type(s): {', '.join(unexpected)}"
        )
    try:
        estimators = skops.io.loads(archive, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise ModelFileError(f"{paths.estimators}: cannot load model: {exc}") from exc
    if not isinstance(estimators, dict):
        raise ModelFileError(f"{paths.estimators}: expected a mapping of estimators")
    return estimators, metadata
