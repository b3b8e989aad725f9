"""The learned classifier beside the red-flag patterns: logistic regression on sentence vectors of the
cards' examples. It can raise a message's tier, never lower it (the patterns decide first)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.cache import ArrayCache, cached_vectors, digest
from bot.triage import RedFlagsFile

__all__ = ["RedFlagClassifier", "cached_vectors", "fitted_classifier", "training_set", "cross_validate"]

log = logging.getLogger(__name__)
NONE = "none"  # the label of examples that are not a red flag
# Raise when what the classifier learns or how it scores changes: fitted weights kept on disk under an
# older version are then refitted (see fitted_classifier).
MODEL_VERSION = "logreg-multinomial-C4-balanced-1"


def training_set(rules: RedFlagsFile, more_negatives: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(texts, labels): each card's `match` examples labelled with the card; every `no_match` example, the
    reassuring, past, hypothetical, everyday and educational look-alikes and `more_negatives` (say, the scope
    examples) labelled 'none'."""
    texts: list[str] = []
    labels: list[str] = []
    for c in rules.cards:
        texts += c.examples.match
        labels += [c.id] * len(c.examples.match)
    negatives = [e for c in rules.cards for e in c.examples.no_match] + rules.classifier.educational_examples
    negatives += rules.classifier.reassuring_examples + rules.classifier.past_examples
    negatives += rules.classifier.hypothetical_examples
    negatives += rules.classifier.everyday_examples
    negatives += [e for e in more_negatives if e not in negatives]
    texts += negatives
    labels += [NONE] * len(negatives)
    return texts, labels


def _model(c: float = 4.0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced")


class RedFlagClassifier:
    """Probability per card for a message vector (logistic regression over all cards plus 'none')."""

    def __init__(self, vectors: np.ndarray, labels: Sequence[str]) -> None:
        model = _model()
        model.fit(vectors, list(labels))
        self.classes = [str(c) for c in model.classes_]
        self._coef = np.asarray(model.coef_, dtype=np.float64)
        self._intercept = np.asarray(model.intercept_, dtype=np.float64)

    def state(self) -> dict[str, np.ndarray]:
        """The fitted weights, as arrays (what `from_state` needs; kept on disk by fitted_classifier)."""
        return {"classes": np.array(self.classes, dtype=str), "coef": self._coef, "intercept": self._intercept}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> RedFlagClassifier:
        """A fitted classifier from `state()`'s arrays, without scikit-learn."""
        self = cls.__new__(cls)
        self.classes = [str(c) for c in state["classes"]]
        self._coef = np.asarray(state["coef"], dtype=np.float64)
        self._intercept = np.asarray(state["intercept"], dtype=np.float64)
        if self._coef.shape[0] != len(self.classes) or self._intercept.shape != (len(self.classes),):
            raise ValueError("fitted weights do not match their classes")
        return self

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


def fitted_classifier(vectors: np.ndarray, labels: Sequence[str], cache: ArrayCache | None = None
                      ) -> RedFlagClassifier:
    """The classifier fitted on (vectors, labels); its weights are kept in `cache` and read back at the next
    start with the same examples, model version and scikit-learn version (no refit, no scikit-learn import)."""
    if cache is None or cache.folder is None:
        return RedFlagClassifier(vectors, labels)
    from importlib.metadata import version

    key = digest([MODEL_VERSION, version("scikit-learn"), np.ascontiguousarray(vectors, dtype=np.float32).tobytes(),
                  "\x00".join(labels)])
    state = cache.get_or_make("triage-classifier", key, lambda: RedFlagClassifier(vectors, labels).state())
    try:
        return RedFlagClassifier.from_state(state)
    except (KeyError, ValueError):
        return RedFlagClassifier(vectors, labels)


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
