"""The command line as ../shared/contract.md fixes it, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env(knowledge_settings, assistant):
    """Environment pointing the CLI at the session's already built index."""
    e = dict(os.environ)
    e["BOT_INDEX_DIR"] = str(knowledge_settings.index_dir)
    e["BOT_FEEDBACK_DB"] = str(knowledge_settings.feedback_db)
    return e


def run(args: list[str], env: dict, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=PROJECT, env=env, input=stdin,
                          capture_output=True, timeout=300)


def test_ask_json_prints_one_contract_object(env):
    p = run(["ask", "How long is the blinatumomab infusion?", "--json"], env)
    assert p.returncode == 0, p.stderr.decode()
    obj = json.loads(p.stdout)
    assert obj["kind"] == "answer"
    assert {"question", "answer", "citations", "disclaimer", "timings_ms"} <= obj.keys()
    assert obj["timings_ms"]["total"] > 0
    c = obj["citations"][0]
    assert {"n", "doc_id", "title", "source", "url", "quote"} <= c.keys()


def test_ask_plain_shows_sources_and_disclaimer(env):
    p = run(["ask", "What is blinatumomab?"], env)
    out = p.stdout.decode()
    assert p.returncode == 0 and "Sources:" in out and "[1]" in out and "not medical advice" in out


def test_batch_keeps_order_and_survives_bad_lines(env, tmp_path):
    lines = [
        json.dumps({"id": "a", "question": "What is blinatumomab?", "history": []}).encode(),
        b"{not json",
        "caf\xe9".encode("latin-1"),
        json.dumps({"id": "d", "question": "", "history": []}).encode(),
        json.dumps({"id": "e", "question": "and how long is it given for?",
                    "history": [{"role": "user", "content": "What is blinatumomab?"}]}).encode(),
        json.dumps({"id": "f", "question": "my baby is not breathing"}).encode(),
    ]
    f = tmp_path / "batch.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    p = run(["ask", "--batch", str(f)], env)
    assert p.returncode == 0, p.stderr.decode()
    out = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [o["id"] for o in out] == ["a", "line-2", "line-3", "d", "e", "f"]
    assert [o["kind"] for o in out] == ["answer", "error", "error", "error", "answer", "urgent"]
    assert "4 weeks" in out[4]["answer"]


def test_empty_question_is_a_clear_error(env):
    p = run(["ask", "   ", "--json"], env)
    assert p.returncode == 1 and json.loads(p.stdout)["kind"] == "error"


def test_ingest_reports_unchanged_documents_without_work(env):
    run(["ingest"], env)  # picks up any edit made to knowledge/ since the session index was built
    p = run(["ingest"], env)
    assert p.returncode == 0, p.stderr.decode()
    assert "0 added, 0 updated" in p.stdout.decode() and "0 texts embedded" in p.stdout.decode()


def test_ingest_of_a_folder_without_documents_says_so(env, tmp_path):
    (tmp_path / "notes.xlsx").write_bytes(b"PK")
    e = dict(env, BOT_INDEX_DIR=str(tmp_path / "idx"))
    p = run(["ingest", str(tmp_path)], e)
    assert p.returncode == 1 and "no supported files" in p.stderr.decode()


def test_an_ingest_leaves_the_first_start_nothing_to_fit_or_check(env, tmp_path, corpus, embedder, monkeypatch):
    """A fresh install (`python -m bot ingest`, then the app): the first start reads the entry router from the index
    and the safety gate's vectors, classifier and examples' check from the cache; it fits and checks nothing."""
    import bot.triage
    import bot.triage_model
    from bot.assistant import build_assistant
    from bot.router import EntryRouter
    from bot.settings import Settings

    e = dict(env, BOT_INDEX_DIR=str(tmp_path / "idx"), BOT_CACHE_DIR=str(tmp_path / "cache"))
    p = run(["ingest", str(corpus)], e)
    assert p.returncode == 0, p.stderr.decode()

    def refuse(*_args, **_kwargs):
        raise AssertionError("a start fitted or checked what the ingest prepared")

    monkeypatch.setattr(EntryRouter, "fit", refuse)
    monkeypatch.setattr(bot.triage_model.RedFlagClassifier, "__init__", refuse)
    monkeypatch.setattr(bot.triage.Triage, "check_examples", refuse)
    s = Settings(index_dir=tmp_path / "idx", cache_dir=tmp_path / "cache", knowledge_dir=corpus, sync_knowledge=False)
    assistant = build_assistant(s, embedder=embedder)
    assert assistant.writer.router is not None
    assert assistant.ask("How long does the blinatumomab drip run?").kind == "answer"
