"""Hybrid retrieval, typo handling and the follow-up resolver on the real index."""

from __future__ import annotations

from pathlib import Path

from bot.prompts import load_question_rules
from bot.retrieve import (
    FollowUpRules,
    QuestionWords,
    Vocabulary,
    _jaccard,
    _shingles,
    as_langchain_retriever,
    follow_up_context,
    is_follow_up,
    stands_alone,
    stem,
    tokenize,
)
from bot.schema import Turn

RULES = FollowUpRules(pronouns=frozenset({"it", "they", "that"}), openers=("and ", "what about"), max_words=4)


def test_tokenize_drops_stop_words_and_contractions_and_keeps_numbers():
    assert tokenize("She's 93.3% of the babies; can't wake") == ["93.3", "babi", "wake"]


def test_typos_are_corrected_as_whole_words_and_then_meet_the_documents_stems():
    """Snowball stems ('studi') are no words to correct towards: correction uses the words as written."""
    doc_words = ["blinatumomab", "infusion", "cured", "aged", "study", "studies", "babies"]
    vocab = Vocabulary({stem(w) for w in doc_words}, doc_words)
    assert vocab.correct_text("Blinatumomob infushion") == "Blinatumomab infusion"
    assert vocab.correct_text("the stuyd") == "the study" and tokenize("the study") == [stem("studies")]
    # Another form of a word the documents use is no typo; neither is an English word they do not use.
    assert vocab.correct_text("cure age babys insurance") == "cure age babys insurance"
    assert vocab.uncovered(["cure", "age", "babys", "insurance"], QuestionWords()) == ["insurance"]


def test_near_copy_overlap_is_the_jaccard_of_word_trigrams():
    """The de-duplication's overlap: |a & b| / |a | b| over word trigrams (also for texts under three words)."""
    a = "The drip runs for 28 days, day and night."
    b = "the drip runs for 28 days; day and night, at home"
    ta, tb = _shingles(a), _shingles(b)
    words_a, words_b = a.lower().replace(",", "").replace(".", "").split(), ["the", "drip", "runs", "for", "28", "days",
                                                                          "day", "and", "night", "at", "home"]
    ref_a = {tuple(words_a[i:i + 3]) for i in range(len(words_a) - 2)}
    ref_b = {tuple(words_b[i:i + 3]) for i in range(len(words_b) - 2)}
    assert len(ta) == len(ref_a) and len(tb) == len(ref_b)
    assert _jaccard(ta, tb) == len(ref_a & ref_b) / len(ref_a | ref_b) == 7 / 9
    assert _jaccard(ta, ta) == 1.0 and _jaccard(ta, frozenset()) == 0.0
    assert _jaccard(_shingles("Fever"), _shingles("fever!")) == 1.0  # one word: one shingle
    assert _jaccard(_shingles("a b"), _shingles("a b c")) == 0.0  # ("a", "b") is not ("a", "b", "c")


def test_follow_up_detection_and_resolution():
    assert is_follow_up("and how long is it given for?", RULES)
    assert not is_follow_up("How long is the blinatumomab drip given for?", RULES)
    history = [Turn(role="user", content="What is blinatumomab?"), Turn(role="assistant", content="A medicine.")]
    carried = follow_up_context("how long is it given for?", history, RULES)
    assert "blinatumomab" in carried.lower()
    assert follow_up_context("What is MRD?", history, RULES) == ""
    # 'that' points at what the assistant said last: the names its answer opened with are carried too
    said = [Turn(role="user", content="who led the trial?"),
            Turn(role="assistant", content="Dr. Inge van der Sluis led it from the Princess Maxima Center [1].")]
    pointing = FollowUpRules(pronouns=RULES.pronouns, openers=RULES.openers, max_words=4, pointers=frozenset({"that"}))
    assert "Princess Maxima Center" in follow_up_context("where is that?", said, pointing)
    assert "Princess" not in follow_up_context("how long did it take?", said, pointing)  # 'it': the family's topic


def test_a_question_that_names_its_own_topic_is_not_read_as_a_follow_up_of_the_last_one():
    """The clinician's rules in prompts/questions.yaml: a question word at the start leans back only in a short
    question; 'this' or 'those' only in a question with few topic words of its own; 'it' and 'they' always."""
    rules, _ = load_question_rules(Path("prompts"))
    side_effects = [Turn(role="user", content="is blinatumomab safe for babys, what side efects did they get")]
    for own in ("why do tiny babies do worse then older kids with this leukemia",
                "what were the side effects of this treatment in older children",
                "how long does the blinatumomab drip last at home"):
        assert stands_alone(own, rules) and follow_up_context(own, side_effects, rules) == "", own
    for leaning in ("why?", "how long for?", "how is that measured?", "and what about the survival?",
                    "how many of them relapsed?", "did those babies survive?",
                    "is this safe?", "did those babies survive longer?"):
        assert not stands_alone(leaning, rules), leaning
        assert "safe" in follow_up_context(leaning, side_effects, rules), leaning
    # Within one message a later part still leans on the part before it ('... and how many were negative after it')
    assert is_follow_up("how many of the babies were negative after blina", rules)


def test_the_part_after_it_is_searched_with_what_it_names():
    from bot.retrieve import trailing_topic

    assert trailing_topic("how many babies were in the trial") == "trial"
    assert trailing_topic("who ran this blina study") == "blina study"
    assert trailing_topic("what dose did they get") == "dose"


def test_hybrid_retrieval_finds_the_right_document_first(assistant):
    hits = assistant.retriever.retrieve("How long does the blinatumomab drip run?", 5)
    assert hits[0].chunk.doc_id == "how-blinatumomab-was-given"
    assert len({h.chunk.chunk_id for h in hits}) == len(hits)
    assert all(h.chunk.text in assistant.index.document_text(h.chunk.doc_id) for h in hits)


def test_keyword_search_rescues_a_rare_exact_term(assistant):
    hits = assistant.retriever.retrieve("Interfant-06", 5)
    assert any("Interfant-06" in h.chunk.text for h in hits[:3])


def test_usable_as_a_langchain_runnable_retriever(assistant):
    docs = as_langchain_retriever(assistant.retriever, k=3).invoke("What is MRD?")
    assert len(docs) == 3
    assert docs[0].metadata["doc_id"] and docs[0].metadata["title"]
    assert any("MRD" in d.page_content for d in docs)


def test_a_question_that_asks_several_things_is_split_into_its_parts():
    from bot.retrieve import question_parts

    def split_question(q: str) -> list[str]:
        return question_parts(q)[0]

    assert split_question("which hospital ran it and in how many countries") == ["which hospital ran it",
                                                                                "in how many countries"]
    assert split_question("What is MRD? How is it measured?") == ["What is MRD", "How is it measured?"]
    assert split_question("What are the signs and symptoms of ALL?") == ["What are the signs and symptoms of ALL?"]


def test_news_before_the_questions_is_no_part_of_them_and_a_comma_can_start_the_next_question():
    from bot.retrieve import question_parts

    # The sentence of news is not read into the first part (its '4' would count as a figure asked for).
    assert question_parts("my son is 4 months. how many babies took part and in which years?") == (
        ["how many babies took part", "in which years?"], "my son is 4 months.")
    # A second question after a comma, when what comes before the comma asks too.
    assert question_parts("how long does the drip last, what side effects were most common?") == (
        ["how long does the drip last", "what side effects were most common?"], "")
    # ... but a condition before a comma is part of the one question; one question keeps its news.
    assert question_parts("if she gets a fever, what do I do?") == (["if she gets a fever, what do I do?"], "")
    assert question_parts("My son has ALL. What is blina?") == (["My son has ALL. What is blina?"], "")


def test_tokenize_keeps_words_that_change_what_is_asked():
    assert tokenize("What serious side effects did babies get?") == ["serious", "side", "effect", "babi"]
    assert {"not", "back", "none", "two", "four"} <= set(tokenize("none came back, not two or four"))


def test_contractions_typed_without_the_apostrophe_carry_no_topic_but_real_words_stay():
    assert tokenize("whats the outlook, doesnt it work, theyre sure hes ok, im scared") == \
        tokenize("what's the outlook, doesn't it work, they're sure he's ok, i'm scared")
    # words that merely end the same way are words
    assert {"ill", "part", "hell"} <= set(tokenize("ill parts hell"))


def test_a_number_the_family_refers_back_to_is_not_a_figure_they_ask_for():
    from bot.compose import asked_numbers, missing_numbers

    assert asked_numbers("of the 30 babies, how many had no MRD") == []
    assert asked_numbers("were all the 214 earlier babies alive after 10 years?") == ["10"]
    assert asked_numbers("did 5 babies die?") == ["5"]
    # ... but a number that counts a period asks for that period's figure, after 'the' too
    assert asked_numbers("what are the 5 year results?") == ["5"]
    assert asked_numbers("how many relapsed by the 10-year mark?") == ["10"]
    assert asked_numbers("who do we ring during the 4 weeks at home?") == []  # the period itself, referred to
    # a child's own weight or age describes the child
    assert asked_numbers("how much should my 7kg son get, he is 9 months old?") == []
    # A figure asked for is found only as itself: not inside 100 or 1.10.
    assert missing_numbers("alive after 10 years?", "after 100 days, 1.10 times as many") == ["10"]
    assert missing_numbers("alive after 10 years?", "alive after 10 years: 93%") == []


def test_a_number_in_a_statement_before_the_question_is_its_premise_not_a_figure_asked_for():
    from bot.compose import asked_numbers

    assert asked_numbers("18% relapsed or died, and disease free survival was about 82%. are those the same?") == []
    assert asked_numbers("93% survived. What about after 5 years?") == ["5"]
    assert asked_numbers("Is 93.3% right? and 65.8%?") == ["93.3", "65.8"]  # all questions: every figure asked
    assert asked_numbers("tell me the 5 year survival.") == ["5"]  # no question mark: the whole message asks


def test_a_multi_part_reply_drops_what_it_said_already_and_keeps_the_cap():
    from bot.compose import Statement, adds_news

    def st(text):
        return Statement(text=text, quote=text, hit=None, score=1.0)  # type: ignore[arg-type]

    said = [st("The blinatumomab drip runs for 4 weeks (28 days), day and night, without a break."),
            st("Each baby in the 2023 study got 1 course of blinatumomab, about 1 month long.")]
    part = [st("In the 2023 study, each baby got 1 course of blinatumomab through a drip, for 4 weeks (28 days)."),
            st("The blinatumomab drip ran day and night without a break."),
            st("Doctors call a drip that never stops a continuous infusion."),
            st("Blinatumomab was given after the first phase of chemo, called induction."),
            st("A reaction is most likely in the first days, so babies start the drip in hospital.")]
    kept = [s.text for s in adds_news(part, said, 2)]
    assert kept == ["Doctors call a drip that never stops a continuous infusion.",
                    "Blinatumomab was given after the first phase of chemo, called induction."]
    # two new words are news: a reason given for what was said
    assert adds_news([st("The study doctors think no baby got severe CRS because very few leukemia cells were left.")],
                     [st("In the 2023 study, there was no severe cytokine release syndrome (CRS) in any baby."),
                      st("The babies had just a small bit of leukemia left when they began blinatumomab."),
                      st("CRS can happen with blinatumomab because it switches on many immune cells at once.")], 3)
    # a new figure is news even among words already said
    assert adds_news([st("The blinatumomab drip runs for 5 weeks, day and night.")], said, 3)


def test_the_note_on_survival_figures_fits_questions_about_how_a_baby_will_fare_only():
    from bot.prompts import load_question_rules

    _, words = load_question_rules(Path(__file__).resolve().parents[1] / "prompts")
    for q in ("will my baby survive?", "what are my son's chances?", "is she going to relapse?",
              "will our little one be ok in the end?", "how long does he have?", "could he die from this?"):
        assert words.about_outcome(q), q
    for q in ("how long will my son have to stay in hospital?", "how long does my daughter have the pump on?",
              "how likely is it that our boy needs a bag change at home?"):
        assert not words.about_outcome(q), q


def test_spelling_leaves_contractions_whole_and_corrects_a_possessive_word():
    from bot.spelling import Speller

    speller = Speller({"did": 5, "study": 3, "blinatumomab": 4}, same_word=lambda w: False)
    assert speller.correct_text("who didn't get it in the stuyd, blinatumomob's dose") == \
        "who didn't get it in the study, blinatumomab's dose"


def test_a_rounded_figure_is_found_in_the_decimal_it_rounds():
    from bot.compose import missing_numbers

    # Families round what they read ('93%', '82%'); the sources keep the decimals.
    text = "93.3% were alive, and 81.6% had no relapse, against 65.8% and 49.4%; 1.10 times as many"
    assert missing_numbers("if 93% were alive why is it only 82%?", text) == []
    assert missing_numbers("was it 66% before?", text) == []
    assert missing_numbers("was it 65% before?", text) == ["65"]   # 65.8 rounds to 66, not 65
    assert missing_numbers("was it 93.5%?", text) == ["93.5"]      # a decimal asked must be there as written
    assert missing_numbers("after 10 years?", text) == ["10"]      # '1.10' is not 10


def test_a_question_that_needs_a_kind_of_answer_says_so():
    from bot.prompts import load_question_rules

    _, words = load_question_rules(Path(__file__).resolve().parents[1] / "prompts")
    needs = lambda q: [t.name for t in words.required_kinds(q)]  # noqa: E731
    assert needs("what's the phone number of the day ward?") == ["contact details of a place"]
    assert needs("has anything new been published this month?") == ["news from a time the sources cannot know"]
    # the number the care team gives, a bag changed last week: not a request for contact details or news
    assert needs("what number do I call if the pump alarms?") == []
    assert needs("the bag was changed last week, when is the next one?") == []


def test_a_sentence_that_says_another_again_is_a_near_copy_but_another_figure_is_not():
    from bot.compose import near_copy

    assert near_copy("About 90% of relapses in these babies happen in those first 2 years.",
                     "About 90% of relapses in infant leukemia happen in the first 2 years.", 0.7)
    assert near_copy("No baby stopped the blinatumomab drip for good, so every baby could keep going with it.",
                     "In the 2023 study, no baby had to stop blinatumomab for good.", 0.7)  # a year names the study
    assert not near_copy("Of the babies on blinatumomab, 93.3% were alive after 2 years.",
                         "Of the earlier babies, 65.8% were alive after 2 years.", 0.7)  # the other arm's figure
    assert not near_copy("Babies at high risk often get a stem cell transplant now.",
                         "In the 2023 study, 8 of the 9 babies at high risk still had a stem cell transplant.", 0.7)


def test_searches_and_sentences_kept_per_index_are_what_the_index_gives(assistant):
    """Index keeps searches by query vector and passages' sentences (a complete generation never changes):
    what it hands back is what reading the index again gives, and a caller cannot change what is kept."""
    import numpy as np

    from bot.store import Memo

    index = assistant.index
    vector = assistant.embedder.encode(["How long is the blinatumomab drip given for?"])[0]
    for name in ("dense_chunks", "dense_sentences", "dense_keys"):
        kept = getattr(index, name)(vector, 8)
        again = getattr(index, name)(vector, 8)
        assert kept == again == getattr(index, f"_{name}")(vector, 8) and kept
        again.clear()  # a copy: the next caller still gets the whole list
        assert getattr(index, name)(vector, 8) == kept
    ids = [cid for cid, _ in index.dense_chunks(vector, 4)]
    sents, vecs = index.sentences_of(ids)
    fresh = index._read_sentences(ids)
    assert sents == [s for cid in ids for s in fresh[cid][0]]
    assert np.array_equal(vecs, np.vstack([fresh[cid][1] for cid in ids if fresh[cid][0]]))
    assert [s.chunk_id for s in index.sentences_of(ids[::-1])[0]] == [s.chunk_id for s in
                                                                        sorted(sents, key=lambda s: ids[::-1].index(s.chunk_id))]
    assert index._sentences.peek(ids[0])[1].flags.writeable is False  # what is kept cannot be changed in place

    memo = Memo(2)
    for key in "abc":
        memo.get(key, lambda key=key: key.upper())
    assert memo.peek("a") is Memo.MISSING and memo.peek("c") == "C"  # bounded: the least recently used goes
