"""The one Settings object: grouped, every field described, every field readable from the environment."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from bot.settings import AnswerSettings, RetrievalSettings, Settings


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, info in model.model_fields.items():
        yield f"{prefix}{name}", info
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{prefix}{name}.")


def test_every_setting_says_what_it_does():
    undescribed = [name for name, info in _fields(Settings) if not (info.description or "").strip()]
    assert not undescribed, undescribed


def test_the_tuned_weights_are_grouped_settings_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("BOT_ANSWER__MIN_EVIDENCE", "0.5")
    monkeypatch.setenv("BOT_RETRIEVAL__TOP_K", "7")
    s = Settings()
    assert s.answer.min_evidence == 0.5 and s.retrieval.top_k == 7
    assert s.answer.w_sentence == AnswerSettings().w_sentence and s.retrieval.rrf_k == RetrievalSettings().rrf_k


def test_a_setting_out_of_range_is_refused_with_its_name(monkeypatch):
    monkeypatch.setenv("BOT_ANSWER__MAX_SENTENCES", "9")
    with pytest.raises(ValidationError, match="max_sentences"):
        Settings()


def test_the_composer_and_the_retriever_use_the_settings_they_are_given(assistant, knowledge_settings):
    assert assistant.writer.params is knowledge_settings.answer
    assert assistant.retriever.rrf_k == knowledge_settings.retrieval.rrf_k
