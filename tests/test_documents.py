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


def test_windows_1252_text_is_read_with_its_accents(tmp_path):
    p = tmp_path / "latin.txt"
    p.write_bytes("Caf\xe9 leaflet.\n\nThe drip runs for 4 weeks \u2013 day and night.\n".encode("cp1252"))
    doc = load_file(p)
    assert "Café leaflet." in doc.text and "4 weeks – day and night" in doc.text


def test_utf16_text_from_word_is_read(tmp_path):
    p = tmp_path / "unicode.txt"
    p.write_bytes("The drip runs for 4 weeks.\n".encode("utf-16"))
    assert "The drip runs for 4 weeks." in load_file(p).text


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


@pytest.mark.parametrize("name,content,reason", [
    ("photo.md", PNG, "not text: the content is a PNG image"),
    ("random.md", bytes(range(256)) * 40, "not text"),
    ("nul.txt", b"The drip runs for 4 weeks.\x00\x00\x01\x02 more text", "NUL bytes"),
    ("leaflet.html", b"%PDF-1.4\n%binary", "the content is a PDF"),
    ("controls.txt", bytes([0x01, 0x02, 0x03, 0x04, 0x05, 0x06]) * 50 + b"text", "control characters"),
    ("undecodable.txt", b"Leaflet \x81\x8d\x8f\x90\x9d text", "neither UTF-8 nor Windows-1252"),
    ("leaflet.pdf", b"<html><body>A web page</body></html>", "not a PDF"),
    ("notes.docx", b"The drip runs for 4 weeks.", "not a Word .docx file"),
    ("old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "save it as .docx"),
    ("zip.docx", b"PK\x03\x04 not really a zip", "not a Word .docx file"),
])
def test_content_decides_not_the_name(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DocumentError) as err:
        load_file(p)
    assert reason in str(err.value) and "\n" not in str(err.value)


def test_a_binary_renamed_md_is_skipped_and_the_rest_are_loaded(tmp_path, monkeypatch):
    (tmp_path / "good.md").write_text("# Good\n\nThe ward phone line is open day and night for parents.\n")
    (tmp_path / "binary.md").write_bytes(PNG)
    (tmp_path / "zero.md").write_bytes(bytes(5000))
    locked = tmp_path / "locked.txt"
    locked.write_text("The ward phone line is open.")
    read_bytes = Path.read_bytes

    def refuse(self):  # root reads a file whatever its mode, so the refusal is made here
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied")
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    report = load_paths([tmp_path])
    assert [d.doc_id for d in report.documents] == ["good"]
    skipped = {Path(f.path).name: f.warning for f in report.files if f.problem}
    assert set(skipped) == {"binary.md", "zero.md", "locked.txt"}
    assert all(w.startswith("skipped: ") and "\n" not in w for w in skipped.values())
    assert skipped["locked.txt"] == "skipped: cannot read the file (Permission denied)"


def test_folder_without_supported_files_and_bad_files_are_reported(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.xlsx").write_bytes(b"PK")
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


# ---------------------------------------------------------------- the realistic leaflets (tests/data/make_leaflets.py)

def squash(text: str) -> str:
    return " ".join(text.split())


def sections(doc) -> set[str]:
    return {c.section for c in chunk_document(doc)}


def test_web_page_in_divs_keeps_every_content_block_and_drops_the_page_furniture(leaflets_dir, boilerplate):
    doc = load_file(leaflets_dir / "pump-at-home.html")
    text = squash(doc.text)
    for sentence in [
        "At home, a nurse from the home care team changes the bag every 4 days.",        # a <div>
        "Your baby should not have a bath or go swimming while the pump is connected",  # a <div>
        "Wash your baby's hair over a basin",                                              # under <h5>
        "The pump bag fits in the basket under the pram",                                  # a <dd>
        "The pump is disconnected on the ward at the end of the 4 weeks",                  # under <h6>
    ]:
        assert sentence in text
    for junk in boilerplate:
        assert junk.lower() not in text.lower(), junk
    assert doc.title == "Going home with a blinatumomab pump"
    assert doc.url == "https://www.example-childrens.org/leaflets/pump-at-home"  # the canonical URL
    assert doc.description.startswith("What to expect when your baby goes home")
    assert {"The pump and the bag", "Washing and bathing", "Hair washing", "Can we go out for a walk?"} <= sections(doc)


def test_table_of_contact_times_becomes_one_readable_line_per_row(leaflets_dir, boilerplate):
    doc = load_file(leaflets_dir / "contact-times.html")
    assert "- Home care nurses — Days: Monday to Saturday; Times: 9 am to 5 pm; " in doc.text
    assert "Pharmacy — Days: Monday to Friday; Times: 9 am to 4.30 pm;" in doc.text
    assert doc.source == "Who to contact and when — Example Children's Hospital"
    assert doc.url == "https://www.example-childrens.org/oncology/contact-times"
    for junk in boilerplate:
        assert junk.lower() not in doc.text.lower(), junk
    spans = [squash(doc.text[c.start:c.end]) for c in chunk_document(doc)]
    rows = [s for c in chunk_document(doc) for s in chunk_sentences(c) if "Home care nurses —" in s.text]
    assert rows and rows[0].text.startswith("Home care nurses") and rows[0].text.endswith("visits at home.")
    assert spans


def test_word_file_headings_lists_and_tables(leaflets_dir, boilerplate):
    doc = load_file(leaflets_dir / "central-line-care.docx")
    assert doc.title == "Caring for your baby's central line at home"
    assert {"The dressing", "Keeping the dressing dry", "What to keep at home", "Checks through the day"} <= sections(doc)
    # List items end like sentences, so that an answer can quote them.
    assert ("children:\n\n- a spare pair of line clamps from the ward.\n"
            "- sterile gauze and the small roll of tape the nurses gave you.\n") in doc.text
    assert "- Bedtime — What to check: The line is taped to the chest in a loop" in doc.text
    assert "The clear dressing over the line is changed once a week by a nurse" in doc.text
    for junk in boilerplate:  # the running header and footer of the Word file are not body text
        assert junk.lower() not in doc.text.lower(), junk


def test_pdf_outline_headings_running_lines_and_hyphenation(leaflets_dir, boilerplate):
    doc = load_file(leaflets_dir / "food-and-drink.pdf")
    assert doc.title == "Food and drink during treatment"
    assert {"Milk and bottles", "Solid food", "Eating less than usual", "Your follow-up clinic"} <= sections(doc)
    text = squash(doc.text)
    assert "Only give your baby milk and yogurt that are pasteurised." in text  # 'pasteu-' + 'rised' joined
    assert "to the follow-up clinic" in text                                    # a real compound keeps its hyphen
    assert "Cook eggs until the white and the yolk are both firm." in text
    for junk in boilerplate:
        assert junk.lower() not in text.lower(), junk


def test_the_four_leaflets_keep_their_visible_text(leaflets_dir):
    report = load_paths([leaflets_dir])
    stats = {Path(f.path).name: f for f in report.files}
    assert set(stats) == {"pump-at-home.html", "contact-times.html", "central-line-care.docx", "food-and-drink.pdf"}
    for name, f in stats.items():
        assert f.problem is None and f.passages >= 3, name
        assert f.warning is None, (name, f.warning)  # at least half of the visible text was kept
    # The PDF loses only its running header and footer lines; the Word file nothing.
    assert stats["food-and-drink.pdf"].kept > 0.8 and stats["central-line-care.docx"].kept > 0.95


def test_join_hyphenated_follows_the_document_then_the_dictionary():
    from bot.formats import join_hyphenated

    assert join_hyphenated("pasteu-\nrised milk") == "pasteurised milk"
    assert join_hyphenated("the treat-\nment plan") == "the treatment plan"
    assert join_hyphenated("a follow-\nup visit, then the follow-up clinic") == "a follow-up visit, then the follow-up clinic"
    assert join_hyphenated("a well-\nknown drug") == "a well-known drug"     # two words, no joined word
    assert join_hyphenated("Anti-\nCD19") == "Anti-\nCD19"                   # not a lower-case continuation


def test_running_lines_and_page_numbers_are_dropped_but_repeated_body_lines_stay():
    from bot.formats import drop_running_lines

    bodies = [[f"Line {n} of the text on sheet {'ABC'[i - 1]}." for n in range(8)] for i in range(1, 4)]
    pages = [["Ward 5 leaflet", f"Day {i + 4}: feeds go on as before.", *bodies[i - 1], f"Leaflet 7 · Page {i} of 3", str(i)]
             for i in range(1, 4)]
    out = drop_running_lines(pages)
    assert [p[0] for p in out] == ["Day 5: feeds go on as before.", "Day 6: feeds go on as before.",
                                   "Day 7: feeds go on as before."]  # numbered like the pages, but not the page number
    assert [p[1:] for p in out] == bodies


def test_a_page_that_is_mostly_furniture_is_flagged(tmp_path):
    menu = "".join(f"<li><a href='/p{i}'>Department number {i} of the hospital</a></li>" for i in range(60))
    p = tmp_path / "thin.html"
    p.write_text(f"<html><body><nav><ul>{menu}</ul></nav><main><h1>Parking</h1>"
                 "<p>Parents park free at the children's entrance.</p></main></body></html>")
    report = load_paths([p])
    (stats,) = report.files
    assert stats.chars_indexed < stats.chars_in / 2
    assert "only" in stats.warning and "of its visible text was kept" in stats.warning
    assert "WARNING: only" in report.table()


def test_dry_run_prints_the_per_file_summary_and_changes_nothing(tmp_path, leaflets_dir, capsys):
    from bot.cli import main
    from bot.settings import Settings

    settings = Settings(index_dir=tmp_path / "index", knowledge_dir=tmp_path / "none")
    (leaflets_dir.parent / "bad").mkdir(exist_ok=True)
    bad = leaflets_dir.parent / "bad" / "photo.md"
    bad.write_bytes(PNG)
    assert main(["ingest", "--dry-run", str(leaflets_dir), str(bad)], settings) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == ["file", "chars", "in", "indexed", "kept", "passages"]
    assert any(line.startswith("pump-at-home.html") for line in lines)
    assert any(line.startswith("photo.md") and "WARNING: skipped: not text" in line for line in lines)
    assert "dry run, nothing written: 4 would be added" in out.out
    # What each file says about itself, as its citations will show it.
    assert ('pump-at-home.html: "Going home with a blinatumomab pump" · '
            "https://www.example-childrens.org/leaflets/pump-at-home") in out.out
    assert "    What to expect when your baby goes home with a blinatumomab pump" in out.out
    assert not (tmp_path / "index").exists()


def test_word_text_inside_a_content_control_is_kept(tmp_path):
    import copy

    import docx
    from docx.oxml import OxmlElement

    d = docx.Document()
    d.add_heading("Clinic days", level=1)
    p = d.add_paragraph("The clinic for babies on the drip is on Tuesday and Thursday mornings.")
    sdt, content = OxmlElement("w:sdt"), OxmlElement("w:sdtContent")
    content.append(copy.deepcopy(p._p))
    sdt.append(content)
    p._p.addnext(sdt)
    p._p.getparent().remove(p._p)  # the sentence now lives only inside the content control
    d.save(str(tmp_path / "form.docx"))
    report = load_paths([tmp_path / "form.docx"])
    assert "Tuesday and Thursday mornings." in report.documents[0].text
    assert report.files[0].kept > 0.9


def test_outline_titles_are_found_with_their_number_or_over_two_lines():
    from bot.formats import place_headings

    lines = ["Intro line.", "2.1 Milk and", "bottles", "Use boiled water.", "3 Solid food", "Cook eggs well."]
    got = place_headings(lines, [(1, "Milk and bottles"), (2, "Solid food"), (1, "Not printed")])
    assert got == ["Intro line.", "## Milk and bottles", "Use boiled water.", "### Solid food", "## Not printed",
                   "Cook eggs well."]


def test_pdf_lines_are_joined_into_paragraphs_and_sentences_run_on_across_pages(tmp_path):
    import textwrap

    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    sentences = [f"Sentence number {i} tells parents one more thing about keeping the line dry at home." for i in range(30)]
    lines = textwrap.wrap(" ".join(sentences), 90)
    path = tmp_path / "long.pdf"
    c = canvas.Canvas(str(path), pagesize=A4)
    c.bookmarkPage("p1")
    c.addOutlineEntry("Keeping the line dry", "p1", level=0)
    for page in (lines[:12], lines[12:]):  # one paragraph that goes on over the page break
        y = 800
        for line in page:
            c.drawString(50, y, line)
            y -= 15
        c.showPage()
    c.save()
    doc = load_file(path)
    assert doc.text.startswith("## Keeping the line dry\n\n")
    assert " ".join(sentences) in doc.text  # one paragraph again, page break included
    chunks = chunk_document(doc, chunk_size=400, chunk_overlap=50)
    assert len(chunks) > 3 and {c.section for c in chunks} == {"Keeping the line dry"}
    got = {s.text for c in chunks for s in chunk_sentences(c)}
    assert got == set(sentences)  # no sentence cut at a printed line or at a passage boundary


@pytest.mark.parametrize("html,expected", [
    # An old page laid out with a one-column table: headings and paragraphs, not table rows.
    ("<html><head><title>Old page</title></head><body><table width=800><tr><td><h2>Line care</h2>Keep the dressing "
     "dry and clean every day.<br><br>Change it once a week.</td></tr></table></body></html>",
     "## Line care\n\nKeep the dressing dry and clean every day.\n\nChange it once a week.\n"),
    # A short page that is only a list: still a list, not one run-on line.
    ("<html><body><h1>What to bring</h1><ul><li>The red book</li><li>Your feeding notes</li></ul></body></html>",
     "- The red book.\n- Your feeding notes.\n"),
    # Nested and numbered lists keep their order and depth.
    ("<html><body><main><h2>Tips</h2><ol><li>Wash your hands first.<ul><li>Use soap and water</li></ul></li>"
     "<li>Dry them well.</li></ol></main></body></html>",
     "## Tips\n\n1. Wash your hands first.\n  - Use soap and water.\n2. Dry them well.\n"),
])
def test_short_and_old_fashioned_pages_keep_their_structure(html, expected):
    from bot.formats import html_to_text

    assert html_to_text(html).body == expected


def test_the_summary_marks_files_held_back_by_screening(tmp_path, capsys):
    from bot.cli import main
    from bot.settings import Settings

    settings = Settings(index_dir=tmp_path / "index", knowledge_dir=tmp_path / "none")
    main(["ingest", "--dry-run", str(PROJECT / "tests" / "data" / "poisoned")], settings)
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "%" in line}
    assert "WARNING: held back for review" in rows["emergency-numbers.md"]
    assert "WARNING" not in rows["day-unit-visits.md"]


def test_files_of_other_types_in_a_folder_are_listed_as_not_read(tmp_path):
    (tmp_path / "good.txt").write_text("The ward phone line is open day and night for parents.")
    (tmp_path / "old leaflet.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "~$good.docx").write_bytes(b"lock")    # Word's lock file
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("x")     # hidden folders are not documents
    report = load_paths([tmp_path])
    rows = {Path(f.path).name: f.warning for f in report.files}
    assert rows == {"good.txt": None,
                    "old leaflet.doc": "skipped: .doc files are not read; an old Word file: save it as .docx"}


def test_a_password_protected_pdf_says_so(tmp_path):
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    path = tmp_path / "locked.pdf"
    c = canvas.Canvas(str(path), encrypt=pdfencrypt.StandardEncryption("secret", strength=128))
    c.drawString(50, 800, "The drip runs for 4 weeks day and night.")
    c.showPage()
    c.save()
    with pytest.raises(DocumentError, match="protected by a password; save a copy without one"):
        load_file(path)


def test_one_sentence_splitter_serves_documents_messages_and_answers():
    from bot.sentences import sentences

    # A family's message: a question mark ends a sentence before lower case; other scripts are cut too.
    assert sentences("what is it? and how long is it given. ok") == ["what is it?", "and how long is it given. ok"]
    assert sentences("Он горячий. Что делать?") == ["Он горячий.", "Что делать?"]
    # No module cuts sentences its own way (ingest, search, safety, composing, evals, content tests).
    project = Path(__file__).resolve().parent.parent
    own_splitters = [str(p.relative_to(project)) for folder in ("bot", "evals", "tests") for p in (project / folder).glob("*.py")
                     if p.name not in ("sentences.py", "test_documents.py") and "(?<=[.!?])" in p.read_text(encoding="utf-8")]
    assert not own_splitters, own_splitters


def test_find_files_lists_what_rglob_and_is_file_list(tmp_path):
    """The folder walk (one directory read per folder) finds exactly the files rglob('*') + is_file did: nested
    folders, links to files followed, links to folders not entered, hidden files, READMEs and Office lock files
    left out, any case of suffix; in the same order."""
    from bot.documents import SUPPORTED_SUFFIXES, find_files

    root = tmp_path / "lib"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ["x.md", "a/y.TXT", "a/b/z.html", "a/b/notes.rtf", ".hidden/h.md", "a/.dot.md", "README.md",
                 "a/~$lock.docx", "a-c.md", "a/b/w.pdf"]:
        (root / name).write_text("text")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.md").write_text("text")
    (root / "link-to-file.md").symlink_to(outside / "o.md")
    (root / "link-to-folder").symlink_to(outside)
    (root / "broken.md").symlink_to(tmp_path / "missing.md")
    found, problems = find_files([root])
    expected = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
                      and not p.name.startswith((".", "README", "~$")))
    assert found == expected and not problems
    assert root / "link-to-file.md" in found and root / ".hidden" / "h.md" in found
    assert not any("link-to-folder" in str(p) for p in found)
