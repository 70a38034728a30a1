"""Parser benchmark: parse_message over a directory of .eml files on one core.

Prints one JSON line with messages per second: wall clock (median and best of the rounds)
and per CPU second of this process, which stays meaningful on a busy machine.
Without --corpus it generates the team corpus (1,000 messages, seed 42) from ../shared.

    python bench/parse.py [--corpus DIR] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.message import parse_message  # noqa: E402
from daemon.mimetree import parse_tree  # noqa: E402


def corpus_files(corpus: Path | None, workdir: Path) -> list[bytes]:
    """Read the corpus, generating the standard one first when none is given."""
    if corpus is None:
        shared = Path(os.environ.get("MAILCARE_SHARED") or ROOT.parent / "shared")
        script = shared / "corpus" / "make_corpus.py"
        corpus = workdir / "corpus"
        subprocess.run(
            [sys.executable, str(script), "1000", "42", str(corpus)],
            check=True,
            capture_output=True,
        )
    return [path.read_bytes() for path in sorted(corpus.glob("*.eml"))]


def rates(
    messages: list[bytes], rounds: int, parse: Callable[[bytes], object]
) -> tuple[list[float], list[float]]:
    """Messages per second of each round, by wall-clock time and by this process's CPU time."""
    wall, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        for raw in messages:
            parse(raw)
        wall.append(len(messages) / (time.perf_counter() - started))
        cpu.append(len(messages) / (time.process_time() - started_cpu))
    return wall, cpu


def main() -> None:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as workdir:
        messages = corpus_files(args.corpus, Path(workdir))
    parse_message(messages[0])  # first-use imports and codec lookups are not the steady state
    full, full_cpu = rates(messages, args.rounds, parse_message)
    _, tree_cpu = rates(messages, args.rounds, lambda raw: parse_tree(raw, []))
    print(
        json.dumps(
            {
                "bench": "parse_message",
                "messages": len(messages),
                "bytes": sum(map(len, messages)),
                "rounds": args.rounds,
                "msgs_per_s_median": round(statistics.median(full)),
                "msgs_per_s_best": round(max(full)),
                "msgs_per_cpu_s_median": round(statistics.median(full_cpu)),
                "mime_tree_only_msgs_per_cpu_s_median": round(statistics.median(tree_cpu)),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
