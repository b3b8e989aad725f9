"""`python -m evals`: run the cases, print a summary, write reports, exit 1 when a threshold is missed."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from evals.report import summary_table, write_reports
from evals.runner import DEFAULT_CASES, DEFAULT_THRESHOLDS, CaseFileError, load_cases, load_thresholds, run_suite

EXIT_OK, EXIT_THRESHOLD, EXIT_USAGE = 0, 1, 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evals", description=__doc__)
    p.add_argument("--cases", type=Path, nargs="+", default=[DEFAULT_CASES],
                   help="case files or folders (every *.yaml not starting with '_'); default evals/cases/dev")
    p.add_argument("--corpus", type=Path, help="evaluate against this document folder (indexed in a temporary folder)")
    p.add_argument("--report", type=Path, default=Path("reports"), help="where report.json and report.html go")
    p.add_argument("--thresholds", type=Path, default=DEFAULT_THRESHOLDS, help="thresholds file")
    p.add_argument("--k", type=int, default=5, help="k of retrieval recall@k (default 5)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--blind", action="store_true",
                   help="print figures only, never a failed case's id or reason (for held-back blind sets)")
    p.add_argument("--replay-history", action="store_true",
                   help="a case whose history holds only user turns gets the assistant's own answers to them first")
    return p.parse_args(argv)


def _build(corpus: Path | None, index_dir: Path | None):
    """The assistant under test: the shared factory, on the default or the given corpus."""
    from bot.assistant import build_assistant

    if corpus is None:
        return build_assistant()
    from bot.settings import Settings

    return build_assistant(settings=Settings(index_dir=index_dir, knowledge_dir=corpus.resolve()))


def pin_embedder(assistant) -> str | None:
    """One model embeds every question of the run: wait for the background torch load first (bot/embed.py)."""
    pin = getattr(assistant.embedder, "pin", None)
    return pin() if pin is not None else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.k < 1:
        print("error: --k must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.corpus is not None and not args.corpus.exists():
        print(f"error: --corpus {args.corpus}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        cases = load_cases(args.cases)
        thresholds = load_thresholds(args.thresholds)
    except CaseFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def progress(i: int, n: int, r) -> None:
        if not args.quiet:
            mark = "." if r.passed else "F"
            print(mark, end="\n" if i % 60 == 0 or i == n else "", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evals-index-") as tmp:
        print(f"building the assistant{' on ' + str(args.corpus) if args.corpus else ''} ...", file=sys.stderr)
        assistant = _build(args.corpus, Path(tmp))
        embedder_name = pin_embedder(assistant)
        build_s = time.perf_counter() - t0
        print(f"running {len(cases)} cases ...", file=sys.stderr)
        result = run_suite(assistant, cases, thresholds, k=args.k, progress=progress, replay_history=args.replay_history)
        used = sorted(getattr(assistant.embedder, "backends_used", ()))
    if len(used) > 1:
        print(f"error: the run mixed embedding models {used}; its figures are not comparable", file=sys.stderr)
        return EXIT_THRESHOLD
    result.meta.update(
        corpus=str(args.corpus) if args.corpus else None,
        cases=[str(p) for p in args.cases],
        build_s=round(build_s, 2),
        embedder=embedder_name,
        embedders_used=used,
        total_s=round(time.perf_counter() - t0, 2),
    )
    json_path, html_path = write_reports(result, args.report)
    print(summary_table(result, list_failures=not args.blind))
    print(f"assistant built in {build_s:.1f} s; cases ran in {result.duration_s:.1f} s; "
          f"reports: {json_path}, {html_path.resolve().as_uri()}")
    return EXIT_OK if result.passed else EXIT_THRESHOLD


if __name__ == "__main__":
    sys.exit(main())
