"""One normal form of text for matching (triage, scope, search, screening); what is shown stays as written.

`for_matching` undoes the tricks that hide a word from a pattern without changing what a reader sees:
terminal escapes, invisible format characters, look-alike letters from other scripts or from the
mathematical and fullwidth blocks, and accents laid over plain English words. It never changes a
quote: documents and answers are shown verbatim, only their matching form is normalised.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import cache
from pathlib import Path

__all__ = ["for_matching", "strip_invisible"]

# ANSI / VT100 escapes: CSI (ESC [ ... final, or the one-byte C1 CSI), OSC (ESC ] ... BEL or ST), and
# two-character escapes. Removed whole, so "\x1b[31mfever\x1b[0m" reads as "fever", not "[31mfever[0m".
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[@-Z\\-_]"
    r"|\x1b"
)
# Letters that draw nothing (Hangul fillers, the blank Braille pattern) are as invisible as a format character.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Marks that never carry meaning in the scripts we read: combining grapheme joiner, variation selectors.
_SILENT_MARKS = frozenset(["\u034f", *(chr(c) for c in range(0xFE00, 0xFE10))])
_KEEP_CONTROLS = frozenset("\n\t")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_HSPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r" ?\n[\s]*")


def _drop(ch: str) -> bool:
    """Characters that change nothing a reader sees: format characters, controls, fillers."""
    if ch in _KEEP_CONTROLS:
        return False
    cat = unicodedata.category(ch)
    # Lone surrogates (a JSON "\\ud800" escape, undecodable bytes) cannot be shown, stored or encoded.
    if cat in ("Cf", "Cs") or ch in _INVISIBLE_LETTERS or ch in _SILENT_MARKS:
        return True
    return cat == "Cc" and ch not in "\r\x0b\x0c"  # other line and page breaks become spaces below


def _ranges(keep: Callable[[str], bool]) -> list[tuple[int, int]]:
    """(first, last) code points of every run for which `keep` is true (a scan of all of Unicode: ~0.5 s)."""
    ranges: list[tuple[int, int]] = []
    start = None
    for cp in range(0x110000 + 1):
        inside = cp < 0x110000 and keep(chr(cp))
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append((start, cp - 1))
            start = None
    return ranges


def _char_class(keep: Callable[[str], bool], name: str = "") -> re.Pattern[str]:
    """A regex matching every code point for which `keep` is true (built once: matching then runs in C).

    With a `name`, the runs are kept in the settings' cache folder between starts, keyed by the Unicode
    version and this file's source (an edit to a rule here is a new entry).
    """
    if name:
        import numpy as np

        from bot.cache import ArrayCache, digest
        from bot.settings import get_settings

        key = digest([name, unicodedata.unidata_version, Path(__file__).read_bytes()])
        found = ArrayCache(get_settings().cache_dir).get_or_make(
            "charclass", key, lambda: {"ranges": np.array(_ranges(keep), dtype=np.int64).reshape(-1, 2)})
        ranges = [(int(a), int(b)) for a, b in found["ranges"]]
    else:
        ranges = _ranges(keep)
    parts = [re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges]
    return re.compile(f"[{''.join(parts)}]+")


@cache
def _invisible() -> re.Pattern[str]:
    return _char_class(_drop, "invisible")


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me")


@cache
def _marks() -> re.Pattern[str]:
    return _char_class(_is_mark, "marks")


def strip_invisible(text: str) -> str:
    """The text without terminal escapes, format characters (soft hyphen, zero-width, bidi marks), controls
    and lone surrogates.

    Safe for what is shown: nothing a reader could see is changed.
    """
    return _invisible().sub("", _ANSI.sub("", text))


@cache
def _latin_lookalikes() -> dict[str, str]:
    """Non-ASCII letters that are drawn like one ASCII letter (Cyrillic 'е', Greek 'ο', small capital 'ᴇ').

    From the Unicode confusables table as packaged by confusable-homoglyphs. Letters that NFKC already
    maps (fullwidth, mathematical) are left to NFKC.
    """
    from confusable_homoglyphs.confusables import confusables_data

    table: dict[str, str] = {}
    for ch, glyphs in confusables_data.items():
        if len(ch) != 1 or ch.isascii() or not unicodedata.category(ch).startswith("L"):
            continue
        if unicodedata.normalize("NFKC", ch).isascii():
            continue
        ascii_letters = [g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii() and g["c"].isalpha()]
        if not ascii_letters:
            continue
        # Caseless look-alikes ('ǀ') read as lower case, the usual case inside a word.
        lower = ch.islower() or not ch.isupper()
        same_case = [c for c in ascii_letters if c.islower() == lower]
        table[ch] = (same_case or ascii_letters)[0]
    return table


@cache
def _english() -> frozenset[str]:
    """Plain English words (the CMU pronouncing dictionary), to tell 'fevér' (a disguised word) from 'bebé'."""
    from bot.wordlist import cmu_words

    return frozenset(w for w in cmu_words() if w.isalpha())  # none: then only loose combining marks are removed


def _base_is_latin(ch: str) -> bool:
    """A Latin letter or a digit once fullwidth/mathematical forms and look-alikes are undone."""
    if not ch:
        return False
    decomposed = unicodedata.normalize("NFKD", ch)[:1]
    return (decomposed.isascii() and decomposed.isalnum()) or ch in _latin_lookalikes()


def _drop_loose_marks(text: str) -> str:
    """Combining marks typed separately over Latin letters or digits ('fe\\u0301ver', 'zalgo' stacks) are removed.

    Marks over letters of other scripts (Devanagari vowel signs, Hebrew points) are kept.
    """
    out: list[str] = []
    base = ""
    for ch in text:
        if unicodedata.category(ch) in ("Mn", "Me"):
            if _base_is_latin(base):
                continue
        else:
            base = ch
        out.append(ch)
    return "".join(out)


def _is_latin_letter(ch: str) -> bool:
    """A Latin letter, counting fullwidth and mathematical forms (which NFKC turns into plain ones)."""
    if ch.isascii():
        return ch.isalpha()
    return "LATIN" in unicodedata.name(ch, "") or unicodedata.normalize("NFKD", ch)[:1].isascii()


def _latin_dominant(text: str) -> bool:
    """Latin text: no letter of another script without a Latin look-alike, or more Latin letters than those."""
    table = _latin_lookalikes()
    latin = other = 0
    for ch in text:
        if not ch.isalpha() or ch in table:
            continue
        if _is_latin_letter(ch):
            latin += 1
        else:
            other += 1
    return other == 0 or latin > other


def _unmark_if_word(token: str) -> str:
    """'fevér' -> 'fever' when the unaccented form is an English word; 'bebé' stays 'bebé'."""
    if token.isascii():
        return token
    plain = "".join(c for c in unicodedata.normalize("NFD", token) if not unicodedata.combining(c))
    if plain.isascii() and plain.lower() in _english():
        return plain
    return token


def _unmask_token(token: str, latin_text: bool) -> str:
    """Look-alike letters inside a Latin word ('fеver' with a Cyrillic 'е') become the Latin letters."""
    table = _latin_lookalikes()
    if token.isascii() or not any(c in table for c in token):
        return token
    has_latin = any(_is_latin_letter(c) for c in token if c not in table)
    # A word made only of look-alikes is Latin inside Latin text; real Cyrillic or Greek words
    # ('жар', 'πυρετός') have letters without a Latin look-alike and are left alone.
    if has_latin or latin_text:
        return "".join(table.get(c, c) for c in token)
    return token


def for_matching(text: str) -> str:
    """The form every pattern and every search sees: escapes, invisible characters and disguises undone.

    In order: ANSI escapes and format/control characters removed; loose combining marks over Latin
    letters removed; look-alike letters of other scripts inside Latin words mapped to Latin; NFKC
    (fullwidth and mathematical letters become plain ones); accents dropped where that gives a plain
    English word; runs of spaces folded (line breaks are kept). Pure; never used for what is shown.
    """
    if not text:
        return ""
    text = strip_invisible(text)
    if not text.isascii():
        if _marks().search(text):
            text = _drop_loose_marks(text)
        # Look-alikes first: NFKC would split some of them ('ͺ' -> ' ι') before they could be recognised.
        latin_text = _latin_dominant(text)
        text = _LETTER_RUN.sub(lambda m: _unmask_token(m.group(0), latin_text), text)
        text = unicodedata.normalize("NFKC", text)
        text = _LETTER_RUN.sub(lambda m: _unmark_if_word(m.group(0)), text)
    text = _HSPACE.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _BLANK_LINES.sub("\n", text).strip()
