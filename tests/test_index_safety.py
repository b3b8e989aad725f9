"""An index that cannot be lost: one writer at a time, kill -9 at any instant, damage, and a running app that follows."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.ingest import IngestBusy, ensure_index, ingest
from bot.settings import Settings
from bot.store import CATALOG, CHROMA_DIR, KEYWORDS_DIR, Index, IndexDamaged, read_pointer

PROJECT = Path(__file__).resolve().parent.parent




def settings_for(tmp_path: Path, corpus: Path, **kw) -> Settings:
    return Settings(index_dir=tmp_path / "index", knowledge_dir=corpus, **kw)


def env_for(s: Settings, **extra: str) -> dict[str, str]:
    return dict(os.environ, BOT_INDEX_DIR=str(s.index_dir), BOT_KNOWLEDGE_DIR=str(s.knowledge_dir),
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False", **extra)


def start_ingest(s: Settings, *paths: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bot", "ingest", *map(str, paths)], cwd=PROJECT,
                            env=env_for(s, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ingest ended before {path.name}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def leaflets(folder: Path, n: int) -> Path:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        (folder / f"leaflet-{i}.txt").write_text(f"Leaflet {i}\n\nParents on ward {i} may park in bay {i} by the door. "
                                                 f"The ward {i} kitchen has a fridge for milk.\n")
    return folder


def test_a_second_ingest_waits_for_the_first_then_fails_clearly(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus, ingest_lock_timeout=0.5)
    ingest(s, embedder, progress=False)
    holder = start_ingest(s, leaflets(tmp_path / "more", 3), BOT_INGEST_PAUSE="swap")
    try:
        wait_for(s.index_dir / ".paused-swap", holder)
        with pytest.raises(IngestBusy, match="another ingest is writing"):
            ingest(s, embedder, paths=[tmp_path / "more"], progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_two_ingests_at_once_lose_no_document(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Parking\n\nParents park free at the children's entrance.\n")
    b.write_text("Kitchen\n\nThe parents' kitchen on ward 5 has a fridge for expressed milk.\n")
    procs = [start_ingest(s, a), start_ingest(s, b)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "1 added" in out
    assert {"a", "b", "ward", "glossary"} <= set(Index(s.index_dir).doc_ids())


@pytest.mark.parametrize("point", ["writing", "router", "swap", "swapped"])
def test_kill_9_at_any_point_leaves_the_old_or_the_new_index_and_the_next_run_completes(tmp_path, corpus, embedder,
                                                                                          point):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    old = Index(s.index_dir)
    before, old_router = set(old.doc_ids()), old.stored("router").read_bytes()
    old.close()
    more = leaflets(tmp_path / "more", 5)
    proc = start_ingest(s, more, BOT_INGEST_PAUSE=point)
    wait_for(s.index_dir / f".paused-{point}", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    served = Index(s.index_dir)  # opens cleanly: a complete generation, never a half-written one
    expected = before | {f"leaflet-{i}" for i in range(5)} if point == "swapped" else before
    assert set(served.doc_ids()) == expected
    assert served.keyword_chunks(["blinatumomab"], 3)  # and it answers searches
    assert served.stored("router").is_file()  # with the entry router of its own keys (bot/router.py)
    if point != "swapped":  # killed while writing the new router (or before naming it): the old one is served
        assert served.stored("router").read_bytes() == old_router and served.generation == 1
    served.close()

    again = ingest(s, embedder, paths=[more], progress=False)  # running again completes the work
    assert set(Index(s.index_dir).doc_ids()) == before | {f"leaflet-{i}" for i in range(5)}
    assert again.changed == (point != "swapped")
    gens = sorted(p.name for p in s.index_dir.glob("gen-*"))
    assert read_pointer(s.index_dir)["dir"] == gens[-1] and len(gens) <= 2  # the current one and the one it replaced
    assert not list(s.index_dir.glob(".paused-*")) and not list(s.index_dir.glob(".CURRENT.*"))


def test_a_one_document_change_rewrites_only_that_documents_records(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    old = Index(s.index_dir)
    glossary = {c.chunk_id for c in old.chunks(_ids(old, "glossary")).values()}
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward phone line is open day and night for parents.\n\n"
                                     "Parking for parents is free at the children's entrance.\n")
    res = ingest(s, embedder, progress=False)
    assert res.updated == ["ward"] and res.added == [] and 0 < res.embedded <= 3
    new = Index(s.index_dir)
    assert {c.chunk_id for c in new.chunks(_ids(new, "glossary")).values()} == glossary
    assert new.keyword_chunks(["park"], 5)[0][0].startswith("ward:")
    # The report says where the time went, step by step (scripts/benchmark.py records it at x1000).
    steps = res.steps.as_dict()
    assert list(steps) == ["leftovers", "open", "read", "plan", "catalog", "write", "segments", "statistics",
                           "router", "keywords", "flush", "swap"]
    assert all(v["s"] >= 0 and v["cpu_s"] >= 0 for v in steps.values()) and res.time_line().startswith("time per step")
    # The median reading grade read through the grade index is the median of every sentence's grade.
    grades = sorted(r[0] for r in new._db().execute("SELECT grade FROM sentences"))
    assert new.median_grade() == grades[len(grades) // 2]
    assert new.marker["router"]["classes"] == "updated"  # from the change, not from every entry's phrasings


def test_a_change_shares_the_keyword_files_and_leaves_the_served_generation_as_it_was(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    more = leaflets(tmp_path / "more", 2)
    ingest(s, embedder, paths=[corpus, more], progress=False)
    old = Index(s.index_dir)
    before = old.keyword_chunks(["park"], 5)
    assert {cid.split(":")[0] for cid, _ in before} == {"leaflet-0", "leaflet-1"}
    (more / "leaflet-1.txt").unlink()
    res = ingest(s, embedder, paths=[corpus, more], progress=False)
    assert res.removed == ["leaflet-1"]
    new = Index(s.index_dir)
    assert {cid.split(":")[0] for cid, _ in new.keyword_chunks(["park"], 5)} == {"leaflet-0"}
    assert old.keyword_chunks(["park"], 5) == before  # a question in flight still reads the old generation whole
    # The new generation's keyword index is the old one's files (hard links) plus its deletions, not a copy.
    linked = [f for f in (new.dir / KEYWORDS_DIR).iterdir() if f.stat().st_nlink > 1]
    assert linked and all((old.dir / KEYWORDS_DIR / f.name).samefile(f) for f in linked)
    old.close()
    new.close()


def test_a_missing_keyword_index_is_reported_and_rebuilt(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    shutil.rmtree(s.index_dir / read_pointer(s.index_dir)["dir"] / KEYWORDS_DIR)
    with pytest.raises(IndexDamaged, match="damaged.*keyword index.*python -m bot ingest"):
        Index(s.index_dir)
    res = ensure_index(s, embedder)
    assert res is not None and res.rebuilt
    assert Index(s.index_dir).keyword_chunks(["blinatumomab"], 3)


def test_a_sentence_or_question_repeated_across_documents_has_one_vector_and_finds_every_copy(tmp_path, corpus,
                                                                                              embedder):
    """Two libraries holding the same entry, and the same sentence in two leaflets: one vector per text, every
    copy found through it, and a copy removed leaves the other served."""
    s = settings_for(tmp_path, corpus)
    entry = (corpus / "how-blinatumomab-was-given.md").read_text()
    other = tmp_path / "other-hospital"
    other.mkdir()
    (other / "entry.md").write_text(entry.replace("id: how-blinatumomab-was-given", "id: blina-copy", 1))
    for name in ("a", "b"):
        (other / f"{name}.txt").write_text(f"Leaflet {name}\n\nWash your hands before you touch the line. "
                                           f"Ward {name} has a quiet room with a sofa.\n")
    ingest(s, embedder, paths=[corpus, other], progress=False)
    index = Index(s.index_dir)
    db = index._db()
    sentences, texts = db.execute("SELECT COUNT(*), COUNT(DISTINCT text) FROM sentences").fetchone()
    pairs, keys = db.execute("SELECT COUNT(*), COUNT(DISTINCT vkey) FROM entry_keys").fetchone()
    assert texts < sentences and index.segments[0].sentences.count() == texts
    copies = [db.execute("SELECT COUNT(*) FROM entry_keys WHERE chunk_id LIKE ?", (f"{doc}:%",)).fetchone()[0]
              for doc in ("how-blinatumomab-was-given", "blina-copy")]
    without_copy = db.execute("SELECT COUNT(DISTINCT vkey) FROM entry_keys WHERE chunk_id NOT LIKE 'blina-copy:%'")
    assert copies[0] == copies[1] > 0 and keys == without_copy.fetchone()[0]  # the copy's keys add no vector
    assert index.segments[0].keys.count() == keys and index.marker["keys"] == pairs
    wash = embedder.encode(["Wash your hands before you touch the line."])[0]
    hits = index.dense_sentences(wash, 2)
    assert {cid.split(":")[0] for _, cid, _ in hits} == {"a", "b"} and hits[0][2] > 0.99
    question = embedder.encode(["How do babies get blinatumomab?"])[0]
    found = dict(index.dense_keys(question, 2))
    assert {cid.split(":")[0] for cid in found} == {"how-blinatumomab-was-given", "blina-copy"}
    assert min(found.values()) > 0.99
    sents, vectors = index.sentences_of(_ids(index, "b"))
    assert [x.text for x in sents][0].startswith("Wash") and float(vectors[0] @ wash) > 0.99
    index.close()
    (other / "a.txt").unlink()
    (other / "entry.md").unlink()
    ingest(s, embedder, paths=[corpus, other], progress=False)
    index = Index(s.index_dir)
    assert [cid.split(":")[0] for _, cid, _ in index.dense_sentences(wash, 2)][0] == "b"
    assert "a" not in {cid.split(":")[0] for _, cid, _ in index.dense_sentences(wash, 10)}
    assert {cid.split(":")[0] for cid, _ in index.dense_keys(question, 3)} == {"how-blinatumomab-was-given"}
    index.close()


def test_the_word_counts_kept_at_ingest_are_a_count_over_every_passage(tmp_path, corpus, embedder):
    """Typo correction's word counts are kept up to date by each ingest, not recounted at every start."""
    from bot.store import _word_counts

    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward has a quiet room for parents at night.\n")
    (corpus / "glossary.md").unlink()
    ingest(s, embedder, progress=False)
    index = Index(s.index_dir)
    counted = _word_counts(index._db().execute("SELECT text, keys FROM chunks"))
    assert index.words() == dict(counted) and index.words()["quiet"] == 1
    index.close()


def test_a_start_opens_the_index_once(tmp_path, corpus, embedder, monkeypatch):
    """The start's index check hands its opened generation on: the vector store is not opened (and its HNSW
    graphs loaded) a second time."""
    import bot.store
    from bot.assistant import build_assistant

    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    opened: list[Path] = []
    real = bot.store.Index.__init__

    def spy(self, path, *args, **kwargs):
        opened.append(Path(path))
        real(self, path, *args, **kwargs)

    monkeypatch.setattr(bot.store.Index, "__init__", spy)
    assistant = build_assistant(s, embedder=embedder)
    assert opened == [s.index_dir]
    assert assistant.ask("How long is the blinatumomab drip given for?").kind == "answer"


def _ids(index: Index, doc_id: str) -> list[str]:
    return [r[0] for r in index._db().execute("SELECT chunk_id FROM chunks WHERE doc_id = ?", (doc_id,))]


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_damaged_index_is_reported_and_rebuilt_from_the_documents_it_recorded(tmp_path, corpus, embedder, damage,
                                                                                capsys):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    elsewhere = tmp_path / "hospital"
    leaflets(elsewhere, 2)
    ingest(s, embedder, paths=[elsewhere], progress=False)
    db = s.index_dir / read_pointer(s.index_dir)["dir"] / CHROMA_DIR / "chroma.sqlite3"
    if damage == "deleted":
        db.unlink()
    else:
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 3)
    with pytest.raises(IndexDamaged, match="damaged.*python -m bot ingest"):
        Index(s.index_dir)
    res = ensure_index(s, embedder)  # what the next start does
    assert res is not None and res.rebuilt
    assert "Rebuilding the index" in capsys.readouterr().err
    assert set(Index(s.index_dir).doc_ids()) == {"glossary", "how-blinatumomab-was-given", "ward",
                                                "leaflet-0", "leaflet-1"}


def test_documents_whose_files_are_gone_are_rebuilt_from_the_index_own_copy(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    elsewhere = leaflets(tmp_path / "hospital", 1)
    ingest(s, embedder, paths=[elsewhere], progress=False)
    shutil.rmtree(elsewhere)  # the hospital's folder is no longer mounted
    gen = s.index_dir / read_pointer(s.index_dir)["dir"]
    shutil.rmtree(gen / CHROMA_DIR)
    ensure_index(s, embedder)
    index = Index(s.index_dir)
    assert "leaflet-0" in index.doc_ids() and "park in bay 0" in index.document_text("leaflet-0")
    assert (gen.parent / read_pointer(s.index_dir)["dir"] / CATALOG).is_file()


def test_a_running_assistant_answers_from_a_completed_ingest_without_a_restart(tmp_path, corpus, embedder):
    from bot.assistant import build_assistant

    s = settings_for(tmp_path, corpus)
    assistant = build_assistant(s, embedder=embedder)
    question = "Where can parents park their car at the hospital?"
    assert not any(c.doc_id == "parking" for c in assistant.ask(question).citations)
    extra = tmp_path / "parking.txt"
    extra.write_text("Parking\n\nParents can park their car for free in the hospital car park by the children's entrance.\n")
    ingest(s, embedder, paths=[extra], progress=False)
    answer = assistant.ask(question)
    assert answer.kind == "answer" and answer.citations[0].doc_id == "parking"
    assert "park their car for free" in assistant.index.document_text("parking")


def test_leftovers_of_killed_runs_are_cleaned_by_the_next_run(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    (s.index_dir / "gen-000077").mkdir()                     # a half-built generation
    (s.index_dir / ".CURRENT.4242.tmp").write_text("{")      # a pointer killed before its rename
    (s.index_dir / "spare-catalogs" / ".gen-000001.copy3.sqlite3.4242.tmp").write_text("")  # a spare copy killed
    (corpus / "new.txt").write_text("New leaflet\n\nThe play room opens at nine every morning for children.\n")
    ingest(s, embedder, progress=False)
    assert sorted(p.name for p in s.index_dir.iterdir()) == ["CURRENT", "gen-000001", "gen-000002", "ingest.lock",
                                                              "spare-catalogs"]
    assert [p.name for p in (s.index_dir / "spare-catalogs").iterdir()] == ["gen-000001.copy2.sqlite3"]


def test_files_unchanged_since_they_were_indexed_are_not_read_again(tmp_path, corpus, embedder, monkeypatch):
    import bot.ingest

    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    read: list[list[str]] = []
    real = bot.ingest.load_paths

    def spy(paths, *args):
        read.append(sorted(Path(p).name for p in paths))
        return real(paths, *args)

    monkeypatch.setattr(bot.ingest, "load_paths", spy)
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward phone line is open all day and all night.\n")
    res = ingest(s, embedder, progress=False)
    assert read == [["ward.txt"]] and res.updated == ["ward"]
    assert sorted(res.unchanged) == ["glossary", "how-blinatumomab-was-given"]
    assert ensure_index(s, embedder).embedded == 0 and read == [["ward.txt"]]  # a start reads nothing


def test_every_file_of_a_new_generation_reaches_the_disk_before_the_pointer_names_it(tmp_path, corpus, embedder,
                                                                                     monkeypatch):
    """A power cut right after the pointer switch must not find a generation whose data was only in memory."""
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    synced: set[str] = set()
    unsynced_at_switch: list[list[str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst):
        if Path(dst).name == "CURRENT":
            gen = s.index_dir / read_pointer_from(src)
            files = [str(p.resolve()) for p in gen.rglob("*") if p.is_file()]
            unsynced_at_switch.append([f for f in files if f not in synced] + [str(src)] * (str(Path(src).resolve())
                                                                                              not in synced))
        return real_replace(src, dst)

    def read_pointer_from(path) -> str:
        import json

        return json.loads(Path(path).read_text())["dir"]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ingest(s, embedder, paths=[leaflets(tmp_path / "more", 2)], progress=False)
    assert unsynced_at_switch == [[]]


def test_a_change_writes_a_new_vector_segment_and_small_segments_are_merged(tmp_path, corpus, embedder):
    """No copy of the library's vectors per change; a generation never reads more than MAX_SEGMENTS segments,
    answers keep every document, and a replaced passage's old vector is never served."""
    from bot.store import MAX_SEGMENTS

    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    first = Index(s.index_dir)
    assert [seg.number for seg in first.segments] == [1]
    first.close()
    for i in range(MAX_SEGMENTS + 2):
        leaflets(tmp_path / f"more-{i}", 1)
        (tmp_path / f"more-{i}" / "leaflet-0.txt").rename(tmp_path / f"more-{i}" / f"leaflet-{i}.txt")
        ingest(s, embedder, paths=[tmp_path / f"more-{i}"], progress=False)
        index = Index(s.index_dir)
        assert len(index.segments) <= MAX_SEGMENTS
        assert index.segments[0].number == 1  # the largest segment is never copied
        index.close()
    index = Index(s.index_dir)
    assert {f"leaflet-{i}" for i in range(MAX_SEGMENTS + 2)} <= set(index.doc_ids())
    # The ward leaflet rewritten: its old passage stays in segment 1 but is not read any more.
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward has a quiet room for parents at night.\n")
    ingest(s, embedder, progress=False)
    index = Index(s.index_dir)
    ward = [cid for cid in _ids(index, "ward")]
    vector = index.chunk_vectors(ward)[ward[0]]
    hits = index.dense_chunks(vector, 50)
    assert hits[0][0] == ward[0] and len({cid for cid, _ in hits}) == len(hits)
    assert all(cid in set(index.chunks([c for c, _ in hits])) for cid, _ in hits)
    kept = sorted(p.name for p in s.index_dir.glob("gen-*"))
    assert all((s.index_dir / name / "chroma").is_dir() for name in kept)
    assert len(kept) <= MAX_SEGMENTS + 2


def test_searches_look_records_up_by_id_not_by_segment(tmp_path, corpus, embedder):
    """The live-record check reads a few rows by primary key, never every row of a segment."""
    from bot.store import live_sql

    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    index = Index(s.index_dir)
    plan = index._db().execute("EXPLAIN QUERY PLAN " + live_sql("chunks", "chunk_id", 3), ["a", "b", "c", 1]).fetchall()
    assert any("autoindex" in str(row) and "(chunk_id=?)" in str(row) for row in plan), plan
    # A sentence or key vector found is one text: its live records are read by (text, segment), a few rows.
    for table, index_name in (("sentences", "sentences_by_vkey"), ("entry_keys", "entry_keys_by_vkey")):
        plan = index._db().execute(f"EXPLAIN QUERY PLAN SELECT chunk_id FROM {table} WHERE vkey = ? AND seg = ? "
                                   "ORDER BY chunk_id LIMIT ?", ["a", 1, 5]).fetchall()
        assert any(index_name in str(row) and "vkey=? AND seg=?" in str(row) for row in plan), plan


def test_a_segment_search_asks_for_more_only_while_replaced_records_take_places():
    """Exact top k of the live records; few extra records fetched when little was replaced."""
    import numpy as np

    from bot.store import _search

    class Col:
        def __init__(self):
            self.asked: list[int] = []

        def query(self, query_embeddings, n_results, include):
            self.asked.append(n_results)
            ids = [f"r{i}" for i in range(n_results)]
            return {"ids": [ids], "distances": [[i / 1000 for i in range(n_results)]]}

    class Seg:
        record = {"chunks": 1000, "live_chunks": 900}  # 100 replaced records

        def __init__(self):
            self.col_ = Col()

        def col(self, kind):
            return self.col_

        def stale(self, kind):
            return 100

    seg = Seg()
    near_replaced = {f"r{i}" for i in range(60)}  # the 60 nearest records were all replaced
    rows = _search(seg, "chunks", np.zeros(3), 5, lambda rows, k: [r for r in rows if r[0] not in near_replaced])
    assert [r[0] for r in rows[:5]] == ["r60", "r61", "r62", "r63", "r64"]
    assert seg.col_.asked == [15, 60, 105]  # k + 10, then more, capped at k + the replaced count
    seg = Seg()
    rows = _search(seg, "chunks", np.zeros(3), 5, lambda rows, k: rows)
    assert seg.col_.asked == [15] and len(rows) == 15


def test_chromadb_is_imported_without_the_signature_checks_and_the_checks_stay_for_other_code():
    """import_chromadb skips `overrides`' signature checks while chromadb is imported (in a fresh process) and puts
    the decorator back: other code's wrong override is still refused."""
    code = ("import sys, overrides\n"
            "from bot.store import import_chromadb\n"
            "real = overrides.override\n"
            "chromadb = import_chromadb()\n"
            "assert chromadb.PersistentClient and overrides.override is real\n"
            "from chromadb.api.rust import RustBindingsAPI\n"
            "assert RustBindingsAPI.count_collections.__override__\n"
            "class Base:\n"
            "    def f(self, x): return x\n"
            "try:\n"
            "    class Sub(Base):\n"
            "        @overrides.override\n"
            "        def f(self): return 1\n"
            "except TypeError:\n"
            "    print('refused')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "refused"


def _dump(catalog: Path) -> dict[str, list]:
    import sqlite3

    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("meta", "documents", "chunks", "sentences", "entry_keys", "terms", "words")}
    finally:
        db.close()


def test_a_change_starts_from_a_spare_catalog_brought_up_to_date_row_for_row(tmp_path, corpus, embedder, monkeypatch):
    """After a full build, each change starts from a spare (an older generation's catalog) brought up to the
    current one by replaying the documents changed since, not from a copy of the whole catalog; the replayed
    catalog equals the current one row for row, through additions, rewrites, removals and segment merges; a
    damaged spare is given up for a copy."""
    import bot.store as store

    checked: list[int] = []
    real = store.replay_generations

    def replay_and_compare(catalog, current, chain, recorded=None):
        real(catalog, current, chain, recorded)
        assert _dump(catalog) == _dump(current)
        checked.append(len(chain))

    monkeypatch.setattr(store, "replay_generations", replay_and_compare)
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    assert len(list((s.index_dir / store.SPARES_DIR).glob("gen-000001.*.sqlite3"))) == 2
    more = tmp_path / "more"
    leaflets(more, 3)
    steps = [
        lambda: ingest(s, embedder, paths=[more], progress=False),                       # three added
        lambda: (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward has a quiet room for parents.\n"),
        lambda: (more / "leaflet-1.txt").unlink(),                                          # one removed
        lambda: (more / "leaflet-9.txt").write_text("Leaflet 9\n\nThe ward 9 playroom opens at ten.\n"),
        lambda: (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nVisiting ends at eight in the evening.\n"),
        lambda: (more / "leaflet-0.txt").write_text("Leaflet 0\n\nParking is free for parents of babies.\n"),
    ]
    recycled = []
    for i, step in enumerate(steps):
        result = step()
        if not hasattr(result, "changed"):  # a file was changed: ingest both folders
            result = ingest(s, embedder, paths=[corpus, more], progress=False)
        assert result.changed, i
        recycled.append(result.recycled)
    assert all(r is not None for r in recycled), recycled  # every change started from a spare
    assert len(checked) == len(steps) and max(checked) >= 2  # a spare two generations behind was replayed
    index = Index(s.index_dir)
    assert set(index.doc_ids()) == {"how-blinatumomab-was-given", "glossary", "ward", "leaflet-0", "leaflet-2",
                                    "leaflet-9"}
    assert "Parking is free" in index.document_text("leaflet-0")
    assert any(seg.number == index.generation for seg in index.segments)
    index.close()
    assert len(list((s.index_dir / store.SPARES_DIR).glob("*.sqlite3"))) <= 2
    # A damaged spare: the change copies the current catalog instead, and the index is whole.
    for spare in (s.index_dir / store.SPARES_DIR).glob("*.sqlite3"):
        spare.write_bytes(b"not a database")
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward phone line is open day and night for parents.\n")
    result = ingest(s, embedder, paths=[corpus, more], progress=False)
    assert result.recycled is None and result.updated == ["ward"]
    index = Index(s.index_dir)
    assert "phone line" in index.document_text("ward") and len(index.doc_ids()) == 6
    index.close()


def test_a_spare_missing_a_sentence_or_key_of_an_unchanged_document_is_given_up_for_a_copy(tmp_path, corpus,
                                                                                          embedder):
    """The replay's check counts the spare's sentences and question keys against the current marker's counts (the
    current catalog's largest indexes are not read again): a spare that lost a row of a document the change does
    not touch is not used."""
    import sqlite3

    import bot.store as store

    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    for table in ("sentences", "entry_keys"):
        for spare in (s.index_dir / store.SPARES_DIR).glob("*.sqlite3"):
            db = sqlite3.connect(spare)
            db.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} LIMIT 1)"
                       if table == "sentences" else
                       "DELETE FROM entry_keys WHERE chunk_id = (SELECT MIN(chunk_id) FROM entry_keys)")
            db.commit()
            db.close()
        (corpus / "ward.txt").write_text(f"Ward 5 leaflet\n\nThe {table} change: visiting ends at eight.\n")
        result = ingest(s, embedder, progress=False)
        assert result.updated == ["ward"] and result.recycled is None, table  # copied, not replayed
        index = Index(s.index_dir)
        try:
            assert index._db().execute("SELECT COUNT(*) FROM sentences").fetchone()[0] == index.marker["sentences"]
            assert index._db().execute("SELECT COUNT(*) FROM entry_keys").fetchone()[0] == index.marker["keys"]
        finally:
            index.close()
