"""The answer object of the interface contract (../shared/contract.md) and its parts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Kind = Literal["answer", "urgent", "out_of_scope", "unknown", "error"]


class Turn(BaseModel):
    """One earlier message of the conversation."""

    role: Literal["user", "assistant"]
    content: str


class BasedOn(BaseModel):
    """A publication one of our documents was written from."""

    citation: str
    url: str | None = None


class Citation(BaseModel):
    """A numbered source for one or more statements in an answer."""

    n: int
    doc_id: str
    title: str
    source: str
    url: str | None = None
    quote: str = Field(description="Verbatim span of the indexed document.")
    section: str | None = None
    chunk_id: str | None = None
    passage: str | None = Field(None, description="The indexed passage that holds the quote.")
    reviewed: str | None = Field(None, description="When the cited document was last reviewed (our own documents).")
    based_on: list[BasedOn] = Field(default_factory=list, description="Publications the cited document was written from.")


class Retrieved(BaseModel):
    """A passage the retriever returned, best first (used by the evals)."""

    doc_id: str
    chunk_id: str
    score: float


class Answer(BaseModel):
    """What the bot says to one question."""

    id: str | None = None
    question: str
    kind: Kind
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    disclaimer: str = ""
    timings_ms: dict[str, float] = Field(default_factory=dict)
    retrieved: list[Retrieved] = Field(default_factory=list)
    safety: dict[str, Any] = Field(default_factory=dict, description=(
        "Which safety rule fired, if any; for red flags also `tier` (1-3), `signs` (every card that fired) and "
        "`sign_names`; for another language `language` and `translation_reviewed`."))

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json")
