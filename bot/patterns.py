"""Every pattern a clinician can edit is compiled here, with google-re2: matching time grows linearly
with the text, so no rules file can hang the bot ('(a+)+$' on 30 letters takes microseconds).

RE2 has no look-behind, look-ahead or back-references; a pattern that uses them is rejected when the
file loads, with the file and the key named. Patterns are matched without regard to case.

Vocabularies: a pattern may name a list of words in braces, `{child}` or `{now}`; it is replaced by
`(?:word1|word2|...)` before compiling. Braces that are not a known name (`\\d{2,3}`) are left alone.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import re2

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 64 << 20  # a rule is small; a pattern needing more than this is a mistake, not a rule
# Rules only ask "does it match, and where": no groups are captured (decoding them is most of the cost).
_OPTIONS.never_capture = True

_NAME = re.compile(r"\{([a-z][a-z0-9_]*)\}")
# Letters that Unicode does not decompose into a base letter plus an accent.
_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe",
                       "Œ": "OE", "đ": "d", "ı": "i", "\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'",
                       "\u201c": '"', "\u201d": '"', "\u00a0": " "})


class PatternError(ValueError):
    """A clinician-editable pattern that cannot be used; the message names the file and the key."""


class Matcher(Protocol):
    """What a compiled pattern offers (an RE2 regexp, or a Python one in code that is not editable)."""

    def search(self, text: str, pos: int = ..., endpos: int = ...) -> object | None: ...


def fold(text: str) -> str:
    """The text as rules see it: accents removed ('fièvre' -> 'fievre', 'gorączka' -> 'goraczka'),
    curly quotes made straight. RE2's word edges (\\b) only know ASCII letters, so matching happens here."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def expand(pattern: str, vocabularies: Mapping[str, Sequence[str]]) -> str:
    """Replace each `{name}` of a known vocabulary by a group of its words (longest first)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in vocabularies:
            return m.group(0)
        words = sorted({fold(w) for w in vocabularies[name]}, key=len, reverse=True)
        return "(?:" + "|".join(words) + ")"

    return _NAME.sub(sub, pattern)


def unknown_names(pattern: str, vocabularies: Mapping[str, object]) -> list[str]:
    """`{names}` in a pattern that are not vocabularies (a typo such as `{chlid}`)."""
    return [n for n in _NAME.findall(pattern) if n not in vocabularies]


def compile_pattern(pattern: object, where: str, vocabularies: Mapping[str, Sequence[str]] | None = None) -> Matcher:
    """Compile one editable pattern with RE2; `where` is 'file: key' and is named in any error."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise PatternError(f"{where}: empty pattern")
    vocab = vocabularies or {}
    missing = unknown_names(pattern, vocab)
    if missing and vocabularies is not None:
        raise PatternError(f"{where}: unknown vocabulary {{{missing[0]}}} in {pattern!r}; "
                           f"known: {', '.join(sorted(vocab)) or 'none'}")
    source = fold(expand(pattern, vocab))
    try:
        return re2.compile(source, _OPTIONS)
    except Exception as exc:  # re2 raises its own error type
        detail = str(exc).strip("b'\"")
        hint = " (look-behind, look-ahead and back-references are not allowed: write the exception as its own pattern)" \
            if "perl operator" in detail or "backreference" in detail.lower() else ""
        raise PatternError(f"{where}: bad pattern {pattern!r}: {detail}{hint}") from None


def compile_all(patterns: Iterable[object], where: str,
                vocabularies: Mapping[str, Sequence[str]] | None = None) -> list[Matcher]:
    """Compile a list of patterns; an error names `where[i]`."""
    return [compile_pattern(p, f"{where}[{i}]", vocabularies) for i, p in enumerate(patterns)]


def first_match(patterns: Sequence[Matcher], text: str) -> object | None:
    """The first pattern's match in `text`, or None."""
    for p in patterns:
        m = p.search(text)
        if m is not None:
            return m
    return None


class PatternGroup:
    """A list of compiled patterns searched as one (a single RE2 pass says whether any matches; only then
    are the patterns tried one by one to name the first that does)."""

    def __init__(self, sources: Sequence[str], compiled: Sequence[Matcher], where: str) -> None:
        self.sources = list(sources)
        self.compiled = list(compiled)
        self._any: Matcher | None = None
        if len(self.compiled) > 1:
            try:
                self._any = re2.compile("|".join(f"(?:{p.pattern})" for p in self.compiled), _OPTIONS)  # type: ignore[attr-defined]
            except Exception:  # too big to combine: search them one by one
                self._any = None

    def __len__(self) -> int:
        return len(self.compiled)

    def __bool__(self) -> bool:
        return bool(self.compiled)

    def first(self, text: str) -> str | None:
        """The source of the first pattern that matches `text`, or None."""
        if not self.compiled or (self._any is not None and self._any.search(text) is None):
            return None
        for source, p in zip(self.sources, self.compiled, strict=True):
            if p.search(text) is not None:
                return source
        return None

    def __add__(self, other: PatternGroup) -> PatternGroup:
        return PatternGroup(self.sources + other.sources, self.compiled + other.compiled, "")


def group(patterns: Sequence[str], where: str, vocabularies: Mapping[str, Sequence[str]] | None = None) -> PatternGroup:
    """Compile a list of editable patterns into a group; an error names `where[i]`."""
    return PatternGroup(patterns, compile_all(patterns, where, vocabularies), where)
