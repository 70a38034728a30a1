"""A model holder the daemon shares between threads; it swaps in a retrained model file."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from classifiers.errors import ClassifierError
from classifiers.model import Model, Prediction, load_model
from classifiers.persist import model_paths

__all__ = ["ModelHandle"]

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int, int], ...]


def _signature(path: Path) -> Signature:
    """Return (inode, size, mtime_ns) of both model files; missing files count as zeros."""
    paths = model_paths(path)
    stamps: list[tuple[int, int, int]] = []
    for file in (paths.estimators, paths.metadata):
        try:
            stat = file.stat()
        except FileNotFoundError:
            stamps.append((0, 0, 0))
        else:
            stamps.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


class ModelHandle:
    """Holds the current model; `reload_if_changed` replaces it in one reference swap."""

    def __init__(
        self, path: str | os.PathLike[str], loader: Callable[[Path], Model] = load_model
    ) -> None:
        self.path = Path(path)
        self._loader = loader
        self._lock = threading.Lock()
        self._signature = _signature(self.path)
        self._model = loader(self.path)
        self.last_error: ClassifierError | None = None

    @property
    def model(self) -> Model:
        """Return the model in use now (callers keep it for one whole message)."""
        return self._model

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed; keep the old model when the new one fails."""
        with self._lock:
            signature = _signature(self.path)
            if signature == self._signature:
                return False
            try:
                model = self._loader(self.path)
            except ClassifierError as exc:
                # Remember the failed files so a broken model is reported once, not every poll;
                # a later write changes the signature and is tried again.
                self._signature = signature
                self.last_error = exc
                log.error(
                    "model %s not reloaded, keeping sha256 %s: %s",
                    self.path,
                    self._model.sha256[:12],
                    exc,
                )
                return False
            # an edited JSON (e.g. thresholds) counts as a new model; a touched file does not
            if model.sha256 == self._model.sha256 and model.metadata == self._model.metadata:
                self._signature = signature
                return False
            self._signature = signature
            self._model = model
            self.last_error = None
            log.info("model %s reloaded, sha256 %s", self.path, model.sha256[:12])
            return True

    def predict(self, subject: str, body: str) -> Prediction:
        """Classify one message with the current model."""
        return self._model.predict(subject, body)

    def predict_many(self, items: Sequence[tuple[str, str]]) -> list[Prediction]:
        """Classify many messages with one model, even if a swap happens meanwhile."""
        return self._model.predict_many(items)
