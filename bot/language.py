"""Other languages (prompts/languages.yaml): which language a message is in, offline, and what to say.

Detection uses lingua-language-detector built from English and only the languages in the file, so
it never guesses a language we have no words for. Its models take about 2 s of CPU and 200 MB to load,
so a message that is clearly English by its common words (`english_words`) is decided without it.
A message counts as another language only when the detector says so with enough confidence AND one of
that language's common words is in it, so short English messages ("ok", "temp 39") stay English.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.patterns import fold
from bot.prompts import load_validated

LANGUAGES_FILE = "languages.yaml"
ENGLISH = "en"
_WORDS = re.compile(r"[a-z]+")


class LanguagesError(ValueError):
    """prompts/languages.yaml is broken; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LanguageMessages(_Strict):
    tier1: str = Field(min_length=1)
    tier2: str = Field(min_length=1)
    tier3: str = Field(min_length=1)
    english_only: str = Field(min_length=1)


class CardPatterns(_Strict):
    patterns: list[str] = Field(min_length=1)
    also: list[str] = Field(default_factory=list)


class Language(_Strict):
    name: str
    reviewed: bool = False
    words: list[str] = Field(min_length=5)
    false_friends: list[str] = Field(default_factory=list, description="everyday words of this language that are English "
                                     "sign words ('stare' is 'to stay' in Italian, 'ate' is 'until' in Portuguese): the English "
                                     "`sign_word` list does not read them in a message in this language")
    messages: LanguageMessages
    context: dict[str, list[str]] = Field(default_factory=dict)
    cards: dict[str, list[str] | CardPatterns] = Field(default_factory=dict)


class LanguagesFile(_Strict):
    """prompts/languages.yaml"""

    version: int
    detector: Literal["lingua"] = "lingua"
    min_confidence: float = Field(0.5, gt=0, le=1)
    close_below: float = Field(0.5, gt=0, le=1, description="below this confidence the detector is taken as split between "
                               "close languages: the candidate with clearly the most common words of its own wins")
    english_margin: int = Field(3, ge=1, description="a message is English without the detector when it has at "
                                "least one English word and this many times as many as common words of any other language")
    english_words: list[str] = Field(default_factory=list, description="common English words that are not common "
                                     "words of the other languages; words also in a language's `words` count for neither")
    languages: dict[str, Language]

    @field_validator("languages")
    @classmethod
    def _codes(cls, v: dict[str, Language]) -> dict[str, Language]:
        from lingua import IsoCode639_1

        for code in v:
            if code == ENGLISH or not hasattr(IsoCode639_1, code.upper()):
                raise ValueError(f"{code!r} is not a two-letter language code other than 'en'")
        return v


def load_languages(path: Path) -> LanguagesFile:
    """Read and validate the languages file; errors name the file and the key."""
    return load_validated(path, LanguagesFile, LanguagesError)


@dataclass(frozen=True)
class Detected:
    code: str           # 'en' or a code of the file
    confidence: float


class LanguageGuide:
    """Detects the language of a message and holds the replies in that language."""

    def __init__(self, spec: LanguagesFile, path: Path | str = LANGUAGES_FILE) -> None:
        self.spec = spec
        self.path = str(path)
        self.words = {code: {fold(w).lower() for w in lang.words} for code, lang in spec.languages.items()}
        english = {fold(w).lower() for w in spec.english_words}
        # Clues for the English-first rule (see detect): English words of no other list, other words of no English list.
        self.english_clues = english - set().union(*self.words.values())
        self.other_clues = {code: words - english for code, words in self.words.items()}

    @classmethod
    def from_dir(cls, prompts_dir: Path) -> LanguageGuide:
        path = Path(prompts_dir) / LANGUAGES_FILE
        return cls(load_languages(path), path)

    @cached_property
    def _detector(self):
        from lingua import IsoCode639_1, LanguageDetectorBuilder
        from lingua import Language as L

        langs = [L.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in [ENGLISH, *self.spec.languages]]
        return LanguageDetectorBuilder.from_languages(*langs).build()

    def warm_up(self) -> None:
        """Load the language models now, not during a family's first message."""
        self.detect("mijn baby heeft koorts")

    def detect(self, text: str) -> Detected:
        """The message's language; English unless another is clear."""
        sample = text[:400]
        words = set(_WORDS.findall(fold(sample).lower()))
        if len(words) < 2:
            return Detected(ENGLISH, 1.0)
        if not any(words & known for known in self.words.values()):
            # No common word of any listed language: the rule below answers English whatever the detector
            # says, so it is not asked (loading its models costs about a second in a one-question process).
            return Detected(ENGLISH, 1.0)
        if self.clearly_english(words):
            return Detected(ENGLISH, 1.0)
        return self._detect_with_model(sample, words)

    def clearly_english(self, words: set[str]) -> bool:
        """Enough English words ('what', 'does', 'my', 'the') against the common words of every other language
        ('mijn', 'fieber', 'que'; words of both, 'is', 'on', 'baby', count for neither): English without the detector.

        Another language needs its own common words (detect's rule below), so a message in it has some of them
        and almost never `english_margin` times as many English words; an English question usually has several.
        """
        english = len(words & self.english_clues)
        other = max((len(words & clues) for clues in self.other_clues.values()), default=0)
        return english >= 1 and english >= self.spec.english_margin * other

    def _detect_with_model(self, sample: str, words: set[str]) -> Detected:
        values = self._detector.compute_language_confidence_values(sample)
        if not values:
            return Detected(ENGLISH, 1.0)
        top = values[0]
        code = top.language.iso_code_639_1.name.lower()
        hits = len(words & self.words.get(code, set()))
        # Confident and one word of the language, or less sure but two of its words (short messages).
        clear = (top.value >= self.spec.min_confidence and hits >= 1) or (top.value >= self.spec.min_confidence / 2 and hits >= 2)
        if top.value < max(self.spec.close_below, self.spec.min_confidence) and code != ENGLISH:
            # Short texts without accents ("se le salio el cateter") split the detector between close
            # languages: take the candidate with clearly the most common words of its own (words that none of the other
            # candidates lists: "pro", "quem", "ligo" are Portuguese, "se", "para", "de" both Spanish and Portuguese), if any.
            floor = self.spec.min_confidence / 4
            candidates = {c: float(v.value) for v in values
                          if (c := v.language.iso_code_639_1.name.lower()) != ENGLISH and v.value >= floor}
            # Ranked by those words, then by all its common words ("se le salio el cateter": only "el" is Spanish alone).
            scored = sorted(((len(words & self.words.get(c, set()) - set().union(*(self.words.get(o, set())
                                                                                    for o in candidates if o != c))),
                              len(words & self.words.get(c, set())), value, c) for c, value in candidates.items()),
                            reverse=True)
            if scored and scored[0][1] >= 2 and (len(scored) == 1 or scored[0][:2] > scored[1][:2]):
                return Detected(scored[0][3], round(float(scored[0][2]), 3))
        if code == ENGLISH or not clear:
            return Detected(ENGLISH, 1.0 if code == ENGLISH else 1.0 - top.value)
        return Detected(code, round(float(top.value), 3))

    def language(self, code: str) -> Language | None:
        return self.spec.languages.get(code)

    def extra_patterns(self) -> dict[str, dict[str, list[str]]]:
        """{card id: {'languages.yaml: nl.cards.fever': [patterns]}} for the triage: every language's red-flag words
        are read in every message (a short message may not be recognised as the language it is in)."""
        out: dict[str, dict[str, list[str]]] = {}
        for code, lang in self.spec.languages.items():
            for card, value in lang.cards.items():
                pats = value if isinstance(value, list) else value.patterns
                out.setdefault(card, {})[f"{self.path}: {code}.cards.{card}"] = pats
        return out

    def context_patterns(self) -> dict[str, dict[str, dict[str, list[str]]]]:
        """{code: {context sign: {'languages.yaml: nl.context.past': [patterns]}}} for the triage: a language's
        context words are read only in a message in that language (the Dutch "hier" is "here", the French
        "hier" is "yesterday")."""
        return {code: {sign: {f"{self.path}: {code}.context.{sign}": pats} for sign, pats in lang.context.items()}
                for code, lang in self.spec.languages.items()}

    def false_friends(self) -> dict[str, list[str]]:
        """{code: [words]}: words of that language that the English sign words must not read in a message in it."""
        return {code: list(lang.false_friends) for code, lang in self.spec.languages.items() if lang.false_friends}

    def extra_also(self) -> dict[str, dict[str, list[str]]]:
        """{card id: {where: [also patterns]}} for cards that need a second sign."""
        out: dict[str, dict[str, list[str]]] = {}
        for code, lang in self.spec.languages.items():
            for card, value in lang.cards.items():
                if isinstance(value, CardPatterns) and value.also:
                    out.setdefault(card, {})[f"{self.path}: {code}.cards.{card}.also"] = value.also
        return out
