"""The safety gate, before retrieval: red flags (prompts/redflags.yaml, with a learned classifier beside
the patterns), other languages (prompts/languages.yaml), role changes, scope and personal decisions
(prompts/safety.yaml). The order of the checks is the `order` list of prompts/safety.yaml."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.cache import ArrayCache, cached_vectors, checked_once, code_digest, digest
from bot.embed import Embedder
from bot.language import ENGLISH, Detected, LanguageGuide
from bot.patterns import PatternError, PatternGroup, fold, group
from bot.prompts import load_validated
from bot.query import Query
from bot.schema import Turn
from bot.sentences import sentences
from bot.triage import (  # noqa: F401  (TypoFixer, TemperatureParser: part of this module's interface)
    REDFLAGS_FILE,
    Assessment,
    RedFlagsError,
    TemperatureParser,
    Triage,
    TypoFixer,
    load_redflags,
)
from bot.triage_model import fitted_classifier, training_set

SAFETY_FILE = "safety.yaml"
CHECKS = ("urgent", "other_language", "role_change", "scope", "personal")
# What the classifier embeds, which bounds the cost of any message: the first EMBED_CHARS characters, and
# for a message no longer than that, each of its sentences (at most MAX_WINDOWS runs of sentences).
EMBED_CHARS = 400
MAX_WINDOWS = 4


class SafetyRulesError(ValueError):
    """A safety rules file is broken; the message names the file and the problem."""


@dataclass(frozen=True)
class Verdict:
    """What the safety gate decided about one message."""

    kind: Literal["urgent", "out_of_scope", "personal", "other_language", "ok"]
    rule: str | None = None
    message: str = ""
    tier: int | None = None
    signs: tuple[str, ...] = ()            # every red-flag card that fired, highest tier first
    sign_names: tuple[str, ...] = ()       # their names, for the family
    language: str = ENGLISH
    translation_reviewed: bool = True      # False when a translated message has not been checked by a native-speaking clinician
    note: bool = True                      # a personal verdict: its message fits what the question asks and is shown
    assessment: Assessment | None = field(default=None, repr=False, compare=False)


# --- prompts/safety.yaml ----------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NonEmpty = Field(min_length=1)


class RoleChange(_Strict):
    message: str
    patterns: list[str] = NonEmpty
    examples: list[str] = Field(default_factory=list)
    similarity_threshold: float = Field(gt=0, le=1)


class Scope(_Strict):
    message: str
    greeting_message: str = "out_of_scope"
    greetings: list[str] = Field(default_factory=list)
    topic: list[str] = NonEmpty
    min_on_topic: float = Field(ge=0, le=1)
    follow_up_margin: float = Field(ge=0, le=1)
    on_topic: list[str] = NonEmpty
    off_topic: list[str] = NonEmpty


class OtherDisease(_Strict):
    message: str
    patterns: list[str] = NonEmpty
    adult: list[str] = NonEmpty
    illness: list[str] = NonEmpty
    child: list[str] = NonEmpty


class PersonalRule(_Strict):
    id: str = Field(min_length=1)
    message: str
    patterns: list[str] = NonEmpty
    # The note is shown only when a clause of the question also matches one of these (none: always shown).
    note_when: list[str] = Field(default_factory=list)


class Personal(_Strict):
    clause_breaks: str = r"[,;:]"  # where a clause ends, for `note_when`
    rules: list[PersonalRule] = NonEmpty


class SafetyRules(_Strict):
    """prompts/safety.yaml"""

    version: int
    order: list[str] = Field(default_factory=lambda: list(CHECKS))
    messages: dict[str, str] = NonEmpty
    role_change: RoleChange
    scope: Scope
    other_disease: OtherDisease
    personal: Personal

    @field_validator("order")
    @classmethod
    def _order(cls, v: list[str]) -> list[str]:
        if sorted(v) != sorted(CHECKS) or v[0] != "urgent":
            raise ValueError(f"must list each of {list(CHECKS)} once, starting with 'urgent'")
        return v

    @model_validator(mode="after")
    def _messages_exist(self) -> SafetyRules:
        empty = [k for k, v in self.messages.items() if not v.strip()]
        if empty:
            raise ValueError(f"messages {empty} are empty")
        used = {
            "role_change": self.role_change.message,
            "scope": self.scope.message,
            "scope.greeting": self.scope.greeting_message,
            "other_disease": self.other_disease.message,
        }
        used.update({f"personal.rules[{r.id}]": r.message for r in self.personal.rules})
        missing = {where: name for where, name in used.items() if name not in self.messages}
        if missing:
            raise ValueError(f"these refer to messages that do not exist: {missing}")
        return self


def load_rules(path: Path) -> SafetyRules:
    """Read and validate a safety rules file; errors name the file and the problem."""
    return load_validated(path, SafetyRules, SafetyRulesError)


def _any(patterns: PatternGroup, text: str) -> bool:
    return patterns.first(text) is not None


def _embedded(text: str) -> list[str]:
    """The texts the classifier reads for a message: its head, and for a short message its sentences."""
    out = [text[:EMBED_CHARS]]
    if len(text) > EMBED_CHARS:
        return out  # the patterns read all of a long message; the classifier its beginning
    parts = sentences(text)
    if len(parts) > 1:
        size = max(1, -(-len(parts) // MAX_WINDOWS))
        out += [" ".join(parts[i : i + size]) for i in range(0, len(parts), size)]
    return out


# --- the gate ---------------------------------------------------------------------------------


class SafetyGate:
    """Decides, before retrieval, whether a message is urgent, in another language, out of scope or a personal decision."""

    def __init__(self, rules: SafetyRules, embedder: Embedder, triage: Triage, languages: LanguageGuide,
                 cache_dir: Path | None = None, path: Path | str = SAFETY_FILE, check_examples: bool = True) -> None:
        self.rules = rules
        self.embedder = embedder
        self.triage = triage
        self.languages = languages
        self.typos = triage.typos
        self.temperature = triage.temperature
        where = str(path)
        try:
            self.role_change = group(rules.role_change.patterns, f"{where}: role_change.patterns")
            self.topic = group(rules.scope.topic, f"{where}: scope.topic")
            self.greetings = group(rules.scope.greetings, f"{where}: scope.greetings")
            od = rules.other_disease
            self.other_cancer = group(od.patterns, f"{where}: other_disease.patterns")
            self.adult = group(od.adult, f"{where}: other_disease.adult")
            self.illness = group(od.illness, f"{where}: other_disease.illness")
            self.child = group(od.child, f"{where}: other_disease.child")
            self.personal = [(r.id, rules.messages[r.message],
                              group(r.patterns, f"{where}: personal.rules[{r.id}].patterns"))
                             for r in rules.personal.rules]
            self.note_when = {r.id: group(r.note_when, f"{where}: personal.rules[{r.id}].note_when")
                              for r in rules.personal.rules if r.note_when}
            self.clause_breaks = group([rules.personal.clause_breaks], f"{where}: personal.clause_breaks")
        except PatternError as exc:
            raise SafetyRulesError(str(exc)) from None
        cache = ArrayCache(cache_dir)
        if check_examples:
            # The examples' check is deterministic: it is run again only when the rules or the code changed.
            key = digest([code_digest(), triage.rules.model_dump_json(), languages.spec.model_dump_json()])
            try:
                checked_once(cache, "examples-checked", key, triage.check_examples)
            except RedFlagsError as exc:
                raise SafetyRulesError(str(exc)) from None

        # Example phrasings are embedded and the classifier fitted once, both kept in cache_dir between starts
        # (bot/cache.py); check() embeds only the message.
        groups = {"role_change": rules.role_change.examples, "on_topic": rules.scope.on_topic,
                  "off_topic": rules.scope.off_topic}
        texts, labels = training_set(triage.rules, [x for g in groups.values() for x in g])
        all_texts = texts + [x for g in groups.values() for x in g]
        model_key = str(getattr(embedder, "model_path", "")) or type(embedder).__name__
        vectors = cached_vectors(all_texts, embedder, cache, model_key)
        self.classifier = fitted_classifier(vectors[: len(texts)], labels, cache)
        self._vectors: dict[str, np.ndarray] = {}
        start = len(texts)
        for name, items in groups.items():
            self._vectors[name] = vectors[start : start + len(items)]
            start += len(items)

    @classmethod
    def from_dir(cls, prompts_dir: Path, embedder: Embedder, cache_dir: Path | None = None,
                 check_examples: bool = True) -> SafetyGate:
        """Load and check prompts/safety.yaml, redflags.yaml and languages.yaml; train the classifier."""
        prompts_dir = Path(prompts_dir)
        path = prompts_dir / SAFETY_FILE
        rules = load_rules(path)
        try:
            languages = LanguageGuide.from_dir(prompts_dir)
            red_path = prompts_dir / REDFLAGS_FILE
            triage = Triage(load_redflags(red_path), red_path, languages.extra_patterns(), languages.extra_also(),
                            languages.context_patterns(), languages.false_friends())
        except (RedFlagsError, ValueError) as exc:
            raise SafetyRulesError(str(exc)) from None
        return cls(rules, embedder, triage, languages, cache_dir, path, check_examples)

    @property
    def no_words_message(self) -> str:
        """What to say to a message with no words (emoji or punctuation only): a kind request for a question."""
        return self.rules.messages.get("no_words", "")

    @property
    def retrieval_may_override(self) -> frozenset[str]:
        """Verdict rules the sources may overrule (prompts/redflags.yaml: retrieval_may_override)."""
        return frozenset(self.triage.rules.retrieval_may_override)

    # -- public --

    def check(self, question: str | Query, history: Sequence[Turn | dict] = ()) -> Verdict:
        """The verdict for one message; the order of the checks is prompts/safety.yaml `order`."""
        query = question if isinstance(question, Query) else Query(raw=question, text=question, embedder=self.embedder)
        history = history or query.history
        raw = fold(query.text)
        previous = self._previous_user_text(history)
        detected = self.languages.detect(query.text)  # accents help to tell languages apart
        # The classifier reads the message as spelled for the documents (the text retrieval embeds too), so
        # the one message is embedded once for the gate, the search and the composer.
        vectors = query.embed(_embedded(query.spelled))

        seen: dict[str, Assessment] = {}  # what the red-flag step read, for the scope step
        steps = {
            "urgent": lambda: self._urgent(raw, previous, vectors, detected, seen),
            "other_language": lambda: self._other_language(detected),
            "role_change": lambda: self._role_change(raw, vectors[0]),
            "scope": lambda: self._scope(raw, vectors[0], history, self._signs_of_baby(seen.get("triage"))),
            "personal": lambda: self._personal(self.typos.fix(raw)),
        }
        for name in self.rules.order:
            verdict = steps[name]()
            if verdict is not None:
                return verdict
        return Verdict("ok", language=detected.code)

    def assess(self, question: str, history: Sequence[Turn | dict] = ()) -> tuple[Assessment, Detected]:
        """What the red-flag step saw (for `python -m bot explain`)."""
        raw = fold(question)
        detected = self.languages.detect(question)
        return self.triage.assess(raw, self._previous_user_text(history), other_language=detected.code != ENGLISH,
                                  classify=self._classifier_for(detected), always_classify=True,
                                  language=detected.code), detected

    def temperatures(self, text: str, previous: str = ""):
        """Temperatures the gate would read in a message (exposed for tests and staff tools)."""
        return self.temperature.readings(self.triage.prepare(text), self.triage.prepare(previous) if previous else "")

    # -- the steps --

    def _previous_user_text(self, history: Sequence[Turn | dict]) -> str:
        for turn in reversed(list(history)):
            role = turn.get("role") if isinstance(turn, dict) else turn.role
            content = turn.get("content", "") if isinstance(turn, dict) else turn.content
            if role == "user":
                return str(content)[:2000]
        return ""

    def _classifier_for(self, detected: Detected, vectors: np.ndarray | None = None
                        ) -> Callable[[str, str], dict[str, float]]:
        """What the triage calls with (what the message reports now, the message as the rules read it)."""

        def classify(reported: str, text: str) -> dict[str, float]:
            if detected.code != ENGLISH:
                return {}  # the sentence model knows English only; other languages rely on their word lists
            if reported == text and vectors is not None:
                return self.classifier.probabilities(vectors)
            # The classifier reads what the message reports now, like the cards: a worry ("I'm scared he'll stop
            # breathing"), a denied sign ("no beeping"), someone else's sign ("my husband has a fever") and a
            # clause that is over ("when he was diagnosed his tummy was hard") are left out, at the cost of a
            # second embedding.
            report = " ".join(reported.split())
            if len(re.findall(r"[a-z]{3,}", report)) < 2:
                return {}
            return self.classifier.probabilities(self.embedder.encode(_embedded(report)))

        return classify

    def _signs_of_baby(self, a: Assessment | None) -> bool:
        """The red-flag step read talk of a baby's health: a card matched (even where the message is over, a
        what-if or a question, and with no word for the baby: "the dressing was soaked with blood, the nurses
        redid it"), or, in a message about a baby, a worry, a denied sign, a sign that is over or a report that
        all is well, or a clause that reports a sign now ("he doesn't seem to recognise his dad"). Such a message is on
        topic."""
        if a is None:
            return False
        if any(r.matched for r in a.cards) or a.names.get("reports_sign_now"):
            return True  # a card matched, or a clause reports a sign of the baby now (file: decision.clause_names)
        return bool(a.names.get("baby")) and (a.names.get("reassuring", False) or a.names.get("resolved", False)
                                              or bool(a.not_read))

    def _urgent(self, raw: str, previous: str, vectors: np.ndarray, detected: Detected,
                seen: dict[str, Assessment] | None = None) -> Verdict | None:
        a = self.triage.assess(raw, previous, other_language=detected.code != ENGLISH,
                               classify=self._classifier_for(detected, vectors), language=detected.code)
        if seen is not None:
            seen["triage"] = a
        if a.tier is None:
            return None
        message = self.triage.message(a)
        lang = self.languages.language(detected.code)
        reviewed = True
        if lang is not None:
            local = {1: lang.messages.tier1, 2: lang.messages.tier2, 3: lang.messages.tier3}[a.tier]
            message = f"{local} {message}"
            reviewed = lang.reviewed
        names = tuple(self.triage.by_id[i].card.sign for i in a.fired)
        rule = a.fired[0] if a.fired else "tier3"
        return Verdict("urgent", rule, message, a.tier, tuple(a.fired), names, detected.code, reviewed, a)

    def _other_language(self, detected: Detected) -> Verdict | None:
        lang = self.languages.language(detected.code)
        if lang is None:
            return None
        message = (f"{lang.messages.english_only} This assistant answers in English only. "
                   "If you are worried about your baby, call your care team.")
        return Verdict("other_language", f"language_{detected.code}", message, language=detected.code,
                       translation_reviewed=lang.reviewed)

    def _role_change(self, raw: str, vector: np.ndarray) -> Verdict | None:
        rc = self.rules.role_change
        message = self.rules.messages[rc.message]
        if _any(self.role_change, raw):
            return Verdict("out_of_scope", "prompt_injection", message)
        if len(self._vectors["role_change"]) and float((self._vectors["role_change"] @ vector).max()) >= rc.similarity_threshold:
            return Verdict("out_of_scope", "prompt_injection", message)
        return None

    def _scope(self, raw: str, vector: np.ndarray, history: Sequence[Turn | dict], signs_of_baby: bool = False) -> Verdict | None:
        if _any(self.greetings, raw):  # "hello", "thank you": a kind word back, not a refusal
            return Verdict("out_of_scope", "greeting", self.rules.messages[self.rules.scope.greeting_message])
        od = self.rules.other_disease
        if _any(self.other_cancer, raw) and not re.search(r"\blymphoma society\b", raw, re.IGNORECASE):
            return Verdict("out_of_scope", "other_cancer", self.rules.messages[od.message])
        if _any(self.adult, raw) and _any(self.illness, raw) and not _any(self.child, raw):
            return Verdict("out_of_scope", "adult_disease", self.rules.messages[od.message])
        if _any(self.topic, raw) or signs_of_baby:  # a family asking about a sign in their baby is on topic
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
        if any(_any(self.topic, self.typos.fix(fold(str(c)))) for c in earlier) and off - on < self.rules.scope.follow_up_margin:
            return None
        return Verdict("out_of_scope", "off_topic", self.rules.messages[self.rules.scope.message])

    def _personal(self, text: str) -> Verdict | None:
        """The first personal rule whose note fits the question; else the first that matched, its note not shown
        ('how should we take her temperature?' matches a decision pattern but asks for no plan)."""
        matched = [(rule_id, message) for rule_id, message, patterns in self.personal if _any(patterns, text)]
        for rule_id, message in matched:
            if self.note_fits(rule_id, text):
                return Verdict("personal", rule_id, message)
        return Verdict("personal", matched[0][0], matched[0][1], note=False) if matched else None

    def note_fits(self, rule_id: str, text: str) -> bool:
        """Whether a clause of the question asks for what the rule's note is about (personal.rules[].note_when)."""
        when = self.note_when.get(rule_id)
        if when is None:
            return True
        return any(_any(when, clause) for clause in self.clause_breaks.compiled[0].split(text) if clause and clause.strip())


def explain(gate: SafetyGate, question: str, history: Sequence[Turn | dict] = ()) -> str:
    """A plain report of what fired for one message and why the verdict won (for clinicians who edit the rules)."""
    a, detected = gate.assess(question, history)
    verdict = gate.check(question, history)
    t = gate.triage
    lines = [f"message (as the rules read it): {a.text!r}",
             f"language: {detected.code} (confidence {detected.confidence:.2f})"]
    lines.append("context signs:" + ("" if a.signs else " none"))
    lines += [f"  {name}: {pattern}" for name, pattern in a.signs.items()]
    if a.readings:
        lines.append("temperatures: " + ", ".join(f"{r.value:g} {r.unit}" + (" (fever)" if t.temperature.is_fever(r) else "")
                                                  for r in a.readings))
    named = {k: v for k, v in a.names.items()
             if k in t.names or k in t.rules.decision.clause_names or k in ("measured_fever", "measured_normal")}
    lines.append("names: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in named.items()))
    if not a.clauses:
        lines += [f"not read by the cards (no sign now: {', '.join(t.rules.clauses.not_reports)}): {span!r}"
                  for span in a.not_read]
    if a.clauses:
        lines.append(f"clauses ({len(a.clauses)}; set aside when: {t.rules.decision.set_aside}):")
        for c in a.clauses:
            lines.append(f"  {'SET ASIDE' if c.set_aside else 'read'}: {c.text!r}"
                         + (f"  [{', '.join(c.signs)}]" if c.signs else ""))
            lines += [f"    not read by the cards (no sign now: {', '.join(t.rules.clauses.not_reports)}): {span!r}"
                      for span in c.not_read]
    lines.append("cards with a match:" + ("" if any(r.matched for r in a.cards) else " none"))
    for r in a.cards:
        if not r.matched:
            continue
        card = t.by_id[r.id]
        rule = card.card.fires or t.rules.decision.card_fires
        state = "FIRED" if r.fired else "set aside (it matched only where the message is over)" if r.set_aside else "did not fire"
        lines.append(f"  {r.id} (tier {r.tier}): {state}  [fires when: {rule}]")
        if r.clause:
            lines.append(f"    in: {r.clause!r}")
        lines += [f"    {key}: {pattern}" for key, pattern in r.matched.items()]
    top = sorted(a.probabilities.items(), key=lambda kv: -kv[1])[:3]
    clf = t.rules.classifier
    unused = "not used (not English, or nothing left to read once what is over or reports no sign is set aside)"
    lines.append("classifier: " + (", ".join(f"{k} {v:.2f}" for k, v in top) if top else unused)
                 + f"  (sure >= {clf.sure}, unsure when all cards sum >= {clf.unsure}; "
                 f"sum {sum(a.probabilities.values()):.2f})")
    step = t.rules.decision.steps[a.step] if a.step < len(t.rules.decision.steps) else None
    lines.append(f"decided by step {a.step + 1}: when {step.when if step else '-'} -> {a.verdict} ({a.why})")
    lines.append(f"verdict: {verdict.kind}" + (f", rule {verdict.rule}" if verdict.rule else "")
                 + (f", tier {verdict.tier}" if verdict.tier else "")
                 + (f", signs {list(verdict.signs)}" if verdict.signs else ""))
    if verdict.message:
        lines.append(f"message: {verdict.message}")
    return "\n".join(lines)
