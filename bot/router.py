"""A learned second opinion on which knowledge entry a question asks for: logistic regression over the
MiniLM vectors of the entries' question keys (their question and "also asked as" phrasings).

Similarity finds the entry with the nearest phrasing; the router has learned what all of an entry's phrasings
share, so it generalises better to a new wording (held-out phrasings, 5 folds: about 67 % right against 53 % for
the nearest phrasing; README, 'How answers are chosen'). It never answers alone: the writer accepts an entry on
its word only when similarity picks the same entry (bot/compose.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bot.cache import ArrayCache, digest

# Raise when the model or its training changes: weights kept by an older version are then refitted.
MODEL_VERSION = "entry-router-logreg-C30-1"
# Most question keys the router is fitted on at start: it reads every key vector and learns one class per
# entry, which a library of thousands of entries would pay at every start (x400 copies of knowledge/ hold
# 246,000 keys). Beyond it, similarity alone chooses (as with the router switched off).
MAX_KEYS = 20_000


class EntryRouter:
    """Predicts the entry (passage id) a question vector asks for, with its probability (numpy only)."""

    def __init__(self, classes: list[str], coef: np.ndarray, intercept: np.ndarray) -> None:
        if coef.shape[0] != len(classes) or intercept.shape != (len(classes),):
            raise ValueError("fitted weights do not match their entries")
        self.classes, self._coef, self._intercept = classes, coef, intercept

    @classmethod
    def fit(cls, entry_ids: list[str], vectors: np.ndarray, c: float = 30.0) -> EntryRouter | None:
        """Fitted on every key of every entry (None with fewer than two entries: nothing to choose between)."""
        classes = sorted(set(entry_ids))
        if len(classes) < 2:
            return None
        from sklearn.linear_model import LogisticRegression

        index = {cid: i for i, cid in enumerate(classes)}
        model = LogisticRegression(C=c, max_iter=1000, tol=1e-3).fit(vectors, [index[cid] for cid in entry_ids])
        return cls([classes[int(k)] for k in model.classes_], np.asarray(model.coef_, dtype=np.float64),
                   np.asarray(model.intercept_, dtype=np.float64))

    def state(self) -> dict[str, np.ndarray]:
        return {"classes": np.array(self.classes, dtype=str), "coef": self._coef, "intercept": self._intercept}

    def predict(self, vector: np.ndarray) -> tuple[str, float]:
        """The most likely entry and its probability."""
        scores = np.asarray(vector, dtype=np.float64) @ self._coef.T + self._intercept
        e = np.exp(scores - scores.max())
        best = int(np.argmax(e))
        return self.classes[best], float(e[best] / e.sum())


def fitted_router(entry_ids: list[str], vectors: np.ndarray | Callable[[], np.ndarray],
                  cache: ArrayCache | None = None, texts: Sequence[str] | None = None) -> EntryRouter | None:
    """The router of these keys; its weights are kept in `cache` and read back while the keys stay the same.

    `vectors` may be a function that reads them. With `texts` (what identifies the vectors: the model that
    embedded them and the hash of each key's text), the kept weights are found without reading a vector, which a
    one-question process would otherwise pay at every start (about 0.1-0.2 s for knowledge/'s 1,600 keys).
    """
    if len(set(entry_ids)) < 2:
        return None
    read = vectors if callable(vectors) else (lambda: vectors)
    if cache is None or cache.folder is None:
        return EntryRouter.fit(entry_ids, read())
    from importlib.metadata import version

    if texts is not None:
        identity: list[str | bytes] = ["texts", "\x00".join(texts)]
    else:
        vectors = read()
        read = lambda: vectors  # noqa: E731 - read once
        identity = [np.ascontiguousarray(vectors, dtype=np.float32).tobytes()]
    key = digest([MODEL_VERSION, version("scikit-learn"), "\x00".join(entry_ids), *identity])
    state = cache.get_or_make("entry-router", key, lambda: EntryRouter.fit(entry_ids, read()).state())
    try:
        return EntryRouter([str(c) for c in state["classes"]], np.asarray(state["coef"]), np.asarray(state["intercept"]))
    except (KeyError, ValueError):
        return EntryRouter.fit(entry_ids, read())
