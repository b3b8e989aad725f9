"""Load and validate the editable message files in prompts/."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.patterns import PatternError, compile_pattern
from bot.retrieve import AnswerType, FollowUpRules, QuestionWords
from bot.words import stem

M = TypeVar("M", bound=BaseModel)


class PromptError(ValueError):
    """An edited prompt file is broken; the message names the file, the key and the problem."""


# --- messages are text with named blanks, never code ------------------------------------------
# A message may hold `{name}` or `{{ name }}` and nothing else in braces: no Jinja statements
# (`{% ... %}`), comments, filters (`|`), attribute or item access, calls or arithmetic. A value is
# put in once, as text, so a value holding braces is shown as it is and never read as a template.

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(template: str, where: str) -> set[str]:
    """The placeholder names of one message; anything else in braces raises PromptError naming `where`."""
    for opener, what in (("{%", "a template statement"), ("{#", "a template comment")):
        if opener in template:
            raise PromptError(f"{where}: {what} ({opener} ...) is not allowed; messages are text with "
                              "{name} placeholders only")
    rest = _PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        i = max(rest.find("{"), 0)
        raise PromptError(f"{where}: only {{name}} or {{{{ name }}}} placeholders are allowed (no filters, "
                          f"attributes or expressions); found {rest[i:i + 40]!r}")
    return {a or b for a, b in _PLACEHOLDER.findall(template)}


def fill(template: str, **values: object) -> str:
    """The message with each placeholder replaced by its value as plain text (one pass, nothing evaluated)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise PromptError(f"no value for placeholder {{{name}}} in {template!r}")
        return str(values[name])

    return _PLACEHOLDER.sub(sub, template)


def key_path(data: Any, loc: Sequence[Any]) -> str:
    """Where a problem is, as a clinician sees the file: 'cards[fever].examples.match', not 'cards.16.examples.match'."""
    out: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            item = node[part]
            label = item.get("id") if isinstance(item, dict) else None
            out[-1:] = [f"{out[-1] if out else ''}[{label or part}]"]
            node = item
        else:
            out.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(out) or "(top level)"


def validation_problems(exc: ValidationError, data: Any = None) -> str:
    """A pydantic error as 'key.path: problem; ...' (the keys a clinician sees in the file)."""
    return "; ".join(f"{key_path(data, e['loc'])}: {e['msg']}" for e in exc.errors())


def load_validated(path: Path, model: type[M], error: type[Exception] = PromptError) -> M:
    """A YAML rules file checked by `model`; any problem raises `error` naming the file and the key."""
    data = read_yaml_mapping(path, error)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{path}: {validation_problems(exc, data)}") from None


class ErrorMessages(BaseModel):
    model_config = ConfigDict(extra="forbid")
    empty: str
    too_long: str
    not_text: str
    bad_line: str
    internal: str


class Messages(BaseModel):
    """prompts/messages.yaml"""

    model_config = ConfigDict(extra="forbid")
    disclaimer: str = Field(min_length=1)
    unknown: str = Field(min_length=1)
    errors: ErrorMessages

    def render(self, template: str, **values: object) -> str:
        return fill(template, **values)


_ALLOWED_PLACEHOLDERS = {"errors.too_long": {"limit"}, "errors.bad_line": {"reason"}}


class FollowUpFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pronouns: list[str] = Field(min_length=1)
    openers: list[str]
    short_openers: list[str] = Field(default_factory=list)
    determiners: list[str] = Field(default_factory=list)
    own_topic_words: int = Field(default=0, ge=0, le=20)
    max_words: int = Field(ge=1, le=20)
    default_topic: str = ""
    pointers: list[str] = Field(default_factory=list)


class AnswerTypeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    question: str
    answer: str
    bonus: float = Field(ge=0.0, le=0.3)
    unless: str | None = None  # the type does not apply to a question that also matches this
    required: bool = False  # no sentence of this kind among the passages found: "I don't have that information"
    entry_needs: bool = True  # False: an entry without a sentence of this kind may still be given whole
    same_figure: bool = False  # a short follow-up of this kind asks for the figure just given, for another group


class QuestionsFile(BaseModel):
    """prompts/questions.yaml"""

    model_config = ConfigDict(extra="forbid")
    follow_up: FollowUpFile
    filler_words: str
    hedges: str = ""
    describing_endings: str = ""
    outcome: list[str] = Field(default_factory=list)
    synonyms: dict[str, str] = Field(default_factory=dict)
    answer_types: list[AnswerTypeFile] = Field(default_factory=list)


def read_yaml_mapping(path: Path, error: type[Exception] = PromptError) -> dict:
    """A YAML file whose top level is a mapping; any problem raises `error` naming the file."""
    try:
        # libyaml's parser when installed (same result, ~15x faster: the rules files are read at every start).
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError as exc:
        raise error(f"{path}: file is missing") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return data


def load_messages(prompts_dir: Path) -> Messages:
    """Read messages.yaml; unknown keys, missing texts, template code and unknown placeholders are errors."""
    path = prompts_dir / "messages.yaml"
    try:
        msgs = Messages.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        raise PromptError(f"{path}: {validation_problems(exc)}") from exc
    flat = {k: v for k, v in msgs.model_dump().items() if isinstance(v, str)}
    flat.update({f"errors.{k}": v for k, v in msgs.errors.model_dump().items()})
    for key, text in flat.items():
        unknown = placeholders(text, f"{path}: {key}") - _ALLOWED_PLACEHOLDERS.get(key, set())
        if unknown:
            allowed = sorted(_ALLOWED_PLACEHOLDERS.get(key, set())) or "none"
            raise PromptError(f"{path}: {key}: unknown placeholder(s) {sorted(unknown)}; allowed here: {allowed}")
    return msgs


def load_leaning_openers(prompts_dir: Path) -> tuple[str, ...]:
    """Words that make a sentence lean on the one before it (prompts/leaning.yaml), longest first."""
    path = prompts_dir / "leaning.yaml"
    if not path.is_file():
        return ()
    words = read_yaml_mapping(path).get("leaning_openers")
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise PromptError(f"{path}: 'leaning_openers' must be a list of words or phrases")
    return tuple(sorted({w.strip().lower() for w in words}, key=len, reverse=True))


def _outcome_pattern(patterns: list[str], path: Path) -> re.Pattern[str] | None:
    """questions.yaml `outcome`: how a question about how babies fare is worded, as one pattern (None: not given)."""
    if not patterns:
        return None
    try:
        return compile_pattern("|".join(f"(?:{p})" for p in patterns), f"{path}: outcome")
    except PatternError as exc:
        raise PromptError(str(exc)) from None


def load_question_rules(prompts_dir: Path) -> tuple[FollowUpRules, QuestionWords]:
    """Follow-up rules, filler words and synonyms from questions.yaml."""
    path = prompts_dir / "questions.yaml"
    try:
        q = QuestionsFile.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        raise PromptError(f"{path}: {validation_problems(exc)}") from exc
    f = q.follow_up
    rules = FollowUpRules(
        pronouns=frozenset(w.lower() for w in f.pronouns),
        openers=tuple(o.lower() for o in f.openers),
        short_openers=tuple(o.lower() for o in f.short_openers),
        max_words=f.max_words,
        default_topic=f.default_topic,
        pointers=frozenset(w.lower() for w in f.pointers),
        determiners=frozenset(w.lower() for w in f.determiners),
        own_topic_words=f.own_topic_words,
        filler=frozenset(stem(w.lower()) for w in q.filler_words.split()),
    )
    types = []
    for i, t in enumerate(q.answer_types):
        # Linear-time matching (RE2) for every editable pattern; an error names the file and the key.
        try:
            compiled = [compile_pattern(getattr(t, key), f"{path}: answer_types[{i}] ({t.name}).{key}")
                        if getattr(t, key) is not None else None for key in ("question", "answer", "unless")]
        except PatternError as exc:
            raise PromptError(str(exc)) from None
        types.append(AnswerType(t.name, compiled[0], compiled[1], t.bonus, compiled[2], t.required, t.entry_needs,
                                 t.same_figure))
    words = QuestionWords(
        filler=frozenset(stem(w.lower()) for w in q.filler_words.split()),
        synonyms={stem(k.lower()): str(v) for k, v in q.synonyms.items()},
        answer_types=tuple(types),
        hedges=tuple(h.strip().lower() for h in q.hedges.split(",") if h.strip()),
        describing=(re.compile(r"[a-z]{3}(?:" + "|".join(re.escape(e) for e in q.describing_endings.split()) + r")$")
                    if q.describing_endings.split() else None),
        outcome=_outcome_pattern(q.outcome, path),
        spellings=frozenset(w for text in (q.filler_words, *q.synonyms, *map(str, q.synonyms.values()))
                            for w in re.findall(r"[a-z]+", text.lower())),
    )
    return rules, words
