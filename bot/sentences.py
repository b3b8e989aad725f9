"""The one sentence splitter: documents at ingest, the content tests, a family's message (what the search and
the safety classifier read of it), what the assistant already said, and the evals all cut text here.

A sentence ends at . ! ? (with any closing quote or bracket) before whitespace and a capital, a digit or an
opening quote; a question or exclamation mark ends one before anything ('what is it? and how long'). Known
abbreviations ('e.g.', 'Dr.', 'et al.') and initials do not end one. A blank line ends one unless the text
clearly runs on (the next line starts lower case); a bullet starts one, and is left out of its span.
"""

from __future__ import annotations

import re

# Raise when the splitting changes: the index stores the sentences of every passage, so it is rebuilt.
SPLITTER_VERSION = 2

_SENTENCE_END = re.compile(r"(?<=[.!?])(?P<close>[\"'”’)\]]?)\s+(?=[\"'“‘(\[]?[A-Z0-9À-ÖØ-ÞА-ЯΑ-Ω])"
                           r"|(?<=[!?])(?P<close_q>[\"'”’)\]]?)\s+")
# A family's message (`loose`): families rarely capitalise, so a full stop before any word ends a sentence too.
_LOOSE_END = re.compile(r"(?<=[.!?])(?P<close>[\"'”’)\]]?)\s+")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*(?![a-z])|\n(?=[ \t]*(?:[-*•]|\d+[.)])[ \t]+)")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "Dr.", "vs.", "approx.", "No.", "Fig.", "St.", "Mr.", "Mrs.", "Ms.", "Prof.")
_HAS_WORD = re.compile(r"[^\W_]")


def _is_abbreviation(before: str) -> bool:
    return before.endswith(_ABBREVIATIONS) or bool(re.search(r"\b[A-Z]\.$", before))


def split_sentences(text: str, loose: bool = False) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of a text, bullets and surrounding space left out of the span.

    `loose`: for a family's own message, a sentence may start lower case ('18% relapsed. are those the same?')."""
    ends = _LOOSE_END if loose else _SENTENCE_END
    spans: list[tuple[int, int]] = []
    blocks: list[tuple[int, int]] = []
    pos = 0
    for m in _PARAGRAPH.finditer(text):
        blocks.append((pos, m.start()))
        pos = m.end()
    blocks.append((pos, len(text)))
    for b_start, b_end in blocks:
        block = text[b_start:b_end]
        bullet = _BULLET.match(block)
        offset = bullet.end() if bullet else 0
        cut = offset
        for m in ends.finditer(block, offset):
            if _is_abbreviation(block[:m.start()]):
                continue
            close = "close" if m.group("close") is not None else "close_q"
            spans.append((b_start + cut, b_start + m.end(close)))
            cut = m.end()
        spans.append((b_start + cut, b_end))
    out = []
    for s, e in spans:
        seg = text[s:e]
        s += len(seg) - len(seg.lstrip())
        e = s + len(seg.strip())
        if e > s and _HAS_WORD.search(text, s, e):
            out.append((s, e))
    return out


def sentences(text: str, loose: bool = False) -> list[str]:
    """The sentences of a text, as strings (see `split_sentences`)."""
    return [text[s:e] for s, e in split_sentences(text, loose)]
