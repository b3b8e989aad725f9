"""One Query per message: the question is spell-corrected once and each text embedded once, whatever the path."""

from __future__ import annotations

from collections import Counter

import pytest

from bot.query import Query, prepare


@pytest.fixture()
def calls(assistant, monkeypatch):
    """Every text given to the real embedder and every call of the real spelling corrector during one ask."""
    seen: dict[str, list] = {"encode": [], "correct": []}
    embedder, vocabulary = assistant.embedder, assistant.vocabulary
    real_encode, real_correct = embedder.encode, vocabulary.correct_text

    def encode(texts):
        seen["encode"].append(list(texts))
        return real_encode(texts)

    def correct_text(text):
        seen["correct"].append(text)
        return real_correct(text)

    monkeypatch.setattr(embedder, "encode", encode)
    monkeypatch.setattr(vocabulary, "correct_text", correct_text)
    return seen


def _texts(calls) -> Counter:
    return Counter(t for batch in calls["encode"] for t in batch)


@pytest.mark.parametrize("question", [
    "How long is the blinatumomab drip?",
    "how meny babys were in the stuyd",                                   # corrected, then embedded as corrected
    "Which hospital ran the study and in how many countries?",            # two parts, each searched
    "My baby had a fever yesterday. It is gone now. What should I watch for at home?",  # several sentences
])
def test_a_question_is_corrected_once_and_no_text_is_embedded_twice(assistant, calls, question):
    ans = assistant.ask(question)
    assert ans.kind != "error"
    assert len(calls["correct"]) == 1, calls["correct"]
    twice = [t for t, n in _texts(calls).items() if n > 1]
    assert not twice, f"embedded more than once in one ask: {twice}"


def test_a_plain_question_costs_one_call_to_the_model(assistant, calls):
    """Safety, retrieval and composing all read the one vector of the question."""
    ans = assistant.ask("How long is the blinatumomab drip?")
    assert ans.kind == "answer"
    assert calls["encode"] == [["How long is the blinatumomab drip?"]]


def test_a_follow_up_embeds_the_question_and_the_question_with_its_context(assistant, calls):
    history = [{"role": "user", "content": "What is blinatumomab?"},
               {"role": "assistant", "content": "Blinatumomab is an immunotherapy medicine."}]
    ans = assistant.ask("how long is it given for?", history)
    assert ans.kind == "answer"
    texts = _texts(calls)
    # The question is corrected once; the words carried from the earlier turns once more, on their own.
    assert calls["correct"] == ["how long is it given for?", "blinatumomab"], calls["correct"]
    assert all(n == 1 for n in texts.values()), texts
    assert len(texts) == 2 and any("blinatumomab" in t.lower() for t in texts), texts


def test_derived_queries_share_the_vectors_of_the_message(embedder):
    q = prepare("Blina drip?", "Blina drip?", embedder=embedder, correct=str.lower, expand=lambda s: f"{s} (infusion)")
    assert q.spelled == q.question == "blina drip?"
    follow = q.about(q.question, "blinatumomab")
    assert follow.search == "blina drip? (blinatumomab)" and follow.keywords.endswith("(infusion)")
    assert follow.terms == ("blina", "drip", "infus") and follow.context_terms == ("blinatumomab",)
    assert follow.vector.shape == (384,)
    assert "blina drip? (blinatumomab)" in q._vectors  # the original sees the derived text's vector: one cache


def test_a_query_without_an_embedder_says_how_to_build_one():
    with pytest.raises(RuntimeError, match="prepare"):
        _ = Query(raw="x", text="x").vector


def test_the_entry_keys_are_searched_once_per_text_for_retrieval_and_composing(assistant, monkeypatch):
    """Retrieval and the composer both want the entries nearest the question: one search of the keys."""
    index = assistant.index
    real = index.dense_keys
    searched: list[int] = []

    def dense_keys(vector, k):
        searched.append(k)
        return real(vector, k)

    monkeypatch.setattr(index, "dense_keys", dense_keys)
    ans = assistant.ask("How long is the blinatumomab drip?")
    assert ans.kind == "answer" and ans.citations
    assert len(searched) == 1, searched
