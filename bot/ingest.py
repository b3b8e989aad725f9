"""Build or update the index: documents -> chunks and sentences -> embeddings -> Chroma, atomically."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bot.documents import Chunk, FileStats, Sentence, SourceDocument, chunk_document, chunk_sentences, load_paths
from bot.embed import Embedder
from bot.readability import reading_grade
from bot.settings import Settings
from bot.store import INDEX_FORMAT, Index, is_complete, read_marker, write_index

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """What an ingest run did, for the command line and the tests."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: list[FileStats] = field(default_factory=list)  # per file: characters in and indexed, passages
    chunks: int = 0
    embedded: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed; {self.chunks} passages in the index; "
            f"{self.embedded} texts embedded in {self.seconds:.1f} s"
        )


def _embed(embedder: Embedder, texts: list[str], label: str, progress: bool) -> np.ndarray:
    """Embed in batches with a progress bar on stderr for long runs."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    from tqdm import tqdm

    batch = 64
    parts = []
    bar = tqdm(total=len(texts), desc=label, unit="text", file=sys.stderr, disable=not progress or len(texts) < batch)
    for i in range(0, len(texts), batch):
        parts.append(embedder.encode(texts[i:i + batch]))
        bar.update(len(texts[i:i + batch]))
    bar.close()
    return np.vstack(parts)


def ingest(
    settings: Settings,
    embedder: Embedder,
    paths: list[Path] | None = None,
    rebuild: bool = False,
    progress: bool = True,
) -> IngestResult:
    """Add or update the documents under `paths` (default: the knowledge folder).

    Documents already indexed from elsewhere stay; documents that were indexed from a folder given
    here but are no longer in it are removed. Unchanged documents are not re-embedded, and when nothing
    changed nothing is written. A new index is written to a temporary folder and swapped in whole, so
    a failure never leaves a half-written index.
    """
    started = time.perf_counter()
    paths = [Path(p) for p in (paths or [settings.knowledge_dir])]
    old = Index(settings.index_dir, settings.collection) if is_complete(settings.index_dir) and not rebuild else None
    try:
        result = _ingest(settings, embedder, paths, old, progress)
    finally:
        if old is not None:
            old.close()
    result.seconds = time.perf_counter() - started
    return result


def _ingest(settings: Settings, embedder: Embedder, paths: list[Path], old: Index | None, progress: bool) -> IngestResult:
    loaded = load_paths(paths, settings.chunk_size, settings.chunk_overlap)
    result = IngestResult(problems=list(loaded.problems), files=list(loaded.files))

    folders = [str(p.resolve()) + os.sep for p in paths if p.is_dir()]
    files = {str(p.resolve()) for p in paths if p.is_file()}
    new_ids = {d.doc_id for d in loaded.documents}
    kept: list[SourceDocument] = []
    if old is not None:
        for doc in old.documents.values():
            if doc.doc_id in new_ids:
                continue
            if doc.path in files or any(doc.path.startswith(f) for f in folders):
                if not Path(doc.path).exists():
                    result.removed.append(doc.doc_id)
                    continue
                # The file is still there but could not be loaded this time: keep the indexed version.
            kept.append(SourceDocument(
                doc_id=doc.doc_id, title=doc.title, text=doc.text, source=doc.source, url=doc.url,
                path=doc.path, sources=tuple(doc.sources),
            ))

    for doc in loaded.documents:
        before = old.documents.get(doc.doc_id) if old else None
        if before is None:
            result.added.append(doc.doc_id)
        elif before.content_hash != doc.content_hash:
            result.updated.append(doc.doc_id)
        else:
            result.unchanged.append(doc.doc_id)

    documents = kept + loaded.documents
    if not documents:
        result.problems.append("no documents to index")
        return result
    if old is not None and not result.changed:
        result.chunks = len(old.chunk_ids)
        return result

    chunks: list[Chunk] = [c for d in documents for c in chunk_document(d, settings.chunk_size, settings.chunk_overlap)]
    sentences: list[Sentence] = [replace(s, grade=round(reading_grade(s.text), 2))
                                 for c in chunks for s in chunk_sentences(c)]

    # Reuse the vectors of passages and sentences that are already in the index.
    old_chunk_vec: dict[str, np.ndarray] = {}
    old_sent_vec: dict[str, np.ndarray] = {}
    if old is not None:
        old_chunk_vec = dict(zip(old.chunk_ids, old.chunk_vectors, strict=True))
        old_sent_vec = {s.sentence_id + "\0" + s.text: v for s, v in zip(old.sentences, old.sentence_vectors, strict=True)}
    todo_chunks = [c for c in chunks if c.chunk_id not in old_chunk_vec]
    todo_sents = [s for s in sentences if s.sentence_id + "\0" + s.text not in old_sent_vec]
    new_chunk_vec = dict(zip((c.chunk_id for c in todo_chunks),
                             _embed(embedder, [c.search_text for c in todo_chunks], "passages", progress), strict=True))
    new_sent_vec = dict(zip((s.sentence_id + "\0" + s.text for s in todo_sents),
                            _embed(embedder, [s.text for s in todo_sents], "sentences", progress), strict=True))
    result.embedded = len(todo_chunks) + len(todo_sents)
    chunk_vectors = np.vstack([new_chunk_vec.get(c.chunk_id, old_chunk_vec.get(c.chunk_id)) for c in chunks])
    sentence_vectors = (
        np.vstack([new_sent_vec.get(k, old_sent_vec.get(k)) for k in (s.sentence_id + "\0" + s.text for s in sentences)])
        if sentences else np.zeros((0, chunk_vectors.shape[1]), dtype=np.float32)
    )

    target = settings.index_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        write_index(tmp, settings.collection, documents, chunks, chunk_vectors, sentences, sentence_vectors)
        if old is not None:
            old.close()  # release the folder before it is replaced
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.chunks = len(chunks)
    return result


def _swap_in(new: Path, target: Path) -> None:
    """Replace `target` by the complete index in `new` with directory renames."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def ensure_index(settings: Settings, embedder: Embedder) -> IngestResult | None:
    """Make the index match the knowledge folder before answering (first ask or app start).

    No index: build it. An index of an older format: rebuild it from the knowledge folder and the
    other files it held. Otherwise bring in any edit to the knowledge folder; when nothing changed
    this only compares content hashes and embeds nothing.
    """
    marker = read_marker(settings.index_dir)
    if marker is None or marker.get("format") != INDEX_FORMAT:
        extra = [Path(p) for p in (marker or {}).get("paths", []) if Path(p).is_file()
                 and not Path(p).resolve().is_relative_to(settings.knowledge_dir.resolve())]
        why = "first run" if marker is None else "the index format changed"
        print(f"Building the index from {settings.knowledge_dir} ({why})...", file=sys.stderr)
        result = ingest(settings, embedder, paths=[settings.knowledge_dir, *extra], rebuild=True)
        print(f"Index ready: {result.summary()}", file=sys.stderr)
        return result
    if not settings.sync_knowledge or not settings.knowledge_dir.is_dir():
        return None
    result = ingest(settings, embedder, paths=[settings.knowledge_dir], progress=False)
    for problem in result.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if result.changed:
        print(f"Index updated from {settings.knowledge_dir}: {result.summary()}", file=sys.stderr)
    return result
