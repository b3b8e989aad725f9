"""Command line: python -m bot ask | explain | ingest | feedback export (see ../shared/contract.md)."""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import json
import logging
import os
import sys
import textwrap
from collections.abc import Iterable, Iterator
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
    ing.add_argument("paths", nargs="*", type=Path, help="files or folders (.md, .txt, .html, .pdf, .docx)")
    ing.add_argument("--rebuild", action="store_true", help="start from an empty index")
    ing.add_argument("--approve", metavar="DOC_ID", action="append", default=[],
                     help="serve a document held back by screening, as it is now (after reading it)")
    ing.add_argument("--held", action="store_true", help="list the documents held back by screening")
    ing.add_argument("--dry-run", action="store_true",
                     help="show what each file would give (characters in, indexed, passages); change nothing")
    fb = sub.add_parser("feedback", help="family feedback stored by the web app")
    fb_sub = fb.add_subparsers(dest="feedback_command", required=True)
    exp = fb_sub.add_parser("export", help="write all feedback as CSV")
    exp.add_argument("--out", type=Path, default=None, help="CSV file to write (default: standard output)")
    return p


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "ask" in argv and "--json" in argv
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        if want_json and exc.code:  # argparse has printed the usage on stderr; stdout still gets its object
            _emit(_error_object("", "the command line could not be read (see the usage above)"))
        raise
    try:
        settings = settings or get_settings()
        if args.command == "ask":
            return _ask(args, settings)
        if args.command == "ingest":
            return _ingest(args, settings)
        if args.command == "explain":
            return _explain(args, settings)
        return _feedback_export(args, settings)
    except KeyboardInterrupt:
        if want_json:
            _emit(_error_object("", "interrupted"))
        return 130
    except Exception as exc:  # one line that says what to do, never a bare traceback
        logging.getLogger("bot").debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        if want_json:
            _emit(_error_object(_arg_text(args.question) if args.command == "ask" and args.question else "", str(exc)))
        return 1


def _error_object(question: str, reason: str) -> dict:
    return Answer(question=question[:200], kind="error", answer=f"error: {reason}").to_json_dict()


def _emit(obj: dict) -> None:
    """Print one JSON object on its own line; text the terminal cannot encode is written as \\u escapes."""
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        line = json.dumps(obj, ensure_ascii=True)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _latin1_for_bad_bytes(exc: UnicodeError) -> tuple[str, int]:
    """Bytes that are not UTF-8 in a command-line question are read as Latin-1 (a '°' typed in an old terminal)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("bot-latin1", _latin1_for_bad_bytes)


def _arg_text(arg: str) -> str:
    """A command-line argument as text, even when its bytes were not UTF-8 (Python keeps them as surrogates)."""
    try:
        arg.encode("utf-8")
        return arg
    except UnicodeEncodeError:
        return os.fsencode(arg).decode("utf-8", "bot-latin1")


def _ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.assistant import build_assistant

    if args.batch is None and args.question is None:
        print("error: give a question in quotes, or --batch FILE.jsonl", file=sys.stderr)
        return 2
    if args.batch is not None and not args.batch.is_file():
        print(f"error: {args.batch}: no such file", file=sys.stderr)
        return 2
    assistant = build_assistant(settings, quick=args.batch is None)  # one question: start fast
    if args.batch is not None:
        with args.batch.open("rb") as lines:
            for obj in run_batch(assistant, lines):
                _emit(obj)
        return 0
    answer = assistant.ask(_arg_text(args.question))
    if args.json:
        _emit(answer.to_json_dict())
    else:
        print(format_answer(answer))
    return 1 if answer.kind == "error" else 0


def run_batch(assistant, data: bytes | Iterable[bytes]) -> Iterator[dict]:
    """One answer object per non-blank input line, in order; a bad line gets kind 'error' and the batch goes on.

    Whatever a line holds (invalid UTF-8, lone surrogate escapes, 100,000 nested brackets, a JSON value
    that is not an object, a history of any size) it gets its own object; nothing ends the batch.
    """
    lines = data.splitlines() if isinstance(data, bytes) else data
    for lineno, raw in enumerate(lines, 1):
        if raw.strip():
            yield _one_line(assistant, raw, f"line-{lineno}")


def _one_line(assistant, raw: bytes, qid: str) -> dict:
    msgs = assistant.messages
    try:
        obj = json.loads(raw.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        if obj.get("id") is not None:
            qid = str(obj["id"])[:200]
        question = obj.get("question")
        history = obj.get("history") or []
        if not isinstance(history, list):
            raise ValueError("history must be a list")
    except UnicodeDecodeError:
        return _bad_line(msgs, qid, "not UTF-8 text")
    except RecursionError:
        return _bad_line(msgs, qid, "nested too deeply")
    except ValueError as exc:
        return _bad_line(msgs, qid, str(exc).split("\n")[0][:200])
    except Exception as exc:  # noqa: BLE001 - whatever a line holds, the batch goes on
        return _bad_line(msgs, qid, type(exc).__name__)
    try:
        return assistant.ask(question, history=history, qid=qid).to_json_dict()
    except Exception as exc:  # one broken question must not lose the rest of the batch
        logging.getLogger("bot").error("question %s failed: %s", qid, exc)
        shown = question[:200] if isinstance(question, str) else ""
        return Answer(id=qid, question=shown, kind="error", answer=msgs.errors.internal).to_json_dict()


def _bad_line(msgs, qid: str, reason: str) -> dict:
    return Answer(id=qid, question="", kind="error", answer=msgs.render(msgs.errors.bad_line, reason=reason)).to_json_dict()


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
    from bot.documents import format_file_details, format_file_table
    from bot.ingest import ingest

    if args.held:
        return _list_held(settings)
    paths = list(args.paths)
    if args.approve:
        approved = _approve(settings, args.approve)
        if approved is None:
            return 2
        paths += approved
    if args.dry_run:  # no model and no writing: read the files and compare them with the index
        result = ingest(settings, None, paths=paths or None, dry_run=True)
    else:
        from bot.embed import SentenceEmbedder

        embedder = SentenceEmbedder(settings.embedding_model, threads=max(1, settings.torch_threads))
        result = ingest(settings, embedder, paths=paths or None, rebuild=args.rebuild)
        _prepare_start(settings, embedder)
    for problem in result.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    held = {h.doc_id for h in result.held}
    files = [dataclasses.replace(f, held=True) if f.doc_id in held else f for f in result.files]
    if files:
        print(format_file_table(files))
    if args.dry_run and any(not f.problem for f in result.files):
        print("\n" + format_file_details(result.files) + "\n")
    print(result.summary())
    if result.time_line():
        print(result.time_line())
    if args.dry_run:
        return 0 if any(f.passages for f in result.files) else 1
    return 0 if result.chunks or result.held else 1


def _prepare_start(settings: Settings, embedder) -> None:
    """What the first start after an install or a rules change would compute, computed now and kept in cache_dir:
    the safety gate's example vectors, red-flag classifier and examples' check (13 s of CPU with an empty cache,
    against 0.4 s when kept). The entry router is kept with the index itself (bot/router.py)."""
    from bot.safety import SafetyGate, SafetyRulesError

    try:
        SafetyGate.from_dir(settings.prompts_dir, embedder, cache_dir=settings.cache_dir)
    except SafetyRulesError as exc:  # the rules are the start's to report; the documents are indexed
        print(f"note: the safety rules could not be prepared for the next start: {exc}", file=sys.stderr)


def _approve(settings: Settings, doc_ids: list[str]) -> list[Path] | None:
    """Record staff approval of held-back documents; the files to ingest now (None: nothing approved)."""
    from bot.screen import approve

    paths: list[Path] = []
    for doc_id in doc_ids:
        try:
            held = approve(settings.index_dir, doc_id)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return None
        print(f"approved {held.doc_id} ({held.path}); flagged for: " + "; ".join(held.flags), file=sys.stderr)
        paths.append(Path(held.path))
    return paths


def _list_held(settings: Settings) -> int:
    from bot.screen import held_documents

    held = held_documents(settings.index_dir)
    for h in held:
        print(h.line())
    print(f"{len(held)} document(s) held back" + (": approve one with python -m bot ingest --approve DOC_ID" if held else ""))
    return 0


def _feedback_export(args: argparse.Namespace, settings: Settings) -> int:
    from bot.feedback import FeedbackStore

    store = FeedbackStore(settings.feedback_db)
    if args.out is None:
        count = store.export_csv(sys.stdout)
    else:
        count = store.export_csv(args.out)
        print(f"{count} feedback rows written to {args.out}", file=sys.stderr)
    return 0
