"""Screening: documents at ingest and answer sentences before they are shown (rules in prompts/screen.yaml).

A document that reads as instructions to the assistant, gives a telephone number, advises stopping,
skipping or changing treatment or hiding symptoms, contradicts the safety messages, or carries markup
or script is held back at ingest (stored, not served) until staff approve it. Whatever is served, each
sentence of an answer is checked again before it is shown, so an approved or unflagged document still
cannot tell a family to stop treatment or to call a number that is not ours.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import re2
from pydantic import BaseModel, ConfigDict, Field

from bot.normal import for_matching
from bot.prompts import PromptError, load_validated, read_yaml_mapping

SCREEN_FILE = "screen.yaml"
SAFETY_FILES = ("safety.yaml", "redflags.yaml")  # where the safety messages are (messages; red-flag cards and tiers)
STATE_FILE = "screening.json"  # in the index folder: documents held back, and the versions staff approved

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 64 << 20

# Rules checked on every sentence of an answer, and (with markup) on every document at ingest.
SENTENCE_RULES = ("instructions", "treatment_change", "hide_symptoms", "contradicts_safety", "phone_number")
DOCUMENT_RULES = (*SENTENCE_RULES, "markup")
RULE_LABELS = {
    "instructions": "instructions to the assistant",
    "treatment_change": "advice to stop, skip or change treatment",
    "hide_symptoms": "advice to hide symptoms",
    "contradicts_safety": "contradicts the safety messages",
    "phone_number": "a telephone number that is not on the allowed list",
    "markup": "markup or script",
}


@dataclass(frozen=True)
class Flag:
    """One reason a text was flagged: the rule and the words that matched (shortened)."""

    rule: str
    excerpt: str

    def __str__(self) -> str:
        return f"{RULE_LABELS.get(self.rule, self.rule)}: {self.excerpt!r}"


def safety_messages(prompts_dir: Path) -> dict[str, str]:
    """Every message the safety rules give families, by name: `messages` of safety.yaml, and the red-flag
    cards (by id) and tiers (`tier1`, ...) of redflags.yaml, whichever of them exist."""
    out: dict[str, str] = {}
    for name in SAFETY_FILES:
        path = Path(prompts_dir) / name
        if not path.exists():
            continue
        data = read_yaml_mapping(path)
        if isinstance(data.get("messages"), dict):
            out.update({str(k): str(v) for k, v in data["messages"].items() if isinstance(v, str)})
        for card in data.get("cards") or []:
            if isinstance(card, dict) and isinstance(card.get("message"), str):
                out[str(card.get("id"))] = card["message"]
        for tier, spec in (data.get("tiers") or {}).items():
            if isinstance(spec, dict):
                text = spec.get("message") or spec.get("call")
                if isinstance(text, str):
                    out[f"tier{tier}"] = text
    return out


# --- the rules file -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhoneRules(_Strict):
    shapes: list[str] = Field(min_length=1)
    after_words: list[str] = Field(default_factory=list)
    allowed_numbers: list[str] = Field(default_factory=list)


class ContactRules(_Strict):
    questions: list[str] = Field(min_length=1)
    intro: str = ""
    # Each item names a safety message; a list names alternatives, the first that exists is used.
    messages: list[str | list[str]] = Field(min_length=1)


class ScreenFile(_Strict):
    """prompts/screen.yaml"""

    version: int
    instructions: list[str] = Field(min_length=1)
    treatment_change: list[str] = Field(min_length=1)
    hide_symptoms: list[str] = Field(min_length=1)
    contradicts_safety: list[str] = Field(min_length=1)
    markup: list[str] = Field(min_length=1)
    phone: PhoneRules
    emergency_contact: ContactRules


def compile_rule(pattern: object, where: str) -> Any:
    """One editable pattern compiled with RE2 (linear time); errors name the file and key in `where`."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise PromptError(f"{where}: empty pattern")
    try:
        return re2.compile(pattern, _OPTIONS)
    except Exception as exc:  # re2 raises its own error type
        detail = str(exc).strip("b'\"")
        raise PromptError(f"{where}: pattern {pattern!r} cannot be used: {detail} (RE2 syntax: no look-around "
                          "or back-references)") from exc


# A telephone number written in one of our own messages: digit groups, not a decimal ('100.4 °F').
_NUMBER_IN_MESSAGE = re.compile(r"(?<![\d.,])\+?\d[\d \-]*\d(?![\d.,]\d)")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


class Screen:
    """The compiled screening rules, plus the safety messages the emergency-contact answer is made of."""

    def __init__(self, rules: ScreenFile, safety_messages: dict[str, str], path: Path | str = SCREEN_FILE) -> None:
        self.rules = rules
        self.patterns: dict[str, list[Any]] = {
            key: [compile_rule(p, f"{path}: {key}[{i}]") for i, p in enumerate(getattr(rules, key))]
            for key in ("instructions", "treatment_change", "hide_symptoms", "contradicts_safety", "markup")
        }
        self.shapes = [compile_rule(p, f"{path}: phone.shapes[{i}]") for i, p in enumerate(rules.phone.shapes)]
        self.after_words = [compile_rule(p, f"{path}: phone.after_words[{i}]") for i, p in enumerate(rules.phone.after_words)]
        self.contact_questions = [compile_rule(p, f"{path}: emergency_contact.questions[{i}]")
                                  for i, p in enumerate(rules.emergency_contact.questions)]
        self.contact_messages = []
        for i, item in enumerate(rules.emergency_contact.messages):
            names = [item] if isinstance(item, str) else item
            found = next((safety_messages[n] for n in names if n in safety_messages), None)
            if found is None:
                raise PromptError(f"{path}: emergency_contact.messages[{i}]: none of {names} is a safety message "
                                  f"in {' or '.join(SAFETY_FILES)} (known: {', '.join(sorted(safety_messages))})")
            self.contact_messages.append(found)
        # Numbers our own safety messages give are allowed wherever they appear.
        ours = {_digits(n) for msg in safety_messages.values() for n in _NUMBER_IN_MESSAGE.findall(msg)}
        self.allowed_numbers = {_digits(n) for n in rules.phone.allowed_numbers} | {n for n in ours if len(n) >= 3}

    @classmethod
    def from_dir(cls, prompts_dir: Path) -> Screen:
        """Load and validate prompts/screen.yaml (and the safety messages it names)."""
        path = Path(prompts_dir) / SCREEN_FILE
        rules = load_validated(path, ScreenFile)
        return cls(rules, safety_messages(Path(prompts_dir)), path)

    # -- checks --

    def phone_numbers(self, text: str) -> list[str]:
        """Telephone numbers in a (normal-form) text that are not allowed."""
        found: list[str] = []
        for rx in self.shapes:
            found += [m.group(0) for m in rx.finditer(text)]
        for rx in self.after_words:
            found += [m.group(m.lastindex or 0) for m in rx.finditer(text)]
        return [n.strip() for n in dict.fromkeys(found)
                if len(_digits(n)) >= 3 and _digits(n) not in self.allowed_numbers]

    def flags(self, text: str, rules: Sequence[str] = DOCUMENT_RULES) -> list[Flag]:
        """Every rule the text breaks, each with the words that matched; [] when it is clean."""
        matching = for_matching(text)
        out: list[Flag] = []
        for rule in rules:
            if rule == "phone_number":
                out += [Flag(rule, n) for n in self.phone_numbers(matching)[:3]]
                continue
            for rx in self.patterns[rule]:
                m = rx.search(matching)
                if m:
                    out.append(Flag(rule, _excerpt(matching, m.start(), m.end())))
                    break
        return out

    def document(self, text: str) -> list[Flag]:
        """Flags for a whole document at ingest (all rules, markup included)."""
        return self.flags(text, DOCUMENT_RULES)

    def sentence(self, text: str) -> list[Flag]:
        """Flags for one sentence about to be shown in an answer."""
        return self.flags(text, SENTENCE_RULES)

    def is_contact_question(self, text: str) -> bool:
        """'Who do I call in an emergency?': answered from the safety messages, never from documents."""
        matching = for_matching(text)
        return any(rx.search(matching) for rx in self.contact_questions)

    def contact_answer(self) -> str:
        parts = [*self.contact_messages, self.rules.emergency_contact.intro]
        return " ".join(p.strip() for p in parts if p.strip())


def _excerpt(text: str, start: int, end: int, width: int = 120) -> str:
    """The matched words (at most `width` characters), on one line."""
    return " ".join(text[start:max(end, start + 1)][:width].split())


_DEFAULT: dict[str, Screen] = {}


def screen_document(text: str, prompts_dir: Path | None = None) -> list[Flag]:
    """Flags for a document's text with the rules in prompts/screen.yaml ([] when it may be served)."""
    from bot.settings import PROJECT_DIR

    key = str(prompts_dir or PROJECT_DIR / "prompts")
    if key not in _DEFAULT:
        _DEFAULT[key] = Screen.from_dir(Path(key))
    return _DEFAULT[key].document(text)


# --- held-back documents and staff approval -----------------------------------------------------


@dataclass
class Held:
    """A document held back at ingest: where it is, which version, and why."""

    doc_id: str
    title: str
    path: str
    content_hash: str
    flags: list[str] = field(default_factory=list)
    since: str = ""

    def line(self) -> str:
        return f"{self.doc_id} ({self.path}): " + "; ".join(self.flags)


@dataclass
class ScreeningState:
    """screening.json in the index folder: documents held back, and the versions staff approved."""

    held: dict[str, Held] = field(default_factory=dict)
    approved: dict[str, str] = field(default_factory=dict)  # doc_id -> content hash staff approved

    @classmethod
    def load(cls, root: Path) -> ScreeningState:
        path = Path(root) / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{path} cannot be read ({exc}); restore it from a backup or delete it to screen "
                               "every document again") from exc
        return cls(held={k: Held(**v) for k, v in data.get("held", {}).items()},
                   approved=dict(data.get("approved", {})))

    def save(self, root: Path) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        data = {"held": {k: asdict(v) for k, v in sorted(self.held.items())}, "approved": dict(sorted(self.approved.items()))}
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{STATE_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
        os.replace(tmp, root / STATE_FILE)


def hold_back(docs: Iterable[Any], indexed: dict[str, tuple[str, str]], root: Path, screen: Screen,
              record: bool = True) -> tuple[list[Any], list[Held]]:
    """Split documents into those to index and those held back (flagged, and this version not approved).

    Only new or changed documents are screened (`indexed`: doc_id -> (content hash, path) already
    served). With `record`, the held list in the index folder is updated (a dry run only reports).
    """
    state = ScreeningState.load(root)
    before = (dict(state.held), dict(state.approved))
    keep: list[Any] = []
    held: list[Held] = []
    for doc in docs:
        if indexed.get(doc.doc_id, ("",))[0] == doc.content_hash or state.approved.get(doc.doc_id) == doc.content_hash:
            state.held.pop(doc.doc_id, None)
            keep.append(doc)
            continue
        flags = screen.document(doc.text)
        if not flags:
            state.held.pop(doc.doc_id, None)
            keep.append(doc)
            continue
        h = state.held.get(doc.doc_id)
        if h is None or h.content_hash != doc.content_hash:
            h = Held(doc.doc_id, doc.title, str(doc.path), doc.content_hash, [str(f) for f in flags],
                     time.strftime("%Y-%m-%d %H:%M:%S"))
            state.held[doc.doc_id] = h
        held.append(h)
    if record and (state.held, state.approved) != before:  # a clean library leaves no file behind
        state.save(root)
    return keep, held


def approve(root: Path, doc_id: str) -> Held:
    """Staff approve a held-back document: this version of it will be indexed by the next ingest of its file."""
    state = ScreeningState.load(root)
    h = state.held.get(doc_id)
    if h is None:
        waiting = ", ".join(sorted(state.held)) or "none"
        raise KeyError(f"no held-back document with id {doc_id!r} (held back now: {waiting})")
    state.approved[doc_id] = h.content_hash
    del state.held[doc_id]
    state.save(root)
    return h


def held_documents(root: Path) -> list[Held]:
    """Documents waiting for staff approval."""
    return list(ScreeningState.load(root).held.values())
