"""Family feedback on answers, kept in SQLite, exported to CSV for staff."""

from __future__ import annotations

import csv
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

# Only what staff need to judge an answer: no names, no IP addresses, no session ids.
COLUMNS = ("id", "created_at", "question", "answer", "citations", "helpful", "comment")
MAX_COMMENT_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    citations TEXT NOT NULL,
    helpful INTEGER NOT NULL CHECK (helpful IN (0, 1)),
    comment TEXT NOT NULL DEFAULT ''
)
"""


class FeedbackStore:
    """Helpful / not helpful votes with an optional comment, one row each."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection to the database, created with its table on first use."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            # WAL lets staff export while the app keeps writing.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            with conn:  # commit on success, roll back on error
                yield conn

    def add(self, question: str, answer: str, citations_json: str, helpful: bool, comment: str = "") -> int:
        """Store one vote and return its row id."""
        row = (
            datetime.now(UTC).isoformat(timespec="seconds"),
            question,
            answer,
            citations_json,
            int(bool(helpful)),
            (comment or "").strip()[:MAX_COMMENT_CHARS],
        )
        with self._connect() as conn:
            cur = conn.execute(
                "INSERT INTO feedback (created_at, question, answer, citations, helpful, comment) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cur.lastrowid or 0)

    def update(self, row_id: int, helpful: bool | None = None, comment: str | None = None) -> None:
        """Change the vote or the comment of a stored row (a family changing its mind)."""
        with self._connect() as conn:
            if helpful is not None:
                conn.execute("UPDATE feedback SET helpful = ? WHERE id = ?", (int(bool(helpful)), row_id))
            if comment is not None:
                conn.execute("UPDATE feedback SET comment = ? WHERE id = ?", (comment.strip()[:MAX_COMMENT_CHARS], row_id))

    def rows(self) -> list[dict[str, object]]:
        """Every stored vote, oldest first."""
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY id")]

    def export_csv(self, out: str | Path | TextIO | None = None) -> int:
        """Write every vote as CSV to a file path, an open text stream, or stdout; return the row count."""
        rows = self.rows()
        if out is None or isinstance(out, (str, Path)):
            if out is None:
                return _write_csv(sys.stdout, rows)
            path = Path(out)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as fh:
                return _write_csv(fh, rows)
        return _write_csv(out, rows)


def _write_csv(fh: TextIO, rows: list[dict[str, object]]) -> int:
    """Write the header and rows; cells a spreadsheet would run as a formula are quoted with '."""
    writer = csv.DictWriter(fh, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _safe_cell(v) for k, v in row.items()})
    return len(rows)


def _safe_cell(value: object) -> object:
    """Neutralise spreadsheet formula injection from family-typed text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
