"""Measure what the README reports: warm answer latency over all eval questions, cold start, index time.

Usage: .venv/bin/python scripts/benchmark.py [--rounds 3] [--json reports/benchmark.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))


def eval_questions() -> list[dict]:
    cases = []
    for path in sorted((PROJECT / "evals" / "cases").rglob("*.yaml")):
        if not path.name.startswith("_"):
            cases.extend(yaml.safe_load(path.read_text()) or [])
    return cases


def pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3, help="times each question is asked (after one warm-up pass)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    from bot.assistant import build_assistant
    from bot.embed import SentenceEmbedder
    from bot.ingest import ingest
    from bot.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        settings = Settings(index_dir=tmp / "index")
        embedder = SentenceEmbedder(settings.embedding_model, threads=settings.torch_threads)
        t = time.perf_counter()
        result = ingest(settings, embedder, progress=False)
        index_s = time.perf_counter() - t
        t = time.perf_counter()
        again = ingest(settings, embedder, progress=False)
        reindex_s = time.perf_counter() - t

        assistant = build_assistant(settings, embedder=embedder)
        cases = eval_questions()
        for c in cases:  # warm-up pass: caches filled as in a running app
            assistant.ask(c["question"], history=c.get("history") or [])
        latencies: list[float] = []
        for _ in range(args.rounds):
            for c in cases:
                t = time.perf_counter()
                assistant.ask(c["question"], history=c.get("history") or [])
                latencies.append((time.perf_counter() - t) * 1000)
        # The query-embedding cache would make repeats unrealistically fast: measure once more without it.
        cold_query: list[float] = []
        for c in cases:
            embedder._cache.clear()
            t = time.perf_counter()
            assistant.ask(c["question"], history=c.get("history") or [])
            cold_query.append((time.perf_counter() - t) * 1000)

        env = dict(os.environ, BOT_INDEX_DIR=str(settings.index_dir))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bot", "ask", "What is blinatumomab?", "--json"], cwd=PROJECT, env=env,
                       check=True, capture_output=True)
        cold_start_s = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    figures = {
        "questions": len(cases),
        "warm_ms_median_new_question": round(statistics.median(cold_query), 1),
        "warm_ms_p95_new_question": round(pct(cold_query, 95), 1),
        "warm_ms_median_repeat": round(statistics.median(latencies), 1),
        "warm_ms_p95_repeat": round(pct(latencies, 95), 1),
        "cold_start_cli_ask_s": round(cold_start_s, 1),
        "index_knowledge_s": round(index_s, 1),
        "index_passages": result.chunks,
        "texts_embedded": result.embedded,
        "reingest_unchanged_s": round(reindex_s, 2),
        "reingest_unchanged_embedded": again.embedded,
        "cpu_cores": os.cpu_count(),
    }
    for k, v in figures.items():
        print(f"{k:32s} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
