"""One question, prepared once: its normal form, its spelling, its words and its embedding, for safety,
retrieval and composing.

`Assistant.ask` builds one `Query` per message (`prepare`); every later step reads it instead of
normalising, correcting or embedding the message again. Texts derived from it (a follow-up with the
conversation's topic words, one part of a multi-part question) are `about(...)` copies that share its
vectors, so no text is embedded twice while one message is answered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from bot.embed import Embedder
from bot.schema import Turn
from bot.words import content_words, tokenize

if TYPE_CHECKING:
    from bot.store import Index


@dataclass
class Query:
    """A family's message as every step sees it; each text is embedded at most once per message."""

    raw: str                      # as typed (shown back to the family, never used for matching)
    text: str                     # the normal form of the whole message; the safety patterns read it
    history: tuple[Turn, ...] = ()
    spelled: str = ""             # `text` with misspellings replaced by the documents' spelling (corrected once)
    question: str = ""            # what retrieval and composing answer: the question part of `spelled`
    context: str = ""             # topic words carried from earlier questions ('' unless a follow-up)
    expand: Callable[[str], str] | None = field(default=None, repr=False)  # adds the documents' words for family words
    embedder: Embedder | None = field(default=None, repr=False)
    _vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _keys: dict[tuple[int, str], tuple[int, list[tuple[str, float]]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.spelled = self.spelled or self.text
        self.question = self.question or self.spelled

    @property
    def search(self) -> str:
        """What dense search and sentence scoring compare with: the question, with a follow-up's topic words."""
        return f"{self.question} ({self.context})" if self.context else self.question

    @property
    def keywords(self) -> str:
        """What keyword search reads: `search` with the documents' words for family words ('chemo' -> 'chemotherapy')."""
        return self.expand(self.search) if self.expand else self.search

    @cached_property
    def words(self) -> tuple[str, ...]:
        """The question's own content words as written (lower case, stop words dropped), each once."""
        return tuple(dict.fromkeys(content_words(self.question)))

    @cached_property
    def terms(self) -> tuple[str, ...]:
        """`tokens` with the documents' words for family words: what a sentence or entry is scored against."""
        return tuple(dict.fromkeys(tokenize(self.expand(self.question) if self.expand else self.question)))

    @cached_property
    def context_terms(self) -> tuple[str, ...]:
        """Content words of the conversation a follow-up leans on (they count for less than the question's)."""
        return tuple(dict.fromkeys(tokenize(self.context)))

    @cached_property
    def keyword_terms(self) -> tuple[str, ...]:
        """The stemmed words of `keywords`, for the keyword index."""
        return tuple(dict.fromkeys(tokenize(self.keywords)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for texts derived from this message, each computed once (one call to the model for all)."""
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            if self.embedder is None:
                raise RuntimeError("this Query has no embedder: build it with prepare(..., embedder=...)")
            for t, v in zip(missing, self.embedder.encode(missing), strict=True):
                self._vectors[t] = v
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.vstack([self._vectors[t] for t in texts])

    @property
    def vector(self) -> np.ndarray:
        """The embedding of what is searched (`search`)."""
        return self.embed([self.search])[0]

    def nearest_keys(self, index: Index, k: int) -> list[tuple[str, float]]:
        """Knowledge entries whose question keys are closest to `search` (`Index.dense_keys`), best first.

        Retrieval and composing both ask; the index is searched once per text, and a smaller k reads the
        front of the larger search already made.
        """
        key = (id(index), self.search)
        done = self._keys.get(key)
        if done is None or done[0] < k:
            done = self._keys[key] = (k, index.dense_keys(self.vector, k))
        return done[1][:k]

    def about(self, question: str, context: str = "") -> Query:
        """The same message asking `question` (a part of it, or itself with a follow-up's `context`).

        Shares this query's vectors and key searches, so no text is embedded or searched twice.
        """
        return replace(self, question=question, context=context)


def prepare(raw: str, text: str, *, history: Sequence[Turn] = (), embedder: Embedder | None = None,
            correct: Callable[[str], str] | None = None, question: Callable[[str], str] | None = None,
            expand: Callable[[str], str] | None = None) -> Query:
    """The one Query of a message: `text` is its normal form (bot/normal.py), corrected once by `correct`;
    `question` picks the part of the corrected text that retrieval and composing read (default: all of it);
    `expand` adds the documents' words for family words (prompts/questions.yaml synonyms)."""
    spelled = correct(text) if correct else text
    return Query(raw=raw, text=text, history=tuple(history), spelled=spelled,
                 question=question(spelled) if question else spelled, expand=expand, embedder=embedder)
