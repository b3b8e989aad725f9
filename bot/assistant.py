"""The assistant: where a question becomes an answer. `build_assistant` is the one factory for CLI, web and evals."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from bot.cache import ArrayCache
from bot.compose import AnswerWriter, Composition, ExtractiveWriter, adds_news, label_citations, said_sentences
from bot.embed import Embedder, SentenceEmbedder
from bot.ingest import ensure_index, model_identity
from bot.normal import for_matching
from bot.prompts import Messages, load_leaning_openers, load_messages, load_question_rules
from bot.query import Query, prepare
from bot.retrieve import (
    FollowUpRules,
    HybridRetriever,
    QuestionWords,
    Retriever,
    Vocabulary,
    follow_up_context,
    is_follow_up,
    leans_on_answer,
    question_parts,
    topic_words,
    trailing_topic,
)
from bot.router import MAX_KEYS as ROUTER_MAX_KEYS
from bot.router import EntryRouter, fitted_router
from bot.safety import SafetyGate, Verdict
from bot.schema import Answer, Retrieved, Turn
from bot.screen import Screen
from bot.sentences import sentences
from bot.settings import Settings, get_settings
from bot.spelling import english_words
from bot.store import Index, IndexDamaged, pointer_stamp
from bot.validate import normalise
from bot.words import tokenize

log = logging.getLogger(__name__)

# Out-of-scope verdicts that only guess from the words of the question, for a gate that does not say
# (the real gate reads them from prompts/redflags.yaml `retrieval_may_override`).
OVERRIDABLE_SCOPE_RULES = frozenset({"off_topic"})


def _turns(history: Sequence[Turn | dict[str, Any]] | None, max_turns: int, max_chars: int) -> list[Turn]:
    """The most recent turns within the history limits, oldest first; a turn cut by the limit keeps its end.

    Only what is kept is read, so a history of any size costs no more than the limit.
    """
    if not history:
        return []
    if not isinstance(history, Sequence) or isinstance(history, str | bytes):
        raise ValueError("history is not a list")
    out: list[Turn] = []
    budget = max_chars
    for item in reversed(history[-max_turns:] if max_turns else []):
        if budget <= 0:
            break
        turn = item if isinstance(item, Turn) else Turn.model_validate(item)
        if len(turn.content) > budget:
            turn = Turn(role=turn.role, content=turn.content[-budget:])
        budget -= len(turn.content)
        out.append(turn)
    return out[::-1]


def search_text(text: str, limit: int) -> str:
    """What retrieval and composing read of a message: all of it up to `limit` characters; of a longer one,
    its questions (sentences ending in '?', the last ones first) or else its end, within `limit`."""
    if len(text) <= limit:
        return text
    parts = sentences(text)
    questions = [s for s in parts if s.rstrip().endswith("?")]
    picked: list[str] = []
    for s in reversed(questions or parts):
        if len(" ".join([s, *picked])) > limit:
            break
        picked.insert(0, s)
    return " ".join(picked) if picked else text[-limit:]


def _matching_turns(turns: Sequence[Turn]) -> list[Turn]:
    """The conversation in the normal form used for matching (see bot/normal.py)."""
    return [Turn(role=t.role, content=for_matching(t.content)) for t in turns]


class Assistant:
    """Validate -> safety gate -> follow-up resolver -> hybrid retrieval -> extractive answer with citations."""

    def __init__(self, settings: Settings, index: Index, embedder: Embedder, retriever: Retriever,
                 writer: AnswerWriter, safety: SafetyGate, messages: Messages, follow_up: FollowUpRules,
                 words: QuestionWords, vocabulary: Vocabulary,
                 reload: Callable[[], tuple[Index, Retriever, AnswerWriter, Vocabulary]] | None = None,
                 screen: Screen | None = None) -> None:
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.retriever = retriever
        self.writer = writer
        self.safety = safety
        self.messages = messages
        self.follow_up = follow_up
        self.words = words
        self.vocabulary = vocabulary
        self.screen = screen  # checks every document sentence before it is shown (None: no screening)
        self._reload = reload  # opens the newest index generation (None: keep the one given)
        self._reload_lock = threading.Lock()
        self._failed_stamp: object = None
        self.start_timings: dict[str, float] = {}  # seconds per step of build_assistant
        self.start_cpu_timings: dict[str, float] = {}  # CPU seconds (user + system) per step

    def _parts(self) -> tuple[Retriever, AnswerWriter, Vocabulary]:
        """What this question is answered from; switches to a newer index once an ingest has completed.

        One stat of the pointer file per question. A question in flight keeps the parts it started
        with, so no answer mixes an old and a new index.
        """
        if self._reload is not None and self.index.is_stale():
            with self._reload_lock:
                stamp = pointer_stamp(self.index.path)
                if self.index.is_stale() and stamp != self._failed_stamp:
                    try:
                        self.index, self.retriever, self.writer, self.vocabulary = self._reload()
                    except Exception as exc:  # keep answering from the index we have
                        self._failed_stamp = stamp
                        log.warning("the new index could not be opened (%s); still answering from the old one", exc)
        return self.retriever, self.writer, self.vocabulary

    def ask(self, question: object, history: Sequence[Turn | dict[str, Any]] | None = None,
            qid: str | None = None, *, _recall: bool = True) -> Answer:
        """Answer one question; never raises for bad input (kind 'error' says what was wrong).

        One gate for every door (web, CLI, batch, evals): the safety gate sees every message that has
        any text, before any check that could turn it away (too long, no words), so an emergency is
        never lost behind "please shorten it"."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if not isinstance(question, str):
            return Answer(id=qid, question="", kind="error", answer=self.messages.errors.not_text,
                          timings_ms={"total": _ms(t0)})
        limit = self.settings.max_question_chars
        if len(question) > 4 * limit:  # only the beginning and the end of a huge message are read (bounded cost)
            question = f"{question[:2 * limit]} ... {question[-2 * limit:]}"
        text = normalise(question)
        if not text:
            return Answer(id=qid, question="", kind="error", answer=self.messages.errors.empty,
                          timings_ms={"total": _ms(t0)})
        too_long = len(text) > limit
        try:
            turns = _turns(history, self.settings.history_max_turns, self.settings.history_max_chars)
        except ValueError:
            turns = []
            if not too_long:
                reason = "history must be a list of {role, content}"
                return Answer(id=qid, question=text[:200], kind="error", timings_ms={"total": _ms(t0)},
                              answer=self.messages.render(self.messages.errors.bad_line, reason=reason))

        retriever, writer, vocabulary = self._parts()
        # Patterns and search see the normal form ('fe\u00adver', Cyrillic 'е', fullwidth letters -> 'fever');
        # the question is shown back and quotes are shown as written.
        # (From the raw message: NFC for display would fuse a loose accent into 'ś' before it could be removed.)
        shown_text, text = text, " ".join(for_matching(question.replace("\ufffd", "")).split()) or text
        turns = _matching_turns(turns)
        t = time.perf_counter()
        # A message over the limit is read by its beginning and its end (the cost of any message is bounded).
        checked = text if len(text) <= 2 * limit else f"{text[:limit]} ... {text[-limit:]}"
        # The one Query of this message: spelled for the documents once, embedded once (lazily), read by every step.
        query = prepare(shown_text, checked, history=turns, embedder=self.embedder,
                        correct=vocabulary.correct_text if not too_long else None,
                        question=lambda spelled: self.words.plain(search_text(spelled, self.settings.search_max_chars)),
                        expand=self.words.expand)
        verdict = self.safety.check(query, turns)
        timings["safety"] = _ms(t)
        if verdict.kind == "urgent":
            if too_long:
                note = self.messages.render(self.messages.errors.too_long, limit=f"{limit:,}")
                timings["total"] = _ms(t0)
                return Answer(id=qid, question=shown_text[:200], kind="urgent", answer=f"{verdict.message} {note}",
                              timings_ms=timings, safety=_safety(verdict))
        elif too_long:
            return Answer(id=qid, question=shown_text[:200], kind="error", timings_ms={"total": _ms(t0)},
                          answer=self.messages.render(self.messages.errors.too_long, limit=f"{limit:,}"))
        elif not re.search(r"\w", text):
            # Emoji or punctuation only: a kind word asking for a question, not "could not be read".
            no_words = getattr(self.safety, "no_words_message", "") or self.messages.errors.not_text
            return Answer(id=qid, question=shown_text[:200], kind="error", answer=no_words, timings_ms={"total": _ms(t0)})
        elif verdict.kind == "other_language":
            timings["total"] = _ms(t0)
            return Answer(id=qid, question=shown_text, kind="unknown", answer=verdict.message,
                          disclaimer=self.messages.disclaimer, timings_ms=timings, safety=_safety(verdict))

        overridable = getattr(self.safety, "retrieval_may_override", OVERRIDABLE_SCOPE_RULES)
        off_topic_guess = verdict.kind == "out_of_scope" and verdict.rule in overridable
        if verdict.kind == "out_of_scope" and not off_topic_guess:
            return self._out_of_scope(qid, shown_text, verdict, timings, t0)
        if verdict.kind != "urgent" and self.screen is not None and self.screen.is_contact_question(text):
            # "Who do I call in an emergency?": from the safety messages, never from a document.
            timings["total"] = _ms(t0)
            return Answer(id=qid, question=shown_text, kind="answer", answer=self.screen.contact_answer(),
                          disclaimer=self.messages.disclaimer, timings_ms=timings,
                          safety={"rule": "emergency_contact", "kind": "contact"})

        t = time.perf_counter()
        # Safety read all of the message; the search reads its question (a long message costs no more than that).
        same_figure = self.words.asks_same_figure(query.question)  # 'and without it?': the figure just given
        if (_recall and verdict.kind != "urgent" and turns and turns[-1].role == "user"
                and leans_on_answer(query.question, self.follow_up, same_figure)
                and is_follow_up(query.question, self.follow_up)):
            # A history of the family's turns only (the batch file, the evals): what did the assistant answer last?
            # 'Where is that?' may point at a name only that answer said. Used to resolve the follow-up only.
            resolving = [*turns, self._recalled(turns)]
        else:
            resolving = turns
        context = "" if verdict.kind == "urgent" else follow_up_context(query.question, resolving, self.follow_up,
                                                                         same_figure)
        if context:  # the earlier turns' words, spelled for the documents as the question was ('efects', 'babys')
            context = vocabulary.correct_text(context)
        query = query.about(query.question, context)
        hits = retriever.retrieve(query, self.settings.retrieval.top_k)
        timings["retrieve"] = _ms(t)
        t = time.perf_counter()
        # A personal question ("what dose for my 7 kg son?") still gets the general facts the sources have.
        said = said_sentences([t.content for t in turns if t.role == "assistant"])
        # A personal question ('can I put <a cream> on his rash?') gets the same unknown-word check: the group facts
        # that follow the care-team sentence must be about what was asked.
        strict = verdict.kind in ("ok", "out_of_scope", "personal")
        parts, preamble = question_parts(query.question) if verdict.kind != "urgent" else ([query.question], "")
        if len(parts) > 1:
            # "Which hospital ran it and in how many countries?": each part is answered (at most 3), each part
            # searched with the topic words of the others, and no sentence is said twice.
            composition, hits = self._compose_parts(query, parts, retriever, writer, strict, said, preamble)
        else:
            composition = writer.compose(query, hits, strict=strict, said=said)
            topic = self.follow_up.default_topic
            # A long message with no question in it is searched by its end (search_text): an account of the day,
            # not a first question about 'it', so it is not searched again as one (that was a third of the cost
            # of a long message: one more long text through the model, one more search).
            story = len(query.spelled) > self.settings.search_max_chars and "?" not in query.question
            if (not composition.statements and not composition.uncovered and topic and not query.context
                    and verdict.kind != "urgent" and not story and is_follow_up(query.question, self.follow_up)
                    and not set(query.terms) & set(tokenize(topic))):
                # "Does it actually work?" as a first message, not answered as it stands: 'it' is what this
                # assistant is about (prompts/questions.yaml follow_up.default_topic). A question that names
                # the topic itself ('is blinatumomab approved in India?') is not asked again.
                query = query.about(query.question, topic)
                hits = retriever.retrieve(query, self.settings.retrieval.top_k)
                composition = writer.compose(query, hits, strict=strict, said=said)
        composition = self._screened(composition, qid)
        timings["compose"] = _ms(t)
        if off_topic_guess:
            # The topic check judged the words; the sources say whether they really answer the question
            # (with the strict checks: every topic word of it is in the documents, and the evidence is strong).
            if not composition.statements:
                return self._out_of_scope(qid, shown_text, verdict, timings, t0)
            verdict = Verdict(kind="ok")
        retrieved = [Retrieved(doc_id=h.chunk.doc_id, chunk_id=h.chunk.chunk_id, score=round(h.score, 5)) for h in hits]
        safety = _safety(verdict) if verdict.kind != "ok" else {}

        if verdict.kind == "urgent":
            # Call-now first; then at most one short cited note from the sources.
            answer, citations = verdict.message, []
            if composition.statements and composition.best_score >= self.settings.answer.urgent_note_min:
                st = max(composition.statements, key=lambda x: x.score)
                note, citations = Composition([st], composition.best_score).render()
                citations = label_citations(citations, self.index)
                answer = f"{verdict.message} {note}"
            timings["total"] = _ms(t0)
            return Answer(id=qid, question=shown_text, kind="urgent", answer=answer, citations=citations,
                          timings_ms=timings, retrieved=retrieved, safety=safety)

        if not composition.statements:
            answer = self.messages.unknown
            if verdict.kind == "personal" and verdict.message and self._preface_fits(verdict, query.question):
                answer = f"{answer} {verdict.message}"
            timings["total"] = _ms(t0)
            return Answer(id=qid, question=shown_text, kind="unknown", answer=answer,
                          disclaimer=self.messages.disclaimer, timings_ms=timings, retrieved=retrieved, safety=safety)

        answer, citations = composition.render()
        citations = label_citations(citations, self.index)
        if verdict.kind == "personal" and verdict.message and self._preface_fits(verdict, query.question):
            # First that the care team decides for this child, then what the study did: a tired parent who
            # reads one line must not read a study figure as their baby's dose.
            answer = f"{verdict.message} {answer}"
        timings["total"] = _ms(t0)
        return Answer(id=qid, question=shown_text, kind="answer", answer=answer, citations=citations,
                      disclaimer=self.messages.disclaimer, timings_ms=timings, retrieved=retrieved, safety=safety)


    def _preface_fits(self, verdict: Verdict, question: str) -> bool:
        """Whether a personal note fits the question: the gate's own judgement (a dose note when an amount is asked
        for, a plan note when a treatment is to be changed or chosen: prompts/safety.yaml `note_when`), and the note
        on survival figures (rule `prognosis`) only when the question speaks of how the baby will fare, not of how
        long a stay or a drip lasts ('how long will my son have to stay in hospital?')."""
        if not getattr(verdict, "note", True):
            return False
        return verdict.rule != "prognosis" or self.words.about_outcome(question)

    def _recalled(self, turns: list[Turn]) -> Turn:
        """The assistant's answer to the last of the family's turns, asked again as it was then."""
        earlier = self.ask(turns[-1].content, history=turns[:-1], _recall=False)
        return Turn(role="assistant", content=earlier.answer if earlier.kind == "answer" else "")

    def _screened(self, composition: Composition, qid: str | None) -> Composition:
        """The composition without sentences that screening refuses (treatment changes, numbers not ours, ...)."""
        if self.screen is None or not composition.statements:
            return composition
        kept = []
        for st in composition.statements:
            flags = self.screen.sentence(st.text)
            if flags:
                log.warning("question %s: left out a sentence of %s (%s)", qid or "-", st.hit.chunk.doc_id,
                            "; ".join(str(f) for f in flags))
            else:
                kept.append(st)
        return composition if len(kept) == len(composition.statements) else replace(composition, statements=kept)

    def _compose_parts(self, query: Query, parts: list[str], retriever: Retriever, writer: AnswerWriter,
                       strict: bool, said: frozenset[str], preamble: str = "") -> tuple[Composition, list]:
        """Each part of a multi-part question answered in turn; the statements joined in the order asked.

        `preamble`: what the message said before its questions ('My son starts blina next week.'); a part that
        points back with nothing asked before it ('how long does it run?') leans on its topic words."""
        statements, hits, best, uncovered = [], [], 0.0, []
        for i, part in enumerate(parts):
            # A part that points back ('How is it measured?') is searched with the words that end the part before
            # it, what 'it' names ('how many babies were in the trial and what years did it run' -> 'trial'): all of
            # that part's words would pull it to that part's answer (the count of babies again). A part with a topic
            # of its own is searched alone.
            earlier = ""
            if is_follow_up(part, self.follow_up):
                earlier = ((trailing_topic(parts[i - 1]) or topic_words(" ".join(parts[:i]))) if i
                           else topic_words(preamble))
            ctx = " ".join(x for x in (query.context, earlier) if x)
            part_query = query.about(part, ctx)
            part_hits = retriever.retrieve(part_query, self.settings.retrieval.top_k)
            comp = writer.compose(part_query, part_hits, strict=strict,
                                  said=said | said_sentences([s.text for s in statements]))
            # A reviewed entry is given whole (less what the reply said already); chosen sentences are capped per part.
            most = len(comp.statements) if comp.entry else self.settings.answer.part_sentences(len(parts))
            statements += adds_news(comp.statements, statements, most)
            uncovered += list(comp.uncovered)
            best = max(best, comp.best_score)
            hits += [h for h in part_hits if all(h.chunk.chunk_id != g.chunk.chunk_id for g in hits)]
        return Composition(statements, best, tuple(uncovered) if not statements else ()), hits

    @staticmethod
    def _out_of_scope(qid: str | None, text: str, verdict: Verdict, timings: dict[str, float], t0: float) -> Answer:
        timings["total"] = _ms(t0)
        return Answer(id=qid, question=text, kind="out_of_scope", answer=verdict.message,
                      timings_ms=timings, safety=_safety(verdict))


def _safety(verdict: Verdict) -> dict[str, Any]:
    """The `safety` field of an answer: the rule, and for red flags the tier and every sign that fired."""
    out: dict[str, Any] = {"rule": verdict.rule or "", "kind": verdict.kind}
    if getattr(verdict, "tier", None):
        out["tier"] = verdict.tier
        out["signs"] = list(getattr(verdict, "signs", ()))
        out["sign_names"] = list(getattr(verdict, "sign_names", ()))
    language = getattr(verdict, "language", "en")
    if language != "en":
        out["language"] = language
        out["translation_reviewed"] = bool(getattr(verdict, "translation_reviewed", True))
    return out


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _router(index: Index, settings: Settings) -> EntryRouter | None:
    """The entry router the index generation keeps (fitted at ingest: read, never fitted, here)."""
    if "router" in index.marker:
        path = index.stored("router")
        if path is None:
            return None  # the ingest found no router to fit (too many keys, or one entry)
        try:
            return EntryRouter.load(path)
        except (OSError, ValueError, KeyError) as exc:
            raise IndexDamaged(f"{path} cannot be read ({exc}); it is rebuilt from its documents by: "
                               "python -m bot ingest --rebuild") from None
    # A generation written before routers were kept with it: fitted (or read from the cache) as before, until the
    # next ingest stores one.
    if int(index.marker.get("keys", 0)) > ROUTER_MAX_KEYS:
        return None
    ids, vkeys = index.key_texts()
    return fitted_router(ids, lambda: index.key_vectors()[1], cache=ArrayCache(settings.cache_dir),
                         texts=[model_identity(settings.embedding_model), *vkeys])


def build_assistant(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    retriever: Retriever | None = None,
    writer: AnswerWriter | None = None,
    safety: SafetyGate | Any | None = None,
    quick: bool = False,
) -> Assistant:
    """Build the assistant; builds the index from the knowledge folder first if there is none.

    `quick`: for a process that answers one question (the command line): the embedding model starts
    without torch (see bot/embed.py).
    """
    settings = settings or get_settings()
    timings: dict[str, float] = {}  # seconds per start step (scripts/benchmark.py reports them)
    cpu_timings: dict[str, float] = {}  # CPU seconds (user + system) per step: steadier on a shared machine
    lap, cpu_lap = time.perf_counter(), time.process_time()

    def step(name: str) -> None:
        nonlocal lap, cpu_lap
        now, cpu_now = time.perf_counter(), time.process_time()
        timings[name], cpu_timings[name] = round(now - lap, 3), round(cpu_now - cpu_lap, 3)
        lap, cpu_lap = now, cpu_now

    messages = load_messages(settings.prompts_dir)
    follow_up, words = load_question_rules(settings.prompts_dir)
    step("rules")
    # A long-running process loads torch in the background once the assistant is built (see the end), not
    # while the index and the rules load on the same two cores.
    embedder = embedder or SentenceEmbedder(settings.embedding_model, threads=settings.torch_threads, quick=quick,
                                            switch_later=True)
    step("model")
    checked = ensure_index(settings, embedder, keep_open=True)
    opened = [checked.index] if checked is not None and checked.index is not None else []  # the checked generation
    step("index_check")
    given_retriever, given_writer = retriever, writer
    leaning = load_leaning_openers(settings.prompts_dir)

    def open_parts() -> tuple[Index, Retriever, AnswerWriter, Vocabulary]:
        """The newest complete index and the retriever and writer over it."""
        index = opened.pop() if opened else None  # used once, by the first call, unless a newer one is named
        if index is None or index.is_stale():
            if index is not None:
                index.close()
            index = Index(settings.index_dir, settings.collection, settings.chroma_url)
        hybrid = HybridRetriever(index, embedder, settings.retrieval)
        vocabulary = Vocabulary(index.vocabulary(), index.words(), words)
        router = _router(index, settings) if given_writer is None and settings.answer.entry_router else None
        return (index, given_retriever or hybrid,
                given_writer or ExtractiveWriter(index, idf=hybrid.idf, vocabulary=vocabulary, words=words,
                                                 params=settings.answer, leaning=leaning, router=router),
                vocabulary)

    index, retriever, writer, vocabulary = open_parts()
    step("index_open")
    english_words()  # load the word list now, not during a family's first question
    if not quick:  # and the tables of the normal form (one question loads only those it needs: plain text, none)
        for_matching("fev\u00e9r b\u0430by")
    step("word_tables")
    safety = safety or SafetyGate.from_dir(settings.prompts_dir, embedder, cache_dir=settings.cache_dir)
    step("safety_gate")
    reload = open_parts if given_retriever is None and given_writer is None else None
    screen = Screen.from_dir(settings.prompts_dir)
    step("screen")
    assistant = Assistant(settings, index, embedder, retriever, writer, safety, messages, follow_up, words, vocabulary,
                          reload=reload, screen=screen)
    assistant.start_timings = timings
    assistant.start_cpu_timings = cpu_timings
    switch = getattr(embedder, "switch_in_background", None)
    if switch is not None:
        switch()
    return assistant

