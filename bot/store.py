"""The index: one generation folder per complete ingest, chosen by an atomic pointer file.

Layout of `index_dir`:

    CURRENT            {"generation": 7, "dir": "gen-000007", ...}: replaced by rename, so it always
                       names a complete generation (or is missing: no index yet)
    ingest.lock        held by the one ingest that may write
    gen-000007/        catalog.sqlite3: documents, passages, sentences, keyword index (SQLite FTS5),
                                        word statistics; never changed once complete
                       chroma/:         the passage and sentence vectors (Chroma HNSW collections)
                       INDEX_COMPLETE:  written last

A generation is read-only once the pointer names it, so every question is answered from one
generation: never a mix of an old and a new ingest. `Index` opens the current generation and reads
only what a question needs (a few passages, their sentences and vectors); `Index.is_stale()` tells a
running app that a newer generation is ready.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.documents import Chunk, Sentence

log = logging.getLogger(__name__)

POINTER = "CURRENT"
LOCK_FILE = "ingest.lock"
COMPLETE_MARKER = "INDEX_COMPLETE"  # written last in a generation folder
CATALOG = "catalog.sqlite3"
CHROMA_DIR = "chroma"
INDEX_FORMAT = 5  # 4: knowledge entries' question keys (catalog column + *_keys collection); 5: file stamps.
# raise when what ingest stores changes; an index of another format is rebuilt
GEN_PREFIX = "gen-"
SQL_BATCH = 500  # ids per SQL `IN (...)` or Chroma `get`, far below SQLite's variable limit


class IndexDamaged(RuntimeError):
    """The index on disk cannot be read; the message says what is wrong and what to do."""


# ---------------------------------------------------------------- the pointer


def read_pointer(root: Path) -> dict | None:
    """The pointer to the current generation, or None when there is no index yet."""
    try:
        pointer = json.loads((root / POINTER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexDamaged(f"{root / POINTER} cannot be read ({exc}); run: python -m bot ingest --rebuild") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("dir"), str):
        raise IndexDamaged(f"{root / POINTER} is not an index pointer; run: python -m bot ingest --rebuild")
    return pointer


def write_pointer(root: Path, pointer: dict) -> None:
    """Name a new complete generation in one atomic step (write a temporary file, then rename it over)."""
    tmp = root / f".{POINTER}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(pointer, indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / POINTER)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pointer_stamp(root: Path) -> tuple[int, int, int] | None:
    """A cheap fingerprint of the pointer file (one stat): it changes whenever a new generation is named."""
    try:
        st = os.stat(root / POINTER)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_marker(root: Path) -> dict | None:
    """What the current complete generation recorded (format, counts, source paths), or None."""
    try:
        pointer = read_pointer(root)
    except IndexDamaged:
        return None
    if pointer is None:
        legacy = root / COMPLETE_MARKER  # an index of format <= 2 kept its marker at the top
        try:
            return json.loads(legacy.read_text())
        except (FileNotFoundError, ValueError):
            return None
    try:
        return json.loads((root / pointer["dir"] / COMPLETE_MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return None


def is_complete(root: Path) -> bool:
    """A complete index of the current format is there."""
    marker = read_marker(root)
    return marker is not None and marker.get("format") == INDEX_FORMAT


def fts_term(token: str) -> str:
    """A token as one FTS5 term: plain [a-z0-9] words stay, anything else is hex-encoded (no clash, no syntax)."""
    return token if re.fullmatch(r"[a-z0-9]+", token) else "x_" + token.encode("utf-8").hex()


def bm25_idf(n_docs: int, df: int) -> float:
    """Okapi BM25 inverse document frequency (as rank-bm25 computes it before its epsilon floor)."""
    return math.log(n_docs - df + 0.5) - math.log(df + 0.5)


# ---------------------------------------------------------------- the catalog (SQLite)

CATALOG_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, source TEXT NOT NULL, url TEXT, path TEXT NOT NULL,
    text TEXT NOT NULL, content_hash TEXT NOT NULL, sources TEXT NOT NULL, reviewed TEXT,
    file_stamp TEXT NOT NULL DEFAULT '');  -- size and mtime of the file when it was read: unchanged files are not re-read
CREATE TABLE chunks (
    row INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, title TEXT NOT NULL,
    section TEXT NOT NULL, text TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
    source TEXT NOT NULL, url TEXT, keys TEXT NOT NULL, tokens TEXT NOT NULL);
CREATE INDEX chunks_by_doc ON chunks (doc_id);
CREATE TABLE sentences (
    sentence_id TEXT PRIMARY KEY, chunk_id TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
    grade REAL NOT NULL);
CREATE INDEX sentences_by_chunk ON sentences (chunk_id);
CREATE TABLE terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
CREATE VIRTUAL TABLE chunk_fts USING fts5(terms, tokenize = "unicode61 remove_diacritics 0 tokenchars '_'");
"""


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _chunk_from_row(row: sqlite3.Row | tuple) -> Chunk:
    chunk_id, doc_id, title, section, text, start, end, source, url, keys = row
    return Chunk(chunk_id=chunk_id, doc_id=doc_id, title=title, section=section, text=text, start=int(start),
                 end=int(end), source=source, url=url or None, keys=tuple(json.loads(keys or "[]")))


_WORDS = re.compile(r"[a-z]+")
_CHUNK_COLS = "chunk_id, doc_id, title, section, text, start, end, source, url, keys"


@dataclass
class IndexedDocument:
    doc_id: str
    title: str
    source: str
    url: str | None
    path: str
    text: str
    content_hash: str
    sources: list[dict[str, str]]
    reviewed: str | None = None


# ---------------------------------------------------------------- Chroma


def open_chroma(gen_dir: Path, chroma_url: str | None = None):
    """The Chroma client for a generation: its own folder, or the shared server at `chroma_url`."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        from urllib.parse import urlparse

        url = urlparse(chroma_url if "//" in chroma_url else f"http://{chroma_url}")
        return chromadb.HttpClient(host=url.hostname or "127.0.0.1", port=url.port or 8000,
                                   ssl=url.scheme == "https", settings=settings)
    path = gen_dir / CHROMA_DIR
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


def collection_names(collection: str, generation: int, chroma_url: str | None) -> tuple[str, str, str]:
    """Chunk, sentence and entry-key collection names; on a shared server each generation has its own."""
    prefix = f"{collection}_g{generation}" if chroma_url else collection
    return f"{prefix}_chunks", f"{prefix}_sentences", f"{prefix}_keys"


def chroma_collections(client, names: tuple[str, ...], create: bool = False):
    # We always pass our own vectors: no embedding function, so Chroma never tries to fetch its default model.
    space = {"hnsw:space": "cosine"}
    if create:
        return tuple(client.get_or_create_collection(n, metadata=space, embedding_function=None) for n in names)
    return tuple(client.get_collection(n, embedding_function=None) for n in names)


def get_vectors(col, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Vectors by id, fetched in batches (one `get` for every id fails on a large index)."""
    out: dict[str, np.ndarray] = {}
    for part in _batches(list(dict.fromkeys(ids)), SQL_BATCH):
        got = col.get(ids=list(part), include=["embeddings"])
        for i, vec in zip(got["ids"], got["embeddings"], strict=True):
            out[i] = np.asarray(vec, dtype=np.float32)
    return out


# ---------------------------------------------------------------- reading an index


class Index:
    """One complete generation of the index, read on demand: only what a question needs is loaded."""

    def __init__(self, path: Path, collection: str = "knowledge", chroma_url: str | None = None) -> None:
        self.path = Path(path)
        self.collection = collection
        self.chroma_url = chroma_url
        self._closed = False
        self._stamp = pointer_stamp(self.path)
        pointer = read_pointer(self.path)
        if pointer is None:
            raise FileNotFoundError(f"no complete index at {self.path}; run: python -m bot ingest")
        self.generation = int(pointer.get("generation", 0))
        self.dir = self.path / pointer["dir"]
        marker = read_marker(self.path)
        if marker is None:
            raise IndexDamaged(f"the index folder {self.dir} is incomplete or missing; "
                               "run: python -m bot ingest --rebuild")
        if marker.get("format") != INDEX_FORMAT:
            raise FileNotFoundError(f"the index at {self.path} has an older format; run: python -m bot ingest")
        self.marker = marker
        self._local = threading.local()
        try:
            self._check_catalog()
            self.client = open_chroma(self.dir, chroma_url)
            self.chunks_col, self.sentences_col, self.keys_col = chroma_collections(
                self.client, collection_names(collection, self.generation, chroma_url))
            counts = (self.chunks_col.count(), self.sentences_col.count())
        except IndexDamaged:
            raise
        except Exception as exc:
            raise IndexDamaged(f"the index at {self.dir} is damaged ({type(exc).__name__}: {exc}); "
                               "it is rebuilt from its documents by: python -m bot ingest") from None
        expected = (int(marker.get("chunks", -1)), int(marker.get("sentences", -1)))
        if counts != expected:
            raise IndexDamaged(f"the index at {self.dir} is damaged (vectors for {counts[0]} passages and "
                               f"{counts[1]} sentences, {expected[0]} and {expected[1]} recorded); "
                               "it is rebuilt from its documents by: python -m bot ingest")
        self._vocab: dict[str, int] | None = None
        self._n_chunks = expected[0]
        self._median_grade = float(self.meta("median_grade") or 0.0)

    # ------------------------------------------------------------ plumbing

    def _db(self) -> sqlite3.Connection:
        """This thread's read-only connection (a complete generation never changes: `immutable`)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            db = self.dir / CATALOG
            if not db.is_file():
                raise IndexDamaged(f"{db} is missing; it is rebuilt from its documents by: python -m bot ingest")
            conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            self._local.conn = conn
        return conn

    def _check_catalog(self) -> None:
        try:
            fmt = self.meta("format")
        except sqlite3.DatabaseError as exc:
            raise IndexDamaged(f"{self.dir / CATALOG} is damaged ({exc}); "
                               "it is rebuilt from its documents by: python -m bot ingest") from None
        if fmt != str(INDEX_FORMAT):
            raise IndexDamaged(f"{self.dir / CATALOG} does not match its marker; run: python -m bot ingest --rebuild")

    def meta(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def is_stale(self) -> bool:
        """True when a newer generation has been named since this one was opened (one stat call)."""
        return pointer_stamp(self.path) != self._stamp

    def close(self) -> None:
        """Release the Chroma client (safe to call twice)."""
        if not self._closed:
            self._closed = True
            try:
                self.client.close()
            except Exception:  # a client on a folder that is already gone
                log.debug("closing the Chroma client failed", exc_info=True)

    # ------------------------------------------------------------ documents

    def doc_ids(self) -> list[str]:
        return [r[0] for r in self._db().execute("SELECT doc_id FROM documents ORDER BY doc_id")]

    def documents(self) -> Iterator[IndexedDocument]:
        """Every indexed document (read one at a time)."""
        for row in self._db().execute("SELECT doc_id FROM documents ORDER BY doc_id").fetchall():
            doc = self.document(row[0])
            if doc is not None:
                yield doc

    def document(self, doc_id: str) -> IndexedDocument | None:
        row = self._db().execute(
            "SELECT doc_id, title, source, url, path, text, content_hash, sources, reviewed FROM documents "
            "WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        return IndexedDocument(doc_id=row[0], title=row[1], source=row[2], url=row[3] or None, path=row[4],
                               text=row[5], content_hash=row[6], sources=json.loads(row[7]), reviewed=row[8])

    def document_text(self, doc_id: str) -> str:
        """The full text of a document as indexed; every quote is a span of it."""
        row = self._db().execute("SELECT text FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            raise KeyError(doc_id)
        return row[0]

    def document_hashes(self) -> dict[str, tuple[str, str]]:
        """doc_id -> (content hash, path) of every indexed document."""
        return {r[0]: (r[1], r[2]) for r in self._db().execute("SELECT doc_id, content_hash, path FROM documents")}

    def file_stamps(self) -> dict[str, tuple[str, str]]:
        """path -> (doc_id, size:mtime stamp of the file when it was read), for skipping unchanged files."""
        return {r[0]: (r[1], r[2]) for r in self._db().execute("SELECT path, doc_id, file_stamp FROM documents")}

    # ------------------------------------------------------------ passages and sentences

    @property
    def chunk_count(self) -> int:
        return self._n_chunks

    def chunks(self, ids: Iterable[str]) -> dict[str, Chunk]:
        """Passages by id (unknown ids are left out)."""
        out: dict[str, Chunk] = {}
        for part in _batches(list(dict.fromkeys(ids)), SQL_BATCH):
            marks = ",".join("?" * len(part))
            for row in self._db().execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE chunk_id IN ({marks})", part):
                out[row[0]] = _chunk_from_row(row)
        return out

    def chunk_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return get_vectors(self.chunks_col, ids)

    def sentences_of(self, chunk_ids: Sequence[str]) -> tuple[list[Sentence], np.ndarray]:
        """The sentences of these passages (passage by passage, in reading order) and their vectors, row-aligned."""
        order = {cid: i for i, cid in enumerate(dict.fromkeys(chunk_ids))}
        sents: list[Sentence] = []
        for part in _batches(list(order), SQL_BATCH):
            marks = ",".join("?" * len(part))
            sents += [Sentence(sentence_id=r[0], chunk_id=r[1], position=int(r[2]), text=r[3], grade=float(r[4]))
                      for r in self._db().execute(
                          "SELECT sentence_id, chunk_id, position, text, grade FROM sentences "
                          f"WHERE chunk_id IN ({marks})", part)]
        sents.sort(key=lambda s: (order[s.chunk_id], s.position))
        if not sents:
            return [], np.zeros((0, 384), dtype=np.float32)
        vecs = get_vectors(self.sentences_col, [s.sentence_id for s in sents])
        return sents, np.vstack([vecs[s.sentence_id] for s in sents])

    def median_grade(self) -> float:
        """Median reading grade of the indexed sentences (recorded at ingest)."""
        return self._median_grade

    # ------------------------------------------------------------ search

    def dense_chunks(self, query_vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Passage ids and cosine similarities, best first, from Chroma's HNSW index."""
        k = min(k, self._n_chunks)
        if k <= 0:
            return []
        res = self.chunks_col.query(query_embeddings=[query_vector.tolist()], n_results=k, include=["distances"])
        return [(cid, 1.0 - float(d)) for cid, d in zip(res["ids"][0], res["distances"][0], strict=True)]

    dense_search = dense_chunks  # the name used before

    def dense_sentences(self, query_vector: np.ndarray, k: int) -> list[tuple[str, str, float]]:
        """(sentence id, passage id, cosine similarity) of the closest sentences, best first (Chroma HNSW)."""
        k = min(k, int(self.marker.get("sentences", 0)))
        if k <= 0:
            return []
        res = self.sentences_col.query(query_embeddings=[query_vector.tolist()], n_results=k,
                                       include=["distances", "metadatas"])
        return [(sid, meta["chunk_id"], 1.0 - float(d))
                for sid, d, meta in zip(res["ids"][0], res["distances"][0], res["metadatas"][0], strict=True)]

    def dense_keys(self, query_vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Knowledge-entry passage ids and the cosine similarity of their closest question key, best first.

        An entry's keys are its question and its "also asked as" phrasings (LangChain's multi-vector pattern).
        """
        n = min(k * 4, int(self.marker.get("keys", 0)))
        if n <= 0:
            return []
        res = self.keys_col.query(query_embeddings=[query_vector.tolist()], n_results=n,
                                  include=["distances", "metadatas"])
        best: dict[str, float] = {}
        for meta, d in zip(res["metadatas"][0], res["distances"][0], strict=True):
            best[meta["chunk_id"]] = max(best.get(meta["chunk_id"], -1.0), 1.0 - float(d))
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]

    def keyword_chunks(self, tokens: Sequence[str], k: int) -> list[tuple[str, float]]:
        """Passage ids and BM25 scores (higher is better) for the project tokenizer's tokens (SQLite FTS5)."""
        terms = [fts_term(t) for t in dict.fromkeys(tokens) if t in self.vocabulary_counts()]
        if not terms or k <= 0:
            return []
        query = " OR ".join(f'"{t}"' for t in terms)
        rows = self._db().execute(
            "SELECT c.chunk_id, bm25(chunk_fts) AS s FROM chunk_fts JOIN chunks c ON c.row = chunk_fts.rowid "
            "WHERE chunk_fts MATCH ? ORDER BY s LIMIT ?", (query, k)).fetchall()
        return [(cid, -float(s)) for cid, s in rows]

    # ------------------------------------------------------------ word statistics

    def vocabulary_counts(self) -> dict[str, int]:
        """Every token the passages use, with the number of passages that use it."""
        if self._vocab is None:
            self._vocab = dict(self._db().execute("SELECT term, df FROM terms").fetchall())
        return self._vocab

    def words(self) -> dict[str, int]:
        """Every word the passages and the entries' questions use, as written (lower case), with how often.

        What typo correction corrects towards (bot/spelling.py): whole words, not the keyword index's stems.
        """
        if getattr(self, "_words", None) is None:
            counts: Counter[str] = Counter()
            for text, keys in self._db().execute("SELECT text, keys FROM chunks"):
                counts.update(_WORDS.findall(" ".join((text, *json.loads(keys or "[]"))).lower()))
            self._words = dict(counts)
        return self._words

    def vocabulary(self) -> frozenset[str]:
        """The corpus vocabulary (tokens of the project tokenizer), for typo correction."""
        return frozenset(self.vocabulary_counts())

    def idf_table(self, epsilon: float = 0.25) -> dict[str, float]:
        """BM25 idf of every token; common words (negative idf) get `epsilon` x the average, as rank-bm25 does."""
        n = self._n_chunks
        raw = {t: bm25_idf(n, df) for t, df in self.vocabulary_counts().items()}
        floor = epsilon * (sum(raw.values()) / len(raw)) if raw else 0.0
        return {t: (v if v >= 0 else floor) for t, v in raw.items()}

    def idf(self, token: str) -> float:
        """How telling a token is; a token the corpus never uses weighs as much as the rarest one."""
        table = getattr(self, "_idf", None)
        if table is None:
            table = self._idf = self.idf_table()
            self._unseen_idf = max(table.values(), default=1.0)
        return table.get(token, self._unseen_idf)


# ---------------------------------------------------------------- writing a new generation


class IndexWriter:
    """Builds one new generation folder, starting from a copy of the current one (or empty).

    Nothing here is seen by readers until `write_pointer` names the folder, so a run killed at any
    instant leaves the old generation served; the half-built folder is removed by the next run.
    """

    def __init__(self, gen_dir: Path, generation: int, collection: str = "knowledge",
                 chroma_url: str | None = None, base: Index | None = None) -> None:
        import shutil

        self.dir = gen_dir
        self.generation = generation
        self.chroma_url = chroma_url
        if base is not None and not chroma_url:
            shutil.copytree(base.dir, gen_dir, ignore=shutil.ignore_patterns(COMPLETE_MARKER))
        else:
            gen_dir.mkdir(parents=True)
            if base is not None:  # server mode: the vectors are copied on the server below
                shutil.copyfile(base.dir / CATALOG, gen_dir / CATALOG)
        fresh = not (gen_dir / CATALOG).exists()
        self.db = sqlite3.connect(gen_dir / CATALOG)
        self.db.execute("PRAGMA journal_mode = MEMORY")
        self.db.execute("PRAGMA synchronous = OFF")  # an unfinished folder is thrown away, never repaired
        if fresh:
            self.db.executescript(CATALOG_SCHEMA)
        self.client = open_chroma(gen_dir, chroma_url)
        names = collection_names(collection, generation, chroma_url)
        if chroma_url:
            for name in names:  # a leftover of a killed run with the same generation number
                try:
                    self.client.delete_collection(name)
                except Exception:  # noqa: S110 - not there, as expected
                    pass
        self.chunks_col, self.sentences_col, self.keys_col = chroma_collections(self.client, names, create=True)
        self.batch = max(1, min(4000, int(self.client.get_max_batch_size())))
        if base is not None and chroma_url:
            self._copy_collection(base.chunks_col, self.chunks_col, base.chunk_count)
            self._copy_collection(base.sentences_col, self.sentences_col, int(base.marker.get("sentences", 0)))
            self._copy_collection(base.keys_col, self.keys_col, int(base.marker.get("keys", 0)))

    def _copy_collection(self, src, dst, count: int) -> None:
        """Server mode: a new generation's collection starts as a copy of the current one."""
        for offset in range(0, count, self.batch):
            got = src.get(limit=self.batch, offset=offset, include=["embeddings", "metadatas"])
            if got["ids"]:
                dst.add(ids=got["ids"], embeddings=got["embeddings"], metadatas=got["metadatas"] or None)

    # ------------------------------------------------------------ reading what is there

    def document_hashes(self) -> dict[str, tuple[str, str]]:
        return {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT doc_id, content_hash, path FROM documents")}

    def doc_records(self, doc_id: str) -> tuple[dict[str, Chunk], dict[str, str]]:
        """The passages (by id) and sentence texts (by id) stored for a document."""
        chunks = {r[0]: _chunk_from_row(r) for r in self.db.execute(
            f"SELECT {_CHUNK_COLS} FROM chunks WHERE doc_id = ?", (doc_id,))}
        sentences: dict[str, str] = {}
        for part in _batches(list(chunks), SQL_BATCH):
            marks = ",".join("?" * len(part))
            sentences.update(self.db.execute(
                f"SELECT sentence_id, text FROM sentences WHERE chunk_id IN ({marks})", part).fetchall())
        return chunks, sentences

    # ------------------------------------------------------------ changing it

    def put_document(self, doc, file_stamp: str = "") -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO documents (doc_id, title, source, url, path, text, content_hash, sources, reviewed, "
            "file_stamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (doc.doc_id, doc.title, doc.source, doc.url or "", doc.path, doc.text, doc.content_hash,
             json.dumps(list(doc.sources)), getattr(doc, "reviewed", None), file_stamp))

    def delete_document(self, doc_id: str) -> None:
        chunks, sentences = self.doc_records(doc_id)
        self.delete_records(list(chunks), list(sentences))
        self.db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def delete_records(self, chunk_ids: Sequence[str], sentence_ids: Sequence[str]) -> None:
        for part in _batches(list(sentence_ids), self.batch):
            self.sentences_col.delete(ids=list(part))
        for part in _batches(list(chunk_ids), self.batch):
            self.chunks_col.delete(ids=list(part))
            self.keys_col.delete(where={"chunk_id": {"$in": list(part)}})
        for part in _batches(list(sentence_ids), SQL_BATCH):
            marks = ",".join("?" * len(part))
            self.db.execute(f"DELETE FROM sentences WHERE sentence_id IN ({marks})", part)
        for part in _batches(list(chunk_ids), SQL_BATCH):
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT row, tokens FROM chunks WHERE chunk_id IN ({marks})", part).fetchall()
            self.db.executemany("DELETE FROM chunk_fts WHERE rowid = ?", [(r,) for r, _ in rows])
            gone = [(t,) for _, tokens in rows for t in set(json.loads(tokens))]
            self.db.executemany("UPDATE terms SET df = df - 1 WHERE term = ?", gone)
            self.db.execute(f"DELETE FROM chunks WHERE chunk_id IN ({marks})", part)
        self.db.execute("DELETE FROM terms WHERE df <= 0")

    def add_chunks(self, chunks: Sequence[Chunk], tokens: Sequence[list[str]], vectors: np.ndarray) -> None:
        """New passages: their vectors to Chroma, their text and keyword terms to the catalog."""
        for i in range(0, len(chunks), self.batch):
            self.chunks_col.add(ids=[c.chunk_id for c in chunks[i:i + self.batch]],
                                embeddings=vectors[i:i + self.batch].tolist())
        for c, toks in zip(chunks, tokens, strict=True):
            cur = self.db.execute(
                f"INSERT INTO chunks ({_CHUNK_COLS}, tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (c.chunk_id, c.doc_id, c.title, c.section, c.text, c.start, c.end, c.source, c.url or "",
                 json.dumps(list(c.keys)), json.dumps(toks)))
            self.db.execute("INSERT INTO chunk_fts (rowid, terms) VALUES (?, ?)",
                            (cur.lastrowid, " ".join(fts_term(t) for t in toks)))
            self.db.executemany("INSERT INTO terms (term, df) VALUES (?, 1) ON CONFLICT (term) DO UPDATE SET df = df + 1",
                                [(t,) for t in set(toks)])

    def add_keys(self, keys: Sequence[tuple[str, str]], vectors: np.ndarray) -> None:
        """Knowledge entries' questions and phrasings: (passage id, text) with their vectors."""
        for i in range(0, len(keys), self.batch):
            part = keys[i:i + self.batch]
            self.keys_col.add(ids=[f"{cid}:k{hashlib.sha256(text.encode()).hexdigest()[:10]}" for cid, text in part],
                              embeddings=vectors[i:i + self.batch].tolist(),
                              metadatas=[{"chunk_id": cid} for cid, _ in part])

    def add_sentences(self, sentences: Sequence[Sentence], vectors: np.ndarray) -> None:
        for i in range(0, len(sentences), self.batch):
            part = sentences[i:i + self.batch]
            self.sentences_col.add(ids=[s.sentence_id for s in part], embeddings=vectors[i:i + self.batch].tolist(),
                                   metadatas=[{"chunk_id": s.chunk_id} for s in part])
        self.db.executemany(
            "INSERT INTO sentences (sentence_id, chunk_id, position, text, grade) VALUES (?, ?, ?, ?, ?)",
            [(s.sentence_id, s.chunk_id, s.position, s.text, s.grade) for s in sentences])

    # ------------------------------------------------------------ finishing

    def finish(self, extra: dict) -> dict:
        """Record the counts, close everything and write the completion marker (last). Returns the marker."""
        n_chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        n_sents = self.db.execute("SELECT COUNT(*) FROM sentences").fetchone()[0]
        n_docs = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        median = self.db.execute("SELECT grade FROM sentences ORDER BY grade LIMIT 1 OFFSET ?",
                                 (n_sents // 2,)).fetchone()
        paths = sorted(r[0] for r in self.db.execute("SELECT DISTINCT path FROM documents"))
        meta = {"format": str(INDEX_FORMAT), "median_grade": str(median[0] if median else 0.0),
                "generation": str(self.generation)}
        self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
        self.db.commit()
        self.db.execute("PRAGMA journal_mode = DELETE")
        self.db.close()
        counts = (self.chunks_col.count(), self.sentences_col.count())
        if counts != (n_chunks, n_sents):
            raise RuntimeError(f"the vector store holds {counts} records, the catalog {(n_chunks, n_sents)}")
        n_keys = self.keys_col.count()
        self.close()
        marker = {"format": INDEX_FORMAT, "generation": self.generation, "documents": n_docs,
                  "chunks": n_chunks, "sentences": n_sents, "keys": n_keys, "paths": paths, **extra}
        (self.dir / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1))
        return marker

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            log.debug("closing the Chroma client failed", exc_info=True)
