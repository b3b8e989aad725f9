"""Load source documents (Markdown, text, HTML, PDF) and cut them into cited chunks and sentences."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf"}


class DocumentError(ValueError):
    """A file that cannot be read as a source document; the message says why."""


@dataclass(frozen=True)
class SourceDocument:
    """One document as indexed: `text` is exactly what quotes are checked against."""

    doc_id: str
    title: str
    text: str
    source: str
    url: str | None
    path: str
    sources: tuple[dict[str, str], ...] = ()
    reviewed: str | None = None

    @property
    def content_hash(self) -> str:
        meta = f"{self.doc_id}\0{self.title}\0{self.source}\0{self.url}\0"
        return hashlib.sha256((meta + self.text).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Chunk:
    """A span of a document (`text == document.text[start:end]`) with its heading."""

    chunk_id: str
    doc_id: str
    title: str
    section: str
    text: str
    start: int
    end: int
    source: str
    url: str | None
    keys: tuple[str, ...] = ()  # a knowledge entry's question and its "also asked as" phrasings

    @property
    def search_text(self) -> str:
        """What is embedded and keyword-indexed: title and heading give the passage its context."""
        return f"{self.title}. {self.section}. {self.text}" if self.section else f"{self.title}. {self.text}"

    @property
    def is_entry(self) -> bool:
        """A reviewed answer entry (question, phrasings, answer), shown whole when it matches."""
        return bool(self.keys)


@dataclass(frozen=True)
class Sentence:
    """One sentence of a chunk; `text` is verbatim from the chunk apart from whitespace."""

    sentence_id: str
    chunk_id: str
    position: int
    text: str
    grade: float = 0.0  # Flesch-Kincaid reading grade, filled in at ingest


@dataclass
class LoadReport:
    """Documents loaded from some paths, and one line for each file that could not be."""

    documents: list[SourceDocument] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- loading


def find_files(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Supported files under the given files/folders, sorted; and a message per unusable path."""
    found: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES and not p.name.startswith((".", "README"))
            )
            if not files:
                problems.append(f"{path}: no supported files (.md, .txt, .html, .pdf) in this folder")
            found.extend(files)
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(path)
            else:
                problems.append(f"{path}: unsupported file type {path.suffix or '(none)'}; use .md, .txt, .html or .pdf")
        else:
            problems.append(f"{path}: no such file or folder")
    return found, problems


def load_paths(paths: list[Path]) -> LoadReport:
    """Load every supported file; a bad file is reported and skipped, the rest go on."""
    files, problems = find_files(paths)
    report = LoadReport(problems=problems)
    seen: dict[str, Path] = {}
    for path in files:
        try:
            doc = load_file(path)
        except DocumentError as exc:
            report.problems.append(f"{path}: {exc}")
            continue
        if doc.doc_id in seen:
            report.problems.append(f"{path}: document id {doc.doc_id!r} already used by {seen[doc.doc_id]}; skipped")
            continue
        seen[doc.doc_id] = path
        report.documents.append(doc)
    return report


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Keep the document usable: undecodable bytes become U+FFFD and are then dropped.
        text = raw.decode("utf-8", errors="replace").replace("\ufffd", "")
    return clean_text(text)


def clean_text(text: str) -> str:
    """Normalise newlines and drop control characters (tabs and newlines stay)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)


def load_file(path: Path) -> SourceDocument:
    """Read one file into a SourceDocument, or raise DocumentError with a one-line reason."""
    suffix = path.suffix.lower()
    if suffix in {".md", ".markdown"}:
        meta, body = split_front_matter(_read_text(path))
    elif suffix == ".txt":
        meta, body = {}, _read_text(path)
    elif suffix in {".html", ".htm"}:
        meta, body = _html_to_text(_read_text(path))
    elif suffix == ".pdf":
        meta, body = _pdf_to_text(path)
    else:
        raise DocumentError(f"unsupported file type {suffix}")
    if not body.strip():
        raise DocumentError("the file has no text")
    title = str(meta.get("title") or _first_heading(body) or path.stem.replace("_", " ").replace("-", " "))
    sources = tuple(_normalise_sources(meta.get("sources")))
    source = sources[0]["citation"] if sources else (str(meta["source"]) if meta.get("source") else title)
    url = sources[0].get("url") if sources else meta.get("url")
    return SourceDocument(
        doc_id=str(meta.get("id") or path.stem),
        title=title.strip(),
        text=body,
        source=source,
        url=str(url) if url else None,
        path=str(path.resolve()),
        sources=sources,
        reviewed=str(meta["reviewed"]) if meta.get("reviewed") else None,
    )


def split_front_matter(text: str) -> tuple[dict, str]:
    """YAML front matter between --- lines, and the body after it."""
    match = re.match(r"^---[ \t]*\n(.*?)\n---[ \t]*\n", text, flags=re.S)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise DocumentError(f"front matter is not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(meta, dict):
        raise DocumentError("front matter must be a YAML mapping")
    return meta, text[match.end():]


def _normalise_sources(raw: object) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in raw or []:
        if isinstance(item, str):
            out.append({"citation": item})
        elif isinstance(item, dict) and item.get("citation"):
            entry = {"citation": str(item["citation"])}
            link = item.get("url") or (f"https://doi.org/{item['doi']}" if item.get("doi") else None)
            if link:
                entry["url"] = str(link)
            out.append(entry)
    return out


def _first_heading(body: str) -> str | None:
    for line in body.splitlines():
        line = line.strip()
        if line:
            return line.lstrip("#").strip()[:200] or None
    return None


def _html_to_text(html: str) -> tuple[dict, str]:
    """Visible text of an HTML page as Markdown-like text: headings become '#' lines."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "nav", "footer", "header", "form"]):
        tag.decompose()
    meta: dict = {}
    if soup.title and soup.title.get_text(strip=True):
        meta["title"] = soup.title.get_text(" ", strip=True)
    blocks: list[str] = []
    for el in soup.find_all(["h1", "h2", "h3", "h4", "p", "li", "td", "blockquote", "pre"]):
        if el.find_parent(["p", "li", "td", "blockquote"]) is not None:
            continue
        text = re.sub(r"\s+", " ", el.get_text(" ", strip=True)).strip()
        if not text:
            continue
        if el.name in {"h1", "h2", "h3", "h4"}:
            blocks.append("#" * int(el.name[1]) + " " + text)
        else:
            blocks.append(text)
    return meta, "\n\n".join(blocks) + ("\n" if blocks else "")


def _pdf_to_text(path: Path) -> tuple[dict, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if path.stat().st_size == 0:
        raise DocumentError("the PDF file is empty (0 bytes): no text")
    try:
        reader = PdfReader(str(path))
        pages = [clean_text(page.extract_text() or "") for page in reader.pages]
        title = (reader.metadata or {}).get("/Title") if reader.metadata else None
    except PdfReadError as exc:
        raise DocumentError(f"cannot read this PDF ({exc.__class__.__name__}); is it damaged?") from exc
    except Exception as exc:  # pypdf raises many kinds of errors on corrupt files
        raise DocumentError(f"cannot read this PDF ({exc.__class__.__name__}); is it damaged?") from exc
    if not any(p.strip() for p in pages):
        raise DocumentError("the PDF has no extractable text (a scanned image?)")
    body = "\n\n".join(f"## Page {i}\n\n{p.strip()}" for i, p in enumerate(pages, 1) if p.strip()) + "\n"
    return ({"title": str(title)} if title else {}), body


# ---------------------------------------------------------------- chunking

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.M)


def split_sections(text: str) -> list[tuple[str, int, int]]:
    """(heading, start, end) of each section body; text before the first heading has heading ''."""
    sections: list[tuple[str, int, int]] = []
    heading, start = "", 0
    for match in _HEADING.finditer(text):
        if match.start() > start:
            sections.append((heading, start, match.start()))
        heading, start = match.group(2).strip(), match.end()
    sections.append((heading, start, len(text)))
    out = []
    for head, s, e in sections:
        body = text[s:e]
        lead = len(body) - len(body.lstrip())
        trail = len(body.rstrip())
        if body.strip():
            out.append((head, s + lead, s + trail))
    return out


# ---------------------------------------------------------------- knowledge entries

# A section that is a reviewed answer entry starts with this line and a list of family phrasings.
_ALSO_ASKED = re.compile(r"\A[ \t]*Also asked as:[ \t]*\n((?:[ \t]*[-*][ \t]+\S.*(?:\n|\Z))+)", flags=re.I)
_LIST_ITEM = re.compile(r"^[ \t]*[-*][ \t]+(.+?)[ \t]*$", flags=re.M)


@dataclass(frozen=True)
class Entry:
    """A knowledge entry: the family question (heading), its other phrasings and the answer's span in the body."""

    question: str
    phrasings: tuple[str, ...]
    answer_start: int  # offsets into the section body given to parse_entry
    answer_end: int

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.question, *self.phrasings)


def parse_entry(heading: str, body: str) -> Entry | None:
    """The entry in a section body ('Also asked as:' + a list, then the answer), or None for plain text."""
    match = _ALSO_ASKED.match(body)
    if not match or not heading:
        return None
    phrasings = tuple(dict.fromkeys(m.group(1) for m in _LIST_ITEM.finditer(match.group(1))))
    rest = body[match.end():]
    lead = len(rest) - len(rest.lstrip())
    start = match.end() + lead
    end = match.end() + len(rest.rstrip())
    if end <= start:
        return None
    return Entry(question=heading, phrasings=phrasings, answer_start=start, answer_end=end)


def chunk_document(doc: SourceDocument, chunk_size: int = 900, chunk_overlap: int = 120) -> list[Chunk]:
    """Sections by heading, then LangChain's recursive splitter for long sections.

    A section that is a knowledge entry becomes one chunk holding only its answer; its question and
    phrasings become the chunk's keys (searched, never quoted).
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        separators=["\n\n", "\n", ". ", " ", ""],
        keep_separator="end",
        add_start_index=True,
        strip_whitespace=True,
    )
    chunks: list[Chunk] = []
    for heading, start, end in split_sections(doc.text):
        body = doc.text[start:end]
        entry = parse_entry(heading, body)
        if entry is not None:
            s = start + entry.answer_start
            piece = doc.text[s:start + entry.answer_end]
            key = f"{doc.doc_id}\0{heading}\0{s}\0{piece}\0{entry.keys}"
            chunks.append(Chunk(
                chunk_id=f"{doc.doc_id}:{hashlib.sha256(key.encode()).hexdigest()[:12]}",
                doc_id=doc.doc_id, title=doc.title, section=heading, text=piece,
                start=s, end=s + len(piece), source=doc.source, url=doc.url, keys=entry.keys,
            ))
            continue
        pieces = [(body, 0)] if len(body) <= chunk_size else [
            (d.page_content, int(d.metadata["start_index"])) for d in splitter.create_documents([body])
        ]
        for piece, offset in pieces:
            s = start + offset
            if doc.text[s:s + len(piece)] != piece:  # the splitter's offset is a hint; find the real span
                found = doc.text.find(piece, start)
                if found < 0:
                    continue
                s = found
            key = f"{doc.doc_id}\0{heading}\0{s}\0{piece}"
            chunks.append(Chunk(
                chunk_id=f"{doc.doc_id}:{hashlib.sha256(key.encode()).hexdigest()[:12]}",
                doc_id=doc.doc_id, title=doc.title, section=heading, text=piece,
                start=s, end=s + len(piece), source=doc.source, url=doc.url,
            ))
    return chunks


# A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before whitespace and a
# capital/digit/quote, or at a paragraph break unless the text clearly runs on (next line lower case).
_SENTENCE_END = re.compile(r"(?<=[.!?])(?P<close>[\"'”’)\]]?)\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*(?![a-z])|\n(?=[ \t]*(?:[-*•]|\d+[.)])[ \t]+)")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of a passage, bullets and markup left out of the span."""
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
        for m in _SENTENCE_END.finditer(block, offset):
            if _is_abbreviation(block[:m.start()]):
                continue
            spans.append((b_start + cut, b_start + m.end("close")))
            cut = m.end()
        spans.append((b_start + cut, b_end))
    out = []
    for s, e in spans:
        seg = text[s:e]
        s += len(seg) - len(seg.lstrip())
        e = s + len(seg.strip())
        if e > s and re.search(r"[A-Za-z]", text[s:e]):
            out.append((s, e))
    return out


_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "Dr.", "vs.", "approx.", "No.", "Fig.", "St.", "Mr.", "Mrs.", "Ms.", "Prof.")


def _is_abbreviation(before: str) -> bool:
    return before.endswith(_ABBREVIATIONS) or bool(re.search(r"\b[A-Z]\.$", before))


def chunk_sentences(chunk: Chunk, min_words: int = 4) -> list[Sentence]:
    """The sentences of a chunk that can stand as an answer statement."""
    out: list[Sentence] = []
    for i, (s, e) in enumerate(split_sentences(chunk.text)):
        text = chunk.text[s:e]
        if len(text.split()) < min_words or text.rstrip().endswith(":"):
            continue
        out.append(Sentence(sentence_id=f"{chunk.chunk_id}:{i}", chunk_id=chunk.chunk_id, position=i, text=text))
    return out
