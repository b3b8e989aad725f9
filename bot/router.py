"""A learned second opinion on which knowledge entry a question asks for: logistic regression over the
MiniLM vectors of the entries' question keys (their question and "also asked as" phrasings).

Similarity finds the entry with the nearest phrasing; the router has learned what all of an entry's phrasings
share, so it generalises better to a new wording (held-out phrasings, 5 folds: about 67 % right against 53 % for
the nearest phrasing; README, 'How answers are chosen'). It never answers alone: the writer accepts an entry on
its word only when similarity picks the same entry (bot/compose.py).

It is fitted at ingest and kept in the index generation (`ROUTER_FILE`, named by the generation's marker), so a
start only reads it (bot/ingest.py `store_router`); fitting at start grew with the number of keys (14 s of CPU for
18,000 keys).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np

from bot.cache import ArrayCache, digest

# Raise when the model or its training changes: weights kept by an older version are then refitted.
MODEL_VERSION = "entry-router-logreg-C30-1"
# Most question keys the router is fitted on: it reads every key vector and learns one class per entry, which a
# library of thousands of entries would pay at every ingest that changes a key (x400 copies of knowledge/ hold
# 246,000 keys). Beyond it, similarity alone chooses (as with the router switched off).
MAX_KEYS = 20_000
ROUTER_FILE = "router.npz"  # in an index generation's folder: the router of that generation's keys


class EntryRouter:
    """Predicts the entry (passage id) a question vector asks for, with its probability (numpy only).

    Entries asked by exactly the same phrasings (one entry in several documents) are one class, named by the first
    of them: `members` lists the others; `entries(label)` gives every entry a prediction stands for.
    `signatures` (class -> its phrasings, as `entry_groups` reads them) lets the next ingest update the classes from
    the documents it changed alone (`regroup`); a router stored before it kept them has none.
    """

    def __init__(self, classes: list[str], coef: np.ndarray, intercept: np.ndarray,
                 members: dict[str, tuple[str, ...]] | None = None, signatures: dict[str, str] | None = None) -> None:
        if coef.shape[0] != len(classes) or intercept.shape != (len(classes),):
            raise ValueError("fitted weights do not match their entries")
        self.classes, self._coef, self._intercept = classes, coef, intercept
        self.members = members or {}
        self.signatures = signatures or {}

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Every class with the entries it stands for (as `entry_groups` gives them)."""
        return {label: self.entries(label) for label in self.classes}

    def renamed(self, classes: list[str], members: dict[str, tuple[str, ...]],
                signatures: dict[str, str]) -> EntryRouter:
        """The same weights, class for class, under other names (the classes of a change that kept every class's
        phrasings and their order: the fit would be the same numbers)."""
        if len(classes) != len(self.classes):
            raise ValueError("renamed classes do not match the fitted weights")
        return EntryRouter(classes, self._coef, self._intercept, members, signatures)

    def entries(self, label: str | None) -> tuple[str, ...]:
        """The entries a predicted class stands for (itself, and the entries with the same phrasings)."""
        return () if label is None else self.members.get(label, (label,))

    @classmethod
    def fit(cls, entry_ids: list[str], vectors: np.ndarray, c: float = 30.0) -> EntryRouter | None:
        """Fitted on every key of every entry (None with fewer than two entries: nothing to choose between)."""
        classes = sorted(set(entry_ids))
        if len(classes) < 2:
            return None
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        index = {cid: i for i, cid in enumerate(classes)}
        # One BLAS/OpenMP thread: with two, the threads spin while they wait, so knowledge/'s 1,800 keys took 6.6 s
        # of CPU instead of 0.5 s (and 18,000 keys no less CPU than with one).
        with threadpool_limits(limits=1):
            model = LogisticRegression(C=c, max_iter=1000, tol=1e-3).fit(vectors, [index[cid] for cid in entry_ids])
        return cls([classes[int(k)] for k in model.classes_], np.asarray(model.coef_, dtype=np.float64),
                   np.asarray(model.intercept_, dtype=np.float64))

    def state(self) -> dict[str, np.ndarray]:
        out = {"classes": np.array(self.classes, dtype=str), "coef": self._coef, "intercept": self._intercept}
        if self.members:  # compact: a copy library of 137,000 entries would be 50 MB as numpy strings
            index = {label: i for i, label in enumerate(self.classes)}
            pairs = [(index[label], m) for label, group in self.members.items() for m in group]
            out["member_class"] = np.array([i for i, _ in pairs], dtype=np.int32)
            out["member_entry"] = np.frombuffer("\n".join(m for _, m in pairs).encode(), dtype=np.uint8)
        if self.signatures:
            out["signature"] = np.array([self.signatures[label] for label in self.classes], dtype=str)
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> EntryRouter:
        """The router whose weights `state()` gave (ValueError or KeyError when they do not fit together)."""
        classes = [str(c) for c in state["classes"]]
        grouped: dict[str, list[str]] = {}
        if "member_class" in state:
            entries = bytes(np.asarray(state["member_entry"], dtype=np.uint8)).decode().split("\n")
            for i, entry in zip(state["member_class"].tolist(), entries, strict=True):
                grouped.setdefault(classes[i], []).append(entry)
        signatures = dict(zip(classes, (str(x) for x in state["signature"]), strict=True)) if "signature" in state else {}
        return cls(classes, np.asarray(state["coef"]), np.asarray(state["intercept"]),
                   {label: tuple(group) for label, group in grouped.items()}, signatures)

    @classmethod
    def load(cls, path: Path) -> EntryRouter:
        """The router kept in a file (an index generation's `ROUTER_FILE`)."""
        with np.load(path, allow_pickle=False) as data:
            return cls.from_state({name: data[name] for name in data.files})

    def predict(self, vector: np.ndarray) -> tuple[str, float]:
        """The most likely entry and its probability."""
        scores = np.asarray(vector, dtype=np.float64) @ self._coef.T + self._intercept
        e = np.exp(scores - scores.max())
        best = int(np.argmax(e))
        return self.classes[best], float(e[best] / e.sum())


def entry_groups(signatures: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Entries with the same phrasings (the same `signature`), by the first of them: a class of the router.

    A router cannot tell such entries apart (the same training vectors), so as separate classes they would share its
    probability: with ten copies of an entry, none reaches the probability at which the router is heard.
    """
    groups: dict[str, list[str]] = {}
    for cid in sorted(signatures):
        groups.setdefault(signatures[cid], []).append(cid)
    return {group[0]: tuple(group) for group in groups.values()}


def regroup(groups: dict[str, tuple[str, ...]], signatures: dict[str, str], removed: Collection[str],
            added: dict[str, str]) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """The classes after a change, from the change alone: `groups` (class -> its entries, sorted) and `signatures`
    (class -> its phrasings) of the generation before, less the entries `removed`, plus the entries `added` (entry ->
    its phrasings). Equal to `entry_groups` over the whole library after the change (a test checks it), without
    reading every entry's phrasings (137,000 entries at x1000: about 3 s of a one-document change).

    Returns the classes and their signatures, by label (the first entry of each class, in sorted order).
    """
    by_sig = {signatures[label]: group for label, group in groups.items()}
    owner = {entry: signatures[label] for label, group in groups.items() for entry in group} if removed else {}
    touched: dict[str, set[str]] = {}
    for entry in removed:
        sig = owner.get(entry)
        if sig is not None:
            touched.setdefault(sig, set(by_sig[sig])).discard(entry)
    for entry, sig in added.items():
        touched.setdefault(sig, set(by_sig.get(sig, ()))).add(entry)
    for sig, entries in touched.items():
        by_sig[sig] = tuple(sorted(entries))
    out = sorted((group[0], group, sig) for sig, group in by_sig.items() if group)
    return {label: group for label, group, _ in out}, {label: sig for label, _, sig in out}


def router_key(entry_ids: Sequence[str], texts: Sequence[str]) -> str:
    """What identifies a router's weights: its version and training, each key's entry, and what identifies the key
    vectors (the embedding model, then the hash of each key's text)."""
    from importlib.metadata import version

    return digest([MODEL_VERSION, version("scikit-learn"), "\x00".join(entry_ids), "texts", "\x00".join(texts)])


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
        key = router_key(entry_ids, texts)
    else:
        vectors = read()
        read = lambda: vectors  # noqa: E731 - read once
        key = digest([MODEL_VERSION, version("scikit-learn"), "\x00".join(entry_ids),
                      np.ascontiguousarray(vectors, dtype=np.float32).tobytes()])
    state = cache.get_or_make("entry-router", key, lambda: EntryRouter.fit(entry_ids, read()).state())
    try:
        return EntryRouter.from_state(state)
    except (KeyError, ValueError):
        return EntryRouter.fit(entry_ids, read())
