"""The words of a text as search and scoring compare them: lower case, stop words dropped, Snowball stems.

Documents (at ingest, into the keyword index) and questions (once per message, in `bot.query.Query`)
go through the same `tokenize`, so a question's 'infusions' meets a document's 'infused'.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

import snowballstemmer

STOP_WORDS_FILE = Path(__file__).resolve().parent.parent / "prompts" / "stopwords.yaml"


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """The curated stop-word list (prompts/stopwords.yaml): words with no topic of their own.

    It keeps words that change what is asked ('serious', 'side', 'back', 'not', 'none', numbers).
    """
    import yaml

    data = yaml.safe_load(STOP_WORDS_FILE.read_text(encoding="utf-8")) or {}
    return frozenset(str(data.get("stop_words", "")).lower().split())


STOPWORDS = stop_words()

# The English (Porter2) Snowball stemmer; it uses PyStemmer's C code when that is installed.
_STEMMER = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball stem of a lower-case word ('babies' -> 'babi', 'infusions' -> 'infus'); numbers unchanged.

    Stems are for comparing words, never for showing or for spelling: typo correction works on whole
    words (bot/spelling.py) and only then are the corrected words stemmed.
    """
    if not word or word[0].isdigit():
        return word
    return _STEMMER.stemWord(word)


# Raise the number when `tokenize` changes; an edit of the stop-word list changes the hash. Either way the
# keyword index (which stores tokenize's output) is rebuilt on the next start.
TOKENIZER_VERSION = f"4-snowball-{hashlib.sha256(' '.join(sorted(STOPWORDS)).encode()).hexdigest()[:8]}"

_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[a-z0-9]+(?:'[a-z0-9]+)*")
_CONTRACTION = re.compile(r"n't\b|'(?:s|re|ve|ll|d|m)\b")


# Contractions typed without the apostrophe ('whats', 'doesnt', 'theyre', 'hes'): the word before the ending
# must be one that takes it, so a real word that merely ends the same way ('parts', 'hell', 'ill') stays a word.
_BARE_CONTRACTION = {
    "s": frozenset("what that he she it there here where who how when let".split()),
    "nt": frozenset("does did do is are was were has have had would should could must need wo ca".split()),
    "t": frozenset("don doesn didn isn aren wasn weren hasn haven hadn wouldn shouldn couldn won can".split()),
    "re": frozenset("you they we who what".split()),
    "ve": frozenset("i you we they who could would should".split()),
    "m": frozenset({"i"}),
}


def bare_contraction(word: str) -> bool:
    """True for a contraction typed without its apostrophe ('whats', 'doesnt', 'youre', 'im'): no topic of its own."""
    return any(word.endswith(end) and word[:-len(end)] in heads for end, heads in _BARE_CONTRACTION.items())


def content_words(text: str) -> list[str]:
    """Lower-case content words as written (stop words and contractions dropped, numbers kept whole: '93.3')."""
    text = _CONTRACTION.sub(" ", text.lower().replace("’", "'"))
    return [t for t in _TOKEN.findall(text) if t not in STOPWORDS and not bare_contraction(t)]


def tokenize(text: str) -> list[str]:
    """Lower-case content tokens, stemmed, numbers kept whole ('93.3'); "she's" and "won't" carry no content."""
    return [stem(t) for t in content_words(text)]
