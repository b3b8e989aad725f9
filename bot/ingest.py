"""Build or update the index: documents -> passages and sentences -> embeddings -> a new generation, swapped in atomically.

One ingest design for every case:
- one writer at a time (a file lock in the index folder; a second ingest waits, then fails clearly);
- the new generation starts as a copy of the current one, and only the documents that changed are
  deleted, re-chunked and (for their new passages and sentences only) re-embedded;
- the generation is named by replacing the pointer file (one rename), so a kill at any instant
  leaves the old or the new index served; the next run removes what a killed run left;
- a damaged index, or one of an older format, is rebuilt from the documents it recorded (their
  files, wherever they were, and its own copy of the text of those that are gone).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bot.documents import Chunk, Sentence, SourceDocument, chunk_document, chunk_sentences, find_files, load_paths
from bot.embed import Embedder
from bot.settings import Settings
from bot.steps import Steps
from bot.store import (
    CATALOG,
    CHROMA_DIR,
    COMPLETE_MARKER,
    GEN_PREFIX,
    INDEX_FORMAT,
    LOCK_FILE,
    POINTER,
    GenerationKeys,
    Index,
    IndexDamaged,
    IndexWriter,
    add_spare,
    open_chroma,
    prune_spares,
    read_marker,
    read_pointer,
    write_pointer,
)

log = logging.getLogger(__name__)

DOCS_PER_BATCH = 200  # documents chunked, embedded and written together (bounds memory on big libraries)


class IngestBusy(RuntimeError):
    """Another ingest holds the index lock for longer than we were willing to wait."""


@dataclass
class IngestResult:
    """What an ingest run did (or, for a dry run, would do), for the command line and the tests."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    chunks: int = 0
    embedded: int = 0
    seconds: float = 0.0
    files: list[Any] = field(default_factory=list)  # per-file statistics from the loader (issue 12), one per file
    dry_run: bool = False                            # planned only: nothing was written
    rebuilt: str = ""                                # why the whole index was rebuilt ('' when it was not)
    generation: int | None = None                    # the generation now served
    held: list[Any] = field(default_factory=list)    # flagged documents held back for staff review (bot/screen.py)
    index: Any = None  # ensure_index(keep_open=True): the checked generation, left open for the caller to use and close
    recycled: int | None = None  # the generation whose spare catalog was brought up to date (None: copied or built)
    steps: Steps = field(default_factory=Steps)  # wall and CPU seconds per step of the run (`time_line`)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        if self.dry_run:
            text = (f"dry run, nothing written: {len(self.added)} would be added, {len(self.updated)} updated, "
                    f"{len(self.unchanged)} unchanged, {len(self.removed)} removed")
        else:
            text = (
                f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
                f"{len(self.removed)} removed; {self.chunks} passages in the index; "
                f"{self.embedded} texts embedded in {self.seconds:.1f} s"
            )
        return text + _held_summary(self.held, self.dry_run)

    def time_line(self) -> str:
        """Where the run's time went, step by step (empty when nothing was timed)."""
        return f"time per step: {self.steps.line()}" if self.steps.wall else ""


def _held_summary(held: list[Any], dry_run: bool) -> str:
    """The documents held back by screening, one per line, and how staff approve one."""
    if not held:
        return ""
    lines = [f"\n{len(held)} {'would be ' if dry_run else ''}held back for review (not served):"]
    lines += [f"  {h.line()}" for h in held]
    lines.append("  Read each one; to serve it as it is: python -m bot ingest --approve DOC_ID")
    return "\n".join(lines)


def _screen(docs: list[SourceDocument], indexed: dict[str, tuple[str, str]], settings: Settings,
            record: bool = True) -> tuple[list[SourceDocument], list[Any]]:
    """New or changed documents that screening flags (and staff have not approved) are held back."""
    from bot.screen import Screen, hold_back

    return hold_back(docs, indexed, settings.index_dir, Screen.from_dir(settings.prompts_dir), record=record)


def _embed(embedder: Embedder, texts: list[str], label: str, progress: bool) -> np.ndarray:
    """Embed in batches, with a progress bar on a terminal for long runs."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    batch = 64
    bar = None
    if progress and len(texts) >= 4 * batch and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(texts), desc=label, unit="text", file=sys.stderr)
    parts = []
    for i in range(0, len(texts), batch):
        parts.append(embedder.encode(texts[i:i + batch]))
        if bar is not None:
            bar.update(len(texts[i:i + batch]))
    if bar is not None:
        bar.close()
    return np.vstack(parts).astype(np.float32)


def _tokenizer():
    """The keyword tokenizer, and the version of how text is cut (words and sentences): a change rebuilds the index."""
    from bot.sentences import SPLITTER_VERSION
    from bot.words import TOKENIZER_VERSION, tokenize

    return tokenize, f"{TOKENIZER_VERSION}/sentences-{SPLITTER_VERSION}"


# ---------------------------------------------------------------- planning


def _under(path: str, paths: Sequence[Path]) -> bool:
    """True when `path` is one of the given files or inside one of the given folders."""
    for p in paths:
        resolved = str(p.resolve())
        if path == resolved or (p.is_dir() and path.startswith(resolved.rstrip(os.sep) + os.sep)):
            return True
    return False


def file_stamp(path: Path | str) -> str:
    """Size and modification time of a file: when both are as recorded, the file is not read again."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def _resolved(files: Sequence[Path]) -> list[str]:
    """Each file's absolute path with links resolved (`Path.resolve`), resolving each folder once: a file that is
    not itself a link is its resolved folder plus its name (resolve() read every part of every path: 12,000
    files of a one-document change at x1000)."""
    folders: dict[Path, str] = {}
    out: list[str] = []
    for f in files:
        if os.path.islink(f):
            out.append(str(f.resolve()))
            continue
        folder = folders.get(f.parent)
        if folder is None:
            folder = folders[f.parent] = str(f.parent.resolve())
        out.append(os.path.join(folder, f.name))
    return out


@dataclass
class _Loaded:
    documents: list[SourceDocument]
    problems: list[str]
    files: list[Any]
    skipped: list[str]          # ids of documents whose files are unchanged since they were indexed (not read)
    stamps: dict[str, str]      # path -> file stamp taken before the file was read


def _load(paths: list[Path], base: Index | None, settings: Settings) -> _Loaded:
    """Read the files under `paths`, except those whose size and time match what the index recorded."""
    files, problems = find_files(paths)
    known = base.file_stamps() if base is not None else {}
    stamps: dict[str, str] = {}
    skipped: list[str] = []
    to_read: list[Path] = []
    for f, path in zip(files, _resolved(files), strict=True):
        try:
            stamps[path] = file_stamp(path)
        except OSError:
            stamps[path] = ""
        seen = known.get(path)
        if seen is not None and seen[1] and seen[1] == stamps[path]:
            skipped.append(seen[0])
        else:
            to_read.append(f)
    loaded = load_paths(to_read, settings.chunk_size, settings.chunk_overlap) if to_read else None
    return _Loaded(documents=list(loaded.documents) if loaded else [],
                   problems=problems + (list(loaded.problems) if loaded else []),
                   files=list(loaded.files) if loaded else [], skipped=skipped, stamps=stamps)


def _plan(docs: list[SourceDocument], old: dict[str, tuple[str, str]], paths: Sequence[Path],
          result: IngestResult, skipped: Sequence[str] = ()) -> tuple[list[SourceDocument], list[str]]:
    """Which documents to (re)write and which to remove; fills added/updated/unchanged/removed."""
    result.unchanged.extend(skipped)
    new_ids = {d.doc_id for d in docs} | set(skipped)
    for doc_id, (_, path) in sorted(old.items()):
        # A document indexed from a folder given here whose file is gone is removed; one whose file is still
        # there but could not be loaded this time keeps its indexed version; others are not ours to touch.
        if doc_id not in new_ids and _under(path, paths) and not Path(path).exists():
            result.removed.append(doc_id)
    write: list[SourceDocument] = []
    for doc in docs:
        before = old.get(doc.doc_id)
        if before is None:
            result.added.append(doc.doc_id)
            write.append(doc)
        elif before[0] != doc.content_hash:
            result.updated.append(doc.doc_id)
            write.append(doc)
        else:
            result.unchanged.append(doc.doc_id)
    return write, result.removed


# ---------------------------------------------------------------- the lock and leftovers


def _lock(root: Path, timeout: float):
    from filelock import FileLock

    return FileLock(str(root / LOCK_FILE), timeout=timeout)


def _clean_leftovers(root: Path, collection: str, chroma_url: str | None) -> None:
    """Remove what killed or finished runs left: unnamed generations, all but the last replaced one, old layouts.

    A generation folder that is no longer read as a generation but holds a vector segment the current or
    the previous generation reads keeps that segment (its chroma/ folder) and loses the rest.
    """
    pointer = read_pointer(root)
    current = pointer["dir"] if pointer else None
    gens = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith(GEN_PREFIX))
    older = [d for d in gens if current and d.name < current and (d / COMPLETE_MARKER).exists()]
    keep = {current, older[-1].name if older else None}  # the previous one may still serve a question in flight
    segments = _segments_read_by(root, [n for n in keep if n])
    for d in gens:
        if d.name in keep:
            continue
        number = d.name[len(GEN_PREFIX):]
        if number.isdigit() and (d / COMPLETE_MARKER).exists() and (d / CATALOG).is_file():
            # A complete generation's catalog becomes a spare: a later ingest brings it up to date by replaying
            # the documents changed since, instead of copying the whole current catalog (bot/store.py).
            add_spare(root, d / CATALOG, int(number), move=True)
        if number.isdigit() and int(number) in segments:
            for item in d.iterdir():
                if item.name == CHROMA_DIR:
                    continue
                if item.is_dir():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)
        else:
            shutil.rmtree(d, ignore_errors=True)
    for f in [*root.glob(f".{POINTER}.*.tmp"), *root.glob(".paused-*")]:
        f.unlink(missing_ok=True)
    prune_spares(root)
    if current:  # an index of format <= 2 lived at the top of the folder
        for name in (COMPLETE_MARKER, "chroma.sqlite3"):
            (root / name).unlink(missing_ok=True)
        for d in root.iterdir():
            if d.is_dir() and not d.name.startswith(GEN_PREFIX) and (d / "header.bin").exists():
                shutil.rmtree(d, ignore_errors=True)
    for d in root.parent.glob(f".{root.name}.*-*"):  # the old swap's temporary folders
        if d.is_dir() and (".building-" in d.name or ".old-" in d.name):
            shutil.rmtree(d, ignore_errors=True)
    if chroma_url:
        client = open_chroma(root, chroma_url)
        for col in client.list_collections():
            name = col if isinstance(col, str) else col.name
            gen = name[len(collection) + 2:].split("_")[0] if name.startswith(f"{collection}_g") else ""
            if gen.isdigit() and int(gen) not in segments:
                client.delete_collection(name)


def _segments_read_by(root: Path, gen_names: list[str]) -> set[int]:
    """The vector segments these generations read (each generation's own, at least)."""
    import json

    out: set[int] = set()
    for name in gen_names:
        out.add(int(name[len(GEN_PREFIX):]))
        try:
            marker = json.loads((root / name / COMPLETE_MARKER).read_text())
        except (OSError, ValueError):
            continue
        out.update(int(s["number"]) for s in marker.get("segments", []))
    return out


# ---------------------------------------------------------------- recovery


def _recorded_documents(root: Path) -> tuple[list[SourceDocument], list[Path]]:
    """The documents an unusable index recorded: its own copy of their texts (if readable), and their files."""
    paths: set[str] = set()
    docs: list[SourceDocument] = []
    marker = read_marker(root) or {}
    paths.update(marker.get("paths", []))
    try:
        pointer = read_pointer(root) or {}
    except IndexDamaged:
        pointer = {}
    paths.update(pointer.get("paths", []))
    if pointer.get("dir"):
        db = root / pointer["dir"] / CATALOG
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                rows = conn.execute("SELECT doc_id, title, text, source, url, path, sources, reviewed FROM documents")
                import json

                for r in rows:
                    docs.append(SourceDocument(doc_id=r[0], title=r[1], text=r[2], source=r[3], url=r[4] or None,
                                               path=r[5], sources=tuple(json.loads(r[6])), reviewed=r[7]))
            finally:
                conn.close()
        except sqlite3.Error:
            docs = []  # the catalog itself is damaged: the files are all we have
    paths.update(d.path for d in docs)
    return docs, [Path(p) for p in sorted(paths) if Path(p).is_file()]


def _open_base(settings: Settings) -> tuple[Index | None, str]:
    """The current generation to start from, or None and why the index must be rebuilt."""
    marker = read_marker(settings.index_dir)
    if marker is None:
        try:
            pointer = read_pointer(settings.index_dir)
        except IndexDamaged as exc:
            return None, str(exc)
        return None, "" if pointer is None else "the index folder it names is missing or incomplete"
    _, tokenizer_version = _tokenizer()
    if marker.get("format") != INDEX_FORMAT:
        return None, "the index format changed"
    if marker.get("tokenizer") != tokenizer_version:
        return None, "the tokenizer changed"
    try:
        return Index(settings.index_dir, settings.collection, settings.chroma_url), ""
    except (IndexDamaged, FileNotFoundError) as exc:
        return None, str(exc)


# ---------------------------------------------------------------- ingest


def ingest(
    settings: Settings,
    embedder: Embedder | None,
    paths: list[Path] | None = None,
    rebuild: bool = False,
    progress: bool = True,
    dry_run: bool = False,
) -> IngestResult:
    """Add or update the documents under `paths` (default: the knowledge folder).

    Documents already indexed from elsewhere stay; documents that were indexed from a folder given
    here but are no longer in it are removed. Unchanged documents cost nothing, and when nothing
    changed nothing is written. `rebuild` starts from an empty index. `dry_run` only plans.
    """
    started = time.perf_counter()
    paths = [Path(p) for p in (paths or [settings.knowledge_dir])]
    root = settings.index_dir
    if dry_run:
        result = _dry_run(settings, paths)
    else:
        root.mkdir(parents=True, exist_ok=True)
        lock = _lock(root, settings.ingest_lock_timeout)
        from filelock import Timeout

        try:
            lock.acquire()
        except Timeout:
            raise IngestBusy(f"another ingest is writing the index at {root} (waited "
                             f"{settings.ingest_lock_timeout:.0f} s); try again when it has finished") from None
        try:
            result = _ingest_locked(settings, embedder, paths, rebuild, progress)
        finally:
            lock.release()
    result.seconds = time.perf_counter() - started
    return result


def _dry_run(settings: Settings, paths: list[Path]) -> IngestResult:
    loaded = load_paths(paths, settings.chunk_size, settings.chunk_overlap)
    result = IngestResult(problems=list(loaded.problems), files=list(loaded.files), dry_run=True)
    base, _ = _open_base(settings)
    try:
        indexed = base.document_hashes() if base else {}
        docs, result.held = _screen(list(loaded.documents), indexed, settings, record=False)
        _plan(docs, indexed, paths, result)
        result.chunks = base.chunk_count if base else 0
    finally:
        if base is not None:
            base.close()
    return result


def _ingest_locked(settings: Settings, embedder: Embedder | None, paths: list[Path], rebuild: bool,
                   progress: bool) -> IngestResult:
    root = settings.index_dir
    steps = Steps()
    with steps("leftovers"):
        _clean_leftovers(root, settings.collection, settings.chroma_url)
    with steps("open"):
        base, why = (None, "") if rebuild else _open_base(settings)
    recovered: list[SourceDocument] = []
    if base is None and why:
        # Keep every document the old index held: from its files wherever they are, else from its own copy.
        recovered, extra = _recorded_documents(root)
        paths = paths + [p for p in extra if not _under(str(p.resolve()), paths)]
        print(f"Rebuilding the index at {root}: {why}", file=sys.stderr)
    with steps("read"):
        loaded = _load(paths, base, settings)
    result = IngestResult(problems=list(loaded.problems), files=loaded.files, rebuilt=why, steps=steps)
    docs = list(loaded.documents)
    have = {d.doc_id for d in docs}
    docs += [d for d in recovered if d.doc_id not in have and not _under(d.path, paths)]
    try:
        with steps("plan"):
            old = base.document_hashes() if base is not None else {}
            docs, result.held = _screen(docs, old, settings)
            write, removed = _plan(docs, old, paths, result, loaded.skipped)
        if base is not None and not result.changed and "router" in base.marker:
            result.chunks, result.generation = base.chunk_count, base.generation
            return result
        if not docs and not old and not loaded.skipped:
            result.problems.append("no documents to index")
            return result
        if embedder is None:
            raise RuntimeError("documents changed but no embedder was given")
        pointer = read_pointer(root) if not why else None
        generation = int((pointer or {}).get("generation", 0)) + 1
        generation = max(generation, _highest_generation(root) + 1)
        gen_dir = root / f"{GEN_PREFIX}{generation:06d}"
        with steps("catalog"):
            writer = IndexWriter(gen_dir, generation, settings.collection, settings.chroma_url, base=base)
        try:
            with steps("write"):
                for doc_id in removed:
                    writer.delete_document(doc_id)
                for i in range(0, len(write), DOCS_PER_BATCH):
                    _pause(root, "writing")
                    result.embedded += _write_documents(writer, write[i:i + DOCS_PER_BATCH], settings, embedder,
                                                        progress, loaded.stamps)
            _, tokenizer_version = _tokenizer()
            marker = writer.finish({"tokenizer": tokenizer_version},
                                   derive=lambda folder, keys: store_router(folder, keys, settings, base), steps=steps)
        except BaseException:
            writer.close()
            shutil.rmtree(gen_dir, ignore_errors=True)
            raise
        if base is not None:
            base.close()
            base = None
        _pause(root, "swap")
        with steps("swap"):
            write_pointer(root, {"generation": generation, "dir": gen_dir.name, "format": INDEX_FORMAT,
                                 "paths": marker["paths"]})
        _pause(root, "swapped")
        result.chunks, result.generation = marker["chunks"], generation
        with steps("leftovers"):
            _clean_leftovers(root, settings.collection, settings.chroma_url)
            if marker.get("base") is None:
                # A full build leaves two spare copies of its catalog, for the next two changes (each later change
                # then finds the catalog of the generation two before it among the spares).
                for tag in ("copy1", "copy2"):
                    add_spare(root, gen_dir / CATALOG, generation, move=False, tag=tag)
        result.recycled = marker.get("recycled")
        return result
    finally:
        if base is not None:
            base.close()


def _pause(root: Path, point: str) -> None:
    """Test hook: with BOT_INGEST_PAUSE=<point> the run stops here, so a test can kill it at that instant."""
    if os.environ.get("BOT_INGEST_PAUSE") == point:
        (root / f".paused-{point}").touch()
        time.sleep(600)


def _highest_generation(root: Path) -> int:
    nums = [int(d.name[len(GEN_PREFIX):]) for d in root.glob(f"{GEN_PREFIX}*") if d.name[len(GEN_PREFIX):].isdigit()]
    return max(nums, default=0)


def _write_documents(writer: IndexWriter, docs: list[SourceDocument], settings: Settings, embedder: Embedder,
                     progress: bool, stamps: dict[str, str]) -> int:
    """Replace these documents' records, embedding only passages and sentences that are new; returns texts embedded."""
    from bot.readability import reading_grade

    tokenize, _ = _tokenizer()
    drop_chunks: list[str] = []
    drop_sents: list[str] = []
    new_chunks: list[Chunk] = []
    new_sents: list[Sentence] = []
    for doc in docs:
        old_chunks, old_sents = writer.doc_records(doc.doc_id)
        chunks = chunk_document(doc, settings.chunk_size, settings.chunk_overlap)
        sents = [s for c in chunks for s in chunk_sentences(c)]
        keep_c = {c.chunk_id for c in chunks if old_chunks.get(c.chunk_id) == c}
        keep_s = {s.sentence_id for s in sents if old_sents.get(s.sentence_id) == s.text}
        drop_chunks += [cid for cid in old_chunks if cid not in keep_c]
        drop_sents += [sid for sid in old_sents if sid not in keep_s]
        new_chunks += [c for c in chunks if c.chunk_id not in keep_c]
        new_sents += [s for s in sents if s.sentence_id not in keep_s]
    writer.delete_records(drop_chunks, drop_sents)
    for doc in docs:
        writer.put_document(doc, stamps.get(doc.path, ""))
    new_sents = [replace(s, grade=round(reading_grade(s.text), 2)) for s in new_sents]
    chunk_vecs = _embed(embedder, [c.search_text for c in new_chunks], "passages", progress)
    # An entry's question and phrasings are keyword keys to it too (search over questions and answers).
    writer.add_chunks(new_chunks, [tokenize(" ".join((c.search_text, *c.keys))) for c in new_chunks], chunk_vecs)
    # Sentences and keys: one vector per distinct text in the new segment, embedded only when it has none yet.
    embedded = len(new_chunks)
    embedded += writer.add_sentences(new_sents, lambda texts: _embed(embedder, texts, "sentences", progress))
    # Knowledge entries: their question and "also asked as" phrasings are searched as keys to the answer.
    keys = list(dict.fromkeys((c.chunk_id, k) for c in new_chunks for k in c.keys))
    embedded += writer.add_keys(keys, lambda texts: _embed(embedder, texts, "questions", progress))
    return embedded


def model_identity(model: str) -> str:
    """The embedding model's name, and its weights file's size and time when it is a folder."""
    try:
        return f"{model}\x00{file_stamp(os.path.join(model, 'model.safetensors'))}"
    except OSError:
        return model


def store_router(folder: Path, keys: GenerationKeys, settings: Settings, base: Index | None) -> dict:
    """Fit the entry router of a new generation's question keys and write it into the generation's folder, so a
    start reads it and never fits it (bot/router.py). Returns what the marker records: {"router": None} when there
    is no router to fit (fewer than two entries, or more keys than `router.MAX_KEYS`).

    Entries asked by exactly the same phrasings are one class (`router.entry_groups`), fitted on the keys of one of
    them: N copies of a library cost its fit, not N times more, and stay under `router.MAX_KEYS`. A change finds its
    classes from the base generation's router and the passages it removed and wrote (`router.regroup`; recorded as
    `classes: "updated"`), not from every entry's phrasings (`"grouped"`). The weights: the base's file, linked, when
    nothing differs; the base's weights under the new class names when the fit would read the same rows (`fit_key`
    knows the classes by their phrasings, not their names: a one-document edit renames the class of the entry it
    rewrote); else the weights kept in the cache for these rows, or a fit. The record says which (`made`) and the
    CPU seconds it took (`cpu_s`; scripts/benchmark.py reports it).
    """
    from bot.cache import ArrayCache, digest
    from bot.router import MAX_KEYS, ROUTER_FILE, EntryRouter, router_key

    cpu = time.process_time()
    had = base.stored("router") if base is not None else None
    before = _base_router(had)
    groups, signatures, how = _router_classes(keys, before)
    members = {label: group for label, group in groups.items() if len(group) > 1}
    ids, vkeys = keys.texts(groups if members else None)
    if len(groups) < 2 or len(ids) > MAX_KEYS:
        return {"router": None}
    # The fit reads its rows by class and key, and names its classes by their phrasings: not by passage ids (an
    # edit gives the passage it rewrote a new id) nor in the order of the segments holding the vectors (an edit
    # moves that passage to a new segment). The same phrasings are then the same fit, whatever the edit renamed.
    rows = sorted(range(len(ids)), key=lambda i: (signatures[ids[i]], vkeys[i]))
    ids, vkeys = [ids[i] for i in rows], [vkeys[i] for i in rows]
    phrasings = [signatures[cid] for cid in ids]
    order = {sig: str(i) for i, sig in enumerate(sorted(set(phrasings)))}
    fit_key = router_key([order[sig] for sig in phrasings], [model_identity(settings.embedding_model), *vkeys])
    classes = [label for _, label in sorted((sig, label) for label, sig in signatures.items())]  # the fit's order
    listed = "\n".join(f"{label}\x00{chr(1).join(group)}" for label, group in members.items())
    key = digest([fit_key, "\n".join(classes), listed])
    record = {"file": ROUTER_FILE, "key": key, "fit_key": fit_key, "entries": len(groups), "keys": len(ids),
              "entries_with_copies": sum(len(group) for group in members.values()), "classes": how}
    was = (base.marker.get("router") or {}) if base is not None else {}
    _pause(folder.parent, "router")
    if had is not None and was.get("key") == key:
        try:
            os.link(had, folder / ROUTER_FILE)  # a generation's files are never changed: one file for both
            return {"router": {**record, "made": "linked", "cpu_s": round(time.process_time() - cpu, 3)}}
        except OSError:
            pass  # not linkable here (another file system): written below
    if before is not None and was.get("fit_key") == fit_key:
        router, made = before.renamed(classes, members, signatures), "kept from the base generation"
    else:
        made = "read from the cache"

        def fit() -> dict[str, np.ndarray]:
            nonlocal made
            made = "fitted"
            return EntryRouter.fit(phrasings, keys.vectors(groups if members else None)[rows]).state()

        state = ArrayCache(settings.cache_dir).get_or_make("entry-router", fit_key, fit)
        # Weights that do not fit together fail here, not at a start; kept weights may name other classes.
        router = EntryRouter.from_state(state).renamed(classes, members, signatures)
    with open(folder / ROUTER_FILE, "wb") as f:
        np.savez(f, **router.state())
    return {"router": {**record, "made": made, "cpu_s": round(time.process_time() - cpu, 3)}}


def _base_router(path: Path | None):
    """The base generation's router, when it keeps its classes' signatures (else None: the classes are grouped
    again from every entry)."""
    from bot.router import EntryRouter

    if path is None:
        return None
    try:
        router = EntryRouter.load(path)
    except (OSError, ValueError, KeyError):
        return None
    return router if router.signatures else None


def _router_classes(keys: GenerationKeys, before) -> tuple[dict[str, tuple[str, ...]], dict[str, str], str]:
    """The router's classes (label -> entries) and their signatures: updated from the base's router and the
    passages this generation removed and wrote when both are known, else grouped from every entry's phrasings."""
    from bot.router import entry_groups, regroup

    if before is not None and keys.dropped is not None and keys.added is not None:
        groups, signatures = regroup(before.groups(), before.signatures, keys.dropped, keys.signatures(keys.added))
        return groups, signatures, "updated"
    every = keys.signatures()
    groups = entry_groups(every)
    return groups, {label: every[label] for label in groups}, "grouped"


def ensure_index(settings: Settings, embedder: Embedder, keep_open: bool = False) -> IngestResult | None:
    """Make the index match the knowledge folder before answering (first ask or app start).

    No index: build it. A damaged index, or one of an older format: rebuild it from the documents it
    recorded. Otherwise bring in any edit to the knowledge folder; when nothing changed this only
    compares content hashes (without taking the lock) and embeds nothing.

    `keep_open`: when the index was checked and not changed, the result carries the opened generation
    (`result.index`, the caller closes it), so a start does not open the vector store twice.
    """
    base, why = _open_base(settings)
    if base is None:
        label = why or "first run"
        print(f"Building the index from {settings.knowledge_dir} ({label})...", file=sys.stderr)
        result = ingest(settings, embedder, paths=[settings.knowledge_dir], progress=False)
        print(f"Index ready: {result.summary()}", file=sys.stderr)
        return result
    kept = False
    try:
        if not settings.sync_knowledge or not settings.knowledge_dir.is_dir():
            if not keep_open:
                return None
            kept = True
            return IngestResult(chunks=base.chunk_count, generation=base.generation, index=base)
        loaded = _load([settings.knowledge_dir], base, settings)  # unchanged files are not even read
        probe = IngestResult()
        _plan(loaded.documents, base.document_hashes(), [settings.knowledge_dir], probe, loaded.skipped)
        if not probe.changed and "router" in base.marker:  # (an older version's generation: stored once, below)
            probe.problems = list(loaded.problems)
            probe.chunks, probe.generation = base.chunk_count, base.generation
            for problem in probe.problems:
                print(f"skipped: {problem}", file=sys.stderr)
            if keep_open:
                kept, probe.index = True, base
            return probe
    finally:
        if not kept:
            base.close()
    result = ingest(settings, embedder, paths=[settings.knowledge_dir], progress=False)
    for problem in result.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if result.changed:
        print(f"Index updated from {settings.knowledge_dir}: {result.summary()}", file=sys.stderr)
    return result
