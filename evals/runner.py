"""Load evaluation cases and thresholds, run the cases on one assistant, score the run."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from bot.schema import Answer, Turn
from evals import metrics as m

EVALS_DIR = Path(__file__).resolve().parent
DEFAULT_CASES = EVALS_DIR / "cases" / "dev"  # the tuning split; evals/cases/test is run and reported on its own
DEFAULT_THRESHOLDS = EVALS_DIR / "thresholds.yaml"

Category = Literal["fact", "followup", "unknown", "out_of_scope", "urgent", "non_urgent", "personal", "error"]
KindName = Literal["answer", "urgent", "out_of_scope", "unknown", "error"]
KINDS: tuple[str, ...] = ("answer", "urgent", "out_of_scope", "unknown", "error")


class CaseFileError(Exception):
    """A case or thresholds file that cannot be used; the message names the file and case."""


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
    return pattern


class Fact(BaseModel):
    """A fact the answer must state, and the document its statement must cite."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(description="Python regex, case-insensitive, searched in the answer.")
    doc: str | None = Field(None, description="Document id the statement carrying the fact must cite.")

    @field_validator("pattern")
    @classmethod
    def _pattern_ok(cls, v: str) -> str:
        return _check_regex(v)


class Case(BaseModel):
    """One evaluation case, as written in evals/cases/*.yaml."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    category: Category
    question: str
    history: list[Turn] = Field(default_factory=list)
    expect_kind: KindName
    accept_kinds: list[KindName] | None = None
    facts: list[Fact] = Field(default_factory=list)
    must_not: list[str] = Field(default_factory=list)
    cite_docs: list[str] = Field(default_factory=list)
    note: str | None = None
    tags: list[str] = Field(default_factory=list, description="Free labels (a failure class, a language, a red-flag topic).")
    _source_file: str = PrivateAttr("")

    @field_validator("facts", mode="before")
    @classmethod
    def _facts_as_strings(cls, v: Any) -> Any:
        # A bare string is a pattern with no document: the simplest thing a nurse can write.
        if isinstance(v, list):
            return [{"pattern": x} if isinstance(x, str) else x for x in v]
        return v

    @field_validator("must_not")
    @classmethod
    def _must_not_regex(cls, v: list[str]) -> list[str]:
        return [_check_regex(p) for p in v]

    @model_validator(mode="after")
    def _accept_includes_expected(self) -> Case:
        if self.accept_kinds is not None and self.expect_kind not in self.accept_kinds:
            self.accept_kinds = [self.expect_kind, *self.accept_kinds]
        return self

    @property
    def source_file(self) -> str:
        """The file the case was read from."""
        return self._source_file

    @property
    def kinds(self) -> list[str]:
        """Kinds that pass this case."""
        return list(self.accept_kinds or [self.expect_kind])


def _case_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.yaml") if not p.name.startswith("_"))
    if path.is_file():
        return [path]
    raise CaseFileError(f"{path}: no such case file or folder")


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "case"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def load_cases(paths: Iterable[Path | str]) -> list[Case]:
    """Read and validate every case in the given files/folders; raise CaseFileError on any problem."""
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for root in paths:
        for f in _case_files(Path(root)):
            try:
                raw = yaml.safe_load(f.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise CaseFileError(f"{f}: not valid YAML: {exc}") from None
            if raw is None:
                continue
            if not isinstance(raw, list):
                raise CaseFileError(f"{f}: must be a list of cases (each starting with '- id: ...')")
            for i, item in enumerate(raw, start=1):
                label = item.get("id", f"#{i}") if isinstance(item, dict) else f"#{i}"
                if not isinstance(item, dict):
                    raise CaseFileError(f"{f}: case {label}: must be a mapping of keys")
                try:
                    case = Case.model_validate(item)
                except ValidationError as exc:
                    raise CaseFileError(f"{f}: case {label}: {_describe(exc)}") from None
                if case.id in seen:
                    raise CaseFileError(f"{f}: case {case.id}: duplicate id (also in {seen[case.id]})")
                seen[case.id] = str(f)
                case._source_file = str(f)
                cases.append(case)
    if not cases:
        raise CaseFileError("no cases found in " + ", ".join(str(p) for p in paths))
    return cases


# ---------------------------------------------------------------- thresholds


class Limit(BaseModel):
    """A floor and/or a ceiling for one metric."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Limit:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


class Checks(BaseModel):
    """Patterns the per-case checks use; editable without touching Python."""

    model_config = ConfigDict(extra="forbid")

    urgent_call_pattern: str = (  # the call verbs of every language an urgent reply may open in
        r"\b(call|phone|ring|dial|bel|rufen|appelez|llame|llama|chiami|chiama|ligue|liga|zadzwo\w*)\b|\b(911|999|112)\b"
    )
    care_team_pattern: str = (
        r"\b(care team|medical team|treatment team|your team|your child's team|doctors?|nurses?"
        r"|oncologists?|ha?ematologists?|specialists?)\b"
    )
    dose_pattern: str = (
        r"\b\d+(?:[.,]\d+)?\s*(?:mg|mcg|µg|μg|micrograms?|milligrams?|ml|millilit(?:er|re)s?|units?|iu)\b"
    )
    template_min_chars: int = 40
    template_intended_files: list[str] = Field(default_factory=lambda: ["messages.yaml"])
    template_intended_keys: list[str] = Field(
        default_factory=lambda: ["message", "messages", "disclaimer", "reply", "text"]
    )

    @field_validator("urgent_call_pattern", "care_team_pattern", "dose_pattern")
    @classmethod
    def _regexes(cls, v: str) -> str:
        return _check_regex(v)


class Thresholds(BaseModel):
    """The versioned pass/fail limits of evals/thresholds.yaml."""

    model_config = ConfigDict(extra="forbid")

    version: int | str
    metrics: dict[str, Limit]
    checks: Checks = Field(default_factory=Checks)


def metric_names() -> list[str]:
    """Every metric a run reports (the keys thresholds may use)."""
    names = [
        "cases", "case_pass_rate", "kind_accuracy", "fact_accuracy", "citation_validity", "quote_verbatim",
        "citation_markers", "must_not_clean", "recall_at_k", "mrr", "urgent_recall", "urgent_call_first",
        "false_alarm_rate", "out_of_scope_handling", "unknown_handling", "personal_referral",
        "disclaimer_presence", "template_leaks", "errors", "latency_p50_ms", "latency_p95_ms", "duration_s",
        "leaning_shown_alone", "citation_labels",
    ]  # fmt: skip
    for kind in KINDS:
        names += [f"grade_median.{kind}", f"grade_p90.{kind}"]
    return names


def load_thresholds(path: Path | str) -> Thresholds:
    """Read and validate the thresholds file; raise CaseFileError on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        th = Thresholds.model_validate(raw)
    except FileNotFoundError:
        raise CaseFileError(f"{path}: thresholds file not found") from None
    except (yaml.YAMLError, ValidationError) as exc:
        detail = _describe(exc) if isinstance(exc, ValidationError) else str(exc)
        raise CaseFileError(f"{path}: {detail}") from None
    unknown = sorted(set(th.metrics) - set(metric_names()))
    if unknown:
        raise CaseFileError(f"{path}: unknown metric(s) {', '.join(unknown)}; known: {', '.join(metric_names())}")
    return th


# ---------------------------------------------------------------- running


class Index(Protocol):
    def document_text(self, doc_id: str) -> str: ...


class AssistantLike(Protocol):
    """What the suite needs from an assistant (bot.assistant.Assistant fits)."""

    index: Index

    def ask(self, question: str, history: list[dict] | None = None, qid: str | None = None) -> Answer: ...


@dataclass
class CaseResult:
    """What one case produced and every reason it failed."""

    case: Case
    answer: Answer | None
    latency_ms: float
    reasons: list[str] = field(default_factory=list)
    rank: int | None = None
    grade: float | None = None
    facts_found: list[bool] = field(default_factory=list)
    facts_cited: list[bool] = field(default_factory=list)
    quotes_total: int = 0
    quotes_ok: int = 0
    markers_ok: bool = True
    must_not_ok: bool = True
    leaks: list[str] = field(default_factory=list)
    personal_ok: bool | None = None
    call_first_ok: bool | None = None
    leaning_alone: list[str] = field(default_factory=list)
    labels_ok: bool | None = None

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def kind(self) -> str | None:
        return self.answer.kind if self.answer else None


@dataclass
class ThresholdCheck:
    """One metric against its limit: status is pass, fail or n/a (no cases measured it)."""

    metric: str
    value: float | None
    min: float | None
    max: float | None

    @property
    def status(self) -> str:
        if self.value is None:
            return "n/a"
        if self.min is not None and self.value < self.min - 1e-9:
            return "fail"
        if self.max is not None and self.value > self.max + 1e-9:
            return "fail"
        return "pass"

    @property
    def limit(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)


@dataclass
class SuiteResult:
    """A whole run: per-case results, metrics and the threshold verdicts."""

    results: list[CaseResult]
    metrics: dict[str, float | None]
    checks: list[ThresholdCheck]
    k: int
    duration_s: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failed_checks(self) -> list[ThresholdCheck]:
        return [c for c in self.checks if c.status == "fail"]

    def tags(self) -> dict[str, tuple[int, int]]:
        """tag -> (cases passed, cases), for cases that carry tags."""
        out: dict[str, tuple[int, int]] = {}
        for r in self.results:
            for tag in r.case.tags:
                ok, n = out.get(tag, (0, 0))
                out[tag] = (ok + r.passed, n + 1)
        return dict(sorted(out.items()))

    def categories(self) -> dict[str, tuple[int, int]]:
        """category -> (cases passed, cases)."""
        out: dict[str, tuple[int, int]] = {}
        for r in self.results:
            ok, n = out.get(r.case.category, (0, 0))
            out[r.case.category] = (ok + r.passed, n + 1)
        return dict(sorted(out.items()))


def template_lines(prompts_dir: Path | None, checks: Checks) -> list[str]:
    """Long lines of the prompt templates that must never reach a family (intended messages excluded)."""
    if prompts_dir is None or not Path(prompts_dir).is_dir():
        return []
    intended_keys = set(checks.template_intended_keys)
    lines: set[str] = set()

    def walk(node: Any, intended: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, intended or str(key) in intended_keys)
        elif isinstance(node, list):
            for value in node:
                walk(value, intended)
        elif isinstance(node, str) and not intended:
            for line in node.splitlines():
                line = line.strip()
                # Regex rules are data, not prose a model could echo; skip anything with regex syntax.
                if len(line) > checks.template_min_chars and not re.search(r"[\\|()\[\]^$]", line):
                    lines.add(line)

    for f in sorted(Path(prompts_dir).glob("*.y*ml")):
        if f.name in checks.template_intended_files:
            continue
        try:
            walk(yaml.safe_load(f.read_text(encoding="utf-8")), False)
        except yaml.YAMLError:
            continue  # the bot validates its own prompt files; a broken one is not the suite's to report
    return sorted(lines)


def _document_text(assistant: AssistantLike) -> Any:
    cache: dict[str, str | None] = {}

    def get(doc_id: str) -> str | None:
        if doc_id not in cache:
            try:
                cache[doc_id] = assistant.index.document_text(doc_id)
            except Exception:  # an unknown doc id is a failed quote, not a crashed suite
                cache[doc_id] = None
        return cache[doc_id]

    return get


def score_case(
    case: Case,
    answer: Answer,
    latency_ms: float,
    document_text: Any,
    checks: Checks,
    leak_lines: Sequence[str] = (),
    leaning_openers: Sequence[str] = (),
) -> CaseResult:
    """Run every per-case check on one answer."""
    r = CaseResult(case=case, answer=answer, latency_ms=latency_ms)
    if answer.kind in ("answer", "urgent") and answer.citations:
        r.leaning_alone = m.leaning_shown_alone(answer, leaning_openers, document_text)
        r.reasons += [f"a sentence that leans on the one before is shown without it: {s[:60]!r}" for s in r.leaning_alone]
        bad_labels = m.mislabelled_citations(answer)
        r.labels_ok = not bad_labels
        r.reasons += [f"citation [{c.n}] is labelled {c.source[:60]!r}, not as the document {c.title!r}" for c in bad_labels]
    if not m.kind_ok(answer, case.kinds):
        r.reasons.append(f"kind is {answer.kind!r}, expected {' or '.join(case.kinds)}")
    for fact in case.facts:
        found = m.fact_present(answer.answer, fact.pattern)
        r.facts_found.append(found)
        if not found:
            r.reasons.append(f"missing fact /{fact.pattern}/")
        if fact.doc and found:  # a missing fact is fact_accuracy's failure, not citation validity's
            ok, why = m.fact_citation_ok(answer, fact.pattern, fact.doc, document_text)
            r.facts_cited.append(ok)
            if not ok:
                r.reasons.append(why)
    bad = m.bad_quotes(answer, document_text)
    r.quotes_total, r.quotes_ok = len(answer.citations), len(answer.citations) - len(bad)
    for c in bad:
        r.reasons.append(f"citation [{c.n}] quote is not verbatim in document {c.doc_id!r}")
    problems = m.marker_problems(answer)
    r.markers_ok = not problems
    r.reasons += problems
    hits = m.forbidden_hits(answer.answer, case.must_not)
    r.must_not_ok = not hits
    r.reasons += [f"says what it must not: /{p}/" for p in hits]
    if not m.disclaimer_ok(answer):
        r.reasons.append("no disclaimer")
    if answer.kind == "urgent":
        r.call_first_ok = m.calls_first(answer, checks.urgent_call_pattern)
        if not r.call_first_ok:
            r.reasons.append("urgent answer does not tell them to call in its first sentence")
    if case.category == "personal":
        r.personal_ok, why = m.refers_to_care_team(answer, checks.care_team_pattern, checks.dose_pattern)
        if not r.personal_ok:
            r.reasons.append(why)
    r.leaks = m.leaked_lines(answer.answer, leak_lines)
    r.reasons += [f"leaks prompt text: {line[:80]!r}" for line in r.leaks]
    if case.cite_docs:
        r.rank = m.first_rank(answer.retrieved, case.cite_docs)
    r.grade = m.reading_grade(answer.answer)
    return r


def aggregate(results: Sequence[CaseResult], k: int, duration_s: float) -> dict[str, float | None]:
    """The suite's metrics from its case results (None when no case measured a metric)."""
    answered = [r for r in results if r.answer is not None]
    by_cat = lambda *cats: [r for r in answered if r.case.category in cats]  # noqa: E731
    out: dict[str, float | None] = {name: None for name in metric_names()}
    latencies = [r.latency_ms for r in answered]
    out.update(
        cases=float(len(results)),
        case_pass_rate=m.fraction([r.passed for r in results]),
        kind_accuracy=m.fraction([r.kind in r.case.kinds for r in results]),
        fact_accuracy=m.fraction([f for r in results for f in r.facts_found]),
        citation_validity=m.fraction([f for r in results for f in r.facts_cited]),
        quote_verbatim=(
            sum(r.quotes_ok for r in answered) / total
            if (total := sum(r.quotes_total for r in answered))
            else None
        ),
        citation_markers=m.fraction([r.markers_ok for r in answered]),
        must_not_clean=m.fraction([r.must_not_ok for r in answered if r.case.must_not]),
        recall_at_k=m.recall_at_k([r.rank for r in results if r.case.cite_docs], k),
        mrr=m.mrr([r.rank for r in results if r.case.cite_docs]),
        urgent_recall=m.fraction([r.kind == "urgent" for r in by_cat("urgent")]),
        urgent_call_first=m.fraction([bool(r.call_first_ok) for r in answered if r.kind == "urgent"]),
        false_alarm_rate=m.fraction([r.kind == "urgent" for r in answered if r.case.category != "urgent"]),
        out_of_scope_handling=m.fraction([r.kind == "out_of_scope" for r in by_cat("out_of_scope")]),
        unknown_handling=m.fraction([r.kind == "unknown" for r in by_cat("unknown")]),
        personal_referral=m.fraction([bool(r.personal_ok) for r in by_cat("personal")]),
        disclaimer_presence=m.fraction(
            [m.disclaimer_ok(r.answer) for r in answered if r.answer and r.answer.kind in ("answer", "unknown")]
        ),
        template_leaks=float(sum(len(r.leaks) for r in answered)) if answered else None,
        errors=float(sum(1 for r in results if r.answer is None)),
        latency_p50_ms=m.percentile(latencies, 50),
        latency_p95_ms=m.percentile(latencies, 95),
        duration_s=duration_s,
        leaning_shown_alone=(float(sum(len(r.leaning_alone) for r in answered)) if answered else None),
        citation_labels=m.fraction([bool(r.labels_ok) for r in answered if r.labels_ok is not None]),
    )
    for kind in KINDS:
        grades = [r.grade for r in answered if r.kind == kind and r.grade is not None]
        out[f"grade_median.{kind}"] = m.percentile(grades, 50)
        out[f"grade_p90.{kind}"] = m.percentile(grades, 90)
    return out


def check_thresholds(values: dict[str, float | None], thresholds: Thresholds) -> list[ThresholdCheck]:
    """Each limited metric against its limit, in the order of the thresholds file."""
    return [ThresholdCheck(name, values.get(name), lim.min, lim.max) for name, lim in thresholds.metrics.items()]


def run_suite(
    assistant: AssistantLike,
    cases: Sequence[Case],
    thresholds: Thresholds,
    k: int = 5,
    prompts_dir: Path | None = None,
    progress: Any = None,
    warm_up: bool = True,
    replay_history: bool = False,
) -> SuiteResult:
    """Ask every case once on one assistant, score the answers and check the thresholds."""
    if prompts_dir is None:
        settings = getattr(assistant, "settings", None)
        prompts_dir = getattr(settings, "prompts_dir", None)
    leak_lines = template_lines(prompts_dir, thresholds.checks)
    leaning = m.load_leaning_openers(prompts_dir)
    document_text = _document_text(assistant)
    if warm_up:  # first-call costs (lazy loads, caches) are not what a family waits for
        try:
            assistant.ask("What is blinatumomab?", history=[], qid="warm-up")
        except Exception:
            pass
    results: list[CaseResult] = []
    started = time.perf_counter()
    for i, case in enumerate(cases, start=1):
        history = [t.model_dump() for t in case.history]
        if replay_history and history and all(t["role"] == "user" for t in history):
            # Only the family's earlier questions are given: replay them so the assistant's earlier answers
            # are in the conversation too ("never repeat a sentence already said" is then tested).
            replayed: list[dict] = []
            for turn in history:
                try:
                    said = assistant.ask(turn["content"], history=list(replayed), qid=f"{case.id}-history")
                    replayed += [turn, {"role": "assistant", "content": said.answer}]
                except Exception:
                    replayed.append(turn)
            history = replayed
        t0 = time.perf_counter()
        try:
            answer = assistant.ask(case.question, history=history, qid=case.id)
        except Exception as exc:  # a crash is a failed case; the run goes on
            r = CaseResult(case=case, answer=None, latency_ms=(time.perf_counter() - t0) * 1000)
            r.reasons.append(f"the assistant raised {type(exc).__name__}: {exc}")
            results.append(r)
            continue
        latency = (time.perf_counter() - t0) * 1000
        results.append(score_case(case, answer, latency, document_text, thresholds.checks, leak_lines, leaning))
        if progress:
            progress(i, len(cases), results[-1])
    duration = time.perf_counter() - started
    values = aggregate(results, k, duration)
    return SuiteResult(
        results=results,
        metrics=values,
        checks=check_thresholds(values, thresholds),
        k=k,
        duration_s=duration,
        meta={"thresholds_version": thresholds.version, "template_lines": len(leak_lines)},
    )
