"""Triage, scope and personal-decision checks that run before retrieval (rules in prompts/safety.yaml)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.embed import Embedder
from bot.prompts import read_yaml_mapping
from bot.schema import Turn

SAFETY_FILE = "safety.yaml"
_FLAGS = re.IGNORECASE


class SafetyRulesError(ValueError):
    """prompts/safety.yaml is broken; the message names the file and the problem."""


@dataclass(frozen=True)
class Verdict:
    """What the safety gate decided about one message."""

    kind: Literal["urgent", "out_of_scope", "personal", "ok"]
    rule: str | None = None
    message: str = ""


# --- the rules file ---------------------------------------------------------------------------


def _compile(patterns: list[str]) -> list[re.Pattern[str]]:
    return [re.compile(p, _FLAGS) for p in patterns]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Patterns(_Strict):
    """Base for sections whose `*patterns`-like lists are regexes that must compile."""

    @field_validator("*", mode="after")
    @classmethod
    def _regexes_ok(cls, v: Any, info: Any) -> Any:
        if info.field_name in _REGEX_FIELDS and isinstance(v, list):
            for p in v:
                if not isinstance(p, str) or not p.strip():
                    raise ValueError(f"{info.field_name}: empty pattern")
                try:
                    re.compile(p, _FLAGS)
                except re.error as exc:
                    raise ValueError(f"{info.field_name}: bad regular expression {p!r}: {exc}") from exc
        return v


_REGEX_FIELDS = {
    "patterns",
    "strong",
    "also",
    "educational",
    "situation",
    "hypothetical",
    "now",
    "study_framing",
    "context",
    "topic",
    "adult",
    "illness",
    "child",
}
NonEmpty = Field(min_length=1)


class Typos(_Strict):
    words: list[str] = NonEmpty
    keep: list[str] = Field(default_factory=list)


class RedFlag(_Patterns):
    id: str = Field(min_length=1)
    message: str = Field(min_length=1)
    patterns: list[str] = NonEmpty
    strong: list[str] = Field(default_factory=list)
    also: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


class Temperature(_Patterns):
    rule: str
    message: str
    fever_c: float = Field(gt=30, lt=45)
    fever_f: float = Field(gt=86, lt=113)
    celsius_below: float
    fahrenheit_from: float
    context: list[str] = NonEmpty
    not_after: str = Field(min_length=1)
    not_before: str = Field(min_length=1)

    @field_validator("not_after", "not_before")
    @classmethod
    def _one_regex(cls, v: str) -> str:
        try:
            re.compile(v, _FLAGS)
        except re.error as exc:
            raise ValueError(f"bad regular expression {v!r}: {exc}") from exc
        return v


class Triage(_Patterns):
    similarity_threshold: float = Field(gt=0, le=1)
    similarity_margin: float = Field(ge=0, le=1)
    typos: Typos
    educational: list[str] = NonEmpty
    situation: list[str] = NonEmpty
    hypothetical: list[str] = NonEmpty
    now: list[str] = NonEmpty
    past: list[str] = Field(default_factory=list)
    ongoing: list[str] = Field(default_factory=list)
    educational_examples: list[str] = NonEmpty
    study_framing: list[str] = NonEmpty
    temperature: Temperature
    rules: list[RedFlag] = NonEmpty


class RoleChange(_Patterns):
    message: str
    patterns: list[str] = NonEmpty
    examples: list[str] = Field(default_factory=list)
    similarity_threshold: float = Field(gt=0, le=1)


class Scope(_Patterns):
    message: str
    greeting_message: str = "out_of_scope"
    greetings: list[str] = Field(default_factory=list)
    topic: list[str] = NonEmpty
    min_on_topic: float = Field(ge=0, le=1)
    follow_up_margin: float = Field(ge=0, le=1)
    on_topic: list[str] = NonEmpty
    off_topic: list[str] = NonEmpty


class OtherDisease(_Patterns):
    message: str
    patterns: list[str] = NonEmpty
    adult: list[str] = NonEmpty
    illness: list[str] = NonEmpty
    child: list[str] = NonEmpty


class PersonalRule(_Patterns):
    id: str = Field(min_length=1)
    message: str
    patterns: list[str] = NonEmpty


class Personal(_Strict):
    rules: list[PersonalRule] = NonEmpty


class SafetyRules(_Strict):
    """prompts/safety.yaml"""

    version: int
    messages: dict[str, str] = NonEmpty
    triage: Triage
    role_change: RoleChange
    scope: Scope
    other_disease: OtherDisease
    personal: Personal

    @model_validator(mode="after")
    def _messages_exist(self) -> SafetyRules:
        empty = [k for k, v in self.messages.items() if not v.strip()]
        if empty:
            raise ValueError(f"messages {empty} are empty")
        used = {
            "triage.temperature": self.triage.temperature.message,
            "role_change": self.role_change.message,
            "scope": self.scope.message,
            "scope.greeting": self.scope.greeting_message,
            "other_disease": self.other_disease.message,
        }
        used.update({f"triage.rules[{r.id}]": r.message for r in self.triage.rules})
        used.update({f"personal.rules[{r.id}]": r.message for r in self.personal.rules})
        missing = {where: name for where, name in used.items() if name not in self.messages}
        if missing:
            raise ValueError(f"these refer to messages that do not exist: {missing}")
        ids = [r.id for r in self.triage.rules]
        if len(ids) != len(set(ids)):
            raise ValueError(f"red-flag rule ids must be unique: {ids}")
        if self.triage.temperature.rule not in ids:
            raise ValueError(f"triage.temperature.rule {self.triage.temperature.rule!r} is not a red-flag rule id")
        return self


def load_rules(path: Path) -> SafetyRules:
    """Read and validate a safety rules file; errors name the file and the problem."""
    data = read_yaml_mapping(path, SafetyRulesError)
    try:
        return SafetyRules.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise SafetyRulesError(f"{path}: {problems}") from exc


# --- text helpers -----------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
_WORD = re.compile(r"[A-Za-z]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _osa_distance(a: str, b: str, limit: int) -> int:
    """Edit distance with adjacent swaps (optimal string alignment), stopping early past `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


class TypoFixer:
    """Reads common misspellings of red-flag words as the words themselves."""

    def __init__(self, typos: Typos) -> None:
        self.words = sorted({w.lower() for w in typos.words})
        self.keep = {w.lower() for w in typos.keep} | set(self.words)
        self._cache: dict[str, str] = {}

    def word(self, token: str) -> str:
        low = token.lower()
        if len(low) < 4 or low in self.keep:
            return token
        if low not in self._cache:
            best, best_distance = token, 99
            for w in self.words:
                # Typos rarely change the first letter; insisting on it avoids "leading" -> "bleeding".
                if w[0] != low[0]:
                    continue
                limit = 2 if len(w) >= 8 else 1
                distance = _osa_distance(low, w, limit)
                if distance <= limit and distance < best_distance:
                    best, best_distance = w, distance
            self._cache[low] = best
        return self._cache[low]

    def fix(self, text: str) -> str:
        return _WORD.sub(lambda m: self.word(m.group(0)), text)


_NUMBER = re.compile(r"(?<![\d.,])(\d{2,3})(?:\s*(?:[.,]|\bpoint\b)\s*(\d{1,2}))?(?!\d)", _FLAGS)
_UNIT = re.compile(r"^\s*(°|º|degrees?\b|deg\b)?\s*(celsius|centigrade|fahrenheit|c|f)?(?![a-z])", _FLAGS)


@dataclass(frozen=True)
class Reading:
    """A temperature found in a message."""

    value: float
    unit: Literal["C", "F"]


class TemperatureParser:
    """Finds body temperatures in free text: '38,5', '39C', '101.2F', 'temp of 38.4', '39' near 'fever'."""

    def __init__(self, rule: Temperature) -> None:
        self.rule = rule
        self.context = _compile(rule.context)
        self.not_after = re.compile(rule.not_after, _FLAGS)
        self.not_before = re.compile(rule.not_before, _FLAGS)

    def readings(self, text: str, extra_context: str = "") -> list[Reading]:
        has_context = any(p.search(text) or (extra_context and p.search(extra_context)) for p in self.context)
        out: list[Reading] = []
        for m in _NUMBER.finditer(text):
            value = float(m.group(1) + ("." + m.group(2) if m.group(2) else ""))
            after, before = text[m.end() :], text[: m.start()]
            unit_m = _UNIT.match(after)
            degree, unit = (unit_m.group(1), unit_m.group(2)) if unit_m else (None, None)
            rest = after[unit_m.end() :] if unit_m else after
            if not (degree or unit) and (self.not_after.match(after) or not has_context):
                continue
            if self.not_before.search(before) or (not unit and self.not_after.match(rest) and not degree):
                continue
            if unit:
                u: Literal["C", "F"] = "F" if unit.lower().startswith("f") else "C"
            elif value < self.rule.celsius_below:
                u = "C"
            elif value >= self.rule.fahrenheit_from:
                u = "F"
            else:
                continue
            # Only body temperatures: 30-45 C or 86-113 F.
            if (u == "C" and 30 <= value < 45) or (u == "F" and 86 <= value <= 113):
                out.append(Reading(value, u))
        return out

    def is_fever(self, r: Reading) -> bool:
        return r.value >= (self.rule.fever_c if r.unit == "C" else self.rule.fever_f)


def _any(patterns: Sequence[re.Pattern[str]], text: str) -> bool:
    return any(p.search(text) for p in patterns)


@dataclass(frozen=True)
class _Flag:
    id: str
    message: str
    patterns: list[re.Pattern[str]]
    strong: list[re.Pattern[str]]
    also: list[re.Pattern[str]]


# --- the gate ---------------------------------------------------------------------------------


class SafetyGate:
    """Decides, before retrieval, whether a message is urgent, out of scope or a personal decision."""

    def __init__(self, rules: SafetyRules, embedder: Embedder) -> None:
        self.rules = rules
        self.embedder = embedder
        t = rules.triage
        self.typos = TypoFixer(t.typos)
        self.temperature = TemperatureParser(t.temperature)
        self.educational = _compile(t.educational)
        self.situation = _compile(t.situation)
        self.hypothetical = _compile(t.hypothetical)
        self.now = _compile(t.now)
        self.past = _compile(t.past)
        self.ongoing = _compile(t.ongoing)
        self.study = _compile(t.study_framing)
        self.flags = [
            _Flag(r.id, rules.messages[r.message], _compile(r.patterns), _compile(r.strong), _compile(r.also)) for r in t.rules
        ]
        self.role_change = _compile(rules.role_change.patterns)
        self.topic = _compile(rules.scope.topic)
        self.greetings = _compile(rules.scope.greetings)
        od = rules.other_disease
        self.other_cancer = _compile(od.patterns)
        self.adult, self.illness, self.child = _compile(od.adult), _compile(od.illness), _compile(od.child)
        self.personal = [(r.id, rules.messages[r.message], _compile(r.patterns)) for r in rules.personal.rules]

        # Example phrasings are embedded once, here; check() embeds only the message.
        self._urgent_ids = [r.id for r in t.rules for _ in r.examples]
        groups = {
            "urgent": [e for r in t.rules for e in r.examples],
            "educational": t.educational_examples,
            "role_change": rules.role_change.examples,
            "on_topic": rules.scope.on_topic,
            "off_topic": rules.scope.off_topic,
        }
        texts = [x for g in groups.values() for x in g]
        vectors = embedder.encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        self._vectors: dict[str, np.ndarray] = {}
        start = 0
        for name, items in groups.items():
            self._vectors[name] = vectors[start : start + len(items)]
            start += len(items)

    @classmethod
    def from_dir(cls, prompts_dir: Path, embedder: Embedder) -> SafetyGate:
        """Load and validate prompts/safety.yaml and embed its example phrasings."""
        return cls(load_rules(Path(prompts_dir) / SAFETY_FILE), embedder)

    # -- public --

    def check(self, question: str, history: Sequence[Turn] = ()) -> Verdict:
        """The verdict for one message: urgent, then role change, then scope, then personal, else ok."""
        raw = question.translate(_QUOTES)
        text = self.typos.fix(raw)
        previous = self._previous_user_text(history)
        sentences = [s for s in _SENTENCE.split(text) if s.strip()]
        vectors = self.embedder.encode([text, *sentences] if len(sentences) > 1 else [text])

        verdict = self._urgent(text, previous, vectors)
        if verdict:
            return verdict
        verdict = self._role_change(raw, vectors[0])
        if verdict:
            return verdict
        verdict = self._scope(raw, vectors[0], history)
        if verdict:
            return verdict
        for rule_id, message, patterns in self.personal:
            if _any(patterns, text):
                return Verdict("personal", rule_id, message)
        return Verdict("ok")

    def temperatures(self, text: str, previous: str = "") -> list[Reading]:
        """Temperatures the gate would read in a message (exposed for tests and staff tools)."""
        return self.temperature.readings(self.typos.fix(text.translate(_QUOTES)), previous)

    # -- the steps --

    def _previous_user_text(self, history: Sequence[Turn | dict]) -> str:
        for turn in reversed(list(history)):
            role = turn.get("role") if isinstance(turn, dict) else turn.role
            content = turn.get("content", "") if isinstance(turn, dict) else turn.content
            if role == "user":
                return self.typos.fix(str(content).translate(_QUOTES))
        return ""

    def _urgent(self, text: str, previous: str, vectors: np.ndarray) -> Verdict | None:
        if _any(self.past, text) and not _any(self.now, text) and not _any(self.ongoing, text):
            return None  # something that happened days or more ago and is over is history, not an emergency
        situation = _any(self.situation, text) and (_any(self.now, text) or not _any(self.hypothetical, text))
        educational = not situation and _any(self.educational, text)
        study = not situation and _any(self.study, text)
        temp_rule = self.rules.triage.temperature
        readings = self.temperature.readings(text, previous)
        fever = any(self.temperature.is_fever(r) for r in readings)
        for flag in self.flags:
            if flag.id == temp_rule.rule:
                if fever and not study:
                    return Verdict("urgent", flag.id, self.rules.messages[temp_rule.message])
                if readings and not fever:
                    continue  # a measured temperature below the threshold overrides "hot" or "fever"
            if flag.also and not _any(flag.also, text):
                continue
            if (flag.strong and not study and _any(flag.strong, text)) or (not educational and _any(flag.patterns, text)):
                return Verdict("urgent", flag.id, flag.message)
        if educational or not len(self._vectors["urgent"]):
            return None
        # Paraphrases and typos the keywords miss: close to an urgent example, and closer to it
        # than to any question about the topic.
        sims = vectors @ self._vectors["urgent"].T
        edu = float((vectors @ self._vectors["educational"].T).max()) if len(self._vectors["educational"]) else 0.0
        row, col = np.unravel_index(int(np.argmax(sims)), sims.shape)
        best = float(sims[row, col])
        t = self.rules.triage
        if best >= t.similarity_threshold and best - edu >= t.similarity_margin:
            rule_id = self._urgent_ids[col]
            if rule_id == temp_rule.rule and readings and not fever:
                return None
            flag = next(f for f in self.flags if f.id == rule_id)
            return Verdict("urgent", flag.id, flag.message)
        return None

    def _role_change(self, raw: str, vector: np.ndarray) -> Verdict | None:
        rc = self.rules.role_change
        message = self.rules.messages[rc.message]
        if _any(self.role_change, raw):
            return Verdict("out_of_scope", "prompt_injection", message)
        if len(self._vectors["role_change"]) and float((self._vectors["role_change"] @ vector).max()) >= rc.similarity_threshold:
            return Verdict("out_of_scope", "prompt_injection", message)
        return None

    def _scope(self, raw: str, vector: np.ndarray, history: Sequence[Turn]) -> Verdict | None:
        if _any(self.greetings, raw):  # "hello", "thank you": a kind word back, not a refusal
            return Verdict("out_of_scope", "greeting", self.rules.messages[self.rules.scope.greeting_message])
        od = self.rules.other_disease
        if _any(self.other_cancer, raw):
            return Verdict("out_of_scope", "other_cancer", self.rules.messages[od.message])
        if _any(self.adult, raw) and _any(self.illness, raw) and not _any(self.child, raw):
            return Verdict("out_of_scope", "adult_disease", self.rules.messages[od.message])
        if _any(self.topic, raw):
            return None
        # A decision about one's own child is on topic even without a topic word, and so is a fear
        # for the child's life ("will she die?"); "can you recommend a pizza place" is not.
        child = _any(self.child, raw)
        if any(_any(p, raw) for rule_id, _, p in self.personal if child or rule_id == "prognosis"):
            return None
        on = float((self._vectors["on_topic"] @ vector).max())
        off = float((self._vectors["off_topic"] @ vector).max())
        if off <= on and on >= self.rules.scope.min_on_topic:
            return None
        # A follow-up ("how many countries were they from?") leans on an on-topic conversation:
        # only a message clearly closer to an off-topic example leaves the subject.
        earlier = [t.get("content", "") if isinstance(t, dict) else t.content for t in history]
        if any(_any(self.topic, self.typos.fix(c)) for c in earlier) and off - on < self.rules.scope.follow_up_margin:
            return None
        return Verdict("out_of_scope", "off_topic", self.rules.messages[self.rules.scope.message])
