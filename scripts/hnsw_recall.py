"""Recall of the index's HNSW searches against exact search, on a sample of real questions.

Usage: .venv/bin/python scripts/hnsw_recall.py [--index-dir DIR] [--questions 200] [--json out.json]

For each question of the dev split (a sample), the passages, sentences and question keys that
`Index.dense_chunks / dense_sentences / dense_keys` return (Chroma HNSW, every segment, replaced records
skipped) are compared with an exact search: the cosine similarity of the question to every live record's
vector, read from the same segments. Recall@k counts a returned record as right when its exact similarity
is at least the exact k-th best (ties count: copies of one text have the same vector), divided by k.
For passages also: same-text recall (the share of the distinct texts of the exact top k that the search
returns, whichever copies; the benchmark's copies of a passage share its text but not its vector) and the
similarity shortfall (mean similarity of the exact top k minus that of the k returned).
The k are the retriever's: `candidate_k` passages, 3 x `candidate_k` sentences, `candidate_k` entries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

EPS = 1e-4  # float32 distances from Chroma against float64 dot products here


def live_matrix(index, kind: str) -> tuple[list[str], list[str], np.ndarray]:
    """(record ids, vector ids, vectors of the distinct vector ids) of every live record of one kind."""
    from bot.store import get_vectors

    sql = {"chunks": "SELECT chunk_id, chunk_id, seg FROM chunks",
           "sentences": "SELECT sentence_id, vkey, seg FROM sentences",
           "keys": "SELECT chunk_id, vkey, seg FROM entry_keys"}[kind]
    rows = index._db().execute(sql).fetchall()
    by_seg: dict[int, set[str]] = {}
    for _, vid, seg in rows:
        by_seg.setdefault(int(seg), set()).add(vid)
    vectors: dict[tuple[str, int], np.ndarray] = {}
    for seg, vids in by_seg.items():
        got = get_vectors(index._by_number[seg].col(kind), sorted(vids))
        vectors.update({(vid, seg): vec for vid, vec in got.items()})
    keys = sorted(vectors)
    where = {key: i for i, key in enumerate(keys)}
    matrix = np.vstack([vectors[key] for key in keys]).astype(np.float32)
    return [r[0] for r in rows], [where[(r[1], int(r[2]))] for r in rows], matrix


def collection_matrix(col) -> np.ndarray:
    """Every vector a Chroma collection holds (live or replaced), read in pages."""
    parts, offset = [], 0
    while True:
        got = col.get(limit=5000, offset=offset, include=["embeddings"])
        if not len(got["ids"]):
            break
        parts.append(np.asarray(got["embeddings"], dtype=np.float32))
        offset += len(got["ids"])
    return np.vstack(parts) if parts else np.zeros((0, 384), dtype=np.float32)


def recall(found: list[float], exact: np.ndarray, k: int) -> float:
    """Share of the k wanted that are right: returned records at least as close as the exact k-th best."""
    want = min(k, len(exact))
    if want == 0:
        return 1.0
    kth = float(np.partition(exact, len(exact) - want)[len(exact) - want])
    return min(want, sum(1 for s in found[:want] if s >= kth - EPS)) / want


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", type=Path, default=None, help="the index (default: BOT_INDEX_DIR / .index)")
    ap.add_argument("--questions", type=int, default=200, help="dev questions sampled (seeded)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    from benchmark import eval_questions

    from bot.embed import SentenceEmbedder
    from bot.settings import Settings
    from bot.store import Index

    settings = Settings(**({"index_dir": args.index_dir} if args.index_dir else {}))
    index = Index(settings.index_dir, settings.collection, settings.chroma_url)
    k = settings.retrieval.candidate_k
    questions = sorted({str(c["question"]) for c in eval_questions() if c.get("question")})
    random.Random(13).shuffle(questions)
    questions = questions[:args.questions]
    embedder = SentenceEmbedder(settings.embedding_model, quick=True)
    qvecs = np.vstack([embedder.encode(questions[i:i + 64]) for i in range(0, len(questions), 64)]).astype(np.float32)

    figures: dict = {"index": str(settings.index_dir), "generation": index.generation,
                     "segments": [s.number for s in index.segments], "questions": len(questions),
                     "load_avg_1m": round(os.getloadavg()[0], 2)}
    for kind, want, search in (
        ("chunks", k, lambda v, n: [s for _, s in index.dense_chunks(v, n)]),
        ("sentences", 3 * k, lambda v, n: [s for _, _, s in index.dense_sentences(v, n)]),
        ("keys", k, lambda v, n: [s for _, s in index.dense_keys(v, n)]),
    ):
        records, rows, matrix = live_matrix(index, kind)
        if not records:
            continue
        records_at = {rid: i for i, rid in enumerate(records)}
        owner = np.asarray(rows)
        scores, times, nearest, distinct, same_text, shortfall = [], [], [], [], [], []
        text_of = ({cid: (sec, txt) for cid, sec, txt in index._db().execute("SELECT chunk_id, section, text FROM chunks")}
                   if kind == "chunks" else {})
        for v in qvecs:
            sims = (matrix @ v)[owner]  # one similarity per live record
            if kind == "chunks":
                # Copies of a passage (scripts/benchmark.py) have one text and different vectors: does the search
                # return the texts of the exact top k, whichever copies? And how much less similar is what it returns?
                top = np.argpartition(sims, len(sims) - want)[len(sims) - want:]
                wanted = {text_of[records[i]] for i in top}
                got_ids = [cid for cid, _ in index.dense_chunks(v, want)]
                same_text.append(len(wanted & {text_of[c] for c in got_ids}) / len(wanted))
                got_sims = sorted((float(sims[records_at[c]]) for c in got_ids), reverse=True)
                shortfall.append(float(np.sort(sims[top])[::-1].mean()) - (float(np.mean(got_sims)) if got_sims else 0.0))
            if kind == "keys":  # an entry scores by its closest key
                best: dict[str, float] = {}
                for rid, s in zip(records, sims.tolist(), strict=True):
                    best[rid] = max(best.get(rid, -1.0), s)
                sims = np.fromiter(best.values(), dtype=np.float64)
            t = time.perf_counter()
            found = search(v, want)
            times.append((time.perf_counter() - t) * 1000)
            scores.append(recall(found, sims, want))
            nearest.append(bool(found) and found[0] >= float(sims.max()) - EPS)
            # Copies of one text share a vector: the 5 nearest distinct similarities, and how many were found.
            top5 = np.unique(np.round(sims, 4))[-5:]
            distinct.append(sum(1 for e in top5 if any(abs(e - f) < 2 * EPS for f in found)) / len(top5))
        figures[kind] = {"records": len(records), "distinct_vectors": int(matrix.shape[0]), "k": want,
                         "recall_mean": round(statistics.fmean(scores), 4), "recall_min": round(min(scores), 4),
                         "below_1": sum(1 for s in scores if s < 1.0),
                         "nearest_found": round(statistics.fmean(nearest), 4),
                         "distinct_top5_recall": round(statistics.fmean(distinct), 4),
                         "search_ms_p50": round(statistics.median(times), 2)}
        if same_text:
            figures[kind]["same_text_recall_mean"] = round(statistics.fmean(same_text), 4)
            figures[kind]["same_text_recall_min"] = round(min(same_text), 4)
            figures[kind]["similarity_shortfall_mean"] = round(statistics.fmean(shortfall), 4)
        print(kind, json.dumps(figures[kind]), flush=True)
    # The HNSW graphs alone: each segment's collection asked for its k nearest vectors, against all its vectors.
    for seg in index.segments:
        for kind, want in (("chunks", k), ("sentences", 3 * k), ("keys", 4 * k)):
            col = seg.col(kind)
            matrix = collection_matrix(col)
            if not len(matrix):
                continue
            n = min(want, len(matrix))
            scores = []
            for v in qvecs:
                res = col.query(query_embeddings=[v.tolist()], n_results=n, include=["distances"])
                scores.append(recall([1.0 - d for d in res["distances"][0]], matrix @ v, n))
            row = {"vectors": int(len(matrix)), "k": n, "recall_mean": round(statistics.fmean(scores), 4),
                   "recall_min": round(min(scores), 4), "below_1": sum(1 for s in scores if s < 1.0),
                   "hnsw": col.metadata or {}}
            figures.setdefault("hnsw_alone", {})[f"segment {seg.number} {kind}"] = row
            print(f"hnsw alone, segment {seg.number} {kind}", json.dumps(row), flush=True)
    index.close()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT / "scripts"))
    sys.exit(main())
