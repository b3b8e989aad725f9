"""The suggested questions of the family chat, read from prompts/starters.yaml (one list for the page and the tests)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.prompts import PromptError, read_yaml_mapping


class AnsweredBy(BaseModel):
    """The knowledge document and section whose answer a suggested question must get."""

    model_config = ConfigDict(extra="forbid")
    doc: str = Field(min_length=1)
    section: str = Field(min_length=1)


class Starter(BaseModel):
    """One suggested question."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=3, max_length=80)
    answered_by: AnsweredBy


class StartersFile(BaseModel):
    """prompts/starters.yaml"""

    model_config = ConfigDict(extra="forbid")
    starters: list[Starter] = Field(min_length=2, max_length=6)


def load_starters(prompts_dir: Path) -> list[Starter]:
    """The suggested questions, in page order; a problem names the file and what is wrong."""
    path = prompts_dir / "starters.yaml"
    try:
        return StartersFile.model_validate(read_yaml_mapping(path)).starters
    except ValidationError as exc:
        raise PromptError(f"{path}: {exc}") from exc
