"""Command line: python -m bot ask | explain | ingest | feedback export (see ../shared/contract.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from pathlib import Path

from bot.schema import Answer
from bot.settings import Settings, get_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bot", description="Cited answers for families of babies with leukemia.")
    sub = p.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer one question, or a JSONL batch")
    ask.add_argument("question", nargs="?", help="the question, in quotes")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--batch", type=Path, metavar="FILE.jsonl", help='one {"id","question","history"} object per line')
    exp_ = sub.add_parser("explain", help="show which red-flag cards, patterns and classifier scores fire for a message, and why")
    exp_.add_argument("question", help="the message, in quotes")
    ing = sub.add_parser("ingest", help="index documents (default: the knowledge folder)")
    ing.add_argument("paths", nargs="*", type=Path, help="files or folders (.md, .txt, .html, .pdf)")
    ing.add_argument("--rebuild", action="store_true", help="start from an empty index")
    fb = sub.add_parser("feedback", help="family feedback stored by the web app")
    fb_sub = fb.add_subparsers(dest="feedback_command", required=True)
    exp = fb_sub.add_parser("export", help="write all feedback as CSV")
    exp.add_argument("--out", type=Path, default=None, help="CSV file to write (default: standard output)")
    return p


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    settings = settings or get_settings()
    try:
        if args.command == "ask":
            return _ask(args, settings)
        if args.command == "ingest":
            return _ingest(args, settings)
        if args.command == "explain":
            return _explain(args, settings)
        return _feedback_export(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line that says what to do, never a bare traceback
        logging.getLogger("bot").debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.assistant import build_assistant

    if args.batch is None and args.question is None:
        print("error: give a question in quotes, or --batch FILE.jsonl", file=sys.stderr)
        return 2
    if args.batch is not None and not args.batch.is_file():
        print(f"error: {args.batch}: no such file", file=sys.stderr)
        return 2
    assistant = build_assistant(settings)
    if args.batch is not None:
        for obj in run_batch(assistant, args.batch.read_bytes()):
            sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        return 0
    answer = assistant.ask(args.question)
    if args.json:
        print(json.dumps(answer.to_json_dict(), ensure_ascii=False))
    else:
        print(format_answer(answer))
    return 1 if answer.kind == "error" else 0


def run_batch(assistant, data: bytes):
    """One answer object per non-blank input line, in order; a bad line gets kind 'error' and the batch goes on."""
    msgs = assistant.messages
    for lineno, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        qid = f"line-{lineno}"
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("expected a JSON object")
            qid = str(obj.get("id", qid))
            question = obj.get("question")
            history = obj.get("history") or []
            if not isinstance(history, list):
                raise ValueError("history must be a list")
        except (UnicodeDecodeError, ValueError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc).split("\n")[0]
            yield Answer(id=qid, question="", kind="error",
                         answer=msgs.render(msgs.errors.bad_line, reason=reason)).to_json_dict()
            continue
        try:
            yield assistant.ask(question, history=history, qid=qid).to_json_dict()
        except Exception as exc:  # one broken question must not lose the rest of the batch
            logging.getLogger("bot").error("question %s failed: %s", qid, exc)
            yield Answer(id=qid, question=str(question)[:200], kind="error", answer=msgs.errors.internal).to_json_dict()


def format_answer(answer: Answer) -> str:
    """Human-readable answer for the terminal."""
    width = 88
    lines = [textwrap.fill(answer.answer, width)]
    if answer.citations:
        lines.append("\nSources:")
        for c in answer.citations:
            where = f"{c.title}" + (f" — {c.section}" if c.section else "")
            lines.append(f"[{c.n}] {where}\n    {c.source}" + (f"\n    {c.url}" if c.url else ""))
            lines.append(textwrap.fill(f'"{c.quote}"', width, initial_indent="    ", subsequent_indent="    "))
    if answer.disclaimer:
        lines.append("\n" + textwrap.fill(answer.disclaimer, width))
    return "\n".join(lines)


def _explain(args: argparse.Namespace, settings: Settings) -> int:
    """For clinicians who edit prompts/redflags.yaml: what fired for one message, and why the verdict won."""
    from bot.embed import SentenceEmbedder
    from bot.safety import SafetyGate, explain

    embedder = SentenceEmbedder(settings.embedding_model, threads=max(1, settings.torch_threads))
    gate = SafetyGate.from_dir(settings.prompts_dir, embedder, cache_dir=settings.cache_dir)
    print(explain(gate, args.question))
    return 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from bot.embed import SentenceEmbedder
    from bot.ingest import ingest

    embedder = SentenceEmbedder(settings.embedding_model, threads=max(1, settings.torch_threads))
    result = ingest(settings, embedder, paths=args.paths or None, rebuild=args.rebuild)
    for problem in result.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    print(result.summary())
    return 0 if result.chunks else 1


def _feedback_export(args: argparse.Namespace, settings: Settings) -> int:
    from bot.feedback import FeedbackStore

    store = FeedbackStore(settings.feedback_db)
    if args.out is None:
        count = store.export_csv(sys.stdout)
    else:
        count = store.export_csv(args.out)
        print(f"{count} feedback rows written to {args.out}", file=sys.stderr)
    return 0
