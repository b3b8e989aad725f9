"""One question, prepared once: its normal form, its words and its embedding, for safety, retrieval and composing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bot.embed import Embedder
from bot.schema import Turn


@dataclass
class Query:
    """A family's message as every step sees it; each text is embedded at most once per question."""

    raw: str                      # as typed (shown back to the family, never used for matching)
    text: str                     # the normal form used for matching
    history: tuple[Turn, ...] = ()
    embedder: Embedder | None = field(default=None, repr=False)
    _vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors for texts derived from this question, computed once each."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            if self.embedder is None:
                raise RuntimeError("this Query has no embedder")
            for t, v in zip(missing, self.embedder.encode(missing), strict=True):
                self._vectors[t] = v
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.vstack([self._vectors[t] for t in texts])

    @property
    def vector(self) -> np.ndarray:
        """The embedding of the question's normal form."""
        return self.embed([self.text])[0]
