"""The on-disk cache (bot/cache.py): vectors of fixed example lists and the fitted red-flag classifier
are read back at the next start instead of recomputed, and a start that finds them imports no scikit-learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot import triage_model
from bot.cache import ArrayCache, cached_vectors, digest
from bot.triage_model import RedFlagClassifier, fitted_classifier

PROJECT = Path(__file__).resolve().parent.parent


def _toy_set(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = {"fever": rng.normal(size=16), "breathing": rng.normal(size=16), "none": rng.normal(size=16)}
    labels = [c for c in centres for _ in range(12)]
    vectors = np.vstack([centres[c] + 0.3 * rng.normal(size=16) for c in labels]).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def test_digest_separates_parts():
    assert digest(["ab", "c"]) != digest(["a", "bc"])
    assert digest(["a", b"b"]) == digest(["a", "b"])


def test_array_cache_round_trip_and_unreadable_file(tmp_path):
    cache = ArrayCache(tmp_path)
    cache.save("vectors", "k1", {"vectors": np.eye(3, dtype=np.float32)})
    assert np.array_equal(cache.load("vectors", "k1")["vectors"], np.eye(3))
    (tmp_path / "vectors-k2.npz").write_bytes(b"not an npz file")
    assert cache.load("vectors", "k2") is None  # a damaged entry is recomputed, not an error
    assert ArrayCache(None).load("vectors", "k1") is None


def test_cached_vectors_embed_once(tmp_path):
    class Counting:
        model_path = "toy"
        calls = 0

        def encode(self, texts):
            Counting.calls += 1
            return np.ones((len(texts), 4), dtype=np.float32)

    texts = ["a", "b", "c"]
    first = cached_vectors(texts, Counting(), tmp_path)
    second = cached_vectors(texts, Counting(), ArrayCache(tmp_path))
    assert Counting.calls == 1 and np.array_equal(first, second)
    cached_vectors([*texts, "d"], Counting(), tmp_path)  # other texts: another entry
    assert Counting.calls == 2


def test_fitted_classifier_is_read_back_without_fitting(tmp_path, monkeypatch):
    vectors, labels = _toy_set()
    cache = ArrayCache(tmp_path)
    fitted = fitted_classifier(vectors, labels, cache)
    assert len(list(tmp_path.glob("triage-classifier-*.npz"))) == 1

    def no_fit(*_a, **_k):
        raise AssertionError("refitted although the weights are on disk")

    monkeypatch.setattr(triage_model, "_model", no_fit)
    again = fitted_classifier(vectors, labels, cache)
    assert again.classes == fitted.classes
    for row in vectors[::5]:
        assert again.probabilities(row[None]) == fitted.probabilities(row[None])
    # Other examples, labels or model version: not the stored weights.
    with pytest.raises(AssertionError):
        fitted_classifier(vectors[:-1], labels[:-1], cache)
    monkeypatch.setattr(triage_model, "MODEL_VERSION", "another")
    with pytest.raises(AssertionError):
        fitted_classifier(vectors, labels, cache)


def test_state_round_trip_matches_scikit_learn():
    vectors, labels = _toy_set(1)
    clf = RedFlagClassifier(vectors, labels)
    back = RedFlagClassifier.from_state(clf.state())
    model = triage_model._model().fit(vectors, labels)
    probs = model.predict_proba(vectors[:3])
    for i in range(3):
        want = {c: round(float(p), 4) for c, p in zip(model.classes_, probs[i], strict=True) if c != "none"}
        assert back.probabilities(vectors[i:i + 1]) == want


def test_second_start_imports_no_scikit_learn(tmp_path):
    """A real safety gate (real model, real rules) built twice in fresh processes: the second reads the cache."""
    code = (
        "import sys, json\n"
        "from bot.embed import SentenceEmbedder\n"
        "from bot.safety import SafetyGate\n"
        "from bot.settings import Settings\n"
        "s = Settings()\n"
        "gate = SafetyGate.from_dir(s.prompts_dir, SentenceEmbedder(s.embedding_model, quick=True), "
        f"cache_dir={str(tmp_path)!r})\n"
        "print(json.dumps({'sklearn': 'sklearn' in sys.modules, "
        "'urgent': gate.check('my baby is not breathing').kind == 'urgent'}))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(PROJECT))
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                      cwd=PROJECT, check=True, timeout=600).stdout.strip().splitlines()[-1])
            for _ in range(2)]
    assert runs[0] == {"sklearn": True, "urgent": True}
    assert runs[1] == {"sklearn": False, "urgent": True}


def test_char_class_tables_read_back_equal_the_scan(tmp_path, monkeypatch):
    """The normal form's character tables kept on disk are exactly what the full Unicode scan gives."""
    from bot import normal
    from bot.settings import Settings

    monkeypatch.setattr("bot.settings.get_settings", lambda: Settings(cache_dir=tmp_path))
    scanned = normal._char_class(normal._drop).pattern
    assert normal._char_class(normal._drop, "invisible").pattern == scanned  # computed, then stored
    assert list(tmp_path.glob("charclass-*.npz"))
    monkeypatch.setattr(normal, "_ranges", lambda keep: (_ for _ in ()).throw(AssertionError("scanned again")))
    assert normal._char_class(normal._drop, "invisible").pattern == scanned  # read back


def test_language_detection_skips_the_model_only_when_it_cannot_change_the_answer():
    """Messages without a common word of any listed language are English either way, and so are clearly English
    ones (bot/language.py `clearly_english`); every other message asks the model. Over every dev and read
    stranger message, the shortcut changes no language the model finds, except English messages the model took
    for another language ("she is having a siezure": Dutch), and it spares the model most English messages that
    contain a common word of another language ('is', 'no', 'baby'), the model's 2 s load in a cold `ask`."""
    import yaml

    from bot.language import _WORDS, LanguageGuide
    from bot.patterns import fold
    from bot.settings import Settings

    guide = LanguageGuide.from_dir(Settings().prompts_dir)
    cases = [{"question": q} for q in ("mijn baby heeft koorts", "mi bebé tiene fiebre y no come", "my baby has a fever of 39",
                                      "what is MRD?", "can I give paracetamol after the drip", "el blinatumomab es seguro?",
                                      "baby fieber 39,2", "ma drgawki", "she is on the pump, is that ok?")]
    for folder in ("dev", "dev_strangers"):  # the split and the stranger sets we read
        for path in sorted((PROJECT / "evals" / "cases" / folder).rglob("*.yaml")):
            if not path.name.startswith("_"):
                cases += [c for c in yaml.safe_load(path.read_text()) or [] if isinstance(c, dict)]
    english_asked = english_spared = 0
    for case in cases:
        text = str(case.get("question") or case.get("message") or "")
        sample = text[:400]
        words = set(_WORDS.findall(fold(sample).lower()))
        if len(words) < 2 or not any(words & known for known in guide.words.values()):
            continue
        model = guide._detect_with_model(sample, words).code
        got = guide.detect(text).code
        if model != got:
            assert got == "en" and "language:en" in (case.get("tags") or []), (text, model, got)
        if got == "en":
            english_asked += 1
            english_spared += guide.clearly_english(words)
    assert english_asked > 500 and english_spared / english_asked >= 0.85, (english_spared, english_asked)


def test_a_long_running_start_loads_torch_only_once_the_assistant_is_built(assistant, knowledge_settings, monkeypatch):
    """build_assistant's own embedder starts on numpy and begins loading torch in the background at the end of the
    start, not while the index and the rules load (torch's import took the two cores from them at x1000)."""
    from bot import assistant as assistant_module
    from bot.embed import SentenceEmbedder

    events: list[str] = []
    real_from_dir = assistant_module.Screen.from_dir
    monkeypatch.setattr(assistant_module.Screen, "from_dir",
                        staticmethod(lambda *a, **k: (events.append("last start step"), real_from_dir(*a, **k))[1]))
    monkeypatch.setattr(SentenceEmbedder, "_switch_to_torch", lambda self: (events.append("torch"), self._ready.set()))
    built = assistant_module.build_assistant(knowledge_settings)  # the index is there (the assistant fixture built it)
    assert built.embedder.wait_ready(30)
    assert events == ["last start step", "torch"]
    assert built.ask("What is MRD?").kind == "answer"  # answered on numpy meanwhile
    built.index.close()


def test_the_english_word_list_read_back_equals_the_dictionary(tmp_path, monkeypatch):
    """The CMU words kept in the cache folder are exactly the parsed dictionary, and are read back without it."""
    from bot import wordlist
    from bot.settings import Settings

    monkeypatch.setattr("bot.settings.get_settings", lambda: Settings(cache_dir=tmp_path))
    wordlist.cmu_words.cache_clear()
    try:
        parsed = wordlist.parse_cmu()
        assert len(parsed) > 100_000 and {"fever", "baby", "what"} <= parsed
        assert wordlist.cmu_words() == parsed  # parsed, then kept
        assert list(tmp_path.glob("cmu-words-*.npz"))
        wordlist.cmu_words.cache_clear()
        monkeypatch.setattr(wordlist, "parse_cmu", lambda: (_ for _ in ()).throw(AssertionError("parsed again")))
        assert wordlist.cmu_words() == parsed  # read back
    finally:
        wordlist.cmu_words.cache_clear()
