"""Grounded answers end to end on the real index: citations, verbatim quotes, unknowns, follow-ups, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"\[(\d+)\]")


def all_eval_questions() -> list[tuple[str, str, list]]:
    out = []
    for path in sorted((PROJECT / "evals" / "cases").rglob("*.yaml")):
        if path.name.startswith("_"):  # thresholds and other settings files, not cases
            continue
        for case in yaml.safe_load(path.read_text()) or []:
            out.append((case["id"], case["question"], case.get("history") or []))
    return out


def squash(text: str) -> str:
    return " ".join(text.split())


def test_every_quote_in_every_eval_answer_is_verbatim_in_its_document(assistant):
    questions = all_eval_questions()
    assert len(questions) >= 100
    checked = 0
    for qid, question, history in questions:
        ans = assistant.ask(question, history=history, qid=qid)
        markers = {int(n) for n in MARKER.findall(ans.answer)}
        assert markers == {c.n for c in ans.citations}, (qid, ans.answer)
        for c in ans.citations:
            assert squash(c.quote) in squash(assistant.index.document_text(c.doc_id)), (qid, c.quote)
            assert squash(c.quote) in squash(c.passage or ""), (qid, "quote must be inside the shown passage")
            checked += 1
        if ans.kind in ("answer", "unknown"):
            assert ans.disclaimer.strip(), qid
    assert checked > 150


def test_answer_is_a_few_cited_sentences_not_whole_passages(assistant):
    ans = assistant.ask("How long is the blinatumomab drip given for?")
    assert ans.kind == "answer"
    assert 2 <= len(ans.citations) <= 5
    assert re.search(r"4 weeks|four weeks", ans.answer)
    first = ans.citations[0]
    assert first.doc_id == "how-blinatumomab-was-given"
    # The label names our document and its review date; the paper it was written from is "based on".
    assert first.title in first.source and "reviewed" in first.source and first.url is None
    assert first.reviewed and any("doi.org" in (b.url or "") for b in first.based_on)
    assert len(ans.answer) < 600


def test_typos_still_find_the_answer(assistant):
    ans = assistant.ask("how long is the blinatumomob infushion")
    assert ans.kind == "answer" and re.search(r"4 weeks|four weeks", ans.answer)


def test_question_the_sources_do_not_answer_is_unknown_with_kind_words(assistant):
    ans = assistant.ask("How much does blinatumomab cost in Canada?")
    assert ans.kind == "unknown" and not ans.citations
    assert "care team" in ans.answer and ans.disclaimer


def test_follow_up_uses_the_conversation(assistant):
    history = [{"role": "user", "content": "What is MRD?"},
               {"role": "assistant", "content": "MRD means minimal residual disease."}]
    # "it" is MRD only through the conversation (with "after the drip" the question alone now finds it too).
    alone = assistant.ask("How many babies had none of it left?")
    followed = assistant.ask("How many babies had none of it left?", history=history)
    assert followed.kind == "answer" and "16" in followed.answer
    assert any(c.doc_id == "study-results" for c in followed.citations)
    assert alone.kind == "answer"  # this one is clear on its own too (the MRD entry asks it that way)
    short = assistant.ask("And what does it stand for?", history=history)
    assert short.kind == "answer" and "minimal residual disease" in short.answer.lower()
    assert "minimal residual disease" not in assistant.ask("And what does it stand for?").answer.lower()


@pytest.mark.parametrize("bad,expect", [
    ("", "type a question"),
    ("   \n\t ", "type a question"),
    ("x" * 100_000, "too long"),
    ("\x00\x01\x02", "type a question"),
    ("?!?", "type your question"),
    ("\U0001F622\U0001F622", "type your question"),
])
def test_bad_questions_get_one_clear_line(assistant, bad, expect):
    ans = assistant.ask(bad)
    assert ans.kind == "error" and expect in ans.answer.lower()
    assert "\n" not in ans.answer and len(ans.question) <= 200


def test_control_characters_are_removed_and_the_question_answered(assistant):
    ans = assistant.ask("how long is the\x07 blinatumomab\x1b drip?")
    assert ans.kind == "answer" and "\x07" not in ans.question


def test_warm_answers_are_fast(assistant):
    assistant.ask("What is blinatumomab?")
    ans = assistant.ask("What did the 2023 study find about survival?")
    assert ans.timings_ms["total"] < 2000  # a loose guard; the benchmark script measures the real figure


def test_a_number_no_shown_sentence_has_makes_the_answer_unknown(assistant):
    ans = assistant.ask("What is the survival after 10 years with blinatumomab?")
    assert ans.kind == "unknown" and "93" not in ans.answer
    assert assistant.ask("What was the survival after 2 years with blinatumomab?").kind == "answer"
    assert assistant.ask("what are the 5 year results?").kind == "unknown"  # 'the 5 year' asks for 5 years


def test_a_question_needing_a_kind_of_answer_no_source_has_is_unknown(assistant):
    # contact details of a named place, news of this month, a cream for a personal question: the nearest
    # sentences (the care team's number, the 2023 paper) do not answer them
    for q in ("what's the phone number for the day ward at the Princess Maxima Center?",
              "has anything new been published about blinatumomab this month?",
              "can I put Sudocrem on my son's nappy rash while he has the pump?",
              # a price: the nearest sentences about a course of the drip do not say what it costs
              "what is the price of a blinatumomab course?",
              "is the pump covered by our insurance?"):
        assert assistant.ask(q).kind == "unknown", q


def test_what_became_of_the_babies_after_a_time_is_answered_with_how_they_fared(assistant):
    # The second part leans on the first ('them'): how they fared at 2 years, not how long they were followed.
    ans = assistant.ask("how many infants took part, and what happened to them after two years?")
    assert ans.kind == "answer"
    assert re.search(r"\b30\b", ans.answer) and re.search(r"\balive\b", ans.answer), ans.answer


def test_follow_up_after_a_misspelt_question_stays_on_topic(assistant):
    history = [{"role": "user", "content": "what side efects did the babys get"}]
    ans = assistant.ask("and was any of them serious?", history=history)
    assert ans.kind == "answer" and "serious" in ans.answer
    assert any(c.doc_id == "side-effects-and-safety" for c in ans.citations)


def test_a_clear_off_topic_question_is_not_answered_from_the_sources(assistant):
    ans = assistant.ask("How do I reset my wifi router?")
    assert ans.kind == "out_of_scope" and not ans.citations


def test_an_emergency_in_a_too_long_message_is_not_lost(assistant):
    ans = assistant.ask("We have had such a long week on the ward. " * 60 + "Now she is not breathing properly!")
    assert ans.kind == "urgent" and ans.answer.lower().startswith("call")
    assert "too long" in ans.answer  # and it still says the question itself was too long


def test_an_emergency_only_carries_a_note_that_is_about_it(assistant):
    for q in ["Is a temperature of 38 degrees dangerous for my baby on blinatumomab?", "my baby is having a seizure"]:
        ans = assistant.ask(q)
        assert ans.kind == "urgent"
        for c in ans.citations:
            assert re.search(r"fever|temperature|seizure|fit|emergency|care team", c.quote, re.I), (q, c.quote)


def test_misspelt_short_words_are_corrected_but_real_words_are_not(assistant):
    ans = assistant.ask("how meny babys were in the stuyd")
    assert ans.kind == "answer" and re.search(r"\b30\b", ans.answer)
    assert assistant.ask("What does blinatumomab cost?").kind == "unknown"  # 'cost' is not a typo of 'most'


def test_each_starter_question_is_answered_by_the_entry_written_for_it(assistant):
    from bot.starters import load_starters

    for starter in load_starters(assistant.settings.prompts_dir):
        question, wanted = starter.question, starter.answered_by
        ans = assistant.ask(question)
        assert ans.kind == "answer", question
        assert {(c.doc_id, c.section) for c in ans.citations} == {(wanted.doc, wanted.section)}, question
        entry = assistant.index.chunks([ans.citations[0].chunk_id])[ans.citations[0].chunk_id]
        assert " ".join(c.quote for c in ans.citations) == " ".join(entry.text.split()), "the entry's answer, whole"


def test_a_follow_up_never_repeats_a_sentence_already_said(assistant):
    first = assistant.ask("What did the study find?")
    history = [{"role": "user", "content": "What did the study find?"},
               {"role": "assistant", "content": first.answer}]
    again = assistant.ask("How many babies were alive after 2 years?", history=history)
    said = {c.quote for c in first.citations}
    assert again.kind == "answer" and not said & {c.quote for c in again.citations}



def test_each_part_of_a_multi_part_question_is_answered(assistant):
    ans = assistant.ask("Which hospital ran the study and in how many countries?")
    assert ans.kind == "answer"
    assert "Princess Maxima" in ans.answer and re.search(r"\b9 countries", ans.answer)
    quotes = [c.quote for c in ans.citations]
    assert len(quotes) == len(set(quotes)), "no sentence twice"


def test_news_before_a_multi_part_question_does_not_sink_a_part(assistant):
    # '(4 months)' was read into the first part, and its 4 counted as a figure that part asked for: the entry on
    # how many babies took part, which does not say 4, was then never given.
    ans = assistant.ask("my daughter (4 months) has just been diagnosed. how many babies took part and in which years?")
    assert ans.kind == "answer"
    assert re.search(r"\b30\b", ans.answer) and re.search(r"\b20(18|21)\b", ans.answer), ans.answer


def test_and_without_it_gets_the_figure_just_given_for_the_other_group(assistant):
    # 'survival with blinatumomab' is nearest the disease-free entry; the answer gave overall survival (93.3 %), so
    # 'and without it?' asks for overall survival on chemo alone.
    history = [{"role": "user", "content": "what was the survival with blinatumomab?"}]
    ans = assistant.ask("and without it?", history=history)
    assert ans.kind == "answer" and re.search(r"\b65\.8", ans.answer), ans.answer


def test_a_part_with_a_topic_of_its_own_is_answered_for_itself(assistant):
    # The other part's words ('drip', 'run') once pulled 'how many babies were in the study' to the drip entry.
    ans = assistant.ask("How many babies were in the study and how long did the drip run?")
    assert ans.kind == "answer"
    assert re.search(r"\b30 babies", ans.answer) and re.search(r"\b4 weeks", ans.answer), ans.answer


def test_an_entry_whose_question_is_asked_word_for_word_answers_it(assistant):
    # Three other passages of the same document once outranked it and it was never handed on.
    ans = assistant.ask("Who led the study?")
    assert ans.kind == "answer" and "van der Sluis" in ans.answer and "Princess Maxima" in ans.answer, ans.answer


def test_a_fair_entry_match_far_ahead_of_the_others_answers_whole(assistant):
    # 'tidy' is in no document; the entry on central-line care is still the clear answer.
    ans = assistant.ask("How do I keep the central line tidy and clean at home?")
    assert ans.kind == "answer" and re.search(r"clean, dry", ans.answer), ans.answer


def test_a_question_about_ones_own_child_says_first_that_the_care_team_decides(assistant):
    a = assistant.ask("how much blinatumomab should my 7kg son get?")
    assert a.kind == "answer" and a.citations, a.answer  # the study's general facts, cited
    first = a.answer.split(". ")[0:3]
    assert "care team" in " ".join(first) and "not a dose for your child" in a.answer.split("[")[0], a.answer


def test_a_fair_entry_is_kept_when_no_sentence_is_strong_enough_to_answer(assistant):
    # The entry check against the best sentences must not trade a fair entry for nothing: with the evidence bar
    # out of reach and the sentences set to disagree with every entry (a negative agree gap), a fair match
    # ('What counts as infant ALL?', about 0.70 with a small lead) still answers whole.
    from bot.compose import ExtractiveWriter
    from bot.query import prepare

    w = assistant.writer
    strict_bar = ExtractiveWriter(assistant.index, idf=w.idf, vocabulary=w.vocabulary, words=w.words,
                                  params=w.params.model_copy(update={"min_evidence": 0.99, "entry_agree_gap": -1.0}),
                                  router=w.router)
    q = "What counts as infant ALL?"
    query = prepare(q, q, embedder=assistant.embedder)
    hits = assistant.retriever.retrieve(query, assistant.settings.retrieval.top_k)
    comp = strict_bar.compose(query, hits)
    assert comp.entry is not None and comp.statements, "a fair entry was dropped for sentences too weak to answer"


def test_a_confident_router_names_the_entry_when_similarity_ranks_another_first(assistant):
    # 'believable' is a word the documents use nowhere near the evidence entry's phrasings; the nearest phrasing
    # is another entry's, while the router, which learned what all of an entry's phrasings share, is sure.
    from bot.compose import ExtractiveWriter
    from bot.query import prepare

    w = assistant.writer
    q = "are these figures believable"
    query = prepare(q, q, embedder=assistant.embedder)
    hits = assistant.retriever.retrieve(query, assistant.settings.retrieval.top_k)
    pick, prob = w.router.predict(query.vector)
    nearest = w.entry_matches(query)[0][1].chunk_id
    assert pick != nearest and prob >= w.params.router_override
    chosen = w.compose(query, hits)
    assert chosen.entry == pick and "small" in " ".join(s.text for s in chosen.statements)
    off = ExtractiveWriter(assistant.index, idf=w.idf, vocabulary=w.vocabulary, words=w.words,
                           params=w.params.model_copy(update={"router_override": 1.01}), router=w.router)
    assert off.compose(query, hits).entry != pick
