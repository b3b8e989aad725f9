"""The learned classifier beside the red-flag patterns: logistic regression on sentence vectors of the
cards' examples. It can raise a message's tier, never lower it (the patterns decide first)."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.embed import Embedder
from bot.triage import RedFlagsFile

log = logging.getLogger(__name__)
NONE = "none"  # the label of examples that are not a red flag


def training_set(rules: RedFlagsFile, more_negatives: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(texts, labels): each card's `match` examples labelled with the card; every `no_match` example, the
    educational examples and `more_negatives` (say, the scope examples) labelled 'none'."""
    texts: list[str] = []
    labels: list[str] = []
    for c in rules.cards:
        texts += c.examples.match
        labels += [c.id] * len(c.examples.match)
    negatives = [e for c in rules.cards for e in c.examples.no_match] + rules.classifier.educational_examples
    negatives += rules.classifier.reassuring_examples
    negatives += [e for e in more_negatives if e not in negatives]
    texts += negatives
    labels += [NONE] * len(negatives)
    return texts, labels


def cached_vectors(texts: Sequence[str], embedder: Embedder, cache_dir: Path | None, model_key: str = "") -> np.ndarray:
    """Vectors of the examples, kept in `cache_dir` between starts (keyed by the texts and the model)."""
    digest = hashlib.sha256(("\x00".join(texts) + "\x01" + model_key).encode("utf-8")).hexdigest()[:24]
    path = cache_dir / f"triage-{digest}.npy" if cache_dir else None
    if path is not None and path.is_file():
        try:
            vectors = np.load(path)
            if vectors.shape[0] == len(texts):
                return vectors
        except (OSError, ValueError):
            log.warning("ignoring an unreadable triage cache file %s", path)
    vectors = embedder.encode(list(texts))
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, vectors)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only disk only costs start-up time
            log.warning("could not keep the triage vectors in %s: %s", path.parent, exc)
    return vectors


def _model(c: float = 4.0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced")


class RedFlagClassifier:
    """Probability per card for a message vector (logistic regression over all cards plus 'none')."""

    def __init__(self, vectors: np.ndarray, labels: Sequence[str]) -> None:
        self.model = _model()
        self.model.fit(vectors, list(labels))
        self.classes = [str(c) for c in self.model.classes_]
        self._coef = np.asarray(self.model.coef_, dtype=np.float64)
        self._intercept = np.asarray(self.model.intercept_, dtype=np.float64)

    def probabilities(self, vectors: np.ndarray) -> dict[str, float]:
        """For one or more vectors (a message and its parts): the highest probability of each card."""
        if len(vectors) == 0:
            return {}
        x = np.atleast_2d(vectors).astype(np.float64)
        # predict_proba by hand (multinomial softmax): sklearn's input checks cost more than the sum itself.
        scores = x @ self._coef.T + self._intercept
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        probs = (e / e.sum(axis=1, keepdims=True)).max(axis=0)
        return {c: round(float(p), 4) for c, p in zip(self.classes, probs, strict=True) if c != NONE}


@dataclass(frozen=True)
class CardFigures:
    """Cross-validated figures for one card."""

    card: str
    examples: int
    recall_card: float      # its examples given this card (probability >= sure)
    recall_any: float       # its examples the classifier flags at all (all cards summed >= unsure)
    false_alarms: float     # 'none' examples given this card (>= sure)
    flagged_none: float     # 'none' examples whose best card is this one and that are flagged (summed >= unsure)


def cross_validate(vectors: np.ndarray, labels: Sequence[str], sure: float, unsure: float, folds: int = 5,
                   seed: int = 0) -> tuple[list[CardFigures], dict[str, float]]:
    """Stratified k-fold figures per card at the `sure` and `unsure` thresholds, and overall rates."""
    from sklearn.model_selection import StratifiedKFold

    y = np.array(labels)
    predicted = np.array([NONE] * len(y), dtype=object)
    best_card = np.array([NONE] * len(y), dtype=object)
    flagged = np.zeros(len(y), dtype=bool)
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(vectors, y):
        model = _model().fit(vectors[train], y[train])
        probs = model.predict_proba(vectors[test])
        classes = np.array(model.classes_)
        none_col = list(classes).index(NONE)
        masked = probs.copy()
        masked[:, none_col] = -1
        best = masked.argmax(axis=1)
        card_sum = probs.sum(axis=1) - probs[:, none_col]
        for row, idx in enumerate(test):
            best_card[idx] = classes[best[row]]
            flagged[idx] = card_sum[row] >= unsure
            if masked[row, best[row]] >= sure:
                predicted[idx] = classes[best[row]]
    cards = [c for c in dict.fromkeys(labels) if c != NONE]
    none_mask = y == NONE
    out = []
    for c in cards:
        mine = y == c
        out.append(CardFigures(c, int(mine.sum()), float((predicted[mine] == c).mean()),
                               float((flagged[mine] | (predicted[mine] != NONE)).mean()),
                               float((predicted[none_mask] == c).mean()),
                               float((flagged[none_mask] & (best_card[none_mask] == c)).mean())))
    urgent = ~none_mask
    overall = {"recall_sure": float((predicted[urgent] != NONE).mean()),
               "recall_flagged": float((flagged[urgent] | (predicted[urgent] != NONE)).mean()),
               "false_alarms_sure": float((predicted[none_mask] != NONE).mean()),
               "flagged_none": float(flagged[none_mask].mean())}
    return out, overall
