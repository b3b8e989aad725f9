"""Loading and chunking of Markdown, text, HTML and PDF, and the bad files a hospital may have."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.documents import (
    DocumentError,
    chunk_document,
    chunk_sentences,
    load_file,
    load_paths,
    split_front_matter,
    split_sentences,
)

PROJECT = Path(__file__).resolve().parent.parent


def make_pdf(path: Path, lines: list[str]) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    c.setTitle("Line care leaflet")
    y = 800
    for line in lines:
        c.drawString(50, y, line)
        y -= 20
    c.showPage()
    c.save()
    return path


def test_markdown_front_matter_gives_id_title_and_source():
    doc = load_file(PROJECT / "knowledge" / "study-results.md")
    assert doc.doc_id == "study-results"
    assert doc.title and not doc.title.startswith("---")
    assert "doi.org" in (doc.url or "") or doc.url
    assert not doc.text.startswith("---")


def test_every_chunk_is_a_verbatim_span_with_its_heading():
    for path in sorted((PROJECT / "knowledge").glob("*.md")):
        doc = load_file(path)
        chunks = chunk_document(doc, chunk_size=400, chunk_overlap=50)
        assert chunks, path
        for c in chunks:
            assert doc.text[c.start:c.end] == c.text
            assert c.title == doc.title
            assert not c.text.lstrip().startswith("#")
        assert any(c.section for c in chunks)


def test_long_sections_are_split_and_ids_are_stable():
    text = "# Big\n\n## One long part\n\n" + " ".join(f"Sentence number {i} is here." for i in range(200)) + "\n"
    p = Path("/tmp") / "x.md"
    doc = load_file_from_text(p, text)
    a = chunk_document(doc, chunk_size=300, chunk_overlap=40)
    b = chunk_document(doc, chunk_size=300, chunk_overlap=40)
    assert len(a) > 5 and [c.chunk_id for c in a] == [c.chunk_id for c in b]
    assert all(len(c.text) <= 300 for c in a)
    assert all(c.section == "One long part" for c in a)


def load_file_from_text(path: Path, text: str):
    path.write_text(text, encoding="utf-8")
    return load_file(path)


def test_sentence_splitter_keeps_numbers_abbreviations_and_bullets():
    text = ("Survival was 93.3% at 2 years. The drug, e.g. blinatumomab, was given.\n\n"
            "- Fever was seen in 4 babies.\n- Vomiting was seen in 1 baby.")
    got = [text[s:e] for s, e in split_sentences(text)]
    assert got == [
        "Survival was 93.3% at 2 years.",
        "The drug, e.g. blinatumomab, was given.",
        "Fever was seen in 4 babies.",
        "Vomiting was seen in 1 baby.",
    ]


def test_paragraph_break_inside_a_sentence_is_joined():
    text = "Immunotherapy leads to a strongly improved\n\nsurvival rate for babies. Next one here."
    got = [" ".join(text[s:e].split()) for s, e in split_sentences(text)]
    assert got[0] == "Immunotherapy leads to a strongly improved survival rate for babies."


def test_html_headings_become_sections_and_scripts_are_dropped(tmp_path):
    p = tmp_path / "leaflet.html"
    p.write_text("<html><head><title>Line care</title><script>alert(1)</script></head><body>"
                 "<h2>Cleaning the line</h2><p>Keep the dressing dry and clean every day.</p>"
                 "<h2>When to call</h2><p>Call the ward if the line leaks.</p></body></html>")
    doc = load_file(p)
    assert doc.title == "Line care"
    assert "alert" not in doc.text
    sections = {c.section for c in chunk_document(doc)}
    assert sections == {"Cleaning the line", "When to call"}


def test_pdf_text_is_indexed_by_page(tmp_path):
    doc = load_file(make_pdf(tmp_path / "leaflet.pdf", ["Flush the line with saline every week.", "Call the ward if it leaks."]))
    assert doc.title == "Line care leaflet"
    assert "Flush the line with saline every week." in doc.text
    assert chunk_document(doc)[0].section == "Page 1"


@pytest.mark.parametrize("content,reason", [
    (b"", "no text"),
    (b"%PDF-1.4\n garbage that is not a pdf", "PDF"),
])
def test_empty_or_corrupt_pdf_gives_a_clear_reason(tmp_path, content, reason):
    p = tmp_path / "bad.pdf"
    p.write_bytes(content)
    with pytest.raises(DocumentError) as err:
        load_file(p)
    assert reason in str(err.value)
    assert "\n" not in str(err.value)


def test_non_utf8_bytes_are_dropped_not_fatal(tmp_path):
    p = tmp_path / "latin.txt"
    p.write_bytes("Caf\xe9 leaflet.\n\nThe drip runs for 4 weeks.\x00\n".encode("latin-1"))
    doc = load_file(p)
    assert "The drip runs for 4 weeks." in doc.text
    assert "\x00" not in doc.text


def test_folder_without_supported_files_and_bad_files_are_reported(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.docx").write_bytes(b"PK")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "good.txt").write_text("Blinatumomab was given for 4 weeks in the study.")
    (mixed / "broken.pdf").write_bytes(b"not a pdf")
    report = load_paths([empty, mixed, tmp_path / "missing"])
    assert [d.doc_id for d in report.documents] == ["good"]
    joined = "\n".join(report.problems)
    assert "no supported files" in joined and "broken.pdf" in joined and "no such file" in joined


def test_front_matter_must_be_valid_yaml():
    with pytest.raises(DocumentError):
        split_front_matter("---\ntitle: [unclosed\n---\nbody\n")


def test_headlines_and_fragments_are_not_statements():
    doc = load_file(PROJECT / "knowledge" / "glossary.md")
    for c in chunk_document(doc):
        for s in chunk_sentences(c):
            assert len(s.text.split()) >= 4
            assert " ".join(s.text.split()) in " ".join(doc.text.split())
