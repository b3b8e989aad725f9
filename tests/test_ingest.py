"""Ingestion into a real Chroma index: incremental, atomic, and usable for a hospital's own documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.ingest import ingest
from bot.settings import Settings
from bot.store import Index, is_complete, pointer_stamp, read_pointer

PROJECT = Path(__file__).resolve().parent.parent




def settings_for(tmp_path: Path, corpus: Path) -> Settings:
    return Settings(index_dir=tmp_path / "index", knowledge_dir=corpus)


def test_reingesting_unchanged_documents_does_no_work(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    first = ingest(s, embedder, progress=False)
    assert sorted(first.added) == ["glossary", "how-blinatumomab-was-given", "ward"]
    assert first.embedded > 0 and is_complete(s.index_dir)
    stamp = pointer_stamp(s.index_dir)
    again = ingest(s, embedder, progress=False)
    assert again.embedded == 0 and not again.changed
    assert sorted(again.unchanged) == sorted(first.added)
    assert pointer_stamp(s.index_dir) == stamp  # nothing was rewritten


def test_changed_and_removed_documents_are_updated_with_little_embedding(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward phone line is open day and night for parents.\n\n"
                                     "Parking for parents is free at the children's entrance.\n")
    (corpus / "glossary.md").unlink()
    res = ingest(s, embedder, progress=False)
    assert res.updated == ["ward"] and res.removed == ["glossary"]
    assert 0 < res.embedded < 6  # only the new passage and sentence, not the whole corpus
    index = Index(s.index_dir)
    assert set(index.doc_ids()) == {"how-blinatumomab-was-given", "ward"}
    assert "Parking for parents is free" in index.document_text("ward")


def test_extra_corpus_is_added_beside_existing_documents(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "parking.html").write_text("<h1>Parking</h1><p>Parents park free at the children's entrance.</p>")
    res = ingest(s, embedder, paths=[extra], progress=False)
    assert res.added == ["parking"]
    assert {"parking", "ward", "glossary"} <= set(Index(s.index_dir).doc_ids())


class ExplodingEmbedder:
    """An embedder that fails part-way, like a machine running out of memory."""

    def __init__(self, real, fail_after: int) -> None:
        self.real, self.left = real, fail_after

    def encode(self, texts: list[str]) -> np.ndarray:
        self.left -= 1
        if self.left < 0:
            raise MemoryError("simulated failure while embedding")
        return self.real.encode(texts)


def test_a_failed_run_leaves_the_previous_index_whole(tmp_path, corpus, embedder):
    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    before = Index(s.index_dir)
    n_chunks = before.chunk_count
    for i in range(40):
        (corpus / f"extra-{i}.txt").write_text(f"Extra leaflet {i}.\n\n" + f"Sentence {i} about line care. " * 30)
    with pytest.raises(MemoryError):
        ingest(s, embedder=ExplodingEmbedder(embedder, fail_after=1), progress=False)
    after = Index(s.index_dir)
    assert after.chunk_count == n_chunks and is_complete(s.index_dir)
    assert [p.name for p in s.index_dir.glob("gen-*")] == [read_pointer(s.index_dir)["dir"]]  # nothing half-built left


def test_folder_with_no_supported_files_reports_and_indexes_nothing(tmp_path, embedder):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.xlsx").write_bytes(b"PK")
    res = ingest(Settings(index_dir=tmp_path / "index", knowledge_dir=empty), embedder, progress=False)
    assert res.chunks == 0 and any("no supported files" in p for p in res.problems)
    assert not is_complete(tmp_path / "index")


def test_start_up_brings_in_knowledge_edits_and_keeps_extra_documents(tmp_path, corpus, embedder):
    from bot.ingest import ensure_index

    s = settings_for(tmp_path, corpus)
    first = ensure_index(s, embedder)                      # no index yet: built
    assert first is not None and len(first.added) == 3
    extra = tmp_path / "extra.txt"
    extra.write_text("Parking leaflet\n\nParents park free at the children's entrance.\n")
    ingest(s, embedder, paths=[extra], progress=False)
    assert ensure_index(s, embedder).embedded == 0          # nothing changed: no work
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward phone line is open all day and all night.\n")
    res = ensure_index(s, embedder)
    assert res.updated == ["ward"]
    assert "extra" in Index(s.index_dir).doc_ids()          # a document from elsewhere stays


def test_an_index_of_an_older_format_is_rebuilt_with_its_extra_files(tmp_path, corpus, embedder):
    import json

    from bot.ingest import ensure_index
    from bot.store import COMPLETE_MARKER

    s = settings_for(tmp_path, corpus)
    ingest(s, embedder, progress=False)
    extra = tmp_path / "extra.txt"
    extra.write_text("Parking leaflet\n\nParents park free at the children's entrance.\n")
    ingest(s, embedder, paths=[extra], progress=False)
    marker = s.index_dir / read_pointer(s.index_dir)["dir"] / COMPLETE_MARKER
    old = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(old, format=2)))
    assert not is_complete(s.index_dir)
    res = ensure_index(s, embedder)
    assert res is not None and is_complete(s.index_dir)
    assert {"extra", "ward", "glossary"} <= set(Index(s.index_dir).doc_ids())


def test_files_are_resolved_as_path_resolve_resolves_them(tmp_path):
    """Each folder is resolved once; a file that is itself a link, or lies under a linked folder, is resolved as
    Path.resolve() does (the index records files by that path)."""
    from bot.ingest import _resolved

    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "a.md").write_text("a")
    (real / "b.md").write_text("b")
    (tmp_path / "linked").symlink_to(real)
    (real / "c.md").symlink_to(real / "sub" / "a.md")
    files = [tmp_path / "linked" / "sub" / "a.md", real / "b.md", real / "c.md", tmp_path / "linked" / ".." / "real" / "b.md"]
    assert _resolved(files) == [str(f.resolve()) for f in files]
    assert _resolved(files)[2] == str(real / "sub" / "a.md")
