"""The default answer writer (no LLM): pick the few sentences that answer the question and cite each one."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from bot.documents import Chunk, Sentence
from bot.query import Query
from bot.retrieve import CHILD_MEASURE, Hit, QuestionWords, Vocabulary, without_markers
from bot.router import EntryRouter
from bot.schema import BasedOn, Citation
from bot.sentences import sentences
from bot.settings import AnswerSettings
from bot.spelling import english_words
from bot.store import Index
from bot.words import content_words, stem, tokenize


@dataclass(frozen=True)
class Statement:
    """One sentence of the answer and the passage it is quoted from."""

    text: str
    quote: str
    hit: Hit
    score: float


@dataclass(frozen=True)
class Composition:
    """An answer as statements; empty `statements` means the sources do not answer the question."""

    statements: list[Statement]
    best_score: float
    uncovered: tuple[str, ...] = ()  # question words no document uses (why the answer is empty)
    entry: str | None = None         # chunk id of the knowledge entry given whole, if one matched strongly

    def render(self) -> tuple[str, list[Citation]]:
        """Answer text with a [n] marker on every sentence, and the matching citations."""
        parts: list[str] = []
        citations: list[Citation] = []
        for n, st in enumerate(self.statements, 1):
            parts.append(add_marker(st.text, n))
            c = st.hit.chunk
            citations.append(Citation(
                n=n, doc_id=c.doc_id, title=c.title, source=c.source, url=c.url, quote=st.quote,
                section=c.section or None, chunk_id=c.chunk_id, passage=c.text,
            ))
        return " ".join(parts), citations


class AnswerWriter(Protocol):
    """Turns retrieved passages into statements (the default is extractive; an LLM writer could be another)."""

    def compose(self, query: Query, hits: list[Hit], strict: bool = True,
                said: frozenset[str] = frozenset()) -> Composition: ...


_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_MARK = re.compile(r"(\*\*|__|`)")


def display_text(sentence: str) -> str:
    """A quoted sentence as shown in the answer: one line, Markdown links and emphasis removed."""
    text = " ".join(sentence.split())
    text = _MD_LINK.sub(r"\1", text)
    return _MD_MARK.sub("", text)


def add_marker(sentence: str, n: int) -> str:
    """'...for 4 weeks.' -> '...for 4 weeks [1].'"""
    m = re.search(r"([.!?][\"'”’)]?)$", sentence)
    if m:
        return f"{sentence[:m.start()].rstrip()} [{n}]{m.group(1)}"
    return f"{sentence} [{n}]."


def label_citations(citations: list[Citation], index: Index) -> list[Citation]:
    """Say where the quoted words are: our own summary (title, review date) with what it was based on,
    or the ingested leaflet or article itself with its own link."""
    out: list[Citation] = []
    docs: dict[str, object] = {}
    for c in citations:
        if c.doc_id not in docs:
            docs[c.doc_id] = index.document(c.doc_id)
        doc = docs[c.doc_id]
        if doc is None:
            out.append(c)
            continue
        based_on = [BasedOn(citation=s["citation"], url=s.get("url")) for s in doc.sources if s.get("citation")]
        if based_on:  # a document we wrote from these publications: the words are ours, not theirs
            reviewed = f", reviewed {doc.reviewed}" if doc.reviewed else ""
            out.append(c.model_copy(update={
                "source": f"{doc.title} (our plain-language summary{reviewed})", "url": None,
                "reviewed": doc.reviewed, "based_on": based_on}))
        else:  # a leaflet or article ingested as it is: its own name and address
            out.append(c.model_copy(update={"source": doc.source or doc.title, "url": doc.url,
                                            "reviewed": doc.reviewed, "based_on": []}))
    return out


# A number after 'the', 'these', 'those' or 'all' names something the family already knows ('of the 30 babies',
# 'all the 214 earlier babies', 'during the 4 weeks'): it is not a figure they ask for ('after 10 years', 'did 5
# babies die?'). A number that makes a period into a describing word ('the 5 year results', 'by the 10-year mark')
# asks for that period's figure.
_KNOWN_NUMBER = re.compile(r"\b(?:the|these|those|all)\s+(\d+(?:[.,]\d+)?)\b"
                           r"(?![\s-]*(?:year|yr|month|week|day)\b)", re.I)


def asked_numbers(question: str) -> list[str]:
    """The numbers of a question that an answer must contain (those it only refers back to are left out).

    In a message of several sentences, only those of its questions count: a number in a statement before them ('18%
    relapsed or died, and disease-free survival was 82%. Are those the same result?') is what the family already
    read, the premise of the question, not a figure they ask for."""
    parts = sentences(question.strip(), loose=True)  # families rarely capitalise
    asked = [p for p in parts if p.rstrip().endswith("?")]
    if len(parts) > 1 and asked and len(asked) < len(parts):
        return [n for p in asked for n in asked_numbers(p)]
    known = {m.start(1) for m in _KNOWN_NUMBER.finditer(question)}
    known |= {m.start(1) for m in CHILD_MEASURE.finditer(question)}
    return [m.group() for m in re.finditer(r"\d+(?:[.,]\d+)?", question) if m.start() not in known]


_DECIMAL = re.compile(r"(?<![\d.,])(\d+\.\d+)(?![\d]|[.,]\d)")


def missing_numbers(question: str, text: str) -> list[str]:
    """The numbers the question asks about that `text` does not give ('10' is not in '100' nor in '1.10').

    A whole number is given by a decimal that rounds to it: families round ('93%', '82%'), the sources keep
    the decimals ('93.3%', '81.6%')."""
    rounded = {str(int(float(d) + 0.5)) for d in _DECIMAL.findall(text)}
    return [n for n in asked_numbers(question) if n not in rounded
            and not re.search(rf"(?<![\d.,]){re.escape(n)}(?![\d]|[.,]\d)", text)]


def _said_key(sentence: str) -> str:
    """How a sentence is compared with what was already said: its words, lower case."""
    return " ".join(re.findall(r"[a-z0-9]+", display_text(sentence).lower()))


def said_sentences(assistant_turns: list[str]) -> frozenset[str]:
    """Sentences already said by the assistant in the conversation (markers and markup removed)."""
    out: set[str] = set()
    for turn in assistant_turns:
        clean = without_markers(turn)
        for part in sentences(clean):
            key = _said_key(part)
            if key:
                out.add(key)
    return frozenset(out)


_YEAR = re.compile(r"^(19|20)\d\d$")


def near_copy(a: str, b: str, share: float) -> bool:
    """Whether one sentence says again what the other says: both give the same figures, and at least `share` of the
    shorter one's words are in the longer one ('About 90% of relapses in these babies happen in those first 2 years'
    and 'About 90% of relapses in infant leukemia happen in the first 2 years'). A year ('the 2023 study') names, so
    it may differ; a sentence that adds a figure ('8 of the 9 babies at high risk') says something new."""
    wa, wb = set(tokenize(a)), set(tokenize(b))
    short, long_ = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
    if not short:
        return False

    def figures(words: set[str]) -> set[str]:
        return {w for w in words if w[0].isdigit() and not _YEAR.match(w)}

    return figures(wa) == figures(wb) and len(short & long_) >= share * len(short)


def adds_news(statements: list[Statement], before: list[Statement], most: int) -> list[Statement]:
    """Of one part's statements, those that say something the reply has not said yet, at most `most` of them.

    A multi-part reply joins the answers to its parts, and they often repeat each other ('The drip runs for 4 weeks
    (28 days)' and, for the next part, 'each baby got 1 course ... for 4 weeks (28 days)'). A statement all of whose
    figures were given and all of whose words but one were said (REPEAT_NEW_WORDS) adds nothing. The cap keeps the
    first statements in the part's order, so a sentence shown with the one it leans on never loses it to the cap."""
    said_words = {w for st in before for w in tokenize(st.text)}
    out: list[Statement] = []
    for st in statements:
        if len(out) >= most:
            break
        words = set(tokenize(st.text))
        new = words - said_words
        figures = {w for w in words if w[0].isdigit()}
        if words and not (figures - said_words) and len(new) <= min(1.0, REPEAT_NEW_WORDS * len(words)):
            continue
        out.append(st)
        said_words |= words
    return out


# A statement with no new figure and at most one new word, and that word at most this share of its words, repeats
# what was said ('... through a drip into a vein, for 4 weeks (28 days)' after 'The drip runs for 4 weeks (28 days)');
# two new words ('The study doctors think no baby got severe CRS because ...') say something new.
REPEAT_NEW_WORDS = 0.15


def _is_statement(text: str) -> bool:
    """Headlines, credits and fragments are not statements an answer can rest on."""
    words = text.split()
    if len(words) < 5 or len(words) > 70 or text.rstrip().endswith("?"):
        return False
    if re.search(r"\bdoi:|https?://|^\s*(references?|source|credit)\b", text, flags=re.I):
        return False  # a reference list entry or picture credit is not a statement
    return bool(re.search(r"[.!?][\"'”’)]?$", text.strip())) or len(words) >= 12


class ExtractiveWriter:
    """Scores the sentences of the retrieved passages against the question and keeps the best few."""

    def __init__(self, index: Index, idf: Callable[[str], float], vocabulary: Vocabulary,
                 words: QuestionWords | None = None, params: AnswerSettings | None = None,
                 leaning: tuple[str, ...] = (), router: EntryRouter | None = None) -> None:
        self.index = index
        self.router = router  # a learned second opinion on which entry is asked for (None: similarity alone)
        # A sentence opening with one of these ('This ...', 'They ...') is shown right after the one before it.
        self._leaning = re.compile(r"^\W*(?:" + "|".join(re.escape(w) for w in leaning) + r")\b", re.I) if leaning else None
        self.idf = idf
        self.vocabulary = vocabulary
        self.words = words or QuestionWords()
        self.params = params or AnswerSettings()  # the weights and thresholds: Settings.answer
        # A corpus written for professionals is hard throughout; only its harder half is held back.
        self.plain_from = max(self.params.plain_from, index.median_grade())

    def keyword_overlap(self, query_tokens: list[str], sentence: str, context_tokens: tuple[str, ...] = ()) -> float:
        """IDF-weighted share of the question's content words that the sentence contains.

        Words carried over from earlier questions (`context_tokens`) count for less than the new question's own.
        """
        weighted = [(t, self.idf(t)) for t in query_tokens]
        weighted += [(t, self.idf(t) * self.params.w_context) for t in context_tokens if t not in query_tokens]
        if not weighted:
            return 0.0
        present = set(tokenize(sentence))
        total = sum(w for _, w in weighted) or 1.0
        return sum(w for t, w in weighted if t in present) / total

    def entry_matches(self, query: Query, k: int = 3, ignore: tuple[str, ...] = ()) -> list[tuple[float, Chunk]]:
        """Knowledge entries closest to the question, best first, with their match score (0-1).

        Tokens in `ignore` (ones no document uses) do not count against an entry's share of the question's words.
        """
        p = self.params
        q_tokens = [t for t in query.terms if t not in ignore]
        found = query.nearest_keys(self.index, k)  # the search retrieval already made
        chunks = self.index.chunks(cid for cid, _ in found)
        out = []
        for cid, cos in found:
            if cid in chunks:
                words = self.keyword_overlap(q_tokens, " ".join((*chunks[cid].keys, chunks[cid].text)))
                out.append((p.w_entry_key * cos + p.w_entry_words * words, chunks[cid]))
        return sorted(out, key=lambda x: -x[0])

    def _entry_answer(self, query: Query, said: frozenset[str], hits: list[Hit],
                      unknown_word: str | None = None) -> tuple[Composition | None, float]:
        """The whole reviewed answer of the entry that matches the question strongly (or None), and its lead
        over the next entry's match score.

        Only an entry the retriever returned can be the answer (the retriever searches the entries' keys).
        """
        p = self.params
        question = query.question
        ignore = (stem(unknown_word),) if unknown_word else ()
        matches = self.entry_matches(query, ignore=ignore)
        if not matches:
            return None, 0.0
        found = {h.chunk.chunk_id: h for h in hits}
        label, prob = self.router.predict(query.vector) if self.router is not None else (None, 0.0)
        # The entries the router names: one, or the copies of one entry (the same phrasings in several documents);
        # of these, the first the retriever found.
        picks = frozenset(self.router.entries(label)) if self.router is not None else frozenset()
        pick = next((cid for cid in found if cid in picks), None)
        if (unknown_word is None and pick is not None and matches[0][1].chunk_id not in picks
                and prob >= p.router_override):
            # The learned router is confident and names another entry the retriever found: it has learned what all
            # of an entry's phrasings share, and beats the nearest phrasing where the two disagree (README, 'How
            # answers are chosen'). Its pick is not overruled by single sentences (a lead counted as sure).
            score = next((sc for sc, c in self.entry_matches(query, k=10, ignore=ignore) if c.chunk_id == pick),
                         found[pick].dense)
            return self._whole_entry(found[pick].chunk, score, question, said), p.entry_sure_lead
        if matches[0][1].chunk_id not in found:
            return None, 0.0
        bar, margin = ((p.entry_min_unknown_word, p.entry_margin_unknown_word) if unknown_word
                       else (p.entry_min, p.entry_margin))
        score, chunk = matches[0]
        lead = score - matches[1][0] if len(matches) > 1 else score
        # A close match needs a small lead over the next entry; a fair one (down to entry_clear_min) a lead that
        # grows as its score falls, up to entry_clear_lead: the question's meaning points to this one entry.
        if score >= bar:
            needed = margin
        else:
            slope = (p.entry_clear_lead - p.entry_margin) / max(p.entry_min - p.entry_clear_min, 1e-6)
            needed = margin + slope * (bar - score)
        # The learned router's second opinion: it names this same entry, and with confidence.
        routed = chunk.chunk_id in picks and prob >= p.router_min and score >= p.router_entry_min
        if (score < p.entry_clear_min or lead < needed) and not routed:
            return None, 0.0  # no entry fits well enough, or two fit about as well: sentence choice takes the best of both
        entry = self._whole_entry(chunk, score, question, said)
        if entry is None:
            return None, 0.0
        # Two opinions that agree (the nearest phrasing and the learned router) are not overruled by single
        # sentences that share a word or two with the question ('who ran the study' and 'the study took place ...').
        return entry, (max(lead, p.entry_sure_lead) if routed and lead >= p.router_sure_lead else lead)

    def _whole_entry(self, chunk: Chunk, score: float, question: str, said: frozenset[str]) -> Composition | None:
        """An entry's whole answer, less what was said already (None: it lacks a figure asked for, or all was said)."""
        sents, _ = self.index.sentences_of([chunk.chunk_id])
        text = " ".join(s.text for s in sents)
        if missing_numbers(question, text):
            return None  # the question asks about a figure this entry does not give
        hit = Hit(chunk=chunk, score=score, dense=score)
        statements = [Statement(text=display_text(s.text), quote=" ".join(s.text.split()), hit=hit, score=score)
                      for s in sents if _said_key(s.text) not in said]
        if not statements:
            return None  # all of it was said already: look further
        return Composition(statements, score, entry=chunk.chunk_id)

    def compose(self, query: Query, hits: list[Hit], strict: bool = True,
                said: frozenset[str] = frozenset()) -> Composition:
        """Best sentences for the question; `strict` also refuses questions about things no document mentions.

        `query.vector` is the embedding of what was searched (the question, plus `query.context`, the topic
        words a follow-up leans on). `said` holds sentences already said in the conversation (see
        `said_sentences`); they are not said again. A knowledge entry that matches strongly is given whole.
        """
        p = self.params
        question = query.question
        # The child's own weight or age ('my 7kg son') is not a topic the documents must use.
        child = {w for m in CHILD_MEASURE.finditer(question) for w in content_words(m.group())}
        uncovered = self.vocabulary.uncovered([w for w in query.words if w not in child], self.words) if strict else []
        # One ordinary English word the documents never use ('dependable') does not sink a question whose
        # other words match an entry clearly; a name, a second unknown word or a weak match does.
        ordinary = uncovered[0] if len(uncovered) == 1 and uncovered[0] in english_words() else None
        # A describing word no document uses judges a topic ('is the pump waterproof?', 'is that meaningless?') and
        # is no reason to refuse; but when the rest of the question names nothing narrower than what every document
        # is about ('is leukemia contagious?', 'is blinatumomab expensive?'), the word is what is asked about: only a
        # reviewed entry asked that way answers it (as for an ordinary unknown word), not nearby sentences.
        judging = self.vocabulary.judging([w for w in query.words if w not in child], self.words) if strict else []
        if judging and not self._names_topic(query, [*judging, *uncovered]):
            ordinary = ordinary or (None if uncovered else judging[0])  # a name the documents lack still sinks it
        else:
            judging = []
        entry, lead = self._entry_answer(query, said, hits, unknown_word=ordinary)
        if uncovered and ordinary is None:
            return Composition([], 0.0, tuple(uncovered))
        if judging and not (entry is not None and entry.best_score >= p.entry_min_unknown_word):
            return Composition([], 0.0, tuple(judging))
        wanted = self.words.answer_patterns(query.question)
        required = self.words.required_kinds(query.question) if strict else []
        if required:
            # 'What's the phone number of the ward?', 'anything new this month?': only a sentence of that kind
            # answers it; the sentences about calling the care team or the 2023 paper do not.
            sents, _ = self.index.sentences_of([h.chunk.chunk_id for h in hits])
            missing = [t.name for t in required if not any(t.answer.search(s.text) for s in sents)]
            if missing:
                return Composition([], 0.0, tuple(missing))
        if entry is not None and any(not any(pattern.search(st.text) for st in entry.statements)
                                     for pattern in self.words.entry_patterns(query.question)):
            # The question asks for a kind of answer (a figure, a duration, the other arm of a comparison) that no
            # sentence of the entry gives: the sentences of all passages are weighed instead.
            entry = None
        if entry is not None and entry.best_score >= (p.entry_min_unknown_word if ordinary else p.entry_min):
            return self._with_own_documents(entry, query, hits, said, wanted)
        sents, vecs, scored = self._score_sentences(query, hits, said, wanted)
        # Without the entry, the best sentence must clear the usual bar (a higher one with an unknown word).
        min_evidence = p.min_evidence + (p.unknown_word_evidence if ordinary else 0.0)
        weak = bool(scored) and scored[0][0] < min_evidence and ordinary is None
        if entry is not None and scored and lead < p.entry_sure_lead and not weak:
            # An entry chosen on a fair match must agree with the sentences: the best sentence found is its own,
            # or nearly as good as the best one elsewhere (unless no other entry comes near it: a sentence that
            # shares a word or two with the question must not overrule the one entry its meaning points to).
            # Sentences too weak to be an answer themselves overrule nothing: the entry is then kept (unless a
            # word of the question is in no document: then the fair match may be to the rest of the question).
            own = [sc for sc, row, _ in scored if sents[row].chunk_id == entry.entry]
            if not own or scored[0][0] - own[0] > p.entry_agree_gap:
                entry = None
        if entry is not None:
            return self._with_own_documents(entry, query, hits, said, wanted)
        if not scored:
            return Composition([], 0.0)
        best = scored[0][0]
        if best < min_evidence:
            return Composition([], best)
        chosen: list[tuple[float, int, int]] = [scored[0]]
        seen_text = {display_text(sents[scored[0][1]].text).lower()}
        floor = max(best * p.keep_ratio, p.min_keep)
        if strict:
            # A number asked about ("after 10 years") must be in a sentence good enough to be shown.
            shown = " ".join(sents[row].text for score, row, _ in scored if score >= floor)
            missing = missing_numbers(question, shown)
            if missing:
                return Composition([], best, tuple(missing))
        for cand in scored[1:]:
            if len(chosen) >= p.max_sentences or cand[0] < floor:
                break
            if self._redundant(sents, vecs, cand[1], chosen, seen_text):
                continue
            chosen.append(cand)
            seen_text.add(display_text(sents[cand[1]].text).lower())
        if len(chosen) == 1:
            extra = self._neighbour(sents, vecs, scored, chosen[0], p.min_keep * 0.85, seen_text)
            if extra is not None:
                chosen.append(extra)
        return Composition(self._in_order(sents, chosen, hits), best)

    def _names_topic(self, query: Query, judging: list[str]) -> bool:
        """Whether the question, besides its describing words, names something narrower than what every document
        is about ('is the pump waterproof?' names the pump; 'is blinatumomab expensive?' only the assistant's topic)."""
        skip = {stem(w) for w in judging} | self.words.filler
        synonyms = self.words.synonyms or {}

        def idf(t: str) -> float:  # a family word is as telling as the documents' word for it ('leukaemia')
            return min([self.idf(t), *(self.idf(a) for a in tokenize(synonyms.get(t, "")))])

        return any(idf(t) > self.params.topic_idf for t in query.terms if t not in skip)

    def _with_own_documents(self, entry: Composition, query: Query, hits: list[Hit],
                            said: frozenset[str], wanted: list[tuple[re.Pattern[str], float]] | None = None,
                            ) -> Composition:
        """The entry's answer, then the best sentence of a document without entries (a hospital's own leaflet,
        an article) when it answers the question about as well: the family sees what their own hospital says."""
        p = self.params
        own = [h for h in hits if not h.chunk.keys]
        if not own or p.own_document_sentences <= 0:
            return entry
        said = said | {_said_key(st.text) for st in entry.statements}
        sents, vecs, scored = self._score_sentences(query, own, said, wanted)
        chosen: list[tuple[float, int, int]] = []
        for cand in scored:
            if cand[0] < p.own_document_min or len(chosen) >= p.own_document_sentences:
                break
            # Shown even when the entry says much the same: the entry speaks of hospitals in general ('about every
            # 7 days'), the family's own hospital of what it does ('once a week'), and a family acts on the latter.
            if self._redundant(sents, vecs, cand[1], chosen, set()):
                continue
            chosen.append(cand)
        if not chosen:
            return entry
        return replace(entry, statements=[*entry.statements, *self._in_order(sents, chosen, own)])

    def _score_sentences(self, query: Query, hits: list[Hit], said: frozenset[str] = frozenset(),
                         wanted: list[tuple[re.Pattern[str], float]] | None = None,
                         ) -> tuple[list[Sentence], np.ndarray, list[tuple[float, int, int]]]:
        """Every statement of the passages scored against the question: (score, sentence row, hit rank), best first.

        `wanted`: the question's answer patterns (`QuestionWords.answer_patterns`), if the caller has them already."""
        p = self.params
        query_vector = query.vector
        q_tokens, c_tokens = list(query.terms), query.context_terms
        if wanted is None:
            wanted = self.words.answer_patterns(query.question)
        scored: list[tuple[float, int, int]] = []  # (score, sentence row, hit rank)
        sents, vecs = self.index.sentences_of([h.chunk.chunk_id for h in hits])
        rows_by_chunk: dict[str, list[int]] = {}
        for row, sent in enumerate(sents):
            rows_by_chunk.setdefault(sent.chunk_id, []).append(row)
        for rank, hit in enumerate(hits):
            for row in rows_by_chunk.get(hit.chunk.chunk_id, []):
                sent = sents[row]
                if not _is_statement(sent.text) or _said_key(sent.text) in said:
                    continue
                cos = float(vecs[row] @ query_vector)
                kw = self.keyword_overlap(q_tokens, sent.text, c_tokens)
                score = p.w_sentence * cos + p.w_keywords * kw + p.w_passage * hit.dense
                score += sum(bonus for pattern, bonus in wanted if pattern.search(sent.text))
                score -= p.w_hard * max(0.0, sent.grade - self.plain_from)
                scored.append((score, row, rank))
        scored.sort(key=lambda x: -x[0])
        return sents, vecs, scored

    def _redundant(self, sents: list[Sentence], vecs: np.ndarray, row: int, chosen: list[tuple[float, int, int]],
                   seen_text: set[str]) -> bool:
        if display_text(sents[row].text).lower() in seen_text:
            return True
        vec = vecs[row]
        return any(float(vec @ vecs[c[1]]) >= self.params.redundancy
                   or (float(vec @ vecs[c[1]]) >= self.params.near_copy
                       and near_copy(sents[row].text, sents[c[1]].text, self.params.near_copy_words))
                   for c in chosen)

    def _neighbour(self, sents: list[Sentence], vecs: np.ndarray, scored, first, floor: float, seen_text: set[str]):
        """A second sentence next to the first in the same passage, so the answer has some context."""
        sent = sents[first[1]]
        for cand in scored[1:]:
            other = sents[cand[1]]
            if cand[0] < floor:
                break
            if other.chunk_id == sent.chunk_id and abs(other.position - sent.position) <= 2 \
                    and not self._redundant(sents, vecs, cand[1], [first], seen_text):
                return cand
        return None

    def _in_order(self, sents: list[Sentence], chosen: list[tuple[float, int, int]], hits: list[Hit]) -> list[Statement]:
        """Passages in the order of their best sentence; sentences of one passage in reading order."""
        groups: dict[str, list[tuple[float, int, int]]] = {}
        for item in chosen:  # `chosen` is best-first, so group order follows the best sentence
            groups.setdefault(sents[item[1]].chunk_id, []).append(item)
        out: list[Statement] = []
        by_place = {(s.chunk_id, s.position): i for i, s in enumerate(sents)}
        for items in groups.values():
            keep: dict[int, tuple[float, int]] = {}
            for score, row, rank in items:
                # A sentence that leans on the one before it is shown with that sentence, or not at all.
                chain, cur = [row], row
                while self._leaning is not None and self._leaning.match(sents[cur].text):
                    prev = by_place.get((sents[cur].chunk_id, sents[cur].position - 1))
                    if prev is None:
                        chain = []
                        break
                    chain.append(prev)
                    cur = prev
                for r in chain:
                    keep.setdefault(r, (score, rank))
            rows = [(score, r, rank) for r, (score, rank) in keep.items()]
            for score, row, rank in sorted(rows, key=lambda x: sents[x[1]].position):
                text = sents[row].text
                out.append(Statement(text=display_text(text), quote=" ".join(text.split()), hit=hits[rank], score=score))
        return out
