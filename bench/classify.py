"""Classifier throughput and latency on one core; prints one JSON line.

    python bench/classify.py [--model models/default] [--corpus DIR_OF_EML] [--messages 2000]

Without --corpus, the shared generator (`../shared/corpus/make_corpus.py N 42`) writes the
messages to a temporary folder; without it, the repo's labelled corpus is used instead.
"""

from __future__ import annotations

import os

# One core: BLAS and OpenMP pools must be sized before numpy is imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from classifiers.cli import message_text  # noqa: E402
from classifiers.data import load_csv  # noqa: E402
from classifiers.model import load_model  # noqa: E402


def _pin_one_core() -> int | None:
    """Restrict this process to one CPU; return its number (None where unsupported)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _read_eml(folder: Path, count: int) -> list[tuple[str, str]]:
    """Return (subject, text) of the first `count` .eml files of `folder`."""
    return [message_text(f.read_bytes()) for f in sorted(folder.glob("*.eml"))[:count]]


def _messages(corpus: Path | None, count: int) -> tuple[list[tuple[str, str]], str]:
    """Return (subject, body) pairs and a description of where they came from."""
    if corpus is not None:
        items = _read_eml(corpus, count)
        return items, f"{corpus} ({len(items)} .eml)"
    shared = Path(os.environ.get("MAILCARE_SHARED") or REPO.parent / "shared")
    generator = shared / "corpus" / "make_corpus.py"
    if generator.exists():
        with tempfile.TemporaryDirectory(prefix="mailcare-bench-") as folder:
            command = [sys.executable, str(generator), str(count), "42", folder]
            subprocess.run(command, check=True, capture_output=True)
            return _read_eml(Path(folder), count), f"make_corpus.py {count} 42"
    rows = load_csv(REPO / "classifiers" / "corpus" / "support_messages.csv")[:count]
    return [(r.subject, r.body) for r in rows], "classifiers/corpus/support_messages.csv"


def main() -> int:
    """Measure batch throughput and single-message latency; print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--corpus", type=Path, help="folder of .eml files")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cpu = _pin_one_core()
    items, source = _messages(args.corpus, args.messages)
    model = load_model(args.model)
    model.predict_many(items[: args.batch_size])  # warm caches
    rounds = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for start in range(0, len(items), args.batch_size):
            model.predict_many(items[start : start + args.batch_size])
        rounds.append(time.perf_counter() - started)
    latencies = []
    for subject, body in items:
        started = time.perf_counter_ns()
        model.predict(subject, body)
        latencies.append((time.perf_counter_ns() - started) / 1e6)
    latencies.sort()
    result = {
        "bench": "classify",
        "model": str(Path(args.model).name),
        "messages": len(items),
        "source": source,
        "cpu": cpu,
        "batch_size": args.batch_size,
        "throughput_msgs_per_s": round(len(items) / statistics.median(rounds)),
        "latency_ms_p50": round(latencies[len(latencies) // 2], 3),
        "latency_ms_p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
        "latency_ms_max": round(latencies[-1], 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
