"""Time the keyword step alone, as the library grows: the index's engine (tantivy) against SQLite FTS5.

Usage: .venv/bin/python scripts/keyword_benchmark.py --scale 1 100 400 1000 [--json reports/keywords.json]

For each N, the passages of knowledge/ are copied N times (each copy under its own passage id, tokens
as ingest stores them) into a tantivy index built as `bot/store.py` builds it and into the SQLite FTS5
table the index used before (format 6: same tokens, `bm25()`, `ORDER BY ... LIMIT k`). Then each
engine answers the top k (Settings.retrieval.candidate_k) for two query sets, three passes, the last
two timed:
- "pipeline": the content words of the benchmark's fact questions (stop words dropped, stemmed: the
  tokens `Query.keyword_terms` searches for, without its spelling correction);
- "raw": every word of those questions, stop words included (the worst case: "my", "a", "baby").
Copies make every word N times as common as in a real library of that size, which overstates the
cost of a linear engine; the same copies are given to both engines.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "scripts"))


def passages() -> list[tuple[str, list[str]]]:
    """(passage id, tokens) of knowledge/ as ingest stores them."""
    from bot.documents import chunk_document, load_paths
    from bot.settings import Settings
    from bot.words import tokenize

    settings = Settings()
    loaded = load_paths([settings.knowledge_dir], settings.chunk_size, settings.chunk_overlap)
    out = []
    for doc in loaded.documents:
        for c in chunk_document(doc, settings.chunk_size, settings.chunk_overlap):
            out.append((c.chunk_id, tokenize(" ".join((c.search_text, *c.keys)))))
    return out


def query_sets(vocabulary: set[str], n: int) -> dict[str, list[list[str]]]:
    from benchmark import eval_questions

    from bot.words import stem, tokenize

    questions = [c["question"] for c in eval_questions() if c.get("category") in ("fact", "facts")
                 or "fact" in str(c.get("tags", ""))][:n]
    pipeline = [[t for t in dict.fromkeys(tokenize(q)) if t in vocabulary] for q in questions]
    raw = [[t for t in dict.fromkeys(stem(w) for w in re.findall(r"[a-z0-9]+", q.lower())) if t in vocabulary]
           for q in questions]
    return {"pipeline": [q for q in pipeline if q], "raw": [q for q in raw if q]}


def fts_term(token: str) -> str:
    """Format 6's FTS5 term: plain [a-z0-9] words stay, anything else is hex-encoded."""
    return token if re.fullmatch(r"[a-z0-9]+", token) else "x_" + token.encode("utf-8").hex()


def build_fts(folder: Path, items: list[tuple[str, list[str]]], copies: int) -> sqlite3.Connection:
    db = sqlite3.connect(folder / "fts.sqlite3")
    db.executescript("""
        CREATE TABLE chunks (row INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE);
        CREATE VIRTUAL TABLE chunk_fts USING fts5(terms, tokenize = "unicode61 remove_diacritics 0 tokenchars '_'");
    """)
    for i in range(copies):
        for cid, toks in items:
            cur = db.execute("INSERT INTO chunks (chunk_id) VALUES (?)", (f"{cid}--c{i}",))
            db.execute("INSERT INTO chunk_fts (rowid, terms) VALUES (?, ?)",
                       (cur.lastrowid, " ".join(fts_term(t) for t in toks)))
    db.commit()
    return db


def fts_top(db: sqlite3.Connection, terms: list[str], k: int) -> list[tuple[str, float]]:
    query = " OR ".join(f'"{fts_term(t)}"' for t in terms)
    rows = db.execute("SELECT c.chunk_id, bm25(chunk_fts) AS s FROM chunk_fts JOIN chunks c ON c.row = chunk_fts.rowid "
                      "WHERE chunk_fts MATCH ? ORDER BY s LIMIT ?", (query, k)).fetchall()
    return [(cid, -float(s)) for cid, s in rows]


def build_tantivy(folder: Path, items: list[tuple[str, list[str]]], copies: int):
    import tantivy

    from bot.store import keyword_schema

    path = folder / "keywords"
    path.mkdir()
    index = tantivy.Index(keyword_schema(), path=str(path))
    writer = index.writer(heap_size=64_000_000, num_threads=1)
    for i in range(copies):
        for cid, toks in items:
            writer.add_document(tantivy.Document(chunk_id=f"{cid}--c{i}", terms=" ".join(toks)))
    writer.commit()
    writer.wait_merging_threads()
    index = tantivy.Index.open(str(path))
    index.config_reader("Manual")
    return index.schema, index.searcher()


def timed(search, queries: list[list[str]]) -> dict[str, float]:
    times = []
    for rnd in range(3):
        for q in queries:
            t = time.perf_counter()
            search(q)
            if rnd:
                times.append((time.perf_counter() - t) * 1000)
    from benchmark import pct

    return {"p50_ms": round(pct(times, 50), 2), "p95_ms": round(pct(times, 95), 2), "max_ms": round(max(times), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=int, nargs="+", default=[1, 100, 400, 1000])
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from bot.settings import Settings
    from bot.store import keyword_top

    k = Settings().retrieval.candidate_k
    items = passages()
    vocabulary = {t for _, toks in items for t in toks}
    sets = query_sets(vocabulary, args.questions)
    rows = []
    for n in args.scale:
        tmp = Path(tempfile.mkdtemp(prefix=f"kwbench-x{n}-"))
        try:
            t = time.perf_counter()
            db = build_fts(tmp, items, n)
            fts_build = time.perf_counter() - t
            t = time.perf_counter()
            schema, searcher = build_tantivy(tmp, items, n)
            tantivy_build = time.perf_counter() - t
            row = {"scale": n, "passages": len(items) * n, "k": k,
                   "build_s": {"fts5": round(fts_build, 1), "tantivy": round(tantivy_build, 1)}}
            for name, queries in sets.items():
                row[name] = {"queries": len(queries),
                             "fts5": timed(lambda q, db=db: fts_top(db, q, k), queries),
                             "tantivy": timed(lambda q, s=schema, r=searcher: keyword_top(s, r, q, k), queries)}
            db.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
