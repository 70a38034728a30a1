"""Features for English and Chinese: word n-grams plus CJK character n-grams, TF-IDF weighted."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["TextFeatures", "terms"]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A run of CJK ideographs (no spaces in Chinese: it yields character n-grams) and, in the
# text between such runs, words of two or more other letters/digits (word n-grams).
_CJK_RUN = re.compile(rf"([{_CJK}]+)")
_WORD = re.compile(rf"[^\W_{_CJK}]{{2,}}")
_SEPARATOR = "\n"  # never inside a term: terms hold letters, digits and single spaces


def _word_ngrams(words: list[str], low: int, high: int, out: list[str]) -> None:
    """Append the word n-grams of one run of words to `out`."""
    if low <= 1:
        out.extend(words)
    for n in range(max(2, low), high + 1):
        out.extend(map(" ".join, zip(*(words[i:] for i in range(n)), strict=False)))


def _char_ngrams(run: str, low: int, high: int, out: list[str]) -> None:
    """Append the character n-grams of one CJK run to `out`."""
    if low <= 1:
        out.extend(run)
    for n in range(max(2, low), high + 1):
        if n == 2:
            out.extend(map(str.__add__, run[:-1], run[1:]))
        else:
            out.extend(run[i : i + n] for i in range(len(run) - n + 1))


def terms(text: str, words: tuple[int, int] = (1, 2), chars: tuple[int, int] = (1, 2)) -> list[str]:
    """Return the terms of `text`: word n-grams of spaced text, character n-grams of CJK runs."""
    out: list[str] = []
    # split() alternates: spaced text at even positions, CJK runs at odd positions
    for position, part in enumerate(_CJK_RUN.split(text.lower())):
        if position % 2:
            _char_ngrams(part, chars[0], chars[1], out)
        elif part:
            found = _WORD.findall(part)
            if found:
                _word_ngrams(found, words[0], words[1], out)
    return out


class TextFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """TF-IDF (sublinear tf, smooth idf, l2 rows) over `terms`, stored compactly."""

    def __init__(
        self, words: tuple[int, int] = (1, 2), chars: tuple[int, int] = (1, 2), min_df: int = 1
    ) -> None:
        self.words = words
        self.chars = chars
        self.min_df = min_df

    def _terms(self, text: str) -> list[str]:
        """Return the terms of one text with this transformer's n-gram ranges."""
        return terms(text, tuple(self.words), tuple(self.chars))  # type: ignore[arg-type]

    def fit(self, texts: Iterable[str], y: Any = None) -> TextFeatures:
        """Learn the vocabulary (terms in at least `min_df` texts) and idf weights."""
        document_frequency: Counter[str] = Counter()
        count = 0
        for text in texts:
            document_frequency.update(set(self._terms(text)))
            count += 1
        vocabulary = sorted(t for t, df in document_frequency.items() if df >= self.min_df)
        frequencies = np.array([document_frequency[t] for t in vocabulary], dtype=np.float64)
        self.vocabulary_: dict[str, int] = {term: i for i, term in enumerate(vocabulary)}
        self.idf_: npt.NDArray[np.float64] = np.log((1.0 + count) / (1.0 + frequencies)) + 1.0
        self.n_features_out_ = len(vocabulary)
        return self

    def transform(self, texts: Iterable[str]) -> sparse.csr_matrix:
        """Return the l2-normalised TF-IDF matrix of `texts` (unknown terms are ignored)."""
        lookup = self.vocabulary_.get
        lengths: list[int] = []
        columns: list[int] = []
        counts: list[int] = []
        for text in texts:
            counted = Counter(self._terms(text))
            columns.extend(map(lookup, counted, repeat(-1, len(counted))))
            counts.extend(counted.values())
            lengths.append(len(counted))
        index = np.asarray(columns, dtype=np.int64)
        known = index >= 0
        rows = np.repeat(np.arange(len(lengths)), lengths)[known]
        index = index[known]
        data = np.log(np.asarray(counts, dtype=np.float64)[known]) + 1.0
        data *= self.idf_[index]
        norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=len(lengths)))
        norms[norms == 0.0] = 1.0
        data /= norms[rows]
        bounds = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=len(lengths)))))
        shape = (len(lengths), self.n_features_out_)
        return sparse.csr_matrix((data, index.astype(np.int32), bounds), shape=shape)

    def get_feature_names_out(self, input_features: Any = None) -> npt.NDArray[np.object_]:
        """Return the vocabulary in column order."""
        return np.array(sorted(self.vocabulary_, key=self.vocabulary_.__getitem__), dtype=object)

    def __getstate__(self) -> dict[str, Any]:
        """Return a compact state: the vocabulary as one string, not a dict of numbers."""
        state = {"words": list(self.words), "chars": list(self.chars), "min_df": self.min_df}
        if hasattr(self, "vocabulary_"):
            names = self.get_feature_names_out().tolist()
            state["terms"] = _SEPARATOR.join(names)
            state["idf"] = self.idf_
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the transformer from `__getstate__` output."""
        self.words = tuple(state["words"])
        self.chars = tuple(state["chars"])
        self.min_df = int(state["min_df"])
        if "terms" in state:
            names = state["terms"].split(_SEPARATOR) if state["terms"] else []
            self.vocabulary_ = {term: i for i, term in enumerate(names)}
            self.idf_ = np.asarray(state["idf"], dtype=np.float64)
            self.n_features_out_ = len(names)
