"""scripts/benchmark.py --scale: the copies of knowledge/ are distinct texts with distinct, seeded passage vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "scripts"))

import benchmark  # noqa: E402

from bot.documents import chunk_document, chunk_sentences, load_file  # noqa: E402
from bot.embed import SentenceEmbedder  # noqa: E402
from bot.settings import Settings  # noqa: E402


def test_copies_have_distinct_passages_near_the_original_and_shared_sentences(tmp_path):
    benchmark.make_library(tmp_path, 3)
    docs = {i: load_file(sorted((tmp_path / f"copy-{i:04d}").glob("*.md"))[0]) for i in range(3)}
    assert docs[1].title == f"{docs[0].title} (copy 1)" and docs[0].doc_id != docs[1].doc_id
    assert docs[1].text == docs[0].text
    chunks = {i: chunk_document(d) for i, d in docs.items()}
    real = SentenceEmbedder(Settings().embedding_model, quick=True)
    texts = [c.search_text for i in range(3) for c in chunks[i]]
    sentence = chunk_sentences(chunks[1][0])[0].text  # sentences are the original's texts, with the model's vectors
    for shift, between_range in (("mix", (0.88, 0.99)), ("noise", (0.85, 0.95))):
        embedder = benchmark.CopiesEmbedder(real, spread=0.90, shift=shift)
        vectors = embedder.encode(texts).reshape(3, len(chunks[0]), -1)
        assert np.allclose(vectors[0], real.encode([c.search_text for c in chunks[0]]))  # the original: the model's
        assert np.allclose(np.linalg.norm(vectors, axis=2), 1, atol=1e-5)
        between = np.sum(vectors[1] * vectors[2], axis=1)
        to_original = np.sum(vectors[1] * vectors[0], axis=1)
        assert between_range[0] < between.mean() < between_range[1] and np.all(between < 0.999), (shift, between)
        assert 0.92 < to_original.mean() < 0.97, (shift, to_original)
        assert np.array_equal(embedder.encode(texts[-2:]), vectors[2, -2:])  # seeded by the text: the same vector again
        assert np.allclose(embedder.encode([sentence]), real.encode([sentence]))
    identical = benchmark.CopiesEmbedder(real, spread=1.0)
    assert np.allclose(identical.encode(texts[:1]), identical.encode([texts[len(chunks[0])]]), atol=1e-6)


def test_answers_are_compared_with_the_first_scale_without_the_copy_marks():
    """--scale reports how many answers a larger library gives as x1 did (a big library that loses entry answers)."""
    from benchmark import same_answers, uncopied

    assert uncopied("Babies on the drip [1] (see How it was given (copy 12), how-given--c12:ab3)") == (
        "Babies on the drip [1] (see How it was given, how-given:ab3)")
    first = [["answer", "The drip runs 28 days [1]."], ["answer", "Fevers [1]."], ["unknown", "I do not know."]]
    other = [["answer", "The drip runs 28 days [1]."], ["unknown", "I do not know."], ["unknown", "I do not know."]]
    assert same_answers(first, other) == {"same_answer": 2, "of": 3, "kind_changes": {"answer -> unknown": 1}}
