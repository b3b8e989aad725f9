"""Arrays kept on disk between starts, keyed by what they were computed from (the one on-disk cache).

Two things are kept here: vectors of fixed text lists (the red-flag, scope and role-change examples)
and fitted model weights (the red-flag classifier). A start that finds them skips the embedding model's
batch run and the classifier fit (and importing scikit-learn). Each entry is one `.npz` file named by a
hash of its inputs, so a changed example, label, embedding model or classifier version is a new entry;
old entries are never read again. Losing the folder only costs start time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def digest(parts: Iterable[str | bytes]) -> str:
    """A short hash of several inputs (separated, so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:24]


class ArrayCache:
    """A folder of named arrays; `None` as folder keeps nothing (everything is recomputed)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder else None

    def _path(self, kind: str, key: str) -> Path | None:
        return self.folder / f"{kind}-{key}.npz" if self.folder else None

    def load(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        path = self._path(kind, key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError) as exc:
            log.warning("ignoring an unreadable cache file %s (%s)", path, exc)
            return None

    def save(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(kind, key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{kind}-", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)  # readers see the whole file or none
        except OSError as exc:  # a read-only disk only costs start time
            log.warning("could not keep %s in %s: %s", kind, path.parent, exc)

    def get_or_make(self, kind: str, key: str, make: Callable[[], dict[str, np.ndarray]],
                    check: Callable[[dict[str, np.ndarray]], bool] = lambda _: True) -> dict[str, np.ndarray]:
        """The arrays stored under (kind, key), or `make()`'s, stored for the next start."""
        found = self.load(kind, key)
        if found is not None and check(found):
            return found
        made = make()
        self.save(kind, key, made)
        return made


def code_digest() -> str:
    """A hash of the bot's own source files: a result computed by this code is keyed by it."""
    folder = Path(__file__).resolve().parent
    return digest([f.read_bytes() for f in sorted(folder.glob("*.py"))])


def checked_once(cache: ArrayCache, kind: str, key: str, check: Callable[[], None]) -> bool:
    """Run `check` (which raises on failure) unless it already passed for this key; True when it was run."""
    if cache.load(kind, key) is not None:
        return False
    check()
    cache.save(kind, key, {"passed": np.array(True)})
    return True


def cached_vectors(texts: Sequence[str], embedder, cache: ArrayCache | Path | None, model_key: str = "") -> np.ndarray:
    """Vectors of a fixed list of texts, kept between starts (keyed by the texts and the embedding model)."""
    if not isinstance(cache, ArrayCache):
        cache = ArrayCache(cache)
    model_key = model_key or str(getattr(embedder, "model_path", "")) or type(embedder).__name__
    key = digest([model_key, *texts])
    found = cache.get_or_make("vectors", key, lambda: {"vectors": np.asarray(embedder.encode(list(texts)),
                                                                             dtype=np.float32)},
                              check=lambda d: d.get("vectors") is not None and d["vectors"].shape[0] == len(texts))
    return found["vectors"]
