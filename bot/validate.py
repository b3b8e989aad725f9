"""Check a question before anything else looks at it."""

from __future__ import annotations

import re
import unicodedata

from bot.normal import strip_invisible
from bot.prompts import Messages


def normalise(raw: str) -> str:
    """One line of text as shown back: NFC, escapes, control and invisible characters dropped, whitespace folded.

    This is the display form; patterns and search use `bot.normal.for_matching` of it.
    """
    text = unicodedata.normalize("NFC", strip_invisible(raw.replace("\ufffd", "")))
    return " ".join(text.split())


def clean_question(raw: object, limit: int, messages: Messages) -> tuple[str | None, str | None]:
    """(question, None) when usable, else (None, a one-line message saying what to do)."""
    if not isinstance(raw, str):
        return None, messages.errors.not_text
    text = normalise(raw)
    if not text:
        return None, messages.errors.empty
    if len(text) > limit:
        return None, messages.render(messages.errors.too_long, limit=f"{limit:,}")
    if not re.search(r"\w", text):
        return None, messages.errors.not_text
    return text, None
