"""Checks on the shipped knowledge/ documents: front matter, numbers, no copying, coverage."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]
KNOWLEDGE_DIR = PROJECT_DIR / "knowledge"
# The seed articles sit beside the project (../shared/seeds); a git worktree one level deeper finds them too.
SEEDS_DIR = next((p / "shared" / "seeds" for p in Path(__file__).resolve().parents[2:4]
                  if (p / "shared" / "seeds").is_dir()), Path(__file__).resolve().parents[2] / "shared" / "seeds")

# Documents whose numbers must all be traceable to the seed articles about the study.
STUDY_DOCS = [
    "the-2023-study",
    "study-results",
    "side-effects-and-safety",
    "how-blinatumomab-was-given",
    "limits-of-the-evidence",
    "what-comes-next",
    "infant-all-and-kmt2a",
    "what-is-blinatumomab",
]

NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11",
    "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
    "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
    "twenty": "20", "thirty": "30",
}

FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n(.*)\Z", re.S)
# Digits glued to letters are names (CD19, KMT2A, Interfant-06), not quantities.
NAME_WITH_DIGITS = re.compile(r"\b[A-Za-z]+[-/]?\d+[A-Za-z\d]*\b|\b\d+[A-Za-z]+\w*\b")
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def knowledge_files() -> list[Path]:
    """Every Markdown document in knowledge/."""
    return sorted(KNOWLEDGE_DIR.glob("*.md"))


def split_doc(path: Path) -> tuple[dict, str]:
    """Front matter (as a dict) and body of one knowledge document."""
    match = FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    assert match, f"{path.name}: no front matter block between '---' lines"
    meta = yaml.safe_load(match.group(1))
    assert isinstance(meta, dict), f"{path.name}: front matter is not a mapping"
    return meta, match.group(2)


def numbers_in(text: str) -> set[str]:
    """Quantities in a text, normalised ("93.3%" -> "93.3", "nine" -> "9", "1,000" -> "1000")."""
    text = NAME_WITH_DIGITS.sub(" ", text)
    found = {n.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+", n) else n.replace(",", ".")
             for n in NUMBER.findall(text)}
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in NUMBER_WORDS:
            found.add(NUMBER_WORDS[word])
    return {n.rstrip(".") for n in found}


def words(text: str) -> list[str]:
    """Lower-case words with punctuation dropped, for n-gram comparison."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower().replace("’", "'"))


def ngrams(tokens: list[str], n: int = 8) -> set[tuple[str, ...]]:
    """All word n-grams of a token list."""
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def seed_texts() -> dict[str, str]:
    """The seed articles by file name; skips the test when they are not present."""
    files = sorted(SEEDS_DIR.glob("*.txt")) if SEEDS_DIR.is_dir() else []
    if not files:
        pytest.skip(f"seed articles not found at {SEEDS_DIR} (they live outside the repository)")
    return {f.name: f.read_text(encoding="utf-8") for f in files}


def test_there_are_enough_documents() -> None:
    assert len(knowledge_files()) >= 8


@pytest.mark.parametrize("path", knowledge_files(), ids=lambda p: p.stem)
def test_front_matter_is_complete(path: Path) -> None:
    meta, body = split_doc(path)
    assert meta.get("id") == path.stem, f"{path.name}: id {meta.get('id')!r} must equal the file name"
    assert isinstance(meta.get("title"), str) and meta["title"].strip(), f"{path.name}: missing title"
    assert isinstance(meta.get("reviewed"), dt.date), f"{path.name}: 'reviewed' must be a YYYY-MM-DD date"
    sources = meta.get("sources")
    assert isinstance(sources, list) and sources, f"{path.name}: needs at least one source"
    for source in sources:
        assert str(source.get("citation", "")).strip(), f"{path.name}: a source has no citation"
        assert source.get("url") or source.get("doi"), f"{path.name}: source {source['citation']!r} has no url or doi"
    assert body.lstrip().startswith(f"# {meta['title']}"), f"{path.name}: body must start with '# <title>'"
    assert re.search(r"^## .+\?\s*$", body, re.M), f"{path.name}: needs question-style '## ...?' headings"


@pytest.mark.parametrize("path", knowledge_files(), ids=lambda p: p.stem)
def test_body_has_no_html_tables_or_links(path: Path) -> None:
    _, body = split_doc(path)
    assert not re.search(r"<[a-zA-Z/][^>]*>", body), f"{path.name}: HTML in the body"
    assert not re.search(r"^\s*\|.*\|\s*$", body, re.M), f"{path.name}: a table in the body"
    assert not re.search(r"\]\(|https?://", body), f"{path.name}: a link in the body (sources go in front matter)"


def test_study_documents_exist() -> None:
    missing = [d for d in STUDY_DOCS if not (KNOWLEDGE_DIR / f"{d}.md").exists()]
    assert not missing, f"missing study documents: {missing}"


def cited_figures(meta: dict) -> set[str]:
    """Numbers a document's own sources are quoted for in its front matter (`figures`: number -> the source's words)."""
    return {str(n) for s in meta.get("sources") or [] if isinstance(s, dict) for n in (s.get("figures") or {})}


@pytest.mark.parametrize("doc_id", [p.stem for p in knowledge_files()])
def test_every_number_in_the_knowledge_is_in_a_seed_or_a_quoted_source(doc_id: str) -> None:
    # Every document, not only the study ones: a figure in a home-care answer must be checkable too, in the
    # seed articles about the study or in the words of a cited leaflet quoted under that source's `figures`.
    seeds = seed_texts()
    seed_numbers = set().union(*(numbers_in(t) for t in seeds.values()))
    meta, body = split_doc(KNOWLEDGE_DIR / f"{doc_id}.md")
    unverified = sorted(numbers_in(body) - seed_numbers - cited_figures(meta))
    assert not unverified, (f"{doc_id}: numbers found neither in a seed article nor in a source's `figures`: "
                            f"{unverified}")


@pytest.mark.parametrize("path", knowledge_files(), ids=lambda p: p.stem)
def test_cited_figures_quote_their_source(path: Path) -> None:
    # A figure taken from a leaflet is listed under that leaflet with the leaflet's own short words that give it,
    # so a reviewer can find it there; the words must contain the number and stay a short quote.
    meta, body = split_doc(path)
    for source in meta.get("sources") or []:
        for number, quote in (source.get("figures") or {}).items():
            where = f"{path.name} / {source['citation'][:40]!r} / {number!r}"
            assert re.fullmatch(r"\d+(?:\.\d+)?", str(number)), f"{where}: a figure is a plain number"
            assert str(number) in numbers_in(str(quote)), f"{where}: the quoted words do not give the number"
            assert len(str(quote).split()) <= 15, f"{where}: quote at most 15 words of the source"
            assert str(number) in numbers_in(body), f"{where}: listed but not used in the document"


@pytest.mark.parametrize("path", knowledge_files(), ids=lambda p: p.stem)
def test_no_eight_word_run_is_copied_from_a_seed(path: Path) -> None:
    seeds = seed_texts()
    meta, body = split_doc(path)
    # A publication's title, as its own source citation gives it, may be named in full: that is citing, not copying.
    cited = set().union(*(ngrams(words(s.get("citation", ""))) for s in meta.get("sources") or []))
    ours = ngrams(words(body)) - cited
    for name, text in seeds.items():
        shared = ours & ngrams(words(text))
        assert not shared, f"{path.name} shares 8-word runs with {name}: {[' '.join(g) for g in sorted(shared)[:3]]}"


def test_number_normalisation_catches_a_planted_number() -> None:
    # A guard that the number check can fail: an invented figure must not be found in the seeds.
    seeds = seed_texts()
    seed_numbers = set().union(*(numbers_in(t) for t in seeds.values()))
    assert {"93.3", "65.8", "214", "9", "16"} <= seed_numbers
    assert "77.7" not in seed_numbers
    assert numbers_in("CD19 and KMT2A on Interfant-06, 93.3% of nine babies") == {"93.3", "9"}


# ---------------------------------------------------------------- reviewed answer entries

LEANING = PROJECT_DIR / "prompts" / "leaning.yaml"


def leaning_rules() -> dict:
    """The lists in prompts/leaning.yaml: openers, pointing words, pronouns, comparisons, figure owners."""
    return yaml.safe_load(LEANING.read_text(encoding="utf-8"))


def leaning_openers() -> list[str]:
    """The words a sentence must not open with when it has to stand alone (prompts/leaning.yaml)."""
    return [w.lower() for w in leaning_rules()["leaning_openers"]]


def _any_word(words: list[str]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b", re.I)


# Words ending in "s" that are not plural nouns, so they cannot own a "they" (the test's own grammar, not a rule).
_NOT_PLURAL = {"is", "was", "has", "does", "this", "its", "us", "as", "his", "hers", "yes", "less", "always",
               "across", "plus", "thus", "focus", "virus", "serious", "nervous", "means", "sometimes", "perhaps"}
_PLURAL_NOUNS = {"children", "people", "kids"}
_PERSON = re.compile(r"\b(?:Dr|Doctor|Professor|Prof|Mr|Mrs|Ms)\b|\b[A-Z][a-z]+ [A-Z][a-z]+\b|"
                     r"\b(?:mother|father|mum|dad|parent|child|baby|doctor|nurse|leader|sister|brother)\b")


def _has_plural_noun(text: str) -> bool:
    for word in re.findall(r"[a-z']+", text.lower()):
        if word in _PLURAL_NOUNS or (len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "'s"))
                                     and word not in _NOT_PLURAL):
            return True
    return False


def why_sentence_leans(sentence: str, rules: dict) -> str | None:
    """Why a sentence cannot be quoted alone, or None: it opens with a leaning word, points at another
    sentence ("these babies", "said so"), uses a pronoun with no owner in the sentence, makes a comparison
    with one arm, or gives a percentage without saying whose it is (lists in prompts/leaning.yaml)."""
    text = sentence.strip()
    low = text.lower()
    for word in rules["leaning_openers"]:
        if re.match(rf"\W*{re.escape(word.lower())}\b", low):
            return f"opens with {word!r}"
    for match in _any_word(rules["pointing_words"]).finditer(text):
        if not (match.group(0).lower() == "such" and low[match.end():].startswith(" as ")):
            return f"points at another sentence with {match.group(0)!r}"
    for match in _any_word(rules["plural_pronouns"]).finditer(text):
        if not _has_plural_noun(text[:match.start()]):
            return f"{match.group(0)!r} has no plural noun before it in the sentence"
    for match in _any_word(rules["person_pronouns"]).finditer(text):
        if not _PERSON.search(text[:match.start()]):
            return f"{match.group(0)!r} has no person named before it in the sentence"
    arms = _any_word(rules["comparison_arms"])
    for pattern in rules["comparisons"]:
        found = re.search(pattern, text, re.I)
        if found and not arms.search(text):
            return f"compares ({found.group(0)!r}) without the other arm in the same sentence"
    if re.search(r"\d\s?%|per ?cent", text) and not _any_word(rules["figure_owners"]).search(text):
        return "gives a percentage without saying whose it is"
    return None


def entries_of(path: Path) -> list[tuple[str, object, str]]:
    """(heading, Entry or None, section body) for every '## ...' section of a knowledge document."""
    from bot.documents import parse_entry, split_sections

    _, body = split_doc(path)
    out = []
    for heading, start, end in split_sections(body):
        if not heading or body[start:end].lstrip().startswith("#"):
            continue
        level = re.search(rf"^(#+)[ \t]+{re.escape(heading)}[ \t]*$", body, re.M)
        if level and len(level.group(1)) == 1:
            continue  # the document title
        section = body[start:end]
        out.append((heading, parse_entry(heading, section), section))
    return out


# Names a family learns on the first day and cannot be said more simply. Flesch-Kincaid counts their
# syllables as hard words, so the entry grade is measured with each one read as a two-syllable word;
# every other word counts as written.
NAMES_FAMILIES_LEARN = ("Leukemia & Lymphoma Society", "blinatumomab", "leukemia", "leukaemia", "chemotherapy",
                        "immunotherapy", "Interfant-06",
                        "cytokine", "lymphoblastic", "intrathecal", "dexamethasone", "Princess Maxima Center",
                        "Children's Oncology Group", "New England Journal of Medicine", "rearrangement", "KMT2A-rearranged",
                        "overall survival", "disease-free survival", "serious adverse event")


def entry_grade(text: str) -> float:
    """Reading grade of an answer, with the names in NAMES_FAMILIES_LEARN read as a two-syllable word."""
    from bot.readability import reading_grade

    for name in NAMES_FAMILIES_LEARN:
        text = re.sub(re.escape(name), "medsname", text, flags=re.I)
    return reading_grade(text)


def answer_sentences(entry, section: str) -> list[str]:
    from bot.sentences import split_sentences

    text = section[entry.answer_start:entry.answer_end]
    return [text[s:e] for s, e in split_sentences(text)]


@pytest.mark.parametrize("path", knowledge_files(), ids=lambda p: p.stem)
def test_every_section_is_a_reviewed_answer_entry(path: Path) -> None:
    rules = leaning_rules()
    entries = entries_of(path)
    assert entries, f"{path.name}: no entries"
    for heading, entry, section in entries:
        where = f"{path.name} / {heading!r}"
        assert heading.endswith("?"), f"{where}: the heading must be a family's question"
        assert entry is not None, f"{where}: must start with 'Also asked as:' and a list of phrasings"
        assert len(entry.phrasings) >= 5, f"{where}: needs at least 5 'also asked as' phrasings"
        assert all(p.endswith("?") for p in entry.phrasings), f"{where}: each phrasing is a question"
        sentences = answer_sentences(entry, section)
        assert 2 <= len(sentences) <= 5, f"{where}: the answer has {len(sentences)} sentences (2-5)"
        for sent in sentences:
            leaning = why_sentence_leans(sent, rules)
            assert not leaning, f"{where}: {sent.strip()!r} {leaning}, so it cannot stand alone"
            assert not sent.lstrip().startswith(("-", "*")), f"{where}: answers are sentences, not lists"
        grade = entry_grade(" ".join(sentences))
        assert grade <= 7.0, f"{where}: reading grade {grade:.1f} (at most 7)"


def test_entry_parser_separates_phrasings_from_the_answer() -> None:
    from bot.documents import SourceDocument, chunk_document

    text = ("# T\n\n## How long is the drip?\nAlso asked as:\n- How long does it run?\n- Drip length?\n\n"
            "The drip ran for 4 weeks. The drip ran day and night.\n\n## Plain section\nJust text here.\n")
    doc = SourceDocument(doc_id="d", title="T", text=text, source="s", url=None, path="/x")
    entry_chunk, plain = chunk_document(doc)
    assert entry_chunk.keys == ("How long is the drip?", "How long does it run?", "Drip length?")
    assert entry_chunk.text == "The drip ran for 4 weeks. The drip ran day and night."
    assert text[entry_chunk.start:entry_chunk.end] == entry_chunk.text
    assert plain.keys == () and plain.text == "Just text here."


@pytest.mark.parametrize("sentence", [
    "They also had fewer infections.",                      # leaning opener
    "Chemo cured only about half of these babies.",          # points at another sentence
    "About 90% of relapses happen in those first 2 years.",  # points at another sentence
    "The Princess Maxima Center said so.",                   # points at another sentence
    "The team compared them with earlier babies.",           # pronoun with no owner
    "In 1999, his team began a group of 25 countries.",      # person pronoun with no person
    "Far fewer babies on blinatumomab had a relapse.",       # comparison with one arm
    "About 82% were alive without a relapse.",               # percentage with no owner
])
def test_the_standalone_check_catches_a_leaning_sentence(sentence: str) -> None:
    assert why_sentence_leans(sentence, leaning_rules())


@pytest.mark.parametrize("sentence", [
    "In the 2023 study, 18% of the babies on blinatumomab had a relapse or died of it, against 51% with chemo alone.",
    "Professor Rob Pieters said his team began the Interfant group in 1999.",
    "Wear gloves for nappies, such as when you wipe up wee or poo.",
    "Parents can ask the care team what their baby's tests mean.",
])
def test_the_standalone_check_passes_a_sentence_that_names_its_subject(sentence: str) -> None:
    assert why_sentence_leans(sentence, leaning_rules()) is None
