"""The learned entry router (bot/router.py) on the real entries' keys and the real embedding model: it must
generalise to phrasings it never saw better than the nearest phrasing does, or it is no second opinion."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest


def _folds(entry_ids: list[str], n: int = 5) -> np.ndarray:
    """Fold of each key: an entry's phrasings are dealt out in turn, so each fold holds out some of every entry's."""
    seen: dict[str, int] = {}
    out = []
    for cid in entry_ids:
        out.append(seen.get(cid, 0) % n)
        seen[cid] = seen.get(cid, 0) + 1
    return np.array(out)


def test_router_names_the_entry_of_a_held_out_phrasing_better_than_the_nearest_phrasing(assistant):
    from bot.router import EntryRouter

    ids, vectors = assistant.index.key_vectors()
    assert len(set(ids)) > 50 and len(ids) > 5 * len(set(ids))
    labels = np.array(ids)
    folds = _folds(ids)
    router_right = nearest_right = 0
    for f in range(5):
        test, train = folds == f, folds != f
        router = EntryRouter.fit(list(labels[train]), vectors[train])
        router_right += sum(router.predict(v)[0] == want for v, want in zip(vectors[test], labels[test], strict=True))
        nearest = labels[train][(vectors[test] @ vectors[train].T).argmax(axis=1)]
        nearest_right += int((nearest == labels[test]).sum())
    router_acc, nearest_acc = router_right / len(ids), nearest_right / len(ids)
    # Measured 2026-11-21: router 0.67, nearest phrasing 0.53 (95 entries, 615 keys).
    assert router_acc >= nearest_acc + 0.05 and router_acc >= 0.6, (router_acc, nearest_acc)


def test_the_assistant_asks_the_router_and_keeps_its_weights(assistant):
    router = assistant.writer.router
    assert router is not None and len(router.classes) == len(set(assistant.index.key_vectors()[0]))
    pick, prob = router.predict(assistant.embedder.encode(["How long does the blinatumomab drip run?"])[0])
    assert pick.startswith("how-blinatumomab-was-given:") and 0.0 < prob <= 1.0
    assert any(p.name.startswith("entry-router-") for p in assistant.settings.cache_dir.glob("*.npz"))


def test_kept_weights_are_found_by_the_keys_texts_without_reading_a_vector(assistant, tmp_path):
    """A start reads the router's weights back by the keys' text hashes and the model: the same weights as keyed by
    the vectors, and no vector is read while they are kept."""
    from bot.cache import ArrayCache
    from bot.router import fitted_router

    ids, vkeys = assistant.index.key_texts()
    ids_v, vectors = assistant.index.key_vectors()
    assert ids == ids_v and len(vkeys) == len(vectors)
    cache = ArrayCache(tmp_path)
    reads: list[int] = []

    def read() -> np.ndarray:
        reads.append(1)
        return vectors

    first = fitted_router(ids, read, cache=cache, texts=["model", *vkeys])
    again = fitted_router(ids, lambda: (_ for _ in ()).throw(AssertionError("a vector was read")), cache=cache,
                          texts=["model", *vkeys])
    by_vectors = fitted_router(ids, vectors, cache=cache)
    assert reads == [1] and first is not None and again is not None and by_vectors is not None
    v = vectors[0]
    assert first.predict(v) == again.predict(v) == by_vectors.predict(v)
    assert fitted_router(ids, read, cache=cache, texts=["another model", *vkeys]) is not None and reads == [1, 1]


# ---------------------------------------------------------------- fitted at ingest, read at start


def _router_of(index_dir: Path):
    from bot.router import EntryRouter
    from bot.store import Index

    index = Index(index_dir)
    try:
        path = index.stored("router")
        return index.marker.get("router"), (EntryRouter.load(path) if path is not None else None), path
    finally:
        index.close()


@pytest.fixture
def counted_fits(monkeypatch) -> list[int]:
    """Every fit of the entry router, by its number of keys."""
    from bot.router import EntryRouter

    fits: list[int] = []
    real = EntryRouter.fit.__func__

    def fit(cls, entry_ids, vectors, c=30.0):
        fits.append(len(entry_ids))
        return real(cls, entry_ids, vectors, c)

    monkeypatch.setattr(EntryRouter, "fit", classmethod(fit))
    return fits


def test_the_ingest_stores_the_router_and_a_start_reads_it_without_fitting(tmp_path, corpus, embedder, counted_fits):
    """The first start after an ingest (a fresh install, a benchmark, CI, a new leaflet) does not pay the fit, even
    with an empty cache: the generation keeps its router, written before its marker."""
    from bot.assistant import build_assistant
    from bot.ingest import ingest
    from bot.settings import Settings

    s = Settings(index_dir=tmp_path / "index", knowledge_dir=corpus, cache_dir=tmp_path / "cache", sync_knowledge=False)
    ingest(s, embedder, progress=False)
    record, stored, path = _router_of(s.index_dir)
    assert len(counted_fits) == 1 and record["keys"] == counted_fits[0] and path.name == "router.npz"
    assert stored is not None and record["entries"] == len(stored.classes) >= 10

    shutil.rmtree(s.cache_dir)  # nothing kept outside the index
    assistant = build_assistant(s.model_copy(update={"cache_dir": tmp_path / "empty-cache"}), embedder=embedder)
    assert counted_fits == [record["keys"]]  # no fit at start
    router = assistant.writer.router
    v = embedder.encode(["How long does the blinatumomab drip run?"])[0]
    assert router is not None and router.classes == stored.classes and router.predict(v) == stored.predict(v)
    assert assistant.start_cpu_timings["index_open"] < 1.0


def test_a_change_keeps_the_router_when_the_keys_stay_and_refits_it_when_they_change(tmp_path, corpus, embedder,
                                                                                      counted_fits):
    from bot.ingest import ingest
    from bot.settings import Settings

    s = Settings(index_dir=tmp_path / "index", knowledge_dir=corpus, cache_dir=tmp_path / "cache")
    ingest(s, embedder, progress=False)
    first, _, first_path = _router_of(s.index_dir)
    (corpus / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward phone line is open day and night. Parents park free.\n")
    ingest(s, embedder, progress=False)  # a leaflet: the same keys, so the same router file (linked), no fit
    second, _, second_path = _router_of(s.index_dir)
    assert counted_fits == [first["keys"]] and first["made"] == "fitted" and second["made"] == "linked"
    assert {k: second[k] for k in ("key", "entries", "keys")} == {k: first[k] for k in ("key", "entries", "keys")}
    assert second_path != first_path
    assert second_path.stat().st_ino == first_path.stat().st_ino

    entry = corpus / "how-blinatumomab-was-given.md"
    entry.write_text(entry.read_text().replace("Also asked as:\n", "Also asked as:\n- Who puts the drip in?\n", 1))
    shutil.rmtree(s.cache_dir)
    ingest(s, embedder, progress=False)  # a new phrasing of an entry: fitted again, at ingest
    third, router, _ = _router_of(s.index_dir)
    assert counted_fits == [first["keys"], first["keys"] + 1] and third["keys"] == first["keys"] + 1
    assert third["key"] != first["key"] and third["made"] == "fitted" and router is not None


def test_no_router_above_the_key_limit_and_none_fitted_at_start(tmp_path, corpus, embedder, counted_fits, monkeypatch):
    import bot.router
    from bot.assistant import build_assistant
    from bot.ingest import ingest
    from bot.settings import Settings

    monkeypatch.setattr(bot.router, "MAX_KEYS", 10)
    s = Settings(index_dir=tmp_path / "index", knowledge_dir=corpus, cache_dir=tmp_path / "cache", sync_knowledge=False)
    ingest(s, embedder, progress=False)
    record, stored, _ = _router_of(s.index_dir)
    assert record is None and stored is None
    assistant = build_assistant(s, embedder=embedder)
    assert assistant.writer.router is None and counted_fits == []


def test_a_generation_written_before_routers_were_stored_still_gets_one(tmp_path, corpus, embedder, counted_fits):
    """An index an older version wrote (its marker names no router) is served as before: the router is read from the
    cache or fitted at start, until the next ingest stores one (even when no document changed)."""
    import json

    from bot.assistant import build_assistant
    from bot.ingest import ingest
    from bot.settings import Settings
    from bot.store import COMPLETE_MARKER, read_pointer

    s = Settings(index_dir=tmp_path / "index", knowledge_dir=corpus, cache_dir=tmp_path / "cache", sync_knowledge=False)
    ingest(s, embedder, progress=False)
    marker_path = s.index_dir / read_pointer(s.index_dir)["dir"] / COMPLETE_MARKER
    marker = json.loads(marker_path.read_text())
    del marker["router"]
    marker_path.write_text(json.dumps(marker))
    assistant = build_assistant(s.model_copy(update={"cache_dir": tmp_path / "empty-cache"}), embedder=embedder)
    assert assistant.writer.router is not None and len(counted_fits) == 2
    assistant.index.close()
    again = ingest(s, embedder, progress=False)
    assert not again.changed and again.generation == 2 and _router_of(s.index_dir)[1] is not None
    assert len(counted_fits) == 2  # the ingest found the weights it had kept for these keys


def test_a_missing_router_file_is_reported_as_damage(tmp_path, corpus, embedder):
    from bot.ingest import ingest
    from bot.settings import Settings
    from bot.store import Index, IndexDamaged, read_pointer

    s = Settings(index_dir=tmp_path / "index", knowledge_dir=corpus, cache_dir=tmp_path / "cache")
    ingest(s, embedder, progress=False)
    (s.index_dir / read_pointer(s.index_dir)["dir"] / "router.npz").unlink()
    with pytest.raises(IndexDamaged, match="router.npz"):
        Index(s.index_dir)
    ingest(s, embedder, progress=False)  # rebuilt from its documents
    assert _router_of(s.index_dir)[1] is not None


def test_entries_with_the_same_phrasings_are_one_class_and_its_state_keeps_them():
    from bot.router import EntryRouter, entry_groups

    groups = entry_groups({"b--c1:x": "k1 k2", "a:y": "k3", "b:x": "k1 k2", "c:z": "k1"})
    assert groups == {"a:y": ("a:y",), "b--c1:x": ("b--c1:x", "b:x"), "c:z": ("c:z",)}
    router = EntryRouter(["a:y", "b--c1:x"], np.eye(2, 3), np.zeros(2), {"b--c1:x": ("b--c1:x", "b:x")})
    again = EntryRouter.from_state(router.state())
    assert again.entries("b--c1:x") == ("b--c1:x", "b:x") and again.entries("a:y") == ("a:y",)
    assert again.entries(None) == () and again.predict(np.array([0.0, 1.0, 0.0]))[0] == "b--c1:x"


def test_a_second_copy_of_an_entry_keeps_its_answer_and_the_router_fits_one_class(tmp_path, corpus, embedder,
                                                                                  counted_fits):
    """The same entry in two documents (two libraries of one hospital group; the benchmark's copies) tied with itself
    (no lead over the next entry) and split the router's probability between the copies, so big libraries lost their
    entry answers; the copies are now one class of the router, which is fitted on one copy's keys."""
    from bot.assistant import build_assistant
    from bot.ingest import ingest
    from bot.settings import Settings

    question = "How is blinatumomab given to babies?"
    answers = []
    for copies in (False, True):
        if copies:
            src = corpus / "how-blinatumomab-was-given.md"
            text = src.read_text().replace("id: how-blinatumomab-was-given\n", "id: how-blinatumomab-was-given-2\n", 1)
            (corpus / "second-library").mkdir()
            (corpus / "second-library" / "given.md").write_text(text.replace('study"\n', 'study (ward 2)"\n', 1))
        s = Settings(index_dir=tmp_path / f"index-{copies}", knowledge_dir=corpus, cache_dir=tmp_path / "cache",
                     sync_knowledge=False)
        ingest(s, embedder, progress=False)
        assistant = build_assistant(s, embedder=embedder)
        router = assistant.writer.router
        answers.append((assistant.ask(question), router, *router.predict(embedder.encode([question])[0])))
    (alone, router1, label1, prob1), (copied, router2, label2, prob2) = answers
    # The same rows (one copy's keys) under the same phrasings: the same fit, read from the cache by the second index.
    assert len(counted_fits) == 1 and _router_of(tmp_path / "index-True")[0]["made"] == "read from the cache"
    assert len(router2.classes) == len(router1.classes) and abs(prob2 - prob1) < 1e-3
    second = [cid for cid in router2.entries(label2) if cid != label1]
    assert label1 in router2.entries(label2) and len(second) == 1
    assert second[0].startswith("how-blinatumomab-was-given-2:")
    assert alone.kind == copied.kind == "answer" and copied.answer == alone.answer


def test_a_one_document_change_updates_the_classes_from_the_change_and_keeps_the_fit(tmp_path, corpus, embedder,
                                                                                      counted_fits):
    """A one-document edit rewrites an entry (a new passage id, the same phrasings): the classes are updated from the
    passages the change removed and wrote (not from every entry's phrasings: linear in the library), the base's
    weights serve the renamed class with no fit, and the router is the one a whole rebuild fits, class for class and
    number for number."""
    from bot.ingest import ingest
    from bot.router import entry_groups
    from bot.settings import Settings
    from bot.store import Index

    src = corpus / "how-blinatumomab-was-given.md"
    (corpus / "second-library").mkdir()
    (corpus / "second-library" / "given.md").write_text(
        src.read_text().replace("id: how-blinatumomab-was-given\n", "id: how-blinatumomab-was-given-2\n", 1))
    s = Settings(index_dir=tmp_path / "index", knowledge_dir=corpus, cache_dir=tmp_path / "cache", sync_knowledge=False)
    ingest(s, embedder, progress=False)
    first, router1, _ = _router_of(s.index_dir)
    assert first["classes"] == "grouped" and len(counted_fits) == 1

    src.write_text(src.read_text() + "\nParents can ask the ward for a parking permit for the whole stay.\n")
    shutil.rmtree(s.cache_dir)  # the weights come from the base generation, not from a cache
    res = ingest(s, embedder, progress=False)
    assert res.updated == ["how-blinatumomab-was-given"]
    second, router2, _ = _router_of(s.index_dir)
    assert second["classes"] == "updated" and second["made"] == "kept from the base generation"
    assert len(counted_fits) == 1 and second["fit_key"] == first["fit_key"] and second["key"] != first["key"]
    assert router2.groups() != router1.groups()  # the rewritten entry's class has its new passage id

    index = Index(s.index_dir)
    try:
        signatures = index.keys().signatures()
    finally:
        index.close()
    assert router2.groups() == entry_groups(signatures)  # what grouping every entry gives
    assert router2.signatures == {label: signatures[label] for label in router2.classes}

    whole = s.model_copy(update={"index_dir": tmp_path / "rebuilt", "cache_dir": tmp_path / "cache-2"})
    ingest(whole, embedder, progress=False)
    third, router3, _ = _router_of(whole.index_dir)
    assert third["made"] == "fitted" and third["fit_key"] == second["fit_key"] and len(counted_fits) == 2
    assert router3.groups() == router2.groups() and router3.classes == router2.classes
    state2, state3 = router2.state(), router3.state()
    assert all(np.array_equal(state2[name], state3[name]) for name in ("coef", "intercept"))
    v = embedder.encode(["Who puts the blinatumomab drip in?"])[0]
    assert router2.predict(v) == router3.predict(v)


def test_regroup_moves_removed_and_added_entries_between_classes():
    from bot.router import entry_groups, regroup

    before = {"a:1": "k1 k2", "b:1": "k1 k2", "c:1": "k3", "d:1": "k4"}
    groups = entry_groups(before)
    sigs = {label: before[label] for label in groups}
    after = {"a:2": "k1 k2", "b:1": "k1 k2", "c:1": "k3", "e:1": "k5"}  # a rewritten, d removed, e new
    assert regroup(groups, sigs, ["a:1", "d:1"], {"a:2": "k1 k2", "e:1": "k5"}) == (
        entry_groups(after), {"a:2": "k1 k2", "c:1": "k3", "e:1": "k5"})
    assert regroup(groups, sigs, [], {}) == (groups, sigs)
