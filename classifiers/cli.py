"""Command line: `train`, `evaluate` and `classify` subcommands for the `mailcare` command."""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from classifiers.data import data_sha256, load_csv
from classifiers.errors import ClassifierError
from classifiers.evaluation import evaluate
from classifiers.model import load_model
from classifiers.training import TrainConfig, train

__all__ = ["DEFAULT_MODEL", "main", "message_text", "register", "utc_now"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"
_HEADER_LINE = re.compile(rb"^[A-Za-z0-9-]+:")
_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]*>", re.IGNORECASE | re.DOTALL)


def utc_now() -> datetime:
    """Return the current UTC time, for model metadata only."""
    # classifiers never imports the daemon's injected clock; a training date is informational.
    return datetime.now(UTC).replace(microsecond=0)  # noqa: TID251


def _ngram_range(text: str) -> tuple[int, int]:
    """Parse "1-2" (or "2") into an n-gram range."""
    low, _, high = text.partition("-")
    try:
        pair = (int(low), int(high or low))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}") from exc
    if not 1 <= pair[0] <= pair[1] <= 5:
        raise argparse.ArgumentTypeError(f"n-gram range must be within 1-5, got {text!r}")
    return pair


def message_text(data: bytes) -> tuple[str, str]:
    """Return (subject, plain text) of an RFC 5322 message, or ("", text) for bare text."""
    if not _HEADER_LINE.match(data.lstrip()[:200]):
        return "", data.decode("utf-8", errors="replace")
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    subject = str(message.get("subject", "") or "")
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return subject, ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    text = str(content)
    if part.get_content_subtype() == "html":
        text = html.unescape(_TAG.sub(" ", text))
    return subject, text


def _train(args: argparse.Namespace) -> int:
    """Train a model from CSV files and save it."""
    paths = [Path(p) for p in args.data]
    rows = load_csv(paths)
    config = TrainConfig(
        words=args.words,
        chars=args.chars,
        min_df=args.min_df,
        department_c=args.c_department,
        urgency_c=args.c_urgency,
        folds=args.folds,
        min_class_rows=args.min_class_rows,
        target_precision=args.target_precision,
    )
    model = train(
        rows,
        config,
        name=Path(args.out).name,
        sources={str(p): data_sha256([p]) for p in paths},
        created=utc_now(),
        progress=not args.quiet,
    )
    saved = model.save(args.out)
    for head, section in model.metadata.get("heads", {}).items():
        oof = section.get("out_of_fold", {})
        print(
            f"{head}: {len(section['labels'])} labels, out-of-fold accuracy "
            f"{oof.get('accuracy', 0):.4f}, macro-F1 {oof.get('macro_f1', 0):.4f}, "
            f"routed {oof.get('routed_share', 0):.1%} "
            f"at precision {oof.get('routed_precision', 0):.4f}"
        )
    print(f"wrote {saved.estimators} and {saved.metadata}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Evaluate a saved model on labelled CSV files."""
    report = evaluate(load_model(args.model), load_csv(args.data))
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.format_text())
    return 0


def _classify(args: argparse.Namespace) -> int:
    """Classify one message read from a file or standard input."""
    data = Path(args.file).read_bytes() if args.file else sys.stdin.buffer.read()
    subject, body = message_text(data)
    model = load_model(args.model)
    prediction = model.predict(subject, body)
    result: dict[str, Any] = {
        "department": prediction.department,
        "department_confidence": round(prediction.department_confidence, 4),
        "abstained_department": prediction.abstained_department,
        "urgency": prediction.urgency,
        "urgency_confidence": round(prediction.urgency_confidence, 4),
        "abstained_urgency": prediction.abstained_urgency,
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    for head in ("department", "urgency"):
        if head not in model.heads:
            print(f"{head}: -  (this model has no {head} head)")
            continue
        mark = "  (abstained: needs triage)" if result[f"abstained_{head}"] else ""
        print(f"{head}: {result[head]}  confidence {result[f'{head}_confidence']:.4f}{mark}")
    return 0


def _guarded(func: Any) -> Any:
    """Wrap a command so that expected errors print one line and return status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            status: int = func(args)
        except (ClassifierError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return status

    return run


def register(subparsers: Any, history: Callable[[argparse.Namespace], int] | None = None) -> None:
    """Add `train`, `evaluate` and `classify` to an argparse subparsers object.

    `history` handles `train --from-history` (the caller owns the corrections database).
    """
    defaults = TrainConfig()
    train_parser = subparsers.add_parser("train", help="train a classifier from labelled CSV")
    train_parser.add_argument(
        "--data", action="append", required=history is None, metavar="FILE.csv"
    )
    train_parser.add_argument("--out", required=history is None, metavar="models/NAME")
    if history is not None:
        train_parser.add_argument(
            "--from-history",
            action="store_true",
            help="add the team's corrections to the base corpus (--data, or the current "
            "model's own data) and replace the model only if it is not worse",
        )
        train_parser.add_argument("--json", action="store_true", help="with --from-history")
    train_parser.add_argument("--words", type=_ngram_range, default=defaults.words, metavar="1-2")
    train_parser.add_argument(
        "--chars",
        type=_ngram_range,
        default=defaults.chars,
        metavar="1-2",
        help="character n-grams of Chinese text",
    )
    train_parser.add_argument(
        "--min-df", type=int, default=defaults.min_df, help="keep terms seen in >= N messages"
    )
    train_parser.add_argument("--c-department", type=float, default=defaults.department_c)
    train_parser.add_argument("--c-urgency", type=float, default=defaults.urgency_c)
    train_parser.add_argument("--folds", type=int, default=defaults.folds)
    train_parser.add_argument("--min-class-rows", type=int, default=defaults.min_class_rows)
    train_parser.add_argument(
        "--target-precision",
        type=float,
        default=defaults.target_precision,
        help="precision a label's threshold must reach to route automatically",
    )
    train_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    train_parser.set_defaults(func=_guarded(_train))
    if history is not None:
        plain = _guarded(_train)

        def dispatch(args: argparse.Namespace) -> int:
            if args.from_history:
                return history(args)
            if not args.data or not args.out:
                train_parser.error("--data and --out are required (or --from-history)")
            return int(plain(args))

        train_parser.set_defaults(func=dispatch)

    evaluate_parser = subparsers.add_parser("evaluate", help="evaluate a model on labelled CSV")
    evaluate_parser.add_argument("--model", required=True, metavar="models/NAME")
    evaluate_parser.add_argument("--data", action="append", required=True, metavar="FILE.csv")
    evaluate_parser.add_argument("--json", action="store_true", help="one JSON object")
    evaluate_parser.set_defaults(func=_guarded(_evaluate))

    classify_parser = subparsers.add_parser("classify", help="classify one message")
    classify_parser.add_argument("file", nargs="?", metavar="FILE.eml", help="default: stdin")
    classify_parser.add_argument("--model", default=str(DEFAULT_MODEL), metavar="models/NAME")
    classify_parser.add_argument("--json", action="store_true", help="one JSON object")
    classify_parser.set_defaults(func=_guarded(_classify))


def main(argv: list[str] | None = None) -> int:
    """Run the classifier subcommands on their own (`python -m classifiers.cli`)."""
    parser = argparse.ArgumentParser(prog="python -m classifiers.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
