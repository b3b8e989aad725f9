"""Hybrid retrieval (Chroma dense + BM25 keywords, fused by reciprocal rank) and the follow-up resolver."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from bot.documents import Chunk
from bot.embed import Embedder
from bot.query import Query
from bot.schema import Turn
from bot.sentences import sentences
from bot.settings import RetrievalSettings
from bot.spelling import Speller
from bot.store import Index
from bot.words import STOPWORDS, TOKENIZER_VERSION, stem, stop_words, tokenize  # noqa: F401  (also imported from here)


@dataclass(frozen=True)
class AnswerType:
    """A kind of question and the kind of sentence that answers it."""

    name: str
    question: re.Pattern[str]
    answer: re.Pattern[str]
    bonus: float
    unless: re.Pattern[str] | None = None  # a question that also matches this is not of this kind
    required: bool = False  # only a sentence of this kind answers it (a phone number, news of this week)
    entry_needs: bool = True  # an entry with no sentence of this kind is not given whole (False: a reason may be unsaid)
    same_figure: bool = False  # a short follow-up of this kind asks for the figure just given, for another group


@dataclass(frozen=True)
class QuestionWords:
    """Filler words, family-word synonyms and answer types (from prompts/questions.yaml), keys stemmed."""

    filler: frozenset[str] = frozenset()
    synonyms: dict[str, str] | None = None
    answer_types: tuple[AnswerType, ...] = ()
    spellings: frozenset[str] = frozenset()  # the file's words as written: typo correction may correct to them
    hedges: tuple[str, ...] = ()  # words and phrases that say nothing about what is asked ('honestly', 'pls')
    describing: re.Pattern[str] | None = None  # endings of describing words ('-less', '-ly'): never a topic
    outcome: re.Pattern[str] | None = None  # how babies fare (survive, relapse, outlook): questions.yaml `outcome`

    def about_outcome(self, *texts: str) -> bool:
        """Whether a question or an answer speaks of how babies fare (True when no `outcome` pattern is given)."""
        return self.outcome is None or any(self.outcome.search(t) for t in texts)

    def plain(self, question: str) -> str:
        """The question without its hedges ('honestly is it worth it' -> 'is it worth it'): they carry no topic, yet
        pull its meaning away from the entry and the sentences that answer it. Unchanged if nothing would be left."""
        if not self.hedges:
            return question
        out = re.sub(r"(?i)(?<![\w'])(?:" + "|".join(re.escape(h) for h in self.hedges) + r")(?![\w'])[,!.]?\s*", "",
                     question)
        out = " ".join(out.split())
        return out if re.search(r"[A-Za-z]{2}", out) else question

    def answer_patterns(self, question: str) -> list[tuple[re.Pattern[str], float]]:
        """Patterns a good answer sentence to this question would match, with their bonus."""
        return [(t.answer, t.bonus) for t in self.answer_types
                if t.question.search(question) and not (t.unless is not None and t.unless.search(question))]

    def entry_patterns(self, question: str) -> list[re.Pattern[str]]:
        """Patterns of the kinds of answer this question asks for that a knowledge entry must contain to be given."""
        return [t.answer for t in self.answer_types if t.entry_needs and t.question.search(question)
                and not (t.unless is not None and t.unless.search(question))]

    def asks_same_figure(self, question: str) -> bool:
        """Whether the question asks for a figure already given, for another group ('and without it?')."""
        return any(t.same_figure and t.question.search(question) and not (t.unless is not None and t.unless.search(question))
                   for t in self.answer_types)

    def required_kinds(self, question: str) -> list[AnswerType]:
        """Kinds of answer this question cannot do without: with no sentence of the kind, the sources do not answer it."""
        return [t for t in self.answer_types if t.required and t.question.search(question)
                and not (t.unless is not None and t.unless.search(question))]

    def expand(self, question: str) -> str:
        """The question with the document words for any family words in it ('chemo' -> 'chemotherapy')."""
        extra = [self.synonyms[t] for t in dict.fromkeys(tokenize(question)) if self.synonyms and t in self.synonyms]
        return f"{question} ({'; '.join(extra)})" if extra else question


# A child's own weight, length or age ('my 7kg son', 'a 9 month old') describes the child: it is neither a figure
# asked for nor a topic word the documents must use.
CHILD_MEASURE = re.compile(r"\b(\d+(?:[.,]\d+)?)\s*(?:kg|kilos?|g|grams?|lbs?|pounds?|oz|cm|"
                           r"(?:days?|weeks?|months?|mo)[\s-]*old)\b", re.I)


class Vocabulary:
    """The words the indexed documents use: their stems (is a question's word covered?) and their spellings
    (typo correction, towards these and the words of prompts/)."""

    def __init__(self, stems: set[str] | frozenset[str], spellings: Mapping[str, int] | Iterable[str] = (),
                 words: QuestionWords | None = None) -> None:
        self.stems = frozenset(stems)
        words = words or QuestionWords()
        counts = dict(spellings) if isinstance(spellings, Mapping) else dict.fromkeys(spellings, 1)
        for w in (*words.spellings, *STOPWORDS):
            counts.setdefault(w, 0)
        # Another form of a word we know ('babys', 'worrying') is not a typo: it meets that word once stemmed.
        known_stems = self.stems | words.filler | frozenset(words.synonyms or ())
        self.speller = Speller(counts, same_word=lambda w: stem(w) in known_stems)

    def correct_text(self, text: str) -> str:
        """The text with misspelt words replaced by the documents' spelling ('blinatumomob' -> 'blinatumomab')."""
        return self.speller.correct_text(text)

    def uncovered(self, question_words: Sequence[str], words: QuestionWords) -> list[str]:
        """Content words of an already spell-corrected question (as written) that no document uses, in any
        form (same stem) or through a synonym. A describing word ('pricey', 'meaningless', 'equally': its ending
        says so) judges the topic rather than naming one, so it is not counted."""
        out = []
        for w in question_words:
            t = stem(w)
            if t in words.filler or t in self.stems:
                continue
            if words.describing is not None and words.describing.search(w):
                continue
            if len(w) <= 3 and not w[0].isdigit():
                continue  # too short to carry a question: chat spelling ('wat', 'pls') or a slip
            alternatives = tokenize((words.synonyms or {}).get(t, ""))
            if alternatives and any(a in self.stems for a in alternatives):
                continue
            out.append(w)
        return out

    def judging(self, question_words: Sequence[str], words: QuestionWords) -> list[str]:
        """The describing words of a question that no document uses ('expensive', 'contagious', 'reliable'): they
        do not count as a missing topic (`uncovered`), yet they are what is asked about, so an answer must show
        it meets them (composer: a reviewed entry asked that way, or the rest of the question naming a topic)."""
        if words.describing is None:
            return []
        return [w for w in question_words if words.describing.search(w) and stem(w) not in words.filler
                and stem(w) not in self.stems
                and not any(a in self.stems for a in tokenize((words.synonyms or {}).get(stem(w), "")))]


@dataclass(frozen=True)
class Hit:
    """A passage found for a query, with the fused score and its dense similarity."""

    chunk: Chunk
    score: float
    dense: float


class Retriever(Protocol):
    """Anything that returns the best passages for a query, best first."""

    def retrieve(self, query: Query | str, k: int) -> list[Hit]: ...


class HybridRetriever:
    """Dense passage search in Chroma, dense sentence search and BM25, fused by reciprocal rank fusion."""

    def __init__(self, index: Index, embedder: Embedder, params: RetrievalSettings | None = None) -> None:
        """`params`: the weights and limits of Settings.retrieval (each field is described there)."""
        p = params or RetrievalSettings()
        self.index = index
        self.embedder = embedder
        # At most this many passages of one document among the k returned (more only if k is not filled
        # otherwise), and places kept for passages of documents without entries (a hospital's own leaflet, an
        # article): the entries' question keys raise every entry above them, so without these a document
        # with many close entries (ours) crowds out the best passage of every other relevant document.
        self.per_doc_max = p.per_doc_max
        self.own_slots = p.own_slots
        self.key_pin = p.key_pin  # an entry key this close to the query is always among the passages handed on
        self.key_weight = p.key_weight  # knowledge entries found by their question and phrasings
        # ... only when a phrasing is close to the question: the 20 nearest keys of an unrelated question
        # would otherwise outrank every document without entries (a hospital's own leaflets).
        self.key_min = p.key_min
        self.sentence_weight = p.sentence_weight  # the sentence list counts half as much as each passage list
        self.candidate_k = p.candidate_k
        self.rrf_k = p.rrf_k
        self.dedupe_threshold = p.dedupe_threshold

    def idf(self, token: str) -> float:
        """How telling a word is: rare words weigh more; words the corpus never uses weigh most."""
        return max(self.index.idf(token), 0.05)

    def retrieve(self, query: Query | str, k: int) -> list[Hit]:
        """The best k passages for a prepared Query (its vector and keywords), or for a plain text."""
        if not self.index.chunk_count:
            return []
        if isinstance(query, str):
            query = Query(raw=query, text=query, embedder=self.embedder)
        qvec = query.vector
        dense = self.index.dense_chunks(qvec, self.candidate_k)
        fused: dict[str, float] = {}
        for rank, (cid, _) in enumerate(dense):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (self.rrf_k + rank + 1)
        # Best single sentences, too: a passage whose one sentence answers the question ranks even when
        # the rest of it is about something else (long news paragraphs).
        seen: set[str] = set()
        for _, cid, _ in self.index.dense_sentences(qvec, self.candidate_k * 3):
            if cid in seen:
                continue
            fused[cid] = fused.get(cid, 0.0) + self.sentence_weight / (self.rrf_k + len(seen) + 1)
            seen.add(cid)
            if len(seen) >= self.candidate_k:
                break
        # Knowledge entries whose question or "also asked as" phrasings are closest to the query.
        keys = query.nearest_keys(self.index, self.candidate_k)
        close = [cid for cid, sim in keys if sim >= self.key_min]
        # The entry whose question or phrasing is nearly the question itself is always handed on (the rank
        # fusion alone could leave it behind three passages of its own document).
        pinned = keys[0][0] if keys and keys[0][1] >= self.key_pin else None
        for rank, cid in enumerate(close):
            fused[cid] = fused.get(cid, 0.0) + self.key_weight / (self.rrf_k + rank + 1)
        tokens = list(query.keyword_terms)  # spelled once, when the Query was prepared
        if tokens:
            for rank, (cid, _) in enumerate(self.index.keyword_chunks(tokens, self.candidate_k)):
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (self.rrf_k + rank + 1)
        dense_sim = dict(dense)
        ranked = sorted(fused.items(), key=lambda kv: -kv[1])
        chunks = self.index.chunks(cid for cid, _ in ranked)
        chosen = self._select(ranked, chunks, k, pinned)
        missing = [cid for cid, _ in chosen if cid not in dense_sim]
        vectors = self.index.chunk_vectors(missing) if missing else {}
        return [Hit(chunk=chunks[cid], score=score,
                    dense=dense_sim[cid] if cid in dense_sim else float(vectors[cid] @ qvec))
                for cid, score in chosen]


    def _select(self, ranked: list[tuple[str, float]], chunks: dict[str, Chunk], k: int,
                pinned: str | None = None) -> list[tuple[str, float]]:
        """The k passages handed on, best first: no near-copies, at most `per_doc_max` of one document and up to
        `own_slots` for the best passages of documents without entries (when any was found)."""
        fresh: list[tuple[str, float]] = []
        for cid, score in ranked:
            if cid not in chunks:
                continue
            shingles = _shingles(chunks[cid].text)
            if any(_jaccard(shingles, _shingles(chunks[c].text)) >= self.dedupe_threshold for c, _ in fresh):
                continue  # a near-copy of a passage already chosen adds nothing
            fresh.append((cid, score))
        capped: list[tuple[str, float]] = []
        over_cap: list[tuple[str, float]] = []
        per_doc: dict[str, int] = {}
        for cid, score in fresh:
            doc = chunks[cid].doc_id
            per_doc[doc] = per_doc.get(doc, 0) + 1
            (capped if per_doc[doc] <= self.per_doc_max else over_cap).append((cid, score))
        capped += over_cap  # few documents: their further passages fill the places left, best first
        own = [item for item in capped if not chunks[item[0]].keys][:min(self.own_slots, k)]
        first = [item for item in capped if item[0] == pinned and item not in own][:1]
        chosen = own + first + [item for item in capped if item not in own and item not in first][:k - len(own) - len(first)]
        return sorted(chosen, key=lambda kv: -kv[1])


@lru_cache(maxsize=4096)
def _shingles(text: str, n: int = 3) -> frozenset[str]:
    """The passage's word n-grams, each joined by one space: the same sets as tuples of words would give
    (a word has no space in it), but a string keeps its hash, so comparing two sets hashes nothing again."""
    words = re.findall(r"\w+", text.lower())
    return frozenset(" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1)))


def _jaccard(a: frozenset, b: frozenset) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)  # |a | b| without building the union


# ---------------------------------------------------------------- follow-up questions


@dataclass(frozen=True)
class FollowUpRules:
    """Words that mark a question as leaning on the conversation (from prompts/followup.yaml)."""

    pronouns: frozenset[str]
    openers: tuple[str, ...]
    max_words: int
    default_topic: str = ""  # what 'it' means in a first message that the sources did not answer as it stands
    pointers: frozenset[str] = frozenset()  # words that point at the last thing said ('where is that?'), not the topic
    short_openers: tuple[str, ...] = ()  # question words that lean back only in a short question ('why?', 'how long for?')
    determiners: frozenset[str] = frozenset()  # 'this', 'those': they name their own noun in a question with a topic
    own_topic_words: int = 0  # topic words (not filler) that make a question with a determiner stand alone (0: never)
    filler: frozenset[str] = frozenset()  # stems of words with no topic of their own (questions.yaml filler_words)


def is_follow_up(question: str, rules: FollowUpRules) -> bool:
    """True when the question points back ('it', 'that', 'and what about...') or has no topic word of its own."""
    q = question.strip().lower()
    words = re.findall(r"[a-z']+", q)
    if not words:
        return False
    if any(q.startswith(o) for o in (*rules.openers, *rules.short_openers)):
        return True
    if any(w in rules.pronouns for w in words):
        return True
    return not tokenize(q) and len(words) <= rules.max_words  # "how long?", "why?", "what else?"


def stands_alone(question: str, rules: FollowUpRules) -> bool:
    """Whether a question that looks like a follow-up asks its own thing after another question of the family's.

    Its only sign of leaning back is a question word at its start in more than `max_words` words ('why do babies
    do worse than older children?', not 'why?'), or 'this', 'that', 'these' or 'those' in a question with at least
    `own_topic_words` topic words of its own ('why do babies do worse with this leukemia?', not 'how is that
    measured?', nor 'did those babies survive longer?'). 'It', 'they', 'them' and openers such as 'and', 'what
    about' always lean back. (Within one message, a later part still leans on the part before it: `is_follow_up`.)"""
    q = question.strip().lower()
    words = re.findall(r"[a-z']+", q)
    if not words or any(q.startswith(o) for o in rules.openers):
        return False
    pointing = {w for w in words if w in rules.pronouns}
    if not pointing:
        return len(words) > rules.max_words and bool(tokenize(q))
    if not rules.own_topic_words or not pointing <= rules.determiners:
        return False
    own = [t for t in tokenize(q) if t not in rules.filler]
    return len(own) >= rules.own_topic_words


_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b(?:[A-Z][\w-]*[A-Z0-9][\w-]*|[A-Z][a-z][\w-]*)")


def without_markers(text: str) -> str:
    """An answer's text without its citation markers ('[1]', '[2, 3]')."""
    return re.sub(r"\s*\[\d+(?:\s*,\s*\d+)*\]", "", text)


def answer_names(text: str, max_sentences: int = 2) -> list[str]:
    """Names the assistant said in the opening sentences of its answer ('Princess Maxima Center', 'CRS'): what
    'that' or 'there' in the next question may point at though the family never typed it."""
    out: list[str] = []
    for sentence in sentences(without_markers(text))[:max_sentences]:
        out += [m.group() for m in _NAME.finditer(sentence.strip()) if m.group().lower() not in STOPWORDS]
    return list(dict.fromkeys(out))


def leans_on_answer(question: str, rules: FollowUpRules, same_figure: bool = False) -> bool:
    """Whether a follow-up leans on what the assistant said last, not only on what the family asked: it points at it
    ('where is that?'), or, in a few words, asks for the figure just given for another group (`same_figure`: 'and
    without it?' after 'what was the survival?': the answer says which survival figure was given)."""
    words = re.findall(r"[a-z']+", question.lower())
    return bool(set(words) & rules.pointers) or (same_figure and is_follow_up(question, rules)
                                                 and len(words) <= rules.max_words)


def answer_words(text: str) -> list[str]:
    """The topic words of the opening sentence of an answer, as written (markers, numbers and stop words left out)."""
    first = (sentences(without_markers(text)) or [""])[0]
    return [w for w in re.findall(r"[A-Za-z][\w-]*", first) if w.lower() not in STOPWORDS]


def follow_up_context(question: str, history: Sequence[Turn], rules: FollowUpRules, same_figure: bool = False) -> str:
    """Topic words of the earlier questions a follow-up leans on, and the names the assistant's last answer
    opened with ('' for a question that stands alone); with `same_figure` (the follow-up asks for the figure just
    given, for another group), the words of that answer's opening sentence."""
    if not is_follow_up(question, rules) or stands_alone(question, rules):
        return ""
    carried: list[str] = []
    asked = set(re.findall(r"[a-z]+", question.lower()))
    for turn in reversed(history):
        if turn.role != "user":
            if not carried and turn is history[-1] and asked & rules.pointers:
                # 'where is that?' after '... the Princess Maxima Center.': 'that' points at what was said last ('it'
                # goes on with the family's own topic)
                carried = answer_names(turn.content)
            elif not carried and turn is history[-1] and leans_on_answer(question, rules, same_figure):
                # 'and without it?' after an answer on overall survival: what was answered says which figure the
                # family means, where their question ('what was the survival?') may fit several.
                carried = [w for w in answer_words(turn.content) if w.lower() not in rules.pronouns]
            continue
        words = [w for w in re.findall(r"[A-Za-z0-9][\w-]*", turn.content) if w.lower() not in STOPWORDS
                 and w.lower() not in rules.pronouns]
        carried = words + carried
        if not is_follow_up(turn.content, rules):
            break
    return " ".join(dict.fromkeys(carried))


# ---------------------------------------------------------------- LangChain interface


def as_langchain_retriever(retriever: Retriever, k: int = 5):
    """Our retriever as a LangChain `BaseRetriever` (a Runnable), for use in LangChain chains."""
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class _HybridLangChainRetriever(BaseRetriever):
        """Hybrid dense + BM25 passages as LangChain Documents, with citation metadata."""

        def _get_relevant_documents(self, query: str, *, run_manager=None) -> list[Document]:  # noqa: ARG002
            return [
                Document(
                    page_content=h.chunk.text,
                    id=h.chunk.chunk_id,
                    metadata={
                        "doc_id": h.chunk.doc_id, "title": h.chunk.title, "section": h.chunk.section,
                        "source": h.chunk.source, "url": h.chunk.url, "start": h.chunk.start,
                        "score": h.score,
                    },
                )
                for h in retriever.retrieve(query, k)
            ]

    return _HybridLangChainRetriever()


# ---------------------------------------------------------------- multi-part questions

_QUESTION_WORDS = (r"(?:what|what'?s|which|how|when|where|who|whom|whose|why|is|are|was|were|did|does|do|can|could|"
                   r"will|would|should|has|have|had)")
_PART_BREAK = re.compile(
    r"\?\s+(?=\S)"                                             # "...given? How long ..."
    r"|[,;]?\s+(?:and|also|plus)\s+(?=(?:(?:in|at|for|from|on|of|with|to)\s+)?" + _QUESTION_WORDS + r"\b)"
    r"|;\s+", re.I)
# A second question after a comma ('how long is the drip, was it given more than once?'); split there only when what
# comes before the comma asks too ('if she gets a fever, what do I do?' is one question).
_COMMA_QUESTION = re.compile(r",\s+(?=" + _QUESTION_WORDS + r"\b)", re.I)
_ASKS = re.compile(r"^\W*(?:(?:and|so|but|also|then|plus|ok|okay|well)\W+)?" + _QUESTION_WORDS + r"\b", re.I)


def asks(text: str) -> bool:
    """Whether a sentence or a part of one asks something: it ends with '?' or opens as a question does."""
    return text.rstrip().endswith("?") or bool(_ASKS.match(text))


def question_parts(question: str, max_parts: int = 3) -> tuple[list[str], str]:
    """The parts of a message that asks several things, and what it says before its questions.

    'My boy is 4 months. How many babies were treated and over which years?' -> (['How many babies were treated',
    'over which years?'], 'My boy is 4 months.'): the news before the questions is no part of either (its numbers
    are not figures asked for), though a part that points back ('how long does it run?') may lean on its words.
    A part must carry a word of its own; otherwise the message is left whole (one part, no preamble). At most
    `max_parts` parts.
    """
    said = sentences(question.strip(), loose=True)  # families rarely capitalise
    first = next((i for i, s in enumerate(said) if asks(s)), 0)
    preamble, body = " ".join(said[:first]), " ".join(said[first:]) if first else question
    pieces: list[str] = []
    for piece in _PART_BREAK.split(body):
        if not piece or not piece.strip(" ,;?"):
            continue
        bits = _COMMA_QUESTION.split(piece)
        merged = [bits[0]]
        for bit in bits[1:]:
            if asks(merged[-1]) and tokenize(merged[-1]):
                merged.append(bit)
            else:
                merged[-1] = f"{merged[-1]}, {bit}"
        pieces += [p.strip(" ,;") for p in merged if p.strip(" ,;?")]
    if len(pieces) < 2 or any(not tokenize(p) for p in pieces):
        return [question], ""
    return pieces[:max_parts], preamble


def trailing_topic(text: str) -> str:
    """The topic words that end a text, as typed: what 'it' in the next part of the question most likely names
    ('how many babies were in the trial' -> 'trial'; 'who ran this blina study' -> 'blina study')."""
    words = re.findall(r"[A-Za-z0-9][\w-]*", text)
    while words and words[-1].lower() in STOPWORDS:
        words.pop()
    run: list[str] = []
    while words and words[-1].lower() not in STOPWORDS:
        run.insert(0, words.pop())
    return " ".join(run)


def topic_words(text: str) -> str:
    """The words of a text that carry a topic (stop words dropped), as typed."""
    return " ".join(w for w in re.findall(r"[A-Za-z0-9][\w-]*", text) if w.lower() not in STOPWORDS)
