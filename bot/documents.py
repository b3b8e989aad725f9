"""Load source documents (Markdown, text, HTML, Word, PDF) and cut them into cited chunks and sentences."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.formats import (  # noqa: F401  (clean_text, DocumentError, split_front_matter: this module's interface)
    SUPPORTED_NAMES,
    SUPPORTED_SUFFIXES,
    DocumentError,
    Extracted,
    clean_text,
    extract_file,
    split_front_matter,
    visible_length,
)
from bot.sentences import split_sentences

# A file that keeps less than this share of its visible text is flagged in the ingest summary.
KEPT_WARNING = 0.5


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
    description: str | None = None  # a web page's <meta> description or a file's subject, when it has one

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


@dataclass(frozen=True)
class FileStats:
    """What became of one file: its visible characters, the characters and passages indexed, or why not."""

    path: str
    doc_id: str | None = None
    chars_in: int = 0
    chars_indexed: int = 0
    passages: int = 0
    problem: str | None = None
    title: str | None = None
    url: str | None = None
    description: str | None = None
    held: bool = False  # flagged by screening: indexed only once staff approve it

    @property
    def kept(self) -> float:
        """Share of the visible text that is indexed (1.0 for a file with no visible text but an index)."""
        return self.chars_indexed / self.chars_in if self.chars_in else (1.0 if self.chars_indexed else 0.0)

    @property
    def warning(self) -> str | None:
        """Why staff should look at this file, or None."""
        if self.problem:
            return f"skipped: {self.problem}"
        if self.held:
            return "held back for review (see below)"
        if not self.passages:
            return "nothing indexed"
        if self.kept < KEPT_WARNING:
            return f"only {self.kept:.0%} of its visible text was kept; check the file"
        return None


@dataclass
class LoadReport:
    """Documents loaded from some paths, one line for each file that could not be, and per-file figures."""

    documents: list[SourceDocument] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: list[FileStats] = field(default_factory=list)

    def table(self) -> str:
        """The per-file summary staff read after an ingest or a dry run."""
        return format_file_table(self.files)


def format_file_table(files: list[FileStats]) -> str:
    """One line per file: characters in, characters indexed, passages, and a warning when needed."""
    if not files:
        return "no files"
    rows = [("file", "chars in", "indexed", "kept", "passages", "")]
    for f in files:
        name = Path(f.path).name
        kept = f"{f.kept:.0%}" if f.chars_in else "-"
        note = f"WARNING: {f.warning}" if f.warning else ""
        rows.append((name, str(f.chars_in), str(f.chars_indexed), kept, str(f.passages), note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)] + [r[5]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_file_details(files: list[FileStats], width: int = 100) -> str:
    """What each loaded file says about itself: the title, URL and description a citation will show."""
    lines = []
    for f in files:
        if f.problem:
            continue
        parts = [f'"{f.title}"'] + ([f.url] if f.url else [])
        lines.append(f"{Path(f.path).name}: {' · '.join(parts)}")
        if f.description:
            text = f.description if len(f.description) <= width else f.description[:width - 1].rstrip() + "…"
            lines.append(f"    {text}")
    return "\n".join(lines)


# ---------------------------------------------------------------- loading


def _walk_files(folder: str) -> list[str]:
    """Every file under a folder, as rglob("*") + is_file found them (links to files followed, links to folders
    not entered). One directory read per folder: the entry types come with it, so a plain file costs no stat
    (rglob + is_file took one per file: 12,000 files in a one-document change at x1000)."""
    out: list[str] = []
    todo = [folder]
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
                elif entry.is_file():
                    out.append(entry.path)
            except OSError:
                continue
    return out


def find_files(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Supported files under the given files/folders, sorted; and a message per unusable path."""
    found: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            # Sorted as Paths sort (part by part), on the strings: comparing 12,000 Path objects cost more than the walk.
            files = [Path(p) for p in sorted((p for p in _walk_files(str(path))
                                              if os.path.splitext(p)[1].lower() in SUPPORTED_SUFFIXES
                                              and not os.path.basename(p).startswith((".", "README", "~$"))),
                                             key=lambda p: p.split(os.sep))]
            if not files:
                problems.append(f"{path}: no supported files ({SUPPORTED_NAMES}) in this folder")
            found.extend(files)
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(path)
            else:
                problems.append(f"{path}: unsupported file type {path.suffix or '(none)'}; use {SUPPORTED_NAMES}")
        else:
            problems.append(f"{path}: no such file or folder")
    return found, problems


_CONVERT_HINTS = {
    ".doc": "an old Word file: save it as .docx", ".rtf": "save it as .docx", ".odt": "save it as .docx",
    ".pages": "export it as .docx or PDF", ".pptx": "save it as PDF", ".ppt": "save it as PDF",
    ".xps": "save it as PDF",
}


def unsupported_files(paths: list[Path]) -> list[FileStats]:
    """A row for each file in the given folders that is not read, so that staff see what was left out."""
    out: list[FileStats] = []
    for folder in (p for p in paths if p.is_dir()):
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).parts
            if (not p.is_file() or p.suffix.lower() in SUPPORTED_SUFFIXES
                    or any(part.startswith((".", "~$")) for part in rel) or p.name.startswith("README")):
                continue
            suffix = p.suffix.lower() or "(no extension)"
            hint = _CONVERT_HINTS.get(suffix, f"use {SUPPORTED_NAMES}")
            out.append(FileStats(path=str(p), problem=f"{suffix} files are not read; {hint}"))
    return out


def load_paths(paths: list[Path], chunk_size: int = 900, chunk_overlap: int = 120) -> LoadReport:
    """Load every supported file; a bad file is reported and skipped, the rest go on.

    `files` tells, per file, how much of its visible text became indexed text and how many passages
    (cut with `chunk_size` and `chunk_overlap`, as ingest will cut them).
    """
    files, problems = find_files(paths)
    report = LoadReport(problems=problems)
    seen: dict[str, Path] = {}
    for path in files:
        try:
            extracted = extract_file(path)
            doc = to_document(path, extracted)
        except DocumentError as exc:
            report.problems.append(f"{path}: {exc}")
            report.files.append(FileStats(path=str(path), problem=str(exc)))
            continue
        if doc.doc_id in seen:
            problem = f"document id {doc.doc_id!r} already used by {seen[doc.doc_id]}; skipped"
            report.problems.append(f"{path}: {problem}")
            report.files.append(FileStats(path=str(path), doc_id=doc.doc_id, problem=problem))
            continue
        seen[doc.doc_id] = path
        report.documents.append(doc)
        report.files.append(FileStats(
            path=str(path), doc_id=doc.doc_id, chars_in=extracted.visible_chars,
            chars_indexed=visible_length(doc.text),
            passages=len(chunk_document(doc, chunk_size, chunk_overlap)),
            title=doc.title, url=doc.url, description=doc.description,
        ))
    report.files.extend(unsupported_files(paths))
    return report


def load_file(path: Path) -> SourceDocument:
    """Read one file into a SourceDocument, or raise DocumentError with a one-line reason."""
    return to_document(path, extract_file(path))


def to_document(path: Path, extracted: Extracted) -> SourceDocument:
    """A SourceDocument from a file's extracted text and what the file says about itself."""
    meta, body = extracted.meta, extracted.body
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
        description=str(meta["description"]) if meta.get("description") else None,
    )


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


def chunk_sentences(chunk: Chunk, min_words: int = 4) -> list[Sentence]:
    """The sentences of a chunk that can stand as an answer statement."""
    out: list[Sentence] = []
    for i, (s, e) in enumerate(split_sentences(chunk.text)):
        text = chunk.text[s:e]
        if len(text.split()) < min_words or text.rstrip().endswith(":"):
            continue
        out.append(Sentence(sentence_id=f"{chunk.chunk_id}:{i}", chunk_id=chunk.chunk_id, position=i, text=text))
    return out
