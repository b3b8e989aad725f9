"""Measure what the README reports: warm answer latency over all eval questions, cold start, index time.

Usage: .venv/bin/python scripts/benchmark.py [--rounds 3] [--json reports/benchmark.json]
       .venv/bin/python scripts/benchmark.py --scale 1 10 100 1000 [--json reports/scale.json]

--scale N...: for each N, a library of N copies of knowledge/ (each document under its own id) is
ingested into a fresh index; then one document is changed and re-ingested; then a fresh process builds
the assistant (start time) and answers fact questions twice (answer p50/p95 of the second pass, query
embeddings cached) and reports its peak memory. CPU seconds (user + system) are reported beside wall
seconds, with the load average, as the machine is shared. --keep DIR keeps each library and index (DIR/xN)
for the next run. Each row also gives the entry router the index stored (`router`: fitted, linked or read from
the cache at ingest, its CPU seconds; null above router.MAX_KEYS) and how many of the second pass's answers are
those of the first scale given, copy marks aside (`answers_as_first_scale`: same kind and words, and the changes
of kind), so a larger library that loses answers shows.

Distinct copies. Copy 0 is knowledge/ as it is. Copy i > 0 has the same texts under a title that ends in
" (copy i)", so its passages are distinct texts (the title is part of what a passage embeds and what
keyword search reads); its sentences and question keys are the same texts as the original's, stored
once per segment as the index stores any repeated text. A passage of copy i gets the original passage's
model vector moved, seeded by its text (`CopiesEmbedder`), to a cosine of sqrt(--spread) with the original
(0.90 by default: 0.949; knowledge/'s distinct passages have their nearest other passage at cosine
0.61 / 0.83 / 0.89 at p10 / p50 / p90). --shift mix (default) moves it towards a seeded mix of two other
passages of knowledge/, so the copies stay in the span of real passage vectors (two copies: cosine about
0.94); --shift noise moves it by isotropic Gaussian noise (two copies: cosine about --spread), spread over
all 384 dimensions, which real variation is not and which is the worst case for an HNSW graph. Identical
vectors (the copies' before round 8) made the HNSW graph degenerate (passage recall 0.26 at x1000); the
real model gives these retitled passages vectors at cosine 0.995 to each other, nearly as degenerate.
Embedding cost stays that of knowledge/ (each distinct original text once, through the real model); the
shift stands for the wording that different leaflets on the same topic would have, which copies lack.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))


def eval_questions() -> list[dict]:
    cases = []
    for path in sorted((PROJECT / "evals" / "cases" / "dev").rglob("*.yaml")):  # never the blind test split
        if not path.name.startswith("_"):
            cases.extend(yaml.safe_load(path.read_text()) or [])
    return cases


def pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# A passage's search text starts with its document's title; a copy's title ends in " (copy N)".
COPY_MARK = re.compile(r"^(.*?) \(copy (\d+)\)(?=\. )", re.DOTALL)


class CopiesEmbedder:
    """The real model behind a cache by text; a copy's passage gets the original's vector, moved (see the docstring).

    `shift="mix"` (default): towards a seeded mix of two other passages of knowledge/ (`pool`), by the angle
    whose cosine is sqrt(spread), so every copy stays in the span of real passage vectors (the variation of
    real leaflets lies along real topics, few directions). `shift="noise"`: by isotropic Gaussian noise of
    the norm that gives two copies cosine `spread` (every one of the 384 directions: a worst case for HNSW).
    Seeded by the passage's text, so a passage keeps its vector across runs and re-ingests.
    """

    def __init__(self, real, spread: float = 0.90, shift: str = "mix", pool: list[str] | None = None) -> None:
        if shift not in ("mix", "noise"):
            raise ValueError("shift is 'mix' or 'noise'")
        self.real, self.cache = real, {}
        self.spread, self.shift = spread, shift
        self.noise = (1.0 / spread - 1.0) ** 0.5
        self.pool = self._base(pool if pool is not None else knowledge_passages()) if shift == "mix" else None

    def _base(self, texts: list[str]):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.real.encode(missing), strict=True))
        return np.vstack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)

    def _moved(self, vector, text: str):
        import numpy as np

        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))
        if self.shift == "noise":
            moved = vector + rng.standard_normal(vector.shape[0]) * (self.noise / vector.shape[0] ** 0.5)
            return moved / np.linalg.norm(moved)
        pool = self.pool
        for _ in range(8):  # two other passages, mixed; their part orthogonal to this vector is the direction
            a, b = rng.choice(len(pool), size=2, replace=False)
            r = rng.uniform()
            towards = r * pool[a] + (1 - r) * pool[b]
            towards = towards - (towards @ vector) * vector
            if np.linalg.norm(towards) > 1e-3:
                break
        cos = self.spread ** 0.5
        moved = cos * vector + (1 - cos * cos) ** 0.5 * towards / np.linalg.norm(towards)
        return moved / np.linalg.norm(moved)

    def encode(self, texts):
        import numpy as np

        marks = [COPY_MARK.match(t) for t in texts]
        vectors = self._base([t[:m.end(1)] + t[m.end():] if m else t for t, m in zip(texts, marks, strict=True)])
        out = vectors.astype(np.float32, copy=True)
        for row, (text, mark) in enumerate(zip(texts, marks, strict=True)):
            if mark:
                out[row] = self._moved(out[row].astype(np.float64), text)
        return out


def knowledge_passages() -> list[str]:
    """The search texts of knowledge/'s passages (what their vectors are made from)."""
    from bot.documents import chunk_document, load_file

    return [c.search_text for src in sorted((PROJECT / "knowledge").glob("*.md")) for c in chunk_document(load_file(src))]


def make_library(folder: Path, copies: int) -> None:
    """`copies` copies of knowledge/, each document with its own id; copy i > 0 titled "<title> (copy i)"."""
    from bot.documents import load_file, split_front_matter

    sources = sorted((PROJECT / "knowledge").glob("*.md"))
    titles = {src: load_file(src).title for src in sources}
    for i in range(copies):
        out = folder / f"copy-{i:04d}"
        out.mkdir(parents=True)
        for src in sources:
            meta, body = split_front_matter(src.read_text())
            meta = dict(meta, id=f"{meta.get('id') or src.stem}--c{i}")
            if i:
                meta["title"] = f"{titles[src]} (copy {i})"
            (out / src.name).write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body)


def answers_child(index_dir: str, library: str, n_questions: int) -> int:
    """In a fresh process: start time, answer latency (second pass) and peak memory, as JSON on stdout."""
    import resource

    t0, c0 = time.perf_counter(), cpu_seconds()
    load = os.getloadavg()[0]
    from bot.assistant import build_assistant
    from bot.settings import Settings

    settings = Settings(index_dir=Path(index_dir), knowledge_dir=Path(library), sync_knowledge=False)
    t1 = time.perf_counter()
    assistant = build_assistant(settings)
    start_s, start_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    split = {"imports": round(t1 - t0, 2), **assistant.start_timings}
    wait_ready = getattr(assistant.embedder, "wait_ready", None)
    if wait_ready is not None:  # answers are timed as in a running app: after the torch model has loaded
        t = time.perf_counter()
        wait_ready(600)
        split["torch_in_background"] = round(time.perf_counter() - t, 2)
    questions = [c["question"] for c in eval_questions() if c.get("category") in ("fact", "facts") or "fact" in
                 str(c.get("tags", ""))][:n_questions] or [c["question"] for c in eval_questions()][:n_questions]
    for q in questions:
        assistant.ask(q)
    total, search, cpu, said = [], [], [], []
    for q in questions:
        t, c = time.perf_counter(), cpu_seconds()
        a = assistant.ask(q)
        total.append((time.perf_counter() - t) * 1000)
        said.append([a.kind, uncopied(a.answer)])
        cpu.append((cpu_seconds() - c) * 1000)  # every thread of the process (Chroma's included): steadier under load
        search.append(a.timings_ms.get("retrieve", 0.0) + a.timings_ms.get("compose", 0.0))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"start_s": round(start_s, 2), "start_cpu_s": round(start_cpu, 2), "start_load_avg_1m": round(load, 2),
                      "answer_ms_p50": round(pct(total, 50), 1),
                      "answer_ms_p95": round(pct(total, 95), 1), "answer_cpu_ms_p50": round(pct(cpu, 50), 1),
                      "answer_cpu_ms_p95": round(pct(cpu, 95), 1), "retrieve_compose_ms_p50": round(pct(search, 50), 1),
                      "retrieve_compose_ms_p95": round(pct(search, 95), 1), "questions": len(questions),
                      "peak_memory_mb": round(peak_mb), "start_split_s": split,
                      "start_split_cpu_s": getattr(assistant, "start_cpu_timings", {}),
                      "router": assistant.index.marker.get("router", "(not stored: older generation)"),
                      "answers": said}))
    return 0


def uncopied(text: str) -> str:
    """An answer as the original library would word it: a copy's title and document ids lose their copy mark."""
    return re.sub(r"--c\d+\b", "", re.sub(r" \(copy \d+\)", "", text))


def same_answers(first: list[list[str]], other: list[list[str]]) -> dict:
    """How many answers a larger library gives as the first (smallest) one did: the same kind and words, and which
    changes of kind (answer -> unknown: an answer the larger library lost)."""
    changed: dict[str, int] = {}
    for (k1, _), (k2, _) in zip(first, other, strict=True):
        if k1 != k2:
            changed[f"{k1} -> {k2}"] = changed.get(f"{k1} -> {k2}", 0) + 1
    return {"same_answer": sum(a == b for a, b in zip(first, other, strict=True)), "of": len(first),
            "kind_changes": changed}


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (steadier than wall time on a shared machine)."""
    return time.process_time()


def scale(scales: list[int], n_questions: int, out: Path | None, keep: Path | None = None, spread: float = 0.90,
          shift: str = "mix") -> int:
    from bot.embed import SentenceEmbedder
    from bot.ingest import ingest
    from bot.settings import Settings
    from bot.store import is_complete

    embedder = CopiesEmbedder(SentenceEmbedder(Settings().embedding_model), spread, shift)
    rows = []
    first: list[list[str]] = []
    for n in scales:
        tmp = keep / f"x{n}" if keep else Path(tempfile.mkdtemp(prefix=f"bench-x{n}-"))
        try:
            library = tmp / "library"
            if not library.exists():
                make_library(library, n)
            settings = Settings(index_dir=tmp / "index", knowledge_dir=library, sync_knowledge=False)
            ingest_s = ingest_cpu = None
            if not (keep and is_complete(settings.index_dir)):  # --keep: a library and index built before are reused
                t, c = time.perf_counter(), cpu_seconds()
                ingest(settings, embedder, paths=[library], progress=False)
                ingest_s, ingest_cpu = round(time.perf_counter() - t, 1), round(cpu_seconds() - c, 1)
            changed = sorted(library.glob("copy-0000/*.md"))[0]
            changed.write_text(changed.read_text() + "\n\nParents can ask the ward for a parking permit for the whole stay.\n")
            load = os.getloadavg()[0]
            t, c = time.perf_counter(), cpu_seconds()
            again = ingest(settings, embedder, paths=[library], progress=False)
            one_doc_s, one_doc_cpu = time.perf_counter() - t, cpu_seconds() - c
            child = subprocess.run([sys.executable, __file__, "--_answers", str(settings.index_dir), str(library),
                                    str(n_questions)], capture_output=True, text=True, cwd=PROJECT, check=True)
            row = {"scale": n, "spread": spread, "shift": shift,
                   "documents": len(again.added) + len(again.updated) + len(again.unchanged),
                   "passages": again.chunks, "load_avg_1m": round(load, 2), "ingest_s": ingest_s,
                   "ingest_cpu_s": ingest_cpu, "one_doc_reingest_s": round(one_doc_s, 2),
                   "one_doc_reingest_cpu_s": round(one_doc_cpu, 2), "one_doc_updated": again.updated,
                   "one_doc_steps": again.steps.as_dict(), "one_doc_recycled": again.recycled,
                   **json.loads(child.stdout.strip().splitlines()[-1])}
            said = row.pop("answers")
            first = first or said  # the first scale's answers are the reference (x1 when it is given first)
            row["answers_as_first_scale"] = same_answers(first, said)
        finally:
            if not keep:
                shutil.rmtree(tmp, ignore_errors=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--_answers":
        return answers_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=int, nargs="+", default=None, metavar="N", help="library sizes (copies of knowledge/)")
    ap.add_argument("--questions", type=int, default=60, help="questions answered per scale (--scale)")
    ap.add_argument("--rounds", type=int, default=3, help="times each question is asked (after one warm-up pass)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="--scale: build each library and index in DIR/xN and keep them; a later run reuses them "
                         "(the one-document change and the start are measured again, the first ingest is not)")
    ap.add_argument("--spread", type=float, default=0.90,
                    help="--scale: cosine between two copies of a passage (see the docstring); 1 gives identical copies")
    ap.add_argument("--shift", choices=("mix", "noise"), default="mix",
                    help="--scale: how a copy's passage vectors differ from the original's (see CopiesEmbedder)")
    args = ap.parse_args()
    if args.scale:
        if not 0 < args.spread <= 1:
            ap.error("--spread is a cosine in (0, 1]")
        return scale(args.scale, args.questions, args.json, args.keep, args.spread, args.shift)

    from bot.assistant import build_assistant
    from bot.embed import SentenceEmbedder
    from bot.ingest import ingest
    from bot.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        settings = Settings(index_dir=tmp / "index")
        embedder = SentenceEmbedder(settings.embedding_model, threads=settings.torch_threads)
        t = time.perf_counter()
        result = ingest(settings, embedder, progress=False)
        index_s = time.perf_counter() - t
        t = time.perf_counter()
        again = ingest(settings, embedder, progress=False)
        reindex_s = time.perf_counter() - t

        assistant = build_assistant(settings, embedder=embedder)
        cases = eval_questions()
        for c in cases:  # warm-up pass: caches filled as in a running app
            assistant.ask(c["question"], history=c.get("history") or [])
        latencies: list[float] = []
        for _ in range(args.rounds):
            for c in cases:
                t = time.perf_counter()
                assistant.ask(c["question"], history=c.get("history") or [])
                latencies.append((time.perf_counter() - t) * 1000)
        # The query-embedding cache would make repeats unrealistically fast: measure once more without it.
        cold_query: list[float] = []
        for c in cases:
            embedder._cache.clear()
            t = time.perf_counter()
            assistant.ask(c["question"], history=c.get("history") or [])
            cold_query.append((time.perf_counter() - t) * 1000)

        env = dict(os.environ, BOT_INDEX_DIR=str(settings.index_dir))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bot", "ask", "What is blinatumomab?", "--json"], cwd=PROJECT, env=env,
                       check=True, capture_output=True)
        cold_start_s = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    figures = {
        "questions": len(cases),
        "warm_ms_median_new_question": round(statistics.median(cold_query), 1),
        "warm_ms_p95_new_question": round(pct(cold_query, 95), 1),
        "warm_ms_median_repeat": round(statistics.median(latencies), 1),
        "warm_ms_p95_repeat": round(pct(latencies, 95), 1),
        "cold_start_cli_ask_s": round(cold_start_s, 1),
        "index_knowledge_s": round(index_s, 1),
        "index_passages": result.chunks,
        "texts_embedded": result.embedded,
        "reingest_unchanged_s": round(reindex_s, 2),
        "reingest_unchanged_embedded": again.embedded,
        "cpu_cores": os.cpu_count(),
    }
    for k, v in figures.items():
        print(f"{k:32s} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
