"""Check a question before anything else looks at it."""

from __future__ import annotations

import re
import unicodedata

from bot.prompts import Messages


def normalise(raw: str) -> str:
    """One line of text: NFC, control and invisible characters dropped, whitespace runs folded."""
    text = unicodedata.normalize("NFC", raw.replace("\ufffd", ""))
    # Control characters (other than line breaks and tabs) cannot be typed; drop them, keep the words.
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]", "", text)
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
