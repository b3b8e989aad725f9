"""Load and validate the editable message files in prompts/."""

from __future__ import annotations

from pathlib import Path

import yaml
from jinja2 import Environment, StrictUndefined, meta
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.patterns import PatternError, compile_pattern
from bot.retrieve import AnswerType, FollowUpRules, QuestionWords, stem

_JINJA = Environment(undefined=StrictUndefined, autoescape=False)


class PromptError(ValueError):
    """An edited prompt file is broken; the message names the file and the problem."""


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
        return _JINJA.from_string(template).render(**values)


_ALLOWED_PLACEHOLDERS = {"errors.too_long": {"limit"}, "errors.bad_line": {"reason"}}


class FollowUpFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pronouns: list[str] = Field(min_length=1)
    openers: list[str]
    max_words: int = Field(ge=1, le=20)


class AnswerTypeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    question: str
    answer: str
    bonus: float = Field(ge=0.0, le=0.3)


class QuestionsFile(BaseModel):
    """prompts/questions.yaml"""

    model_config = ConfigDict(extra="forbid")
    follow_up: FollowUpFile
    filler_words: str
    synonyms: dict[str, str] = Field(default_factory=dict)
    answer_types: list[AnswerTypeFile] = Field(default_factory=list)


def read_yaml_mapping(path: Path, error: type[Exception] = PromptError) -> dict:
    """A YAML file whose top level is a mapping; any problem raises `error` naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{path}: file is missing") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return data


def load_messages(prompts_dir: Path) -> Messages:
    """Read messages.yaml; unknown keys, missing texts and unknown {{ placeholders }} are errors."""
    path = prompts_dir / "messages.yaml"
    try:
        msgs = Messages.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        raise PromptError(f"{path}: {exc}") from exc
    flat = {k: v for k, v in msgs.model_dump().items() if isinstance(v, str)}
    flat.update({f"errors.{k}": v for k, v in msgs.errors.model_dump().items()})
    for key, text in flat.items():
        used = meta.find_undeclared_variables(_JINJA.parse(text))
        unknown = used - _ALLOWED_PLACEHOLDERS.get(key, set())
        if unknown:
            raise PromptError(f"{path}: '{key}' uses unknown placeholder(s) {sorted(unknown)}")
    return msgs


def load_question_rules(prompts_dir: Path) -> tuple[FollowUpRules, QuestionWords]:
    """Follow-up rules, filler words and synonyms from questions.yaml."""
    path = prompts_dir / "questions.yaml"
    try:
        q = QuestionsFile.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        raise PromptError(f"{path}: {exc}") from exc
    f = q.follow_up
    rules = FollowUpRules(
        pronouns=frozenset(w.lower() for w in f.pronouns),
        openers=tuple(o.lower() for o in f.openers),
        max_words=f.max_words,
    )
    try:  # linear-time matching (RE2) for every editable pattern; an error names the file and the key
        types = tuple(
            AnswerType(t.name, compile_pattern(t.question, f"{path}: answer_types[{t.name}].question"),
                       compile_pattern(t.answer, f"{path}: answer_types[{t.name}].answer"), t.bonus)
            for t in q.answer_types
        )
    except PatternError as exc:
        raise PromptError(str(exc)) from None
    words = QuestionWords(
        filler=frozenset(stem(w.lower()) for w in q.filler_words.split()),
        synonyms={stem(k.lower()): str(v) for k, v in q.synonyms.items()},
        answer_types=types,
    )
    return rules, words
