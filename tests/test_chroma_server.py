"""Server mode: a real Chroma server on loopback holds the vectors; ingest into it and answer through it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.ingest import ingest
from bot.settings import Settings
from bot.store import CHROMA_DIR, Index, read_pointer
from bot.words import tokenize

PROJECT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("BOT_TEST_CHROMA_PORT", "8001"))


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"chroma run exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"the Chroma server did not listen on port {port}")


@pytest.fixture()
def chroma_server(tmp_path):
    chroma = Path(sys.executable).with_name("chroma")
    if not chroma.exists():
        pytest.skip("the chroma command (from the chromadb package) is not installed")
    log = open(tmp_path / "chroma-server.log", "w")  # a pipe nobody reads would fill up and stall the server
    proc = subprocess.Popen([str(chroma), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1",
                             "--port", str(PORT)], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, ANONYMIZED_TELEMETRY="False"))
    try:
        _wait_for_port(PORT, proc, tmp_path / "chroma-server.log")
        yield f"http://127.0.0.1:{PORT}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_ingest_into_a_chroma_server_and_answer_through_it(tmp_path, chroma_server, embedder):
    from bot.assistant import build_assistant

    corpus = tmp_path / "docs"
    corpus.mkdir()
    for name in ["how-blinatumomab-was-given.md", "glossary.md"]:
        shutil.copy(PROJECT / "knowledge" / name, corpus / name)
    s = Settings(index_dir=tmp_path / "index", knowledge_dir=corpus, chroma_url=chroma_server)
    first = ingest(s, embedder, progress=False)
    assert sorted(first.added) == ["glossary", "how-blinatumomab-was-given"]
    gen = s.index_dir / read_pointer(s.index_dir)["dir"]
    assert not (gen / CHROMA_DIR).exists()  # the vectors are on the server, not in the index folder

    assistant = build_assistant(s, embedder=embedder)
    answer = assistant.ask("How long is the blinatumomab drip given for?")
    assert answer.kind == "answer" and answer.citations[0].doc_id == "how-blinatumomab-was-given"

    # A second generation on the same server: it adds only the new leaflet's vectors, in a new segment (no
    # copy of the library's vectors per generation); the answer follows it.
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nParents can park their car for free by the children's entrance.\n")
    second = ingest(s, embedder, progress=False)
    assert second.added == ["ward"] and 0 < second.embedded <= 3
    answer = assistant.ask("Where can parents park their car?")
    assert answer.kind == "answer" and answer.citations[0].doc_id == "ward"
    index = Index(s.index_dir, chroma_url=chroma_server)
    assert [seg.number for seg in index.segments] == [1, 2]
    assert index.client.get_collection("knowledge_g2_chunks").count() == 1
    index.close()
    # Documents removed, more generations: only the segments the current and the previous generation read stay.
    (corpus / "glossary.md").unlink()
    ingest(s, embedder, progress=False)
    for i in range(4):
        (corpus / f"leaflet-{i}.txt").write_text(f"Leaflet {i}\n\nThe ward {i} kitchen has a fridge for milk.\n")
        ingest(s, embedder, progress=False)
    index = Index(s.index_dir, chroma_url=chroma_server)
    assert len(index.segments) <= 4
    previous = json.loads((s.index_dir / f"gen-{index.generation - 1:06d}" / "INDEX_COMPLETE").read_text())
    read = {seg.number for seg in index.segments} | {seg["number"] for seg in previous["segments"]}
    names = {c if isinstance(c, str) else c.name for c in index.client.list_collections()}
    assert names == {f"knowledge_g{n}_{kind}" for n in read for kind in ("chunks", "sentences", "keys")}
    assert "glossary" not in index.doc_ids() and index.keyword_chunks(tokenize("fridge"), 10)  # stems: "fridg"
    answer = build_assistant(s, embedder=embedder).ask("How long is the blinatumomab drip given for?")
    assert answer.kind == "answer" and answer.citations[0].doc_id == "how-blinatumomab-was-given"
