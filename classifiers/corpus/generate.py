"""Compose the synthetic bilingual support corpus behind the default model.

    python -m classifiers.corpus.generate [--seed 20240601] [--english 1000] [--chinese 700]

Writes classifiers/corpus/support_messages.csv (columns id, subject, body, department,
urgency, language); the same arguments always give the same file.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from types import ModuleType

from classifiers.corpus import phrases_en, phrases_zh
from classifiers.data import Row, write_csv

__all__ = ["DEPARTMENTS", "URGENCIES", "compose", "generate", "main"]

DEPARTMENTS = ("sales", "billing", "technical_support", "returns", "complaints", "general")
URGENCIES = ("suggestion", "normal", "special_problem", "important", "emergency")
_DEPARTMENT_WEIGHTS = (16, 18, 22, 16, 14, 14)
_URGENCY_WEIGHTS = (14, 35, 18, 20, 13)
_NEIGHBOURS = {
    "suggestion": ["normal"],
    "normal": ["suggestion", "important"],
    "special_problem": ["normal", "important"],
    "important": ["normal", "emergency"],
    "emergency": ["important"],
}
OUTPUT = Path(__file__).resolve().parent / "support_messages.csv"

_SUGGESTION_SUBJECTS = {
    "en": ["Suggestion", "A small idea", "Feedback on {area}", "Improvement idea", "Idea: {area}"],
    "zh": ["建议", "一点小建议", "关于{area}的意见", "改进建议", "用户反馈：{area}"],
}
_AREAS = {
    "en": {
        "sales": "your pricing",
        "billing": "invoices",
        "technical_support": "the app",
        "returns": "returns",
        "complaints": "your hotline",
        "general": "your website",
    },
    "zh": {
        "sales": "价格",
        "billing": "发票",
        "technical_support": "软件功能",
        "returns": "退换货",
        "complaints": "客服热线",
        "general": "官网",
    },
}
_PREFIXES = {
    "en": {
        "important": ["Important: ", "Priority: ", "Time-sensitive: "],
        "emergency": ["URGENT: ", "EMERGENCY: ", "Urgent!! ", "ASAP: "],
    },
    "zh": {
        "important": ["重要：", "【重要】", "请优先处理："],
        "emergency": ["紧急：", "【紧急】", "十万火急：", "急！"],
    },
}


def _slots(rng: random.Random, language: str, phrases: ModuleType) -> dict[str, str]:
    """Return values for every {slot} a phrase may use."""
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    months = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ]
    return {
        "product": rng.choice(phrases.PRODUCTS),
        "item": rng.choice(phrases.ITEMS),
        "city": rng.choice(phrases.CITIES),
        "street": rng.choice(phrases.STREETS),
        "seats": str(rng.choice([5, 8, 12, 20, 25, 40, 50, 120, 300])),
        "invoice": f"INV-{rng.randint(2023, 2025)}-{rng.randint(1000, 99999):05d}",
        "order": str(rng.randint(100000, 9999999)),
        "amount": f"{rng.randint(9, 4999)}.{rng.randint(0, 99):02d}",
        "code": str(rng.choice([401, 403, 404, 429, 500, 502, 503, 1004, 2207])),
        "vat": f"{rng.randint(10**8, 10**9 - 1)}",
        "phone": f"{rng.randint(130, 189)}{rng.randint(10**7, 10**8 - 1)}",
        "date": f"{month}月{day}日" if language == "zh" else f"{day} {months[month - 1]}",
    }


def _typo(text: str, rng: random.Random) -> str:
    """Swap two letters inside one longer word, as hurried writers do."""
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) > 5 and w.isalpha()]
    if not long_words:
        return text
    i = rng.choice(long_words)
    j = rng.randrange(1, len(words[i]) - 2)
    word = words[i]
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def _subject(
    language: str, department: str, urgency: str, rng: random.Random, p: ModuleType
) -> str:
    """Return a subject line; urgent mail sometimes says so, suggestions often do."""
    if urgency == "suggestion" and rng.random() < 0.55:
        template = rng.choice(_SUGGESTION_SUBJECTS[language])
        return template.replace("{area}", _AREAS[language][department])
    subject = str(rng.choice(p.SUBJECTS[department]))
    prefixes = _PREFIXES[language].get(urgency)
    if prefixes and rng.random() < (0.45 if urgency == "emergency" else 0.3):
        subject = rng.choice(prefixes) + subject
    if rng.random() < 0.08:
        subject = ("回复：" if language == "zh" else "Re: ") + subject
    return subject


def _core(department: str, urgency: str, rng: random.Random, p: ModuleType) -> list[str]:
    """Return the sentences that state the sender's matter."""
    normal = rng.sample(p.NORMAL[department], 2)
    if urgency == "suggestion":
        return [rng.choice(p.SUGGESTION[department])]
    if urgency == "special_problem":
        lead = [normal[0]] if rng.random() < 0.4 else []
        return [*lead, rng.choice(p.SPECIAL[department])]
    if urgency == "emergency":
        tail = [normal[0]] if rng.random() < 0.25 else []
        return [rng.choice(p.EMERGENCY[department]), *tail]
    return normal[: rng.choice([1, 1, 2])]


def compose(language: str, department: str, urgency: str, rng: random.Random) -> tuple[str, str]:
    """Return (subject, body) of one message with the given labels."""
    p = phrases_zh if language == "zh" else phrases_en
    slots = _slots(rng, language, p)
    joiner = "" if language == "zh" else " "
    sentences = _core(department, urgency, rng, p)
    if rng.random() < 0.15:  # a second, minor matter for another department
        other = rng.choice([d for d in DEPARTMENTS if d != department])
        sentences.append(("另外，" if language == "zh" else "Also: ") + rng.choice(p.NORMAL[other]))
    cue_chance = {"suggestion": 0.6, "normal": 0.7, "special_problem": 0.8}.get(urgency, 0.85)
    if rng.random() < cue_chance:
        # senders do not always agree with the team's urgency scale: 5 % use a neighbour's tone
        tone = rng.choice(_NEIGHBOURS[urgency]) if rng.random() < 0.05 else urgency
        cue = rng.choice(p.URGENCY_LINES[tone])
        if cue:
            sentences.insert(
                0 if urgency == "emergency" and rng.random() < 0.4 else len(sentences), cue
            )
    text = joiner.join(sentences).format(**slots)
    if language == "en" and rng.random() < 0.12:
        text = _typo(text, rng)
    if language == "en" and rng.random() < 0.05:
        text = text.lower()
    name = (
        rng.choice(p.SURNAMES) + rng.choice(p.GIVEN)
        if language == "zh"
        else f"{rng.choice(p.FIRST_NAMES)} {rng.choice(p.LAST_NAMES)}"
    )
    greeting = rng.choice(p.GREETINGS)
    parts = [greeting] if greeting else []
    parts += [text, "", rng.choice(p.CLOSINGS), name]
    roll = rng.random()
    if roll < 0.1:
        parts += ["", rng.choice(p.MOBILE)]
    elif roll < 0.22:
        parts += [
            "-- ",
            name,
            rng.choice(p.STREETS) + (", " if language == "en" else "，") + slots["city"],
        ]
    if rng.random() < 0.12:
        parts += ["", rng.choice(p.QUOTE_HEADERS).format(**slots), *rng.sample(p.QUOTED, 2)]
    return _subject(language, department, urgency, rng, p).format(**slots), "\n".join(parts)


def generate(seed: int, english: int, chinese: int) -> list[Row]:
    """Return the corpus rows; about 1-2 % lack one label, as partly labelled data does."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for language, count in (("en", english), ("zh", chinese)):
        for _ in range(count):
            department = rng.choices(DEPARTMENTS, _DEPARTMENT_WEIGHTS)[0]
            urgency = rng.choices(URGENCIES, _URGENCY_WEIGHTS)[0]
            subject, body = compose(language, department, urgency, rng)
            drop = rng.random()
            rows.append(
                Row(
                    id=f"synthetic-{language}-{len(rows) + 1:05d}",
                    subject=subject,
                    body=body,
                    department=None if drop < 0.01 else department,
                    urgency=None if 0.01 <= drop < 0.03 else urgency,
                    language=language,
                )
            )
    rng.shuffle(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write the corpus CSV."""
    parser = argparse.ArgumentParser(prog="python -m classifiers.corpus.generate")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--english", type=int, default=1000)
    parser.add_argument("--chinese", type=int, default=700)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    rows = generate(args.seed, args.english, args.chinese)
    write_csv(args.out, rows)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
