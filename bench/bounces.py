"""Bounce benchmark: detect() over the shared corpus, agreement with the manifest labels.

Prints one JSON line: automated recall per category, ordinary false positives, the bounce
confusion table (expected class -> detected class) and the agreement in percent.

    python bench/bounces.py [--mail-dir DIR] [--misses]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.automated import Verdict, detect  # noqa: E402
from daemon.message import parse_message  # noqa: E402

AUTOMATED_CATEGORIES = ("bounces", "autoreplies", "arf", "lists")


def default_mail_dir() -> Path:
    """The shared corpus directory ($MAILCARE_SHARED/data/mail or ../shared/data/mail)."""
    shared = Path(os.environ.get("MAILCARE_SHARED") or ROOT.parent / "shared")
    return shared / "data" / "mail"


def manifest_rows(mail_dir: Path) -> list[dict[str, str]]:
    """The manifest rows, in file order."""
    with (mail_dir / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def message_path(mail_dir: Path, row: dict[str, str]) -> Path:
    """Where a manifest row's file lives (paths in the manifest start with shared/)."""
    return mail_dir.parent.parent / row["path"].removeprefix("shared/")


def expected_class(label: str) -> str | None:
    """Map a manifest label to hard/soft/mixed/delay/delivery-report, None when no bounce."""
    kind, _, rest = label.partition(":")
    if kind == "bounce":
        return rest.partition(":")[0] or None
    if kind == "dsn":
        return "delay" if rest.startswith("delayed") else "delivery-report"
    return None


def detected_class(verdict: Verdict) -> str:
    """The class a verdict gives a bounce file: its severity, or its kind when not a bounce."""
    if verdict.kind == "bounce" and verdict.bounce is not None:
        return verdict.bounce.severity
    return verdict.kind


def confusion_table(mail_dir: Path) -> dict[str, Any]:
    """Run detect() over the corpus; return recall, false positives and the bounce table."""
    rows = manifest_rows(mail_dir)
    table: Counter[tuple[str, str]] = Counter()
    automated: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    ordinary_flagged: list[str] = []
    other_automated: list[str] = []
    secondary: dict[str, dict[str, str]] = {}
    misses: list[dict[str, str]] = []
    elapsed: dict[str, float] = dict.fromkeys(AUTOMATED_CATEGORIES, 0.0)
    for row in rows:
        category = row["category"]
        message = parse_message(message_path(mail_dir, row).read_bytes())
        started = time.perf_counter()
        verdict = detect(message)
        elapsed[category] = elapsed.get(category, 0.0) + time.perf_counter() - started
        totals[category] += 1
        automated[category] += verdict.automated
        name = Path(row["path"]).name
        if category == "ordinary" and verdict.automated:
            ordinary_flagged.append(f"{name}: {verdict.kind} ({verdict.reason})")
        if category in ("charsets", "malformed"):
            if row["secondary"]:
                secondary[name] = {
                    "expected": row["secondary"],
                    "kind": verdict.kind,
                    "class": detected_class(verdict),
                }
            elif verdict.automated:
                other_automated.append(f"{name}: {verdict.kind} ({verdict.reason})")
        if category != "bounces":
            continue
        wanted = expected_class(row["expected"]) or "?"
        got = detected_class(verdict)
        table[(wanted, got)] += 1
        if got != wanted:
            misses.append(
                {"file": name, "expected": row["expected"], "got": got, "reason": verdict.reason}
            )
    bounce_total = sum(table.values())
    agree = sum(count for (wanted, got), count in table.items() if wanted == got)
    transient = sum(
        count
        for (wanted, got), count in table.items()
        if wanted == got or (wanted == "soft" and got == "delay")
    )
    return {
        "files": len(rows),
        "automated_recall": {
            category: round(automated[category] / totals[category], 4)
            for category in sorted(totals)
            if category in AUTOMATED_CATEGORIES
        },
        "ordinary_false_positives": len(ordinary_flagged),
        "ordinary_flagged": ordinary_flagged,
        "charsets_malformed_automated_without_label": other_automated,
        "secondary": secondary,
        "bounce_files": bounce_total,
        "bounce_agreement_pct": round(100 * agree / bounce_total, 2) if bounce_total else None,
        "bounce_agreement_delay_as_soft_pct": (
            round(100 * transient / bounce_total, 2) if bounce_total else None
        ),
        "confusion": {
            wanted: {got: count for (w, got), count in sorted(table.items()) if w == wanted}
            for wanted in sorted({w for w, _ in table})
        },
        "detect_ms_per_message": {
            category: round(1000 * elapsed[category] / totals[category], 4)
            for category in sorted(totals)
        },
        "misses": misses,
    }


def main() -> None:
    """Print the JSON line (misses only with --misses)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mail-dir", type=Path, default=default_mail_dir())
    parser.add_argument("--misses", action="store_true", help="list the disagreeing files")
    args = parser.parse_args()
    result = confusion_table(args.mail_dir)
    if not args.misses:
        result.pop("misses")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
