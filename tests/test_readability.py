"""The reading grade (bot/readability.py) written out by textstat's rules equals textstat's own, without NLTK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from bot.readability import reading_grade, textstat_grade
from bot.sentences import split_sentences

PROJECT = Path(__file__).resolve().parent.parent


def _texts() -> list[str]:
    texts = ["", "!!!", "OK.", "Hi. Hello there. Yes.", "Don't 'quote' it, they'd said; we've gone.",
             "Temp 39.5°C at 3 a.m. — call 999!", "A naïve café-au-lait spot (2 cm) on the left-hand side.",
             "Blinatumomab is given as a continuous intravenous infusion for 28 days.", "word " * 40,
             "What?! Really... yes", "MRD-negative after induction: 93.3 % (n = 30)."]
    for path in sorted((PROJECT / "knowledge").glob("*.md")):
        body = path.read_text()
        texts.append(body[:3000])
        texts += [body[a:b] for a, b in split_sentences(body)]
    seeds = PROJECT.parent / "shared" / "seeds"  # news articles: long sentences, quotes, numbers
    for path in sorted((seeds if seeds.is_dir() else Path("/work/shared/seeds")).glob("*.txt")):
        body = path.read_text(errors="replace")
        texts += [body[a:b] for a, b in split_sentences(body)]
    for path in sorted((PROJECT / "evals" / "cases" / "dev").rglob("*.yaml")):
        if not path.name.startswith("_"):
            texts += [str(c["question"]) for c in yaml.safe_load(path.read_text()) or []
                      if isinstance(c, dict) and c.get("question")][:200]
    return texts


def test_the_grade_equals_textstats_on_every_sentence_of_the_knowledge_base_and_the_dev_questions():
    texts = _texts()
    assert len(texts) > 2000
    differ = [(t, reading_grade(t), textstat_grade(t)) for t in texts if reading_grade(t) != textstat_grade(t)]
    assert not differ, differ[:5]


def test_a_grade_imports_neither_textstat_nor_nltk():
    code = ("import sys\nfrom bot.readability import reading_grade\n"
            "g = reading_grade('Parents can ask the ward for a parking permit for the whole stay.')\n"
            "print(round(g, 2), 'nltk' in sys.modules, 'textstat' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.split()[1:] == ["False", "False"]
