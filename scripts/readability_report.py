"""Reading grade of the bot's answers to every eval question, and the hardest sentences used in them.

Run: .venv/bin/python scripts/readability_report.py [--index-dir DIR] [--top 15]
The index is rebuilt from knowledge/ on every run, so edits to the documents are measured.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from bot.assistant import build_assistant  # noqa: E402
from bot.readability import reading_grade  # noqa: E402
from bot.settings import Settings  # noqa: E402

MARKER = re.compile(r"\s*\[\d+\]")


def plain(text: str) -> str:
    """Answer text without the [n] citation markers."""
    return MARKER.sub("", text).strip()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between ranks."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def eval_cases(cases_dir: Path) -> list[dict]:
    """Every case of every evals/cases/*.yaml file."""
    out: list[dict] = []
    for path in sorted(cases_dir.rglob("*.yaml")):
        out.extend(yaml.safe_load(path.read_text(encoding="utf-8")) or [])
    return out


def main() -> int:
    """Ask every eval question and print grade statistics per answer kind."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-dir", type=Path, default=Path("/tmp/idx_readability"))
    ap.add_argument("--top", type=int, default=15, help="how many of the hardest sentences to list")
    ap.add_argument("--answers", type=int, default=0, help="also list this many of the hardest 'answer' answers")
    args = ap.parse_args()

    # A fresh index every run: the documents under test are the ones on disk now.
    shutil.rmtree(args.index_dir, ignore_errors=True)
    assistant = build_assistant(Settings(index_dir=args.index_dir))

    grades: dict[str, list[float]] = defaultdict(list)
    sentences: dict[str, tuple[float, str, int]] = {}  # text -> (grade, doc, times used)
    hardest: list[tuple[float, str, str]] = []  # (grade, question, answer) of 'answer' answers
    for case in eval_cases(PROJECT_DIR / "evals" / "cases"):
        ans = assistant.ask(case["question"], history=case.get("history") or [])
        text = plain(ans.answer)
        if text:
            grades[ans.kind].append(reading_grade(text))
            if ans.kind == "answer":
                hardest.append((grades[ans.kind][-1], case["question"], text))
        for c in ans.citations:
            s = " ".join(c.quote.split())
            g, doc, used = sentences.get(s, (reading_grade(s), c.doc_id, 0))
            sentences[s] = (g, doc, used + 1)

    print(f"{'kind':<14}{'n':>5}{'median':>9}{'p90':>8}{'max':>8}")
    for kind in sorted(grades):
        gs = grades[kind]
        print(f"{kind:<14}{len(gs):>5}{statistics.median(gs):>9.1f}{percentile(gs, 90):>8.1f}{max(gs):>8.1f}")
    print(f"\nHardest {args.top} sentences used in answers ({len(sentences)} distinct):")
    for s, (g, doc, used) in sorted(sentences.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{g:5.1f}  x{used:<3} {doc}: {s}")
    if args.answers:
        print(f"\nHardest {args.answers} answers:")
        for g, q, text in sorted(hardest, key=lambda x: -x[0])[:args.answers]:
            print(f"{g:5.1f}  Q: {q}\n       A: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
