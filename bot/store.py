"""The index: one generation folder per complete ingest, chosen by an atomic pointer file.

Layout of `index_dir`:

    CURRENT            {"generation": 7, "dir": "gen-000007", ...}: replaced by rename, so it always
                       names a complete generation (or is missing: no index yet)
    ingest.lock        held by the one ingest that may write
    gen-000007/        catalog.sqlite3: documents, passages, sentences, word statistics; never changed
                                        once complete
                       keywords/:       the keyword index (tantivy: BM25, block-max WAND top k); its
                                        segment files are shared with the previous generation by hard
                                        links (write-once), its small meta files are copied
                       chroma/:         vector segment 7: the passage, sentence and question-key vectors
                                        this ingest added (Chroma HNSW collections)
                       router.npz:      the entry router fitted on this generation's question keys (bot/router.py;
                                        a start reads it, never fits it)
                       INDEX_COMPLETE:  written last; lists the vector segments the generation reads and names the
                                        files written from its keys (`derive` in IndexWriter.finish)

A generation is read-only once the pointer names it, so every question is answered from one
generation: never a mix of an old and a new ingest. `Index` opens the current generation and reads
only what a question needs (a few passages, their sentences and vectors); `Index.is_stale()` tells a
running app that a newer generation is ready.

Vector segments (a log-structured layout): an ingest writes only its new vectors, into a new segment,
and never changes an older one; a generation reads its segments and keeps, of what they hold, only the
records its catalog names in that segment (the `seg` column). So a one-document change costs that
document's vectors plus a copy of the catalog, whatever the size of the library, and several
processes may read a segment while an ingest writes the next. When a generation would read more than
MAX_SEGMENTS segments, or a segment holds more replaced records than live ones, the ingest copies the
live vectors of the small or mostly replaced segments into its new one (the largest segment stays).

One vector per distinct text: a segment holds one sentence vector for every distinct sentence text and
one question-key vector for every distinct key text it needs (their Chroma id is a hash of the text, the
catalog's `vkey`); the catalog says which sentences and which entries' keys have that text. A sentence
or key repeated across documents (a leaflet's boilerplate, the same entry in several libraries) is
embedded, stored and searched once. Passages keep one vector each.
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
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.documents import Chunk, Sentence
from bot.steps import Steps

log = logging.getLogger(__name__)

POINTER = "CURRENT"
LOCK_FILE = "ingest.lock"
COMPLETE_MARKER = "INDEX_COMPLETE"  # written last in a generation folder
CATALOG = "catalog.sqlite3"
CHROMA_DIR = "chroma"
KEYWORDS_DIR = "keywords"
INDEX_FORMAT = 9  # 4: knowledge entries' question keys (catalog column + *_keys collection); 5: file stamps;
# 6: vector segments (catalog `seg` columns, marker `segments`); 7: keyword index in tantivy (was SQLite FTS5);
# 8: one sentence / question-key vector per distinct text in a segment (catalog `vkey`, table `entry_keys`);
# 9: the passages' word counts kept at ingest (table `words`), not counted over every passage at each start.
# raise when what ingest stores changes; an index of another format is rebuilt
GEN_PREFIX = "gen-"
SQL_BATCH = 500  # ids per SQL `IN (...)` or Chroma `get`, far below SQLite's variable limit
MAX_SEGMENTS = 4  # vector segments a generation reads before an ingest merges the smaller ones


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
    _fsync_dir(root)


def fsync_tree(folder: Path) -> int:
    """Flush every file under `folder`, then the folders' entries, to the disk; returns the files flushed.

    Called before the pointer names a new generation: after a power cut the pointer must not name a folder
    whose data files were still only in the page cache.
    """
    count = 0
    for dirpath, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                count += 1
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))
    return count


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
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
    source TEXT NOT NULL, url TEXT, keys TEXT NOT NULL, tokens TEXT NOT NULL,
    seg INTEGER NOT NULL);  -- the vector segment holding this passage's vector and its question keys
CREATE INDEX chunks_by_doc ON chunks (doc_id);
CREATE INDEX chunks_by_seg ON chunks (seg);
CREATE TABLE sentences (
    sentence_id TEXT PRIMARY KEY, chunk_id TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
    grade REAL NOT NULL, seg INTEGER NOT NULL,
    vkey TEXT NOT NULL);  -- the id of its text's vector in segment `seg` (one vector per distinct text)
CREATE INDEX sentences_by_seg ON sentences (seg);
CREATE INDEX sentences_by_chunk ON sentences (chunk_id);
CREATE INDEX sentences_by_vkey ON sentences (vkey, seg);
CREATE TABLE entry_keys (  -- a knowledge entry's question or phrasing: its vector in the segment of its passage
    chunk_id TEXT NOT NULL, vkey TEXT NOT NULL, seg INTEGER NOT NULL, PRIMARY KEY (chunk_id, vkey)) WITHOUT ROWID;
CREATE INDEX entry_keys_by_vkey ON entry_keys (vkey, seg);
CREATE TABLE terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE words (word TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;  -- Index.words(), kept at ingest
"""


# ---------------------------------------------------------------- the keyword index (tantivy)


def keyword_schema():
    """One document per passage: its id (stored, matched whole) and the project tokenizer's tokens.

    The tokens are joined by spaces and cut again by tantivy's whitespace tokenizer, so tantivy indexes
    exactly our tokens (stems, whole numbers); term frequencies are kept for BM25, positions are not.
    """
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("chunk_id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("terms", tokenizer_name="whitespace", index_option="freq")
    return builder.build()


def keyword_top(schema, searcher, terms: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k passages with the best BM25 score for any of these tokens, as (passage id, score), best first."""
    import tantivy

    query = tantivy.Query.boolean_query(
        [(tantivy.Occur.Should, tantivy.Query.term_query(schema, "terms", t)) for t in terms])
    return [(searcher.doc(address)["chunk_id"][0], float(score)) for score, address in searcher.search(query, k).hits]


def share_keyword_files(src: Path, dst: Path) -> None:
    """Start a generation's keyword index from the previous one's without copying its postings.

    Tantivy writes a segment file once and never changes it (a deletion is a new `.del` file, a merge a new
    segment), so segment files are hard-linked (a copy where links are not possible); the files it
    rewrites (meta.json, .managed.json) are copied, and lock files are left behind.
    """
    import shutil

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if not f.is_file() or (f.name.startswith(".tantivy-") and f.name.endswith(".lock")):
            continue
        if f.name.endswith(".json"):
            shutil.copyfile(f, dst / f.name)
            continue
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copyfile(f, dst / f.name)


def vector_key(kind: str, text: str) -> str:
    """The id of a text's vector in a segment: texts that are the same share one vector."""
    return f"{kind[0]}{hashlib.sha256(text.encode('utf-8')).hexdigest()[:24]}"


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _chunk_from_row(row: sqlite3.Row | tuple) -> Chunk:
    chunk_id, doc_id, title, section, text, start, end, source, url, keys = row
    return Chunk(chunk_id=chunk_id, doc_id=doc_id, title=title, section=section, text=text, start=int(start),
                 end=int(end), source=source, url=url or None, keys=tuple(json.loads(keys or "[]")))


_WORDS = re.compile(r"[a-z]+")


def _word_counts(rows: Iterable[tuple[str, str]]) -> Counter[str]:
    """The words (as written, lower case) of passages given as (text, keys as JSON), with how often."""
    counts: Counter[str] = Counter()
    for text, keys in rows:
        counts.update(_WORDS.findall(" ".join((text, *json.loads(keys or "[]"))).lower()))
    return counts
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


_IMPORT_LOCK = threading.Lock()


def _mark_override(method=None, **_options):
    """`overrides.override` without its signature check: marks the method (as the real one does) and returns it."""
    if method is None:
        return _mark_override
    method.__override__ = True
    return method


def import_chromadb(server: bool = False):
    """The chromadb package, imported without the `overrides` package's signature checks.

    chromadb marks about 200 methods `@override`; that decorator compares each method's signature with its
    base class's while the module is imported (disassembling the caller's frame, normalising type hints):
    about a quarter of the CPU that importing chromadb and opening a client cost (0.26 of 1.1 s). Those
    checks are assertions on chromadb's own classes, which its release passed; the decorator is put back right
    after, so any other code keeps them (tests/test_index_safety.py checks both). The modules a client imports
    when it is first made (the embedded Rust bindings, or the HTTP client) are imported here too.
    """
    import importlib
    import sys

    modules = ["chromadb", *(["chromadb.api.fastapi"] if server else
                             ["chromadb.api.rust", "chromadb.telemetry.product.posthog"])]
    if all(m in sys.modules for m in modules):
        return sys.modules["chromadb"]
    import overrides

    with _IMPORT_LOCK:
        saved = overrides.override, overrides.overrides
        overrides.override = overrides.overrides = _mark_override
        try:
            for name in modules:
                importlib.import_module(name)
        finally:
            overrides.override, overrides.overrides = saved
    return sys.modules["chromadb"]


def open_chroma(gen_dir: Path, chroma_url: str | None = None):
    """The Chroma client for a generation: its own folder, or the shared server at `chroma_url`."""
    chromadb = import_chromadb(server=bool(chroma_url))
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


def segment_dir(root: Path, number: int) -> Path:
    """The generation folder that holds vector segment `number` (the ingest of that generation wrote it)."""
    return root / f"{GEN_PREFIX}{number:06d}"


class Segment:
    """One vector segment: three Chroma collections (passages, sentences, question keys), never changed once
    complete. `record` is what the generation's marker says of it (counts of all and of live records)."""

    KINDS = ("chunks", "sentences", "keys")

    def __init__(self, root: Path, record: dict, collection: str, chroma_url: str | None, create: bool = False):
        self.number = int(record["number"])
        self.record = record
        self.client = open_chroma(segment_dir(root, self.number), chroma_url)
        self.chunks, self.sentences, self.keys = chroma_collections(
            self.client, collection_names(collection, self.number, chroma_url), create=create)

    def col(self, kind: str):
        return getattr(self, kind)

    def stale(self, kind: str) -> int:
        """Records of this kind the segment holds that the generation no longer reads."""
        return max(0, int(self.record.get(kind, 0)) - int(self.record.get(f"live_{kind}", 0)))

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # a client on a folder that is already gone
            log.debug("closing the Chroma client failed", exc_info=True)


KEY_ROWS_SQL = "SELECT chunk_id, vkey FROM entry_keys WHERE seg = ? ORDER BY chunk_id, vkey"


class GenerationKeys:
    """A generation's live question keys, read from its catalog: each key's entry (passage id) and vector id (a
    hash of its text), segment by segment in the marker's order; the vectors are read only when asked for."""

    def __init__(self, db: sqlite3.Connection, segments: Sequence[Segment], dropped: Collection[str] | None = None,
                 added: Collection[str] | None = None) -> None:
        self._db, self._segments = db, segments
        # The passages the generation's ingest removed and wrote (None: not known, e.g. a generation built whole):
        # what changed among the entries since the generation it was built from (router.regroup).
        self.dropped, self.added = dropped, added

    def signatures(self, entries: Collection[str] | None = None) -> dict[str, str]:
        """Each entry's key texts (their vector ids in order, joined): entries asked by exactly the same phrasings
        (one entry in several documents, or copies of a library) have the same. Every entry: one scan of the key
        table in the order of its primary key (chunk_id, vkey), no sort (0.07 s of CPU for x100's 180,000 keys);
        of the given passages only (those that have keys are entries): looked up by that key."""
        if entries is None:
            return dict(self._db.execute("SELECT chunk_id, group_concat(vkey, ' ') FROM entry_keys GROUP BY chunk_id"))
        rows: list[tuple[str, str]] = []
        for part in _batches(sorted(entries), SQL_BATCH):
            rows += self._db.execute(f"SELECT chunk_id, vkey FROM entry_keys WHERE chunk_id IN "
                                     f"({','.join('?' * len(part))}) ORDER BY chunk_id, vkey", part).fetchall()
        out: dict[str, list[str]] = {}
        for cid, vkey in rows:
            out.setdefault(cid, []).append(vkey)
        return {cid: " ".join(vkeys) for cid, vkeys in out.items()}

    def _rows(self, entries: Collection[str] | None) -> list[tuple[Segment, list[tuple[str, str]]]]:
        out = []
        for seg in self._segments:
            if entries is None:
                rows = self._db.execute(KEY_ROWS_SQL, (seg.number,)).fetchall()
            else:
                rows = []
                for part in _batches(sorted(entries), SQL_BATCH):
                    rows += self._db.execute(f"SELECT chunk_id, vkey FROM entry_keys WHERE chunk_id IN "
                                             f"({','.join('?' * len(part))}) AND seg = ? ORDER BY chunk_id, vkey",
                                             (*part, seg.number)).fetchall()
            out.append((seg, rows))
        return out

    def texts(self, entries: Collection[str] | None = None) -> tuple[list[str], list[str]]:
        """The keys' entries and vector ids (of these entries only, when given)."""
        rows = self._rows(entries)
        return [cid for _, part in rows for cid, _ in part], [vkey for _, part in rows for _, vkey in part]

    def vectors(self, entries: Collection[str] | None = None) -> np.ndarray:
        """The keys' vectors, in `texts`' order."""
        out: list[np.ndarray] = []
        for seg, rows in self._rows(entries):
            got = get_vectors(seg.keys, [vkey for _, vkey in rows])
            out += [got[vkey] for _, vkey in rows]
        return np.vstack(out) if out else np.zeros((0, 384), dtype=np.float32)


def live_sql(table: str, id_col: str, n: int) -> str:
    """Of n ids, those the catalog reads from a given segment (parameters: the ids, then the segment).

    `+seg`: the ids are looked up by their primary key; SQLite would otherwise pick the segment index and
    read every row of the segment (linear in the library: about 0.6 s an answer at x400).
    """
    return f"SELECT {id_col} FROM {table} WHERE {id_col} IN ({','.join('?' * n)}) AND +seg = ?"


def _search(segment: Segment, kind: str, query_vector: np.ndarray, k: int,
            live: Callable[[list[tuple[str, float]], int], list]) -> list:
    """The k nearest live records of one segment, nearest first.

    `live(rows, k)` turns (vector id, distance) rows, nearest first, into the records the generation reads
    (each live vector stands for one record or more: the passages or sentences with that text), at most k.
    It asks for k vectors plus a few, then for more while replaced vectors take places, up to k plus the
    segment's replaced-vector count: the top k of the live records, exactly, without fetching every
    replaced vector each time.
    """
    total = int(segment.record.get(kind, 0))
    most = min(total, k + segment.stale(kind))
    n = min(most, k + max(k, 10))
    while n > 0:
        res = segment.col(kind).query(query_embeddings=[query_vector.tolist()], n_results=n, include=["distances"])
        kept = live(list(zip(res["ids"][0], res["distances"][0], strict=True)), k)
        if len(kept) >= k or n >= most:
            return kept
        n = min(most, n * 4)
    return []


# ---------------------------------------------------------------- reading an index


class Memo:
    """A bounded, thread-safe map of results that cannot change: a complete generation never changes, so a
    search or a read repeated on one `Index` gives what it gave before (popular questions, every passage's
    sentences). The least recently used are dropped first."""

    MISSING = object()

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, key):
        """The value kept for `key`, or `Memo.MISSING`."""
        with self._lock:
            if key not in self._items:
                return self.MISSING
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, key, compute: Callable[[], object]):
        """The value kept for `key`, computed (outside the lock) and kept when there is none."""
        value = self.peek(key)
        if value is self.MISSING:
            value = compute()
            self.put(key, value)
        return value


MEMO_SEARCHES = 4096  # searches kept per index (a few hundred bytes each)
MEMO_PASSAGES = 8192  # passages whose sentences and vectors are kept (about 10 KB each)


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
        self.segments: list[Segment] = []
        try:
            self._check_catalog()
            for name, found in marker.items():
                if isinstance(found, dict) and found.get("file") and not (self.dir / found["file"]).is_file():
                    raise IndexDamaged(f"{self.dir / found['file']} ({name}) is missing; "
                                       "it is rebuilt from its documents by: python -m bot ingest")
            for record in marker.get("segments", []):
                self.segments.append(Segment(self.path, record, collection, chroma_url))
            self._keywords = self._open_keywords(int(marker.get("chunks", 0)))
            counts = [(seg.number, seg.chunks.count(), seg.sentences.count()) for seg in self.segments]
        except IndexDamaged:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise IndexDamaged(f"the index at {self.dir} is damaged ({type(exc).__name__}: {exc}); "
                               "it is rebuilt from its documents by: python -m bot ingest") from None
        expected = [(seg.number, int(seg.record.get("chunks", -1)), int(seg.record.get("sentences", -1)))
                    for seg in self.segments]
        if counts != expected:
            self.close()
            raise IndexDamaged(f"the index at {self.dir} is damaged (vector segments hold {counts}, "
                               f"{expected} recorded as (segment, passages, sentences)); "
                               "it is rebuilt from its documents by: python -m bot ingest")
        self._by_number = {seg.number: seg for seg in self.segments}
        self._vocab: dict[str, int] | None = None
        self._n_chunks = int(marker.get("chunks", 0))
        self._searches = Memo(MEMO_SEARCHES)
        self._sentences = Memo(MEMO_PASSAGES)
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
        """Release the Chroma clients (safe to call twice)."""
        if not self._closed:
            self._closed = True
            for seg in self.segments:
                seg.close()

    @property
    def client(self):
        """The Chroma client of the newest segment (on a server: the server's)."""
        return self.segments[-1].client

    def _segs_of(self, table: str, id_col: str, ids: Sequence[str]) -> dict[str, int]:
        """id -> the segment holding its vector, for the ids the catalog has."""
        out: dict[str, int] = {}
        for part in _batches(list(dict.fromkeys(ids)), SQL_BATCH):
            marks = ",".join("?" * len(part))
            out.update(self._db().execute(f"SELECT {id_col}, seg FROM {table} WHERE {id_col} IN ({marks})", part))
        return out

    def _vectors(self, kind: str, where: dict[str, int]) -> dict[str, np.ndarray]:
        """Vectors by id from the segments the catalog names."""
        by_seg: dict[int, list[str]] = {}
        for rid, seg in where.items():
            by_seg.setdefault(seg, []).append(rid)
        out: dict[str, np.ndarray] = {}
        for seg, ids in by_seg.items():
            out.update(get_vectors(self._by_number[seg].col(kind), ids))
        return out

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
        return self._vectors("chunks", self._segs_of("chunks", "chunk_id", ids))

    def sentences_of(self, chunk_ids: Sequence[str]) -> tuple[list[Sentence], np.ndarray]:
        """The sentences of these passages (passage by passage, in reading order) and their vectors, row-aligned."""
        wanted = list(dict.fromkeys(chunk_ids))
        got = {cid: self._sentences.peek(cid) for cid in wanted}
        missing = [cid for cid, value in got.items() if value is Memo.MISSING]
        if missing:
            for cid, value in self._read_sentences(missing).items():
                self._sentences.put(cid, value)
                got[cid] = value
        per_chunk = [got[cid] for cid in wanted]
        sents = [s for chunk_sents, _ in per_chunk for s in chunk_sents]
        if not sents:
            return [], np.zeros((0, 384), dtype=np.float32)
        return sents, np.vstack([vecs for chunk_sents, vecs in per_chunk if chunk_sents])

    def _read_sentences(self, chunk_ids: Sequence[str]) -> dict[str, tuple[tuple[Sentence, ...], np.ndarray]]:
        """Each passage's sentences in reading order and their vectors (read-only: the memo shares them)."""
        by_chunk: dict[str, list[Sentence]] = {cid: [] for cid in chunk_ids}
        where: dict[str, int] = {}
        vkey: dict[str, str] = {}
        for part in _batches(list(chunk_ids), SQL_BATCH):
            marks = ",".join("?" * len(part))
            for r in self._db().execute("SELECT sentence_id, chunk_id, position, text, grade, seg, vkey FROM sentences "
                                        f"WHERE chunk_id IN ({marks})", part):
                by_chunk[r[1]].append(Sentence(sentence_id=r[0], chunk_id=r[1], position=int(r[2]), text=r[3],
                                               grade=float(r[4])))
                where[r[6]] = int(r[5])  # a text in two segments: either vector (the same text, the same model)
                vkey[r[0]] = r[6]
        vecs = self._vectors("sentences", where) if where else {}
        out: dict[str, tuple[tuple[Sentence, ...], np.ndarray]] = {}
        for cid, sents in by_chunk.items():
            sents.sort(key=lambda s: s.position)
            rows = (np.vstack([vecs[vkey[s.sentence_id]] for s in sents]) if sents
                    else np.zeros((0, 384), dtype=np.float32))
            rows.flags.writeable = False
            out[cid] = (tuple(sents), rows)
        return out

    def median_grade(self) -> float:
        """Median reading grade of the indexed sentences (recorded at ingest)."""
        return self._median_grade

    # ------------------------------------------------------------ search

    def _live(self, table: str, id_col: str, seg: int, ids: Sequence[str]) -> set[str]:
        """Of these ids found in segment `seg`, those the catalog reads from that segment."""
        if not ids:
            return set()
        return {r[0] for r in self._db().execute(live_sql(table, id_col, len(ids)), [*ids, seg])}

    def _live_chunks(self, seg: int):
        """A filter keeping the passage rows whose id the catalog reads from segment `seg`."""
        def keep(rows, k):
            live = self._live("chunks", "chunk_id", seg, [r[0] for r in rows])
            return [r for r in rows if r[0] in live]
        return keep

    def _owners(self, sql: str, seg: int):
        """A filter turning (vector id, distance) rows into the live records with that text in segment `seg`,
        nearest first, at most k: one indexed lookup per vector, stopping when k records are found."""
        def expand(rows, k):
            out: list[tuple] = []
            for vkey, distance in rows:
                if len(out) >= k:
                    break
                out += [(*r, distance) for r in self._db().execute(sql, (vkey, seg, k - len(out)))]
            return out
        return expand

    def dense_chunks(self, query_vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Passage ids and cosine similarities, best first (kept per query vector: see Memo)."""
        vector = np.ascontiguousarray(query_vector)
        return list(self._searches.get(("dense_chunks", k, vector.dtype.str, vector.tobytes()),
                                       lambda: self._dense_chunks(vector, k)))

    def _dense_chunks(self, query_vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Passage ids and cosine similarities, best first, from Chroma's HNSW index (every segment)."""
        if k <= 0:
            return []
        found: list[tuple[str, float]] = []
        for seg in self.segments:
            rows = _search(seg, "chunks", query_vector, k, self._live_chunks(seg.number))
            found += [(cid, 1.0 - float(d)) for cid, d in rows]
        return sorted(found, key=lambda h: -h[1])[:k]

    dense_search = dense_chunks  # the name used before

    def dense_sentences(self, query_vector: np.ndarray, k: int) -> list[tuple[str, str, float]]:
        """(sentence id, passage id, cosine similarity) of the closest sentences, best first (kept: Memo)."""
        vector = np.ascontiguousarray(query_vector)
        return list(self._searches.get(("dense_sentences", k, vector.dtype.str, vector.tobytes()),
                                       lambda: self._dense_sentences(vector, k)))

    def _dense_sentences(self, query_vector: np.ndarray, k: int) -> list[tuple[str, str, float]]:
        """(sentence id, passage id, cosine similarity) of the closest sentences, best first (Chroma HNSW)."""
        if k <= 0:
            return []
        found: list[tuple[str, str, float]] = []
        sql = "SELECT sentence_id, chunk_id FROM sentences WHERE vkey = ? AND seg = ? ORDER BY sentence_id LIMIT ?"
        for seg in self.segments:
            rows = _search(seg, "sentences", query_vector, k, self._owners(sql, seg.number))
            found += [(sid, cid, 1.0 - float(d)) for sid, cid, d in rows]
        return sorted(found, key=lambda h: -h[2])[:k]

    def dense_keys(self, query_vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Knowledge-entry passage ids and their closest key's similarity, best first (kept: Memo)."""
        vector = np.ascontiguousarray(query_vector)
        return list(self._searches.get(("dense_keys", k, vector.dtype.str, vector.tobytes()),
                                       lambda: self._dense_keys(vector, k)))

    def _dense_keys(self, query_vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Knowledge-entry passage ids and the cosine similarity of their closest question key, best first.

        An entry's keys are its question and its "also asked as" phrasings (LangChain's multi-vector pattern);
        they live in the segment of their passage.
        """
        if k <= 0:
            return []
        best: dict[str, float] = {}
        sql = "SELECT chunk_id FROM entry_keys WHERE vkey = ? AND seg = ? ORDER BY chunk_id LIMIT ?"
        for seg in self.segments:
            for cid, d in _search(seg, "keys", query_vector, k * 4, self._owners(sql, seg.number)):
                best[cid] = max(best.get(cid, -1.0), 1.0 - float(d))
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]

    def keys(self) -> GenerationKeys:
        """Every live question key of this generation (the entry router is fitted on them at ingest)."""
        return GenerationKeys(self._db(), self.segments)

    def key_texts(self) -> tuple[list[str], list[str]]:
        """Every live question key's entry (passage id) and vector id (a hash of its text), in `key_vectors`' order;
        read from the catalog alone."""
        return self.keys().texts()

    def key_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every live question key's entry (passage id) and vector, for a model that learns the entries' keys."""
        keys = self.keys()
        return keys.texts()[0], keys.vectors()

    def stored(self, name: str) -> Path | None:
        """The file the marker names under `name` in this generation (written by the ingest before the marker), or
        None when the marker names none."""
        found = self.marker.get(name)
        return self.dir / found["file"] if isinstance(found, dict) and found.get("file") else None

    def _open_keywords(self, n_chunks: int):
        """The generation's tantivy index as (schema, searcher); it never changes, so it is never reloaded."""
        import tantivy

        folder = self.dir / KEYWORDS_DIR
        try:
            if not (folder / "meta.json").is_file():
                raise OSError("its meta.json is missing")
            index = tantivy.Index.open(str(folder))
            index.config_reader("Manual")
            searcher = index.searcher()
        except (OSError, ValueError) as exc:
            raise IndexDamaged(f"the index at {self.dir} is damaged (keyword index: {exc}); "
                               "it is rebuilt from its documents by: python -m bot ingest") from None
        if searcher.num_docs != n_chunks:
            raise IndexDamaged(f"the index at {self.dir} is damaged (the keyword index holds {searcher.num_docs} "
                               f"passages, the catalog {n_chunks}); it is rebuilt from its documents by: "
                               "python -m bot ingest")
        return index.schema, searcher

    def keyword_chunks(self, tokens: Sequence[str], k: int) -> list[tuple[str, float]]:
        """Passage ids and BM25 scores (higher is better) for the project tokenizer's tokens (tantivy).

        A disjunction of the tokens the corpus uses; tantivy's top-k collector skips the blocks of postings
        that cannot enter the top k (block-max WAND), so common words do not make it read every passage.
        """
        terms = [t for t in dict.fromkeys(tokens) if t in self.vocabulary_counts()]
        if not terms or k <= 0:
            return []
        return keyword_top(*self._keywords, terms, k)

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
        if getattr(self, "_words", None) is None:  # counted at ingest (reading every passage took seconds at x1000)
            self._words = dict(self._db().execute("SELECT word, n FROM words").fetchall())
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


# ---------------------------------------------------------------- spare catalogs

SPARES_DIR = "spare-catalogs"  # catalogs of generations no longer served, for the next ingests to bring up to date
REPLAY_DEPTH = 4  # generations a spare may lag behind the one it is brought up to


def _marker_of(root: Path, number: int) -> dict | None:
    try:
        return json.loads((segment_dir(root, number) / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def spare_catalogs(root: Path) -> dict[int, list[Path]]:
    """Generation number -> the spare catalogs holding that generation's catalog as it was completed."""
    out: dict[int, list[Path]] = {}
    for p in sorted((root / SPARES_DIR).glob(f"{GEN_PREFIX}*.sqlite3")):
        number = p.name[len(GEN_PREFIX):].split(".")[0]
        if number.isdigit():
            out.setdefault(int(number), []).append(p)
    return out


def replay_chain(root: Path, marker: dict, have: Iterable[int]) -> tuple[int, list[dict]] | None:
    """The newest generation in `have` from which `marker`'s generation is reached by replaying recorded changes,
    and the markers to replay (oldest first); None when none is reached (an older index recorded no changes, or
    the markers between are gone)."""
    have = set(have)
    chain: list[dict] = []
    number = int(marker["generation"])
    for _ in range(REPLAY_DEPTH + 1):
        if number in have:
            return number, chain[::-1]
        if marker is None or marker.get("changed") is None or marker.get("base") is None:
            return None
        chain.append(marker)
        number = int(marker["base"])
        marker = _marker_of(root, number)
    return None


def replay_generations(catalog: Path, current: Path, chain: Sequence[dict], recorded: dict | None = None) -> None:
    """Bring `catalog` (the catalog of an older generation) to the state of `current` (the catalog of the
    newest generation of `chain`): the records of every document the chain's generations wrote or removed are
    replaced by `current`'s, the segments they merged renumbered, the word statistics copied. `recorded`: the
    current generation's marker, whose counts of sentences and keys the result must have (RuntimeError if not)."""
    db = sqlite3.connect(f"file:{catalog}", uri=True)
    try:
        db.execute("PRAGMA journal_mode = MEMORY")
        db.execute("PRAGMA synchronous = OFF")  # an unfinished folder is thrown away, never repaired
        db.execute("ATTACH DATABASE ? AS cur", (f"file:{current}?mode=ro&immutable=1",))
        with db:
            for m in chain:
                for old in m.get("merged", []):
                    for table in ("chunks", "sentences", "entry_keys"):
                        db.execute(f"UPDATE main.{table} SET seg = ? WHERE seg = ?", (int(m["generation"]), int(old)))
            db.execute("CREATE TEMP TABLE changed (doc_id TEXT PRIMARY KEY)")
            db.executemany("INSERT OR IGNORE INTO temp.changed VALUES (?)", [(d,) for m in chain for d in m["changed"]])
            docs = "doc_id IN (SELECT doc_id FROM temp.changed)"
            old_chunks = f"chunk_id IN (SELECT chunk_id FROM main.chunks WHERE {docs})"
            new_chunks = f"chunk_id IN (SELECT chunk_id FROM cur.chunks WHERE {docs})"
            for table, where in (("sentences", old_chunks), ("entry_keys", old_chunks), ("chunks", docs),
                                 ("documents", docs)):
                db.execute(f"DELETE FROM main.{table} WHERE {where}")
            for table, where in (("documents", docs), ("chunks", docs), ("sentences", new_chunks),
                                 ("entry_keys", new_chunks)):
                db.execute(f"INSERT INTO main.{table} SELECT * FROM cur.{table} WHERE {where}")
            for table in ("terms", "words", "meta"):
                db.execute(f"DELETE FROM main.{table}")
                db.execute(f"INSERT INTO main.{table} SELECT * FROM cur.{table}")
        mismatch = [table for table, sql in _FINGERPRINT
                    if db.execute(sql.format(s="main")).fetchone() != db.execute(sql.format(s="cur")).fetchone()]
        recorded = recorded if recorded is not None else (chain[-1] if chain else {})
        mismatch += [table for table, name, sql in _COUNTED
                     if name in recorded and db.execute(sql).fetchone()[0] != int(recorded[name])]
        db.execute("DETACH DATABASE cur")
    finally:
        db.close()
    if mismatch:
        raise RuntimeError(f"a spare catalog brought up to date differs from the current one ({', '.join(mismatch)})")


# What must agree between a replayed catalog and the current one (read from the small indexes, not the texts).
_FINGERPRINT = (("documents", "SELECT COUNT(*) FROM {s}.documents"),
                ("chunks", "SELECT COUNT(*), TOTAL(seg), TOTAL(row) FROM {s}.chunks"),
                ("terms", "SELECT COUNT(*), TOTAL(df) FROM {s}.terms"))
# The sentences and question keys are counted in the replayed catalog only, against the counts the current
# generation's marker recorded: their indexes are the catalog's largest (1.8 million keys at x1000), and reading
# them in both catalogs was most of a one-document change's wall time when the spare's pages were not cached.
_COUNTED = (("sentences", "sentences", "SELECT COUNT(*) FROM main.sentences"),
            ("entry_keys", "keys", "SELECT COUNT(*) FROM main.entry_keys"))


def add_spare(root: Path, catalog: Path, number: int, move: bool, tag: str = "kept") -> Path:
    """Put a complete generation's catalog among the spares (moved, or copied and flushed to disk)."""
    import shutil

    folder = root / SPARES_DIR
    folder.mkdir(exist_ok=True)
    dest = folder / f"{GEN_PREFIX}{number:06d}.{tag}.sqlite3"
    if move:
        os.replace(catalog, dest)
    else:
        tmp = folder / f".{dest.name}.{os.getpid()}.tmp"
        shutil.copyfile(catalog, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    _fsync_dir(folder)
    return dest


def prune_spares(root: Path) -> None:
    """Keep only the spares that the next ingests can bring up to date (at most two), and no unfinished copy."""
    folder = root / SPARES_DIR
    if not folder.is_dir():
        return
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    pointer = read_pointer(root)
    marker = _marker_of(root, int(pointer["generation"])) if pointer else None
    usable: set[int] = set()
    m, steps = marker, 0
    while m is not None and steps <= REPLAY_DEPTH:
        usable.add(int(m["generation"]))
        if m.get("base") is None or m.get("changed") is None:
            break
        m = _marker_of(root, int(m["base"])) or {"generation": int(m["base"])}
        steps += 1
    kept = 0
    for number, paths in sorted(spare_catalogs(root).items(), reverse=True):
        for p in paths:
            if number in usable and kept < 2:
                kept += 1
            else:
                p.unlink(missing_ok=True)


# ---------------------------------------------------------------- writing a new generation


class IndexWriter:
    """Builds one new generation folder: a copy of the current catalog (or an empty one) and a new vector
    segment for what this ingest adds.

    Nothing here is seen by readers until `write_pointer` names the folder, so a run killed at any
    instant leaves the old generation served; the half-built folder is removed by the next run. Older
    segments are only read (to merge them, see `finish`), never changed.
    """

    def __init__(self, gen_dir: Path, generation: int, collection: str = "knowledge",
                 chroma_url: str | None = None, base: Index | None = None) -> None:
        import shutil

        self.dir = gen_dir
        self.root = gen_dir.parent
        self.generation = generation
        self.collection = collection
        self.chroma_url = chroma_url
        self.base = base
        self.changed: set[str] = set()  # documents written or removed (recorded, so a later ingest can replay them)
        self.dropped: set[str] = set()  # passages removed, and passages written (router.regroup reads the change)
        self.added: set[str] = set()
        self.merged: list[int] = []     # older segments merged into this one
        self.recycled: int | None = None  # the generation whose spare catalog was brought up to date, if any
        gen_dir.mkdir(parents=True)
        if base is not None and not self._from_spare(base):  # the vectors stay in their segments
            shutil.copyfile(base.dir / CATALOG, gen_dir / CATALOG)  # a copy of the whole catalog: linear
        fresh = not (gen_dir / CATALOG).exists()
        if base is not None:
            share_keyword_files(base.dir / KEYWORDS_DIR, gen_dir / KEYWORDS_DIR)
        import tantivy

        (gen_dir / KEYWORDS_DIR).mkdir(exist_ok=True)
        self.keywords = tantivy.Index(keyword_schema(), path=str(gen_dir / KEYWORDS_DIR))
        self.keyword_writer = self.keywords.writer(heap_size=64_000_000, num_threads=1)
        self.db = sqlite3.connect(gen_dir / CATALOG)
        self.db.execute("PRAGMA journal_mode = MEMORY")
        self.db.execute("PRAGMA synchronous = OFF")  # an unfinished folder is thrown away, never repaired
        if fresh:
            self.db.executescript(CATALOG_SCHEMA)
        # file_stamps() reads three short columns of every document: from this index, not the documents' texts.
        self.db.execute("CREATE INDEX IF NOT EXISTS documents_by_path ON documents (path, doc_id, file_stamp)")
        # The median reading grade is read from this index (`_statistics`), not computed over every sentence.
        self.db.execute("CREATE INDEX IF NOT EXISTS sentences_by_grade ON sentences (grade)")
        if chroma_url:  # a leftover of a killed run with the same generation number
            client = open_chroma(gen_dir, chroma_url)
            for name in collection_names(collection, generation, chroma_url):
                try:
                    client.delete_collection(name)
                except Exception:  # noqa: S110 - not there, as expected
                    pass
        self.segment = Segment(self.root, {"number": generation}, collection, chroma_url, create=True)
        self.client = self.segment.client
        self.chunks_col, self.sentences_col, self.keys_col = self.segment.chunks, self.segment.sentences, self.segment.keys
        self.batch = max(1, min(4000, int(self.client.get_max_batch_size())))
        self._has: dict[str, set[str]] = {"sentences": set(), "keys": set()}  # text vectors the new segment holds

    def _from_spare(self, base: Index) -> bool:
        """Start from a spare catalog (an older generation's) brought up to `base` by replaying what the
        generations since then recorded: the documents they changed, not the whole library. False when there
        is none that can be (the caller copies the current catalog)."""
        spares = spare_catalogs(self.root)
        found = replay_chain(self.root, base.marker, spares)
        if found is None:
            return False
        number, chain = found
        target = self.dir / CATALOG
        os.replace(spares[number][0], target)  # taken: a run killed from here on loses the spare, nothing else
        try:
            replay_generations(target, base.dir / CATALOG, chain, base.marker)
        except (sqlite3.Error, RuntimeError, KeyError, ValueError) as exc:
            log.warning("the spare catalog of generation %s could not be brought up to date (%s); copying the "
                        "current one", number, exc)
            target.unlink(missing_ok=True)
            return False
        self.recycled = number
        return True

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
        self.changed.add(doc.doc_id)
        self.db.execute(
            "INSERT OR REPLACE INTO documents (doc_id, title, source, url, path, text, content_hash, sources, reviewed, "
            "file_stamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (doc.doc_id, doc.title, doc.source, doc.url or "", doc.path, doc.text, doc.content_hash,
             json.dumps(list(doc.sources)), getattr(doc, "reviewed", None), file_stamp))

    def delete_document(self, doc_id: str) -> None:
        self.changed.add(doc_id)
        chunks, sentences = self.doc_records(doc_id)
        self.delete_records(list(chunks), list(sentences))
        self.db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def delete_records(self, chunk_ids: Sequence[str], sentence_ids: Sequence[str]) -> None:
        """Forget passages and sentences: the catalog no longer names them (their vectors stay in their
        segment, unread, until that segment is merged or no generation reads it)."""
        for part in _batches(list(sentence_ids), SQL_BATCH):
            marks = ",".join("?" * len(part))
            self.db.execute(f"DELETE FROM sentences WHERE sentence_id IN ({marks})", part)
        for part in _batches(list(chunk_ids), SQL_BATCH):
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT chunk_id, tokens, text, keys FROM chunks WHERE chunk_id IN ({marks})",
                                   part).fetchall()
            for cid, *_ in rows:
                self.keyword_writer.delete_documents_by_term("chunk_id", cid)
            gone = [(t,) for _, tokens, _, _ in rows for t in set(json.loads(tokens))]
            self.db.executemany("UPDATE terms SET df = df - 1 WHERE term = ?", gone)
            words = _word_counts((text, keys) for _, _, text, keys in rows)
            self.db.executemany("UPDATE words SET n = n - ? WHERE word = ?", [(n, w) for w, n in words.items()])
            self.db.execute(f"DELETE FROM chunks WHERE chunk_id IN ({marks})", part)
            self.db.execute(f"DELETE FROM entry_keys WHERE chunk_id IN ({marks})", part)
            self.dropped.update(cid for cid, *_ in rows)
        self.db.execute("DELETE FROM terms WHERE df <= 0")
        self.db.execute("DELETE FROM words WHERE n <= 0")

    def add_chunks(self, chunks: Sequence[Chunk], tokens: Sequence[list[str]], vectors: np.ndarray) -> None:
        """New passages: their vectors to the new segment, their text and keyword terms to the catalog."""
        for i in range(0, len(chunks), self.batch):
            self.chunks_col.add(ids=[c.chunk_id for c in chunks[i:i + self.batch]],
                                embeddings=vectors[i:i + self.batch])
        self.added.update(c.chunk_id for c in chunks)
        import tantivy

        for c, toks in zip(chunks, tokens, strict=True):
            self.db.execute(
                f"INSERT INTO chunks ({_CHUNK_COLS}, tokens, seg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (c.chunk_id, c.doc_id, c.title, c.section, c.text, c.start, c.end, c.source, c.url or "",
                 json.dumps(list(c.keys)), json.dumps(toks), self.generation))
            self.keyword_writer.add_document(tantivy.Document(chunk_id=c.chunk_id, terms=" ".join(toks)))
            self.db.executemany("INSERT INTO terms (term, df) VALUES (?, 1) ON CONFLICT (term) DO UPDATE SET df = df + 1",
                                [(t,) for t in set(toks)])
        words = _word_counts((c.text, json.dumps(list(c.keys))) for c in chunks)
        self.db.executemany("INSERT INTO words (word, n) VALUES (?, ?) ON CONFLICT (word) DO UPDATE SET n = n + excluded.n",
                            list(words.items()))

    def _add_text_vectors(self, kind: str, texts: Iterable[str], embed: Callable[[list[str]], np.ndarray]) -> int:
        """Embed and add the texts the new segment has no vector for yet (one per distinct text); returns how many."""
        have = self._has[kind]
        todo = {vector_key(kind, t): t for t in texts}
        todo = {vkey: t for vkey, t in todo.items() if vkey not in have}
        if not todo:
            return 0
        vectors = embed(list(todo.values()))
        ids = list(todo)
        for i in range(0, len(ids), self.batch):
            self.segment.col(kind).add(ids=ids[i:i + self.batch], embeddings=vectors[i:i + self.batch])
        have.update(ids)
        return len(ids)

    def add_keys(self, keys: Sequence[tuple[str, str]], embed: Callable[[list[str]], np.ndarray]) -> int:
        """Knowledge entries' questions and phrasings, as (passage id, text); returns the texts embedded."""
        self.db.executemany("INSERT OR IGNORE INTO entry_keys (chunk_id, vkey, seg) VALUES (?, ?, ?)",
                            [(cid, vector_key("keys", text), self.generation) for cid, text in keys])
        return self._add_text_vectors("keys", (text for _, text in keys), embed)

    def add_sentences(self, sentences: Sequence[Sentence], embed: Callable[[list[str]], np.ndarray]) -> int:
        """New sentences of the catalog, and a vector for each text the new segment lacks; returns texts embedded."""
        self.db.executemany(
            "INSERT INTO sentences (sentence_id, chunk_id, position, text, grade, seg, vkey) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(s.sentence_id, s.chunk_id, s.position, s.text, s.grade, self.generation,
              vector_key("sentences", s.text)) for s in sentences])
        return self._add_text_vectors("sentences", (s.text for s in sentences), embed)

    # ------------------------------------------------------------ segments

    def _live_counts(self) -> dict[int, dict[str, int]]:
        """Per segment: the passage vectors, and the distinct sentence and question-key vectors, this generation
        reads from it."""
        live: dict[int, dict[str, int]] = {}
        # DISTINCT (vkey, seg) first: one scan of the (vkey, seg) index, no sort (4x faster than COUNT(DISTINCT)).
        for kind, sql in (("chunks", "SELECT seg, COUNT(*) FROM chunks GROUP BY seg"),
                          ("sentences", "SELECT seg, COUNT(*) FROM (SELECT DISTINCT vkey, seg FROM sentences) GROUP BY seg"),
                          ("keys", "SELECT seg, COUNT(*) FROM (SELECT DISTINCT vkey, seg FROM entry_keys) GROUP BY seg")):
            for seg, n in self.db.execute(sql):
                live.setdefault(seg, {"chunks": 0, "sentences": 0, "keys": 0})[kind] = n
        return live

    def _merge(self, old: Segment) -> None:
        """Copy the live vectors of an older segment into the new one (then the generation no longer reads it)."""
        chunk_ids = [r[0] for r in self.db.execute("SELECT chunk_id FROM chunks WHERE seg = ?", (old.number,))]
        for part in _batches(chunk_ids, SQL_BATCH):
            got = old.chunks.get(ids=list(part), include=["embeddings"])
            self.chunks_col.add(ids=got["ids"], embeddings=got["embeddings"])
        for kind, table in (("sentences", "sentences"), ("keys", "entry_keys")):
            vkeys = [r[0] for r in self.db.execute(f"SELECT DISTINCT vkey FROM {table} WHERE seg = ?", (old.number,))
                     if r[0] not in self._has[kind]]
            for part in _batches(vkeys, SQL_BATCH):
                got = old.col(kind).get(ids=list(part), include=["embeddings"])
                self.segment.col(kind).add(ids=got["ids"], embeddings=got["embeddings"])
                self._has[kind].update(got["ids"])
        for table in ("chunks", "sentences", "entry_keys"):
            self.db.execute(f"UPDATE {table} SET seg = ? WHERE seg = ?", (self.generation, old.number))
        self.merged.append(old.number)

    def _segments(self) -> list[dict]:
        """The segments the new generation reads, after merging the small or mostly replaced ones into the new one."""
        live = self._live_counts()
        older = [seg for seg in (self.base.segments if self.base is not None else []) if seg.number in live]
        total = {seg.number: int(seg.record.get("chunks", 0)) + int(seg.record.get("sentences", 0)) for seg in older}
        largest = max(older, key=lambda seg: total[seg.number], default=None)
        merged = False
        for seg in older:
            alive = live[seg.number]["chunks"] + live[seg.number]["sentences"]
            mostly_replaced = total[seg.number] - alive > alive
            if mostly_replaced or (len(older) + 1 > MAX_SEGMENTS and seg is not largest):
                self._merge(seg)
                merged = True
        if merged:  # counted again only then: a count reads every sentence and entry key of the catalog
            live = self._live_counts()
        records = []
        for seg in [*older, self.segment]:
            if seg.number not in live and seg is not self.segment:
                continue
            counts = live.get(seg.number, {"chunks": 0, "sentences": 0, "keys": 0})
            record = {"number": seg.number, **{f"live_{k}": v for k, v in counts.items()}}
            if seg is self.segment:
                record.update(chunks=seg.chunks.count(), sentences=seg.sentences.count(), keys=seg.keys.count())
            else:
                record.update({k: seg.record[k] for k in Segment.KINDS})
            records.append(record)
        return records

    # ------------------------------------------------------------ finishing

    def finish(self, extra: dict, derive: Callable[[Path, GenerationKeys], dict] | None = None,
               steps: Steps | None = None) -> dict:
        """Merge segments if needed, record the counts, close everything, flush it to disk and write the
        completion marker (last). Returns the marker.

        `derive(folder, keys)` writes what is computed from the generation's question keys into its folder (the
        entry router) and returns what the marker records of it: a generation is never named without it.
        `steps` times each part (the ingest report's time per step).
        """
        steps = steps or Steps()
        with steps("segments"):
            segments = self._segments()
        with steps("statistics"):
            n_chunks, n_sents, n_docs, n_keys, median, paths = self._statistics()
        meta = {"format": str(INDEX_FORMAT), "median_grade": str(median[0] if median else 0.0),
                "generation": str(self.generation)}
        self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
        self.db.commit()
        if derive is not None:
            with steps("router"):
                by_number = {seg.number: seg for seg in [*(self.base.segments if self.base is not None else []),
                                                         self.segment]}
                keys = GenerationKeys(self.db, [by_number[r["number"]] for r in segments],
                                      *((self.dropped, self.added) if self.base is not None else (None, None)))
                extra = {**extra, **derive(self.dir, keys)}
        with steps("keywords"):
            self.db.execute("PRAGMA journal_mode = DELETE")
            self.db.close()
            self.keyword_writer.commit()
            self.keyword_writer.wait_merging_threads()  # merges done; the writer is released (its lock too)
            self.keyword_writer = None
            self.keywords.reload()
            n_keyword = self.keywords.searcher().num_docs
        if n_keyword != n_chunks:
            raise RuntimeError(f"the keyword index holds {n_keyword} passages, the catalog {n_chunks}")
        live = sum(r["live_chunks"] for r in segments)
        if live != n_chunks:
            raise RuntimeError(f"the vector segments hold {live} live passages, the catalog {n_chunks}")
        mine = next(r for r in segments if r["number"] == self.generation)
        held = tuple(mine[kind] for kind in Segment.KINDS)
        if held != tuple(mine[f"live_{kind}"] for kind in Segment.KINDS):
            raise RuntimeError(f"the new vector segment holds {held} vectors (passages, sentences, keys), the catalog "
                               f"reads {tuple(mine[f'live_{kind}'] for kind in Segment.KINDS)}")
        self.close()
        marker = {"format": INDEX_FORMAT, "generation": self.generation, "documents": n_docs,
                  "chunks": n_chunks, "sentences": n_sents, "keys": n_keys,
                  "segments": segments, "paths": paths,
                  # what a later ingest replays to bring an older catalog up to this one (None: not replayable)
                  "base": self.base.generation if self.base is not None else None,
                  "changed": sorted(self.changed) if self.base is not None else None, "merged": self.merged,
                  "recycled": self.recycled, **extra}
        with steps("flush"):
            fsync_tree(self.dir)  # the data files reach the disk before the marker, and the marker before the pointer
            with open(self.dir / COMPLETE_MARKER, "w") as f:
                f.write(json.dumps(marker, indent=1))
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self.dir)
            _fsync_dir(self.dir.parent)  # the generation folder's own entry
        return marker

    def _statistics(self) -> tuple[int, int, int, int, tuple[float, ...] | None, list[str]]:
        """Passages, sentences, documents, (entry, key) pairs, the median sentence grade, the documents' paths."""
        n_chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        n_sents = self.db.execute("SELECT COUNT(*) FROM sentences").fetchone()[0]
        n_docs = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        n_keys = self.db.execute("SELECT COUNT(*) FROM entry_keys").fetchone()[0]  # (entry, key) pairs
        # The middle grade in the order of the grade index, read in SQLite (every grade through Python: 0.5-1.8 s
        # of a one-document change at x1000).
        median = self.db.execute("SELECT grade FROM sentences INDEXED BY sentences_by_grade ORDER BY grade "
                                 "LIMIT 1 OFFSET ?", (n_sents // 2,)).fetchone() if n_sents else None
        paths = sorted(r[0] for r in self.db.execute("SELECT DISTINCT path FROM documents"))
        return n_chunks, n_sents, n_docs, n_keys, median, paths

    def close(self) -> None:
        self.keyword_writer = None  # an unfinished writer is dropped: nothing it buffered is committed
        self.segment.close()
