"""The embedder under concurrent requests: requests that arrive together share one forward pass of the model,
and each gets exactly the vectors it would get alone (so an answer does not depend on who else asked)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bot.embed import Combiner, SentenceEmbedder
from bot.settings import Settings

REQUESTS = [
    ["What is blinatumomab?"],
    ["My baby is 3 weeks old.", "Is it serious?", "My baby is 3 weeks old. Is it serious?"],
    ["How long is the blinatumomab drip given for, and can we stay at home while it runs for four weeks?"],
    ["Was the study randomised?", "Who paid for the study?"],
    ["MRD"],
]


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceEmbedder:
    emb = SentenceEmbedder(Settings().embedding_model)
    emb.pin()
    return emb


def _alone(emb: SentenceEmbedder, texts: list[str]) -> np.ndarray:
    return emb._st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=False).astype(np.float32)


def test_requests_in_one_forward_pass_get_exactly_their_vectors_alone(torch_embedder):
    grouped = torch_embedder._grouped
    assert grouped is not None, "the start-up check found shared passes inexact on this machine"
    together = grouped.vectors(REQUESTS)
    for texts, got in zip(REQUESTS, together, strict=True):
        assert np.array_equal(got, _alone(torch_embedder, texts)), texts  # bit for bit, not merely close
    # A padded batch of the same texts is not exact: the reason requests are not simply stacked.
    stacked = _alone(torch_embedder, [t for texts in REQUESTS for t in texts])
    assert not np.array_equal(stacked, np.vstack([_alone(torch_embedder, [t]) for texts in REQUESTS for t in texts]))


def test_concurrent_requests_share_a_pass_and_each_gets_its_own_vectors(torch_embedder, monkeypatch):
    emb = torch_embedder
    texts = [[f"{t} (asked by family {i})" for t in req] for i, req in enumerate(REQUESTS)]
    passes: list[int] = []
    real = emb._grouped.vectors
    monkeypatch.setattr(emb._grouped, "vectors", lambda groups: passes.append(len(groups)) or real(groups))
    results: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        results[i] = emb.encode(texts[i])

    with emb._lock.hold(0):  # the model is busy: the requests queue up meanwhile
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        while len(emb._combiner._queue) < len(texts) - 1:  # one of them is running (waiting for the model)
            threading.Event().wait(0.01)
    for t in threads:
        t.join(60)
    assert passes and max(passes) == len(texts) - 1  # the queued requests shared one pass
    for i, req in enumerate(texts):
        assert np.array_equal(results[i], _alone(emb, req)), req


def test_a_failed_batch_raises_in_every_request_and_the_next_batch_runs():
    calls: list[list] = []

    def run(batch):
        calls.append(batch)
        if "bad" in batch:
            raise ValueError("model failed")
        return [x.upper() for x in batch]

    c = Combiner(run)
    with pytest.raises(ValueError):
        c.submit("bad")
    assert c.submit("ok") == "OK"


def test_a_shared_pass_that_fails_falls_back_to_one_by_one(torch_embedder, monkeypatch):
    emb = torch_embedder
    monkeypatch.setattr(emb, "_grouped", emb._grouped)  # restored afterwards

    def broken(groups):
        raise RuntimeError("attention hook refused")

    monkeypatch.setattr(emb._grouped, "vectors", broken)
    texts = [[f"{t} (family {i}, second visit)" for t in req] for i, req in enumerate(REQUESTS[:3])]
    got = emb._encode_requests(texts)
    assert emb._grouped is None
    for req, vec in zip(texts, got, strict=True):
        assert np.array_equal(vec, _alone(emb, req))


def test_the_numpy_model_of_a_one_question_process_gives_torchs_vectors(torch_embedder):
    """`python -m bot ask` embeds its question with NumpyMiniLM (no torch import, about 0.1 s to load instead of
    several seconds): the same weights, so the same vectors as sentence-transformers within float32 rounding."""
    from bot.embed import NumpyMiniLM

    texts = [t for request in REQUESTS for t in request] + [
        "fièvre 39,2 °C — mon bébé", "", "a " * 400, "KMT2A-rearranged ALL: MRD after blinatumomab (2023)?"]
    numpy_vectors = NumpyMiniLM(Settings().embedding_model).encode(texts)
    torch_vectors = _alone(torch_embedder, texts)
    cosines = np.sum(numpy_vectors * torch_vectors, axis=1)
    assert np.all(cosines >= 1 - 1e-5), cosines.min()
    assert np.abs(numpy_vectors - torch_vectors).max() < 1e-4
