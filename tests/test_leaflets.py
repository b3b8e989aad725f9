"""A hospital's own leaflets (two web pages, a Word file, a PDF) ingested beside knowledge/ into a real Chroma
index, and families' questions about them answered by the real assistant with verbatim quotes from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent

# (question, the leaflet that answers it, a pattern the answer must contain)
QUESTIONS = [
    ("How often is the bag changed at home?", "pump-at-home", r"every 4 days"),
    ("Can my child have a bath with the pump?", "pump-at-home", r"should not have a bath"),
    ("Where do I put the pump bag at night?", "pump-at-home", r"foot of the cot"),
    ("When can I call the home care nurses?", "contact-times", r"Monday to Saturday.*9 am to 5 pm"),
    ("What time does the pharmacy close?", "contact-times", r"4\.30 pm"),
    ("How often is the dressing on the central line changed?", "central-line-care", r"once a week"),
    ("What should we keep at home for the central line?", "central-line-care", r"spare pair of line clamps|sterile gauze"),
    ("Can my baby drink milk that is not pasteurised?", "food-and-drink", r"pasteurised"),
    ("How should I cook eggs for my baby?", "food-and-drink", r"white and the yolk"),
    ("What water should I use for my baby's bottles?", "food-and-drink", r"boiled and then cooled"),
]


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def hospital(tmp_path_factory, leaflets_dir, embedder):
    """The assistant over knowledge/ plus the four leaflets, ingested as `python -m bot ingest` would."""
    from bot.assistant import build_assistant
    from bot.ingest import ingest
    from bot.settings import Settings

    settings = Settings(index_dir=tmp_path_factory.mktemp("hospital") / "index",
                        feedback_db=tmp_path_factory.mktemp("feedback") / "feedback.sqlite")
    result = ingest(settings, embedder, paths=[settings.knowledge_dir, leaflets_dir], progress=False)
    assert not result.problems, result.problems
    stats = {Path(f.path).name: f for f in result.files}
    assert all(stats[name].warning is None for name in
               ["pump-at-home.html", "contact-times.html", "central-line-care.docx", "food-and-drink.pdf"])
    return build_assistant(settings, embedder=embedder)


@pytest.mark.parametrize("question,doc_id,fact", QUESTIONS, ids=[q for q, _, _ in QUESTIONS])
def test_leaflet_questions_are_answered_from_the_leaflet_with_verbatim_quotes(hospital, boilerplate, question, doc_id, fact):
    ans = hospital.ask(question)
    assert ans.kind == "answer", (question, ans.kind, ans.answer)
    assert re.search(fact, ans.answer), (question, ans.answer)
    cited = [c for c in ans.citations if c.doc_id == doc_id]
    assert cited, (question, [c.doc_id for c in ans.citations])
    assert any(re.search(fact, squash(c.quote)) for c in cited), (question, [c.quote for c in cited])
    for c in ans.citations:
        assert squash(c.quote) in squash(hospital.index.document_text(c.doc_id)), c.quote
        for junk in boilerplate:
            assert junk.lower() not in c.quote.lower(), (question, junk, c.quote)


def test_web_leaflets_are_cited_by_their_title_and_canonical_url(hospital):
    ans = hospital.ask("How often is the bag changed at home?")
    (cite,) = [c for c in ans.citations if c.doc_id == "pump-at-home"][:1]
    assert cite.title == "Going home with a blinatumomab pump"
    assert cite.url == "https://www.example-childrens.org/leaflets/pump-at-home"


def test_no_passage_of_any_leaflet_holds_page_furniture(hospital, boilerplate):
    index = hospital.index
    for doc_id in ["pump-at-home", "contact-times", "central-line-care", "food-and-drink"]:
        text = index.document_text(doc_id).lower()
        for junk in boilerplate:
            assert junk.lower() not in text, (doc_id, junk)
