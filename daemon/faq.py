"""FAQ entries (Markdown files with YAML front matter) matched to customer text by TF-IDF.

Each language has its own small index: inverse document frequencies are learnt from that
language's entries only, and an entry never matches a message in another language. Entry
vectors count the question twice and the keywords three times next to the answer, because
admins choose keywords for matching while answers carry many incidental words. Query words
no entry contains still count in the query's length, weighted like a word every entry has:
a long message that mentions a keyword once in passing then scores lower than a short
question about it, while one unknown word cannot outweigh the words that match.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from classifiers.features import terms

from .configfile import load_yaml, validate
from .errors import ConfigError
from .render import Fingerprint, fingerprint

__all__ = ["FaqEntry", "FaqIndex", "FaqMatch", "faq_terms"]

logger = logging.getLogger(__name__)

QUESTION_WEIGHT = 2
KEYWORD_WEIGHT = 3
ANSWER_WEIGHT = 1
# The idf of a query word that no entry contains: that of a word in every entry.
UNSEEN_IDF = 1.0
# Only the start of a message is compared: it holds the request and bounds the work.
MAX_TEXT_CHARS = 2000

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
_ID = re.compile(_ID_PATTERN)
_ENGLISH_STOPWORD_TEXT = """
    about after again all also am an and any are as at be been before being but by can could
    did didn do does doesn doing don for from get got had has have having he her here him his
    how if in into is isn it its just me more most my no not now of off on once only or other
    our out over own please same she should so some such than that the their them then there
    these they this those through to too under until up us very was we were what when where
    which while who why will with won would you your yours
    hi hello hey dear thanks thank regards best kind cheers sincerely team sir madam ok okay
    yes re fw fwd im ive ve ll wasn couldn wouldn haven aren
"""
_CHINESE_STOPWORD_TEXT = """
    的 了 我 你 您 他 她 它 是 在 和 与 就 都 也 吗 呢 啊 吧 么 呀 请 谢 好 一 个 这 那 们 有 要 会
    能 可 以 到 还 把 被 给 对 为 什 怎 如 何 下 上 不 没 很 已 经 时 候 现 问 题 麻 烦 想 该
    我们 你们 您好 你好 谢谢 请问 一下 可以 已经 时候 这个 那个 没有 问题 如何 怎么 什么 麻烦
    现在 想要 应该 怎样
"""
_STOPWORDS = frozenset(_ENGLISH_STOPWORD_TEXT.split() + _CHINESE_STOPWORD_TEXT.split())


def _stem(word: str) -> str:
    """Return a light English stem, so that forms meet: arrived, arrives, arriving → arriv."""
    if len(word) <= 3 or not word.isascii() or not word.isalpha():
        return word
    if word.endswith(("ies", "ied")) and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if word[-1] == word[-2] and word[-1] not in "lsz":  # shipped → ship
                word = word[:-1]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def faq_terms(text: str) -> list[str]:
    """Return the matching terms: English word stems without stopwords, CJK 1- and 2-grams."""
    found = terms(text, words=(1, 1), chars=(1, 2))
    return [_stem(term) for term in found if term not in _STOPWORDS and not term.isdigit()]


class _FrontMatter(BaseModel):
    """The YAML front matter of one FAQ entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=_ID_PATTERN)] | None = None
    question: Annotated[str, Field(min_length=1)]
    keywords: list[Annotated[str, Field(min_length=1)]] = []
    language: Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")]
    department: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] | None = None
    url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None


@dataclass(frozen=True)
class FaqEntry:
    """One question and its answer, in one language, optionally for one department."""

    id: str
    question: str
    answer: str
    keywords: tuple[str, ...]
    language: str
    department: str | None
    url: str | None
    path: Path

    def as_context(self) -> dict[str, object]:
        """Return the mapping templates see in their `faq` list."""
        return {"id": self.id, "question": self.question, "answer": self.answer, "url": self.url}


@dataclass(frozen=True)
class FaqMatch:
    """An entry and its cosine similarity to the customer's text (0 to 1)."""

    entry: FaqEntry
    score: float


def _primary_language(tag: str) -> str:
    """Return the primary subtag of a language tag, lower-cased (zh-CN → zh)."""
    return tag.strip().lower().replace("_", "-").split("-", 1)[0]


def _read_entry(path: Path) -> tuple[FaqEntry, str]:
    """Parse one entry file; return it and the `file:line` of its id."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").split("\n")
    if lines[0].rstrip() != "---":
        raise ConfigError(f"{path}:1: an FAQ entry starts with a '---' line and YAML front matter")
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if end is None:
        raise ConfigError(f"{path}:1: the front matter is not closed by a '---' line")
    # The opening '---' is a YAML document marker too, so the line numbers are the file's.
    loaded = load_yaml(path, "\n".join(lines[:end]) + "\n")
    front = validate(loaded, _FrontMatter)
    answer = "\n".join(lines[end + 1 :]).strip()
    if not answer:
        raise ConfigError(f"{path}:{end + 2}: the answer after the front matter is empty")
    entry_id = front.id if front.id is not None else path.stem
    where = loaded.where(("id",)) if front.id is not None else f"{path}:1"
    if front.id is None and not _ID.match(entry_id):
        raise ConfigError(f"{path}:1: the file name is not a usable id; add 'id: ...'")
    entry = FaqEntry(
        id=entry_id,
        question=front.question.strip(),
        answer=answer,
        keywords=tuple(keyword.strip() for keyword in front.keywords),
        language=_primary_language(front.language),
        department=front.department,
        url=front.url,
        path=path,
    )
    return entry, where


def _entry_counts(entry: FaqEntry) -> Counter[str]:
    """Return the weighted term counts of an entry: question, keywords and answer."""
    counts: Counter[str] = Counter()
    for text, weight in (
        (entry.question, QUESTION_WEIGHT),
        (" ".join(entry.keywords), KEYWORD_WEIGHT),
        (entry.answer, ANSWER_WEIGHT),
    ):
        for term in faq_terms(text):
            counts[term] += weight
    return counts


class _LanguageIndex:
    """The entries of one language as an inverted index of l2-normalised TF-IDF weights."""

    def __init__(self, entries: Iterable[FaqEntry]) -> None:
        self.entries = tuple(entries)
        counts = [_entry_counts(entry) for entry in self.entries]
        frequency: Counter[str] = Counter()
        for counted in counts:
            frequency.update(counted.keys())
        total = len(self.entries)
        self.idf = {t: math.log((1 + total) / (1 + df)) + 1 for t, df in frequency.items()}
        postings: defaultdict[str, list[tuple[int, float]]] = defaultdict(list)
        for position, counted in enumerate(counts):
            weights = {t: (1 + math.log(c)) * self.idf[t] for t, c in counted.items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for term, weight in weights.items():
                postings[term].append((position, weight / norm))
        self.postings = dict(postings)

    def scores(self, counted: Counter[str]) -> list[float]:
        """Return the cosine similarity of a query's term counts to every entry."""
        scores = [0.0] * len(self.entries)
        norm_squared = 0.0
        for term, count in counted.items():
            posting = self.postings.get(term)
            weight = (1 + math.log(count)) * (self.idf[term] if posting else UNSEEN_IDF)
            norm_squared += weight * weight
            if posting:
                for position, entry_weight in posting:
                    scores[position] += weight * entry_weight
        if norm_squared:
            norm = math.sqrt(norm_squared)
            scores = [score / norm for score in scores]
        return scores


class FaqIndex:
    """All FAQ entries of one directory, ready to match customer text."""

    def __init__(
        self, directory: Path, entries: Iterable[FaqEntry], loaded: Fingerprint = frozenset()
    ) -> None:
        self.directory = directory
        self.entries = tuple(sorted(entries, key=lambda entry: entry.id))
        self._loaded = loaded
        by_language: defaultdict[str, list[FaqEntry]] = defaultdict(list)
        for entry in self.entries:
            by_language[entry.language].append(entry)
        self._languages = {lang: _LanguageIndex(group) for lang, group in by_language.items()}

    @classmethod
    def load(cls, directory: Path) -> FaqIndex:
        """Read every `*.md` entry of a directory (not README.md nor `_`-files); check ids."""
        if not directory.is_dir():
            raise ConfigError(f"{directory}: no such FAQ directory")
        loaded = fingerprint(directory)
        entries: dict[str, FaqEntry] = {}
        for path in sorted(directory.glob("*.md")):
            if path.name.startswith(("_", ".")) or path.name.lower() == "readme.md":
                continue
            entry, where = _read_entry(path)
            other = entries.get(entry.id)
            if other is not None:
                raise ConfigError(f"{where}: FAQ id {entry.id!r} is already used by {other.path}")
            entries[entry.id] = entry
        logger.info("loaded %d FAQ entries from %s", len(entries), directory)
        return cls(directory, entries.values(), loaded)

    def changed(self) -> bool:
        """Return whether any file of the directory was added, removed or edited since loading."""
        return fingerprint(self.directory) != self._loaded

    def reload(self) -> FaqIndex:
        """Return a fresh index of the same directory; this one stays usable if that fails."""
        return FaqIndex.load(self.directory)

    def match(
        self,
        text: str,
        *,
        language: str | None,
        department: str | None = None,
        limit: int = 3,
        min_score: float = 0.2,
    ) -> list[FaqMatch]:
        """Return the entries most similar to `text`, best first, in the message's language."""
        if language is None:
            indexes = list(self._languages.values())
        else:
            found = self._languages.get(_primary_language(language))
            indexes = [found] if found else []
        if not indexes or limit <= 0:
            return []
        counted = Counter(faq_terms(text[:MAX_TEXT_CHARS]))
        if not counted:
            return []
        matches = []
        for index in indexes:
            for entry, score in zip(index.entries, index.scores(counted), strict=True):
                wanted = department is None or entry.department in (None, department)
                if wanted and score >= min_score and score > 0.0:
                    matches.append(FaqMatch(entry, score))
        matches.sort(key=lambda match: (-match.score, match.entry.id))
        return matches[:limit]
