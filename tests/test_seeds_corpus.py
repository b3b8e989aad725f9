"""A hospital's own documents: the five seed news articles ingested as an extra corpus and cited."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.ingest import ingest
from bot.settings import Settings

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mixed_assistant(tmp_path_factory, seeds_dir, embedder):
    from bot.assistant import build_assistant

    s = Settings(index_dir=tmp_path_factory.mktemp("mixed") / "index")
    ingest(s, embedder, progress=False)                           # knowledge/
    res = ingest(s, embedder, paths=[seeds_dir], progress=False)  # plus the seeds
    assert len(res.added) == 5 and not res.problems
    return build_assistant(s, embedder=embedder)


def test_answers_cite_the_seed_articles_beside_our_own(mixed_assistant, seeds_dir):
    seed_ids = {p.stem for p in seeds_dir.glob("*.txt")}
    cases = yaml.safe_load((PROJECT / "evals" / "seeds_cases" / "seeds.yaml").read_text())
    citing = 0
    for case in cases:
        ans = mixed_assistant.ask(case["question"])
        cited = {c.doc_id for c in ans.citations}
        citing += bool(cited & seed_ids)
        for c in ans.citations:
            text = " ".join(mixed_assistant.index.document_text(c.doc_id).split())
            assert " ".join(c.quote.split()) in text
    # Our entries match the study questions strongly, yet a hospital's own documents must still be found and
    # quoted beside them (retrieval keeps places for documents without entries; an entry's answer is followed by
    # their best sentence when it answers as well). 14 of 20 on 2026-11-21; 2 of 20 before that fix.
    assert citing >= len(cases) // 2, f"only {citing} of {len(cases)} answers cite a seed article"
