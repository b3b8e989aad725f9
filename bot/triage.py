"""Red-flag triage from the cards in prompts/redflags.yaml: which cards fire for a message, and why.

The combination logic (past / now / situation / hypothetical / educational / reassuring, the fever line,
the order of the steps) is data in the cards file; this module only evaluates it. A message is read
clause by clause (the file's `clauses.breaks`): a clause that is over, hypothetical or a question (the
file's `decision.set_aside`) cannot make a card fire, so "the fever went away yesterday but now she's
floppy" is urgent and "she was floppy after her last chemo but she's back to herself now" is not.
`Triage.assess` returns an `Assessment` that says everything that fired, for the gate and for
`python -m bot explain`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.patterns import PatternError, PatternGroup, compile_all, compile_pattern, fold
from bot.prompts import load_validated
from bot.spelling import nearest

REDFLAGS_FILE = "redflags.yaml"
CONTEXT_SIGNS = ("baby", "situation", "educational", "hypothetical", "now", "past", "resolved", "ongoing", "study",
                 "reassuring", "tense_past", "tense_present", "worry", "denied", "someone_else", "habit", "self_limiting",
                 "sign_word", "treatment_time")
# Signs that can only make a message more urgent: read in every language's words, whatever the message's language.
SHARED_SIGNS = ("baby", "situation", "now", "ongoing", "tense_present")
# Signs a clause takes from its whole message too ("My baby is 3 months. Is breathing fast." is about the baby).
INHERITED = ("baby", "situation")
MESSAGE = "message_"  # message_<sign or name>: the sign or name read on the whole message, for rules about one clause
_WORD = re.compile(r"[A-Za-z]+")
CARD_NAMES = ("pattern", "strong", "also", "negated")
MEASURED = ("measured_fever", "measured_normal", "other_language")
STEP_NAMES = ("cards", "classifier_sure", "classifier_unsure")


class RedFlagsError(ValueError):
    """The cards file is broken or a card's examples fail; the message names the file and the card."""


# --- the file ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Typos(_Strict):
    words: list[str] = Field(min_length=1)
    keep: list[str] = Field(default_factory=list)


class Temperature(_Strict):
    fever_c: float = Field(gt=30, lt=45)
    fever_f: float = Field(gt=86, lt=113)
    celsius_below: float
    fahrenheit_from: float
    context: list[str] = Field(min_length=1)
    not_after: str = Field(min_length=1)
    not_before: str = Field(min_length=1)


class Step(_Strict):
    when: str
    verdict: Literal["none", "cards", "classifier", "tier3"]
    why: str = ""


class Decision(_Strict):
    names: dict[str, str] = Field(default_factory=dict)
    # Read on each clause that is not set aside; the message holds the name when any such clause does ("she was fine
    # at lunch. her arms flop down when I lift her": the good news of one clause does not hide the sign of another).
    clause_names: dict[str, str] = Field(default_factory=dict)
    card_fires: str
    set_aside: str = "false"
    steps: list[Step] = Field(min_length=1)


class Clauses(_Strict):
    breaks: list[str] = Field(default_factory=list)
    min_chars: int = Field(3, ge=1)
    max_clauses: int = Field(24, ge=1)
    not_reports: list[str] = Field(default_factory=list)  # context signs whose words report no sign now (blanked for cards)
    report_starts: list[str] = Field(default_factory=list)  # where such a span stops: a new report begins
    whole_spans: list[str] = Field(default_factory=list)  # not_reports signs whose spans `report_starts` never cut


class ClassifierSettings(_Strict):
    sure: float = Field(gt=0, le=1)
    unsure: float = Field(gt=0, le=1)
    reassuring_examples: list[str] = Field(default_factory=list)
    educational_examples: list[str] = Field(default_factory=list)
    past_examples: list[str] = Field(default_factory=list)
    hypothetical_examples: list[str] = Field(default_factory=list)
    everyday_examples: list[str] = Field(default_factory=list)  # everyday life of a baby on treatment: no sign at all


class Tier(_Strict):
    name: str
    text: str = Field(min_length=1, description="The call every message of this tier starts with.")
    message: str = ""


class Examples(_Strict):
    match: list[str] = Field(min_length=25)
    no_match: list[str] = Field(min_length=15)


class Card(_Strict):
    id: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    name: str = Field(min_length=1)
    sign: str = Field(min_length=1, max_length=39)
    tier: Literal[1, 2, 3]
    message: str = Field(min_length=1)
    fires: str | None = None
    patterns: list[str] = Field(min_length=1)
    strong: list[str] = Field(default_factory=list)
    also: list[str] = Field(default_factory=list)
    negated: list[str] = Field(default_factory=list)
    examples: Examples


class RedFlagsFile(_Strict):
    """prompts/redflags.yaml"""

    version: int
    vocabularies: dict[str, list[str]] = Field(default_factory=dict)
    typos: Typos
    context: dict[str, list[str]]
    clauses: Clauses = Field(default_factory=Clauses)
    temperature: Temperature
    decision: Decision
    classifier: ClassifierSettings
    retrieval_may_override: list[str] = Field(default_factory=list)
    tiers: dict[int, Tier]
    cards: list[Card] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RedFlagsFile:
        unknown = [s for s in self.clauses.not_reports + self.clauses.whole_spans if s not in CONTEXT_SIGNS]
        if unknown:
            raise ValueError(f"clauses.not_reports: {unknown} are not context signs ({list(CONTEXT_SIGNS)})")
        missing = [s for s in CONTEXT_SIGNS if s not in self.context]
        extra = [s for s in self.context if s not in CONTEXT_SIGNS]
        if missing or extra:
            raise ValueError(f"context must have exactly {list(CONTEXT_SIGNS)}; missing {missing}, unknown {extra}")
        if sorted(self.tiers) != [1, 2, 3]:
            raise ValueError("tiers must be 1, 2 and 3")
        if not self.tiers[3].message:
            raise ValueError("tiers.3.message: the tier-3 message is needed (it is shown when the classifier is unsure)")
        ids = [c.id for c in self.cards]
        if len(ids) != len(set(ids)):
            raise ValueError(f"card ids must be unique: {ids}")
        for c in self.cards:
            call = self.tiers[c.tier].text
            if c.tier < 3 and not c.message.startswith(call):
                raise ValueError(f"cards[{c.id}].message must start with its tier's call: {call!r}")
        return self


# --- a tiny logic language: and, or, not, brackets, names -------------------------------------


def _logic(expr: str, known: set[str], where: str) -> Callable[[Mapping[str, bool]], bool]:
    """Compile 'a and (b or not c)' over known names; anything else is an error naming `where`."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise RedFlagsError(f"{where}: cannot read {expr!r}: {exc.msg}") from None

    def build(node: ast.AST) -> Callable[[Mapping[str, bool]], bool]:
        if isinstance(node, ast.BoolOp):
            parts = [build(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda env: all(p(env) for p in parts)
            return lambda env: any(p(env) for p in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = build(node.operand)
            return lambda env: not inner(env)
        if isinstance(node, ast.Name):
            name = node.id
            if name in ("true", "false"):
                return lambda env: name == "true"
            if name not in known:
                raise RedFlagsError(f"{where}: unknown name {name!r} in {expr!r}; known: {', '.join(sorted(known))}")
            return lambda env: bool(env[name])
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            value = node.value
            return lambda env: value
        raise RedFlagsError(f"{where}: only names, and, or, not and brackets are allowed in {expr!r}")

    return build(tree.body)


# --- typos and temperatures -------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z]+")


class TypoFixer:
    """Reads common misspellings of red-flag words as the words themselves."""

    def __init__(self, typos: Typos) -> None:
        self.words = sorted({w.lower() for w in typos.words})
        self.keep = {w.lower() for w in typos.keep} | set(self.words)
        self._cache: dict[str, str] = {}

    def word(self, token: str) -> str:
        low = token.lower()
        if len(low) < 4 or len(low) > 20 or low in self.keep:
            return token
        if low not in self._cache:
            best = nearest(low, self.words) or ""  # the one typo policy (bot/spelling.py); "" = not a typo
            if len(self._cache) < 50_000:
                self._cache[low] = best  # never the token itself: "Will" once cached must not turn "will" into "Will"
            return best or token
        return self._cache[low] or token

    def fix(self, text: str) -> str:
        return _WORD.sub(lambda m: self.word(m.group(0)), text)


_NUMBER = re.compile(r"(?<![\d.,])(\d{2,3})(?:\s*(?:[.,]|\bpoint\b)\s*(\d{1,2}))?(?!\d)", re.IGNORECASE)
_UNIT = re.compile(r"^\s*(°|º|degrees?\b|deg\b|graden\b|grad\b|grados\b|gradi\b|graus\b|stopni\w*)?"
                   r"\s*(celsius|centigrade|fahrenheit|c|f)?(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """A temperature found in a message."""

    value: float
    unit: Literal["C", "F"]


class TemperatureParser:
    """Finds body temperatures in free text: '38,5', '39C', '101.2F', 'temp of 38.4', '39' near 'fever'."""

    def __init__(self, rule: Temperature, where: str = f"{REDFLAGS_FILE}: temperature") -> None:
        self.rule = rule
        self.context = compile_all(rule.context, f"{where}.context")
        self.not_after = compile_pattern(rule.not_after, f"{where}.not_after")
        self.not_before = compile_pattern(rule.not_before, f"{where}.not_before")

    def readings(self, text: str, extra_context: str = "") -> list[Reading]:
        has_context = any(p.search(text) or (extra_context and p.search(extra_context)) for p in self.context)
        out: list[Reading] = []
        for m in _NUMBER.finditer(text):
            value = float(m.group(1) + ("." + m.group(2) if m.group(2) else ""))
            after, before = text[m.end() :], text[max(0, m.start() - 40) : m.start()]
            unit_m = _UNIT.match(after)
            degree, unit = (unit_m.group(1), unit_m.group(2)) if unit_m else (None, None)
            rest = after[unit_m.end() :] if unit_m else after
            if not (degree or unit) and (self.not_after.search(after[:40]) or not has_context):
                continue
            if self.not_before.search(before) or (not unit and not degree and self.not_after.search(rest[:40])):
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


# --- compiled cards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledCard:
    card: Card
    patterns: PatternGroup
    strong: PatternGroup
    also: PatternGroup
    negated: PatternGroup
    fires: Callable[[Mapping[str, bool]], bool]

    @property
    def id(self) -> str:
        return self.card.id


@dataclass
class CardResult:
    """What one card saw in a message."""

    id: str
    tier: int
    fired: bool
    matched: dict[str, str] = field(default_factory=dict)  # pattern / strong / also / negated -> the pattern that matched
    clause: str = ""         # the clause it fired in (or matched in), when the message has several
    set_aside: bool = False  # it matched only in clauses that are set aside (over, what-if, questions)


@dataclass
class Clause:
    """One clause of a message and the signs read on it."""

    text: str
    signs: dict[str, str]
    names: dict[str, bool]
    set_aside: bool
    not_read: list[str] = field(default_factory=list)  # spans that report no sign now (a worry, a denied sign)


@dataclass
class Assessment:
    """Everything triage saw in one message, and the verdict."""

    text: str                                  # the message as the rules read it (folded, typos fixed)
    signs: dict[str, str]                      # context sign -> the pattern that matched
    names: dict[str, bool]                     # every name the decision used
    readings: list[Reading]
    cards: list[CardResult]
    probabilities: dict[str, float]            # classifier: card id -> probability
    step: int                                  # index of the step that decided
    verdict: Literal["none", "cards", "classifier", "tier3"]
    why: str
    tier: int | None = None                    # 1, 2, 3, or None (not urgent)
    fired: list[str] = field(default_factory=list)  # card ids named to the family, highest tier first
    clauses: list[Clause] = field(default_factory=list)  # the clauses, when the message has more than one
    language: str = ""                         # the language whose context words were read ("" or "en": English only)
    not_read: list[str] = field(default_factory=list)  # spans of the whole message that report no sign now

    @property
    def urgent(self) -> bool:
        return self.tier is not None


def _group(patterns: Sequence[str], where: str, vocab: Mapping[str, Sequence[str]],
           extra: Mapping[str, Sequence[str]] | None = None) -> PatternGroup:
    """The patterns at `where` plus any from the language file ({where: [patterns]}), as one group."""
    sources = list(patterns)
    compiled = compile_all(patterns, where, vocab)
    for key, pats in (extra or {}).items():
        sources += list(pats)
        compiled += compile_all(pats, key, vocab)
    return PatternGroup(sources, compiled, where)


class Triage:
    """The cards, compiled; `assess` applies them to one message."""

    def __init__(self, rules: RedFlagsFile, path: Path | str = REDFLAGS_FILE,
                 extra_patterns: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                 extra_also: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                 language_context: Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]] | None = None,
                 false_friends: Mapping[str, Sequence[str]] | None = None) -> None:
        """`extra_patterns` / `extra_also`: {card id or context sign: {where: [patterns]}} from the language file, read
        in every message; `language_context`: {language code: {context sign: {where: [patterns]}}}, read only in a
        message in that language (the Dutch "hier" is "here", the French "hier" is "yesterday"); `false_friends`:
        {language code: [words]}, everyday words of that language that the English `sign_word` list must not read in a
        message in it (the Italian "stare", "to stay"; the Portuguese "ate", "until")."""
        self.rules = rules
        self.false_friends = {code: frozenset(fold(w).lower() for w in words) for code, words in (false_friends or {}).items()}
        self.path = str(path)
        vocab = rules.vocabularies
        where = f"{self.path}"
        self.typos = TypoFixer(rules.typos)
        try:
            self.temperature = TemperatureParser(rules.temperature, f"{where}: temperature")
            extra = extra_patterns or {}
            also_extra = extra_also or {}
            ids = {c.id for c in rules.cards}
            for key, wheres in [*extra.items(), *also_extra.items()]:
                if key not in ids and key not in CONTEXT_SIGNS:
                    raise RedFlagsError(f"{next(iter(wheres), key)}: {key!r} is neither a card of {self.path} nor a context sign")
            self.context = {name: _group(rules.context[name], f"{where}: context.{name}", vocab, extra.get(name))
                            for name in CONTEXT_SIGNS}
            self.language_context: dict[str, dict[str, PatternGroup]] = {}
            for code, signs in (language_context or {}).items():
                unknown = [k for k in signs if k not in CONTEXT_SIGNS]
                if unknown:
                    raise RedFlagsError(f"{next(iter(signs[unknown[0]]), code)}: {unknown[0]!r} is not a context sign")
                self.language_context[code] = {name: _group([], f"{where}: context.{name}", vocab, signs[name])
                                               for name in signs}
            self.names = dict(rules.decision.names)
            known = set(CONTEXT_SIGNS) | set(MEASURED)
            known |= {MESSAGE + k for k in known}
            self._names: list[tuple[str, Callable[[Mapping[str, bool]], bool]]] = []
            for name, expr in self.names.items():
                self._names.append((name, _logic(expr, known, f"{where}: decision.names.{name}")))
                known |= {name, MESSAGE + name}
            self._set_aside = _logic(rules.decision.set_aside, known, f"{where}: decision.set_aside")
            self._clause_names = [(name, _logic(expr, known, f"{where}: decision.clause_names.{name}"))
                                  for name, expr in rules.decision.clause_names.items()]
            clash = [n for n, _ in self._clause_names if n in known]
            if clash:
                raise RedFlagsError(f"{where}: decision.clause_names {clash} clash with a sign or a name")
            self.breaks = _group(rules.clauses.breaks, f"{where}: clauses.breaks", vocab)
            self.report_starts = _group(rules.clauses.report_starts, f"{where}: clauses.report_starts", vocab)
            card_known = known | set(CARD_NAMES)
            default_fires = _logic(rules.decision.card_fires, card_known, f"{where}: decision.card_fires")
            self.cards: list[CompiledCard] = []
            for c in rules.cards:
                cw = f"{where}: card {c.id}"
                fires = _logic(c.fires, card_known, f"{cw}.fires") if c.fires else default_fires
                self.cards.append(CompiledCard(c, _group(c.patterns, f"{cw}.patterns", vocab, extra.get(c.id)),
                                               _group(c.strong, f"{cw}.strong", vocab),
                                               _group(c.also, f"{cw}.also", vocab, also_extra.get(c.id)),
                                               _group(c.negated, f"{cw}.negated", vocab), fires))
            step_known = known | set(STEP_NAMES) | {n for n, _ in self._clause_names}
            self.steps = [(s, _logic(s.when, step_known, f"{where}: decision.steps[{i}].when"))
                          for i, s in enumerate(rules.decision.steps)]
            # Steps that read the classifier: it is asked only when the steps before them did not decide.
            self._asks_classifier = [bool(_names_in(s.when) & {"classifier_sure", "classifier_unsure"})
                                     for s in rules.decision.steps]
        except PatternError as exc:
            raise RedFlagsError(str(exc)) from None
        self.by_id = {c.id: c for c in self.cards}

    # -- reading a message --

    def prepare(self, text: str, language: str = "") -> str:
        """The message as the rules read it: accents folded, typos of English red-flag words fixed (only in a
        message not known to be in another language: the Polish "temu" is not a typo of "temp")."""
        folded = fold(text)
        return folded if language and language != "en" else self.typos.fix(folded)

    def _signs(self, language: str = "") -> list[tuple[str, list[PatternGroup]]]:
        """Each context sign's patterns for a message in `language`. The signs that can only make a message more
        urgent (`SHARED_SIGNS`: about the baby, now, still going) are read in every language, as are all signs of a
        message in English or in no known language (it may be a short message in any of them); the signs that set
        a message aside (over, a what-if, a question, a worry...) of a message in another language are read in that
        language only: the Dutch "oma hier" ("grandma here") is not the French "hier" ("yesterday")."""
        own = self.language_context.get(language)
        out = []
        for name, group in self.context.items():
            if own is None or name in SHARED_SIGNS:
                groups = [group, *(lc[name] for lc in self.language_context.values() if name in lc)]
            else:
                groups = [group, own[name]] if name in own else [group]
            out.append((name, groups))
        return out

    def clauses(self, t: str) -> list[str]:
        """The clauses of a prepared message: cut at the file's `clauses.breaks` (a named group `keep` stays
        with the next clause, as "now" in "gone, now she is floppy"); pieces too short to read join the one before."""
        out: list[str] = []
        start = 0
        for cut, nxt in _breaks(self.breaks, t):
            if cut < start:  # overlaps the break before
                continue
            # A question keeps its question mark: the signs read on the clause see it is a question.
            piece = (t[start:cut] + ("?" if t[cut:nxt].lstrip().startswith("?") else "")).strip()
            if len(piece) >= self.rules.clauses.min_chars:
                out.append(piece)
                start = nxt
        rest = t[start:].strip()
        if rest:
            if out and len(rest) < self.rules.clauses.min_chars:
                out[-1] = f"{out[-1]} {rest}"
            else:
                out.append(rest)
        limit = self.rules.clauses.max_clauses
        if len(out) > limit:  # a very long message: runs of neighbouring clauses are read together (bounded cost)
            size = -(-len(out) // limit)
            out = [" ".join(out[i : i + size]) for i in range(0, len(out), size)]
        return out or [t]

    def not_reports(self, t: str, language: str = "") -> list[tuple[int, int]]:
        """Spans of `t` that report no sign of the baby now (the file's `clauses.not_reports` signs: a worry about
        what might happen, a sign denied). Each runs from its sign's match to the first `report_starts` inside it
        ("I'm scared she'll get a fever, and now she is floppy" keeps "and now she is floppy")."""
        spans: list[tuple[int, int]] = []
        whole = self.rules.clauses.whole_spans
        groups = dict(self._signs(language))
        for sign in self.rules.clauses.not_reports:
            cut = self.report_starts.compiled if sign not in whole else []
            for m in (m for g in groups[sign] for p in g.compiled for m in _every_match(p, t)):
                start, end = m.start(), m.end()
                for q in cut:
                    stop = q.search(t, start + 1, end)
                    if stop is not None:
                        end = min(end, stop.start())  # type: ignore[attr-defined]
                if end > start:
                    spans.append((start, end))
        return sorted(spans)

    def blank(self, t: str, language: str = "") -> tuple[str, list[str]]:
        """`t` with the spans that report no sign now blanked out (card patterns read this), and those spans."""
        spans = self.not_reports(t, language)
        return _blanked(t, spans), [t[a:b].strip() for a, b in spans]

    def _read(self, t: str, previous: str, other_language: bool,
              whole: tuple[dict[str, bool], str] | None = None, language: str = "", reported: str | None = None,
              ) -> tuple[dict[str, str], dict[str, bool], list[Reading]]:
        """Signs, names and temperatures of one text: the whole message, or one clause of it (`whole` = the
        message's names, readings and text, for what a clause inherits)."""
        signs: dict[str, str] = {}
        env: dict[str, bool] = {}
        friends = self.false_friends.get(language)
        # The English sign words read a message in another language without that language's false friends.
        english_text = (_WORD.sub(lambda m: " " * len(m.group()) if m.group().lower() in friends else m.group(), t)
                        if friends else t)
        groups_of = self._signs(language)
        by_name = dict(groups_of)
        for name, groups in groups_of:
            text = english_text if name == "sign_word" else t
            hit = next((h for g in groups if (h := g.first(text if g is self.context[name] else t)) is not None), None)
            if hit is not None and name == "past" and any(by_name["treatment_time"]):
                # A time that dates the treatment or a test ("she had chemo last week", "platelets were low yesterday") is
                # not a sign that is over: in a clause told in the present (or in no past tense), `past` is read without it.
                if (any(g.first(t) is not None for g in by_name["tense_present"])
                        or all(g.first(t) is None for g in by_name["tense_past"])):
                    undated = _blank_all(by_name["treatment_time"], t)
                    hit = next((h for g in groups if (h := g.first(undated)) is not None), None)
            env[name] = hit is not None
            if hit is not None:
                signs[name] = hit
        # Temperatures are read where the text reports the baby now: not in a worry, a denied sign or someone else's
        # ("her twin sister has a temperature of 38.2").
        if reported is None:
            reported = self.blank(t, language)[0]
        if whole is None:
            readings = self.temperature.readings(reported, previous)
        else:
            whole_env, whole_text = whole
            for name in INHERITED:
                env[name] = env[name] or whole_env[name]
            readings = self.temperature.readings(reported, f"{whole_text} {previous}")
        env["measured_fever"] = any(self.temperature.is_fever(r) for r in readings)
        env["measured_normal"] = bool(readings) and not env["measured_fever"]
        if whole is not None and not readings:
            # A clause without a temperature of its own takes a normal one from its message ("a temperature,
            # but only 37.6"), never a fever told elsewhere ("38.5 last week, but it's gone now").
            env["measured_normal"] = whole[0]["measured_normal"]
        env["other_language"] = other_language
        for name in (*CONTEXT_SIGNS, *MEASURED):
            env[MESSAGE + name] = whole[0][name] if whole is not None else env[name]
        for name, fn in self._names:
            env[name] = fn(env)
            env[MESSAGE + name] = whole[0][name] if whole is not None else env[name]
        return signs, env, readings

    @staticmethod
    def _card_on(c: CompiledCard, text: str, names: Mapping[str, bool], also: str | None) -> dict[str, str] | None:
        """What of card `c` matched in `text` if the card fires there (with `names` read on that text), else None."""
        matched = {}
        for key, patterns in (("pattern", c.patterns), ("strong", c.strong), ("negated", c.negated)):
            hit = patterns.first(text)
            if hit is not None:
                matched[key] = hit
        if also is not None:
            matched["also"] = also
        card_env = dict(names, pattern="pattern" in matched, strong="strong" in matched,
                        also=(also is not None) or not c.also, negated="negated" in matched)
        return matched if c.fires(card_env) else None

    def assess(self, text: str, previous: str = "", probabilities: Mapping[str, float] | None = None,
               prepared: bool = False, other_language: bool = False,
               classify: Callable[[str, str], Mapping[str, float]] | None = None,
               always_classify: bool = False, language: str = "") -> Assessment:
        """Apply the signs, the cards (clause by clause) and the steps to one message. The classifier's
        probabilities are given, or `classify(reported, text)` makes them from what the message reports now
        (`reported`: the prepared text with set-aside clauses and the spans that report no sign blanked), only
        when a step that reads them is reached (or always, with `always_classify`: for `explain`)."""
        t = text if prepared else self.prepare(text, language)
        prev = self.prepare(previous, language) if previous else ""
        blanked, whole_not_read = self.blank(t, language)
        signs, env, readings = self._read(t, prev, other_language, language=language, reported=blanked)
        pieces = self.clauses(t)
        reports: dict[int, str] = {}  # what each clause reports (its worries and denied signs blanked): cards read this
        clauses = []
        for piece in pieces:
            if len(pieces) == 1:
                c_signs, c_env = signs, env
                report, not_read = blanked, whole_not_read
            else:
                report, not_read = self.blank(piece, language)
                c_signs, c_env, _ = self._read(piece, prev, other_language, (env, t), language, report)
            clauses.append(Clause(piece, c_signs, c_env, bool(self._set_aside(c_env)), not_read))
            reports[id(clauses[-1])] = report

        # The whole message, for a sign told across a clause break: what is over and what reports no sign now are not read.
        read_whole = blanked
        for clause in clauses:
            at = read_whole.find(clause.text) if clause.set_aside else -1
            if at >= 0:
                read_whole = read_whole[:at] + " " * len(clause.text) + read_whole[at + len(clause.text):]
        results: list[CardResult] = []
        for c in self.cards:
            also = c.also.first(t)  # a second sign counts anywhere in the message
            result = CardResult(c.id, c.card.tier, False)
            for clause in clauses:
                matched = {}
                for key, patterns in (("pattern", c.patterns), ("strong", c.strong), ("negated", c.negated)):
                    hit = patterns.first(reports[id(clause)] if key != "negated" else clause.text)
                    if hit is not None:
                        matched[key] = hit
                if also is not None:
                    matched["also"] = also
                card_env = dict(clause.names, pattern="pattern" in matched, strong="strong" in matched,
                                also=(also is not None) or not c.also, negated="negated" in matched)
                if not c.fires(card_env):
                    if not result.matched and ("pattern" in matched or "strong" in matched):
                        result.matched, result.clause = matched, clause.text
                    continue
                if clause.set_aside:
                    result.set_aside = True
                    result.matched, result.clause = matched, clause.text
                    continue
                result = CardResult(c.id, c.card.tier, True, matched, clause.text if len(clauses) > 1 else "")
                break
            if not result.fired and not result.set_aside and len(clauses) > 1:
                # A sign told across a clause break ("her lips are not pink but grey") is read on the whole message.
                whole = self._card_on(c, read_whole, env, also)
                if whole is not None and not self._set_aside(env):
                    result = CardResult(c.id, c.card.tier, True, whole, t)
            results.append(result)

        for name, fn in self._clause_names:
            env[name] = any(fn(c.names) for c in clauses if not c.set_aside)
        probs: dict[str, float] = {}
        best_card: str | None = None
        env["cards"] = any(r.fired for r in results)
        env["classifier_sure"] = env["classifier_unsure"] = False
        asked = False
        shown = clauses if len(clauses) > 1 else []

        for i, (step, fn) in enumerate(self.steps):
            if not asked and (always_classify or self._asks_classifier[i] or classify is None):
                asked = True
                probs = dict(classify(read_whole, t) if classify is not None else probabilities or {})
                best_card, best_p = max(probs.items(), key=lambda kv: kv[1]) if probs else (None, 0.0)
                env["classifier_sure"] = best_p >= self.rules.classifier.sure
                env["classifier_unsure"] = (not env["classifier_sure"]
                                            and sum(probs.values()) >= self.rules.classifier.unsure)
            if not fn(env):
                continue
            a = Assessment(t, signs, env, readings, results, probs, i, step.verdict, step.why, clauses=shown,
                           language=language, not_read=whole_not_read)
            if step.verdict == "cards":
                fired = sorted((r for r in results if r.fired), key=lambda r: r.tier)
                a.fired = [r.id for r in fired]
                a.tier = fired[0].tier
            elif step.verdict == "classifier" and best_card is not None:
                a.fired = [best_card]
                a.tier = self.by_id[best_card].card.tier
            elif step.verdict == "tier3":
                a.tier = 3
            return a
        return Assessment(t, signs, env, readings, results, probs, len(self.steps), "none", "no step applied",
                          clauses=shown, language=language, not_read=whole_not_read)

    def message(self, a: Assessment) -> str:
        """The family's message for an urgent assessment: the winning card's, plus every other sign named."""
        if a.tier is None:
            return ""
        if not a.fired:
            return self.rules.tiers[3].message
        first = self.by_id[a.fired[0]].card
        others = [self.by_id[i].card.sign for i in a.fired[1:]]
        if not others:
            return first.message
        return f"{first.message} Also tell them about {_and(others)}."

    # -- start-up checks --

    def check_examples(self) -> None:
        """Every card's `match` examples make it fire, and no `no_match` example does; else stop, naming the card."""
        problems = []
        for c in self.cards:
            missed = [e for e in c.card.examples.match if c.id not in self.assess(e).fired]
            wrong = [e for e in c.card.examples.no_match if c.id in self.assess(e).fired]
            if missed or wrong:
                parts = []
                if missed:
                    parts.append(f"{len(missed)} 'match' example(s) do not fire it: {missed[:5]}")
                if wrong:
                    parts.append(f"{len(wrong)} 'no_match' example(s) fire it: {wrong[:5]}")
                problems.append(f"card {c.id!r}: " + "; ".join(parts))
        if problems:
            raise RedFlagsError(f"{self.path}: the examples of {len(problems)} card(s) fail "
                                f"(fix the card's patterns or its examples; `python -m bot explain \"...\"` shows why):\n  "
                                + "\n  ".join(problems))


def _every_match(p, t: str) -> Iterator:
    """Every match of the compiled pattern `p` in `t`, left to right, none overlapping (RE2 and `re` alike)."""
    pos = 0
    while pos <= len(t):
        m = p.search(t, pos)
        if m is None:
            return
        yield m
        pos = max(m.end(), pos + 1)


def _blanked(t: str, spans: Iterable[tuple[int, int]]) -> str:
    """`t` with the spans blanked out (same length, so positions stay)."""
    chars: list[str] | None = None
    for start, end in spans:
        if end > start:
            chars = chars if chars is not None else list(t)
            chars[start:end] = " " * (end - start)
    return "".join(chars) if chars is not None else t


def _blank_all(groups: Sequence[PatternGroup], t: str) -> str:
    """`t` with every match of the patterns of `groups` blanked out (same length, so positions stay)."""
    return _blanked(t, ((m.start(), m.end()) for g in groups for p in g.compiled for m in _every_match(p, t)))


def _breaks(breaks: PatternGroup, t: str) -> list[tuple[int, int]]:
    """Every clause break in `t`, in order: (where the clause ends, where the next begins). One pass per pattern."""
    found: list[tuple[int, int]] = []
    for p in breaks.compiled:
        group = getattr(p, "groupindex", {}).get("keep")
        for m in _every_match(p, t):
            keep = m.start(group) if group is not None and m.start(group) >= 0 else m.end()
            if keep > m.start():
                found.append((m.start(), keep))
    return sorted(found)


def _names_in(expr: str) -> set[str]:
    """The names an expression of the decision uses."""
    return {n.id for n in ast.walk(ast.parse(expr.strip(), mode="eval")) if isinstance(n, ast.Name)}


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def load_redflags(path: Path) -> RedFlagsFile:
    """Read and validate the cards file; errors name the file and the key."""
    return load_validated(path, RedFlagsFile, RedFlagsError)

