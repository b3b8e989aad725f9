"""The SQLite feedback store and its CSV export."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

from bot.feedback import COLUMNS, FeedbackStore

CITATIONS = json.dumps([{"n": 1, "doc_id": "study-results", "quote": "93.3%"}])


def test_created_on_first_use_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "feedback.sqlite"
    store = FeedbackStore(db)
    assert not db.exists()
    row_id = store.add("How long is the drip?", "Four weeks [1].", CITATIONS, True, "  clear  ")
    assert row_id == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [r[1] for r in conn.execute("PRAGMA table_info(feedback)")]
    assert columns == list(COLUMNS)
    # Nothing that identifies a family is ever stored.
    assert not {"name", "ip", "ip_address", "user", "session"} & set(columns)


def test_rows_keep_question_answer_citations_vote_and_time(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    store.add("Q1", "A1 [1].", CITATIONS, True, "  clear  ")
    store.add("Q2", "A2", "[]", False)
    rows = store.rows()
    assert [(r["question"], r["answer"], r["helpful"], r["comment"]) for r in rows] == [
        ("Q1", "A1 [1].", 1, "clear"),
        ("Q2", "A2", 0, ""),
    ]
    assert json.loads(str(rows[0]["citations"]))[0]["doc_id"] == "study-results"
    assert str(rows[0]["created_at"]).endswith("+00:00")


def test_update_changes_vote_and_comment_of_one_row(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    first = store.add("Q1", "A1", "[]", True)
    store.add("Q2", "A2", "[]", True)
    store.update(first, helpful=False, comment="too long")
    rows = store.rows()
    assert (rows[0]["helpful"], rows[0]["comment"]) == (0, "too long")
    assert (rows[1]["helpful"], rows[1]["comment"]) == (1, "")


def test_long_comment_is_cut(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    store.add("Q", "A", "[]", True, "x" * 5000)
    assert len(str(store.rows()[0]["comment"])) == 2000


def test_export_csv_to_file_and_stream(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    store.add('Is it safe, "really"?', "Line one.\nLine two [1].", CITATIONS, False, '=HYPERLINK("x")')
    out = tmp_path / "out" / "feedback.csv"
    assert store.export_csv(out) == 1
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert list(rows[0]) == list(COLUMNS)
    assert rows[0]["question"] == 'Is it safe, "really"?'
    assert rows[0]["answer"] == "Line one.\nLine two [1]."
    assert rows[0]["helpful"] == "0"
    # A comment a spreadsheet would run as a formula is neutralised.
    assert rows[0]["comment"] == '\'=HYPERLINK("x")'
    buf = io.StringIO()
    assert store.export_csv(buf) == 1
    assert buf.getvalue().splitlines()[0] == ",".join(COLUMNS)


def test_export_of_empty_store_has_header_only(tmp_path: Path) -> None:
    buf = io.StringIO()
    assert FeedbackStore(tmp_path / "f.sqlite").export_csv(buf) == 0
    assert buf.getvalue().strip() == ",".join(COLUMNS)
