"""Shared fixtures: one real index of knowledge/ and one real assistant per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PROJECT = Path(__file__).resolve().parent.parent
# Beside the project (../shared/seeds); a git worktree elsewhere names the folder in SEEDS_DIR.
SEEDS = Path(os.environ.get("SEEDS_DIR", PROJECT.parent / "shared" / "seeds"))


@pytest.fixture(scope="session")
def embedder():
    from bot.embed import SentenceEmbedder
    from bot.settings import Settings

    return SentenceEmbedder(Settings().embedding_model)


@pytest.fixture(scope="session")
def knowledge_settings(tmp_path_factory):
    """Settings whose index (built on first use) lives in a temporary folder."""
    from bot.settings import Settings

    return Settings(index_dir=tmp_path_factory.mktemp("index") / "knowledge",
                    feedback_db=tmp_path_factory.mktemp("feedback") / "feedback.sqlite")


@pytest.fixture(scope="session")
def assistant(knowledge_settings, embedder):
    """The real assistant over the shipped knowledge/ folder."""
    from bot.assistant import build_assistant

    return build_assistant(knowledge_settings, embedder=embedder)


@pytest.fixture(scope="session")
def make_leaflets():
    """tests/data/make_leaflets.py, which writes the realistic leaflets and names their boilerplate."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_leaflets", PROJECT / "tests" / "data" / "make_leaflets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def leaflets_dir(tmp_path_factory, make_leaflets) -> Path:
    """The four realistic hospital leaflets (two web pages, a Word file, a PDF) in a temporary folder."""
    out = tmp_path_factory.mktemp("leaflets")
    make_leaflets.write_all(out)
    return out


@pytest.fixture(scope="session")
def boilerplate(make_leaflets) -> list[str]:
    """Page furniture of the leaflets (menus, footers, cookie banners, running headers): never indexed or quoted."""
    return make_leaflets.BOILERPLATE


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    if not SEEDS.is_dir():
        pytest.skip(f"the seed articles are not beside the project ({SEEDS} is missing)")
    return SEEDS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--screenshots", action="store_true", default=False,
                     help="write the web screenshots to docs/screenshots (they are tracked; off by default)")


@pytest.fixture(scope="session")
def screenshots_dir(request: pytest.FixtureRequest) -> Path | None:
    """docs/screenshots when --screenshots was given, else None (no test run rewrites tracked files)."""
    return PROJECT / "docs" / "screenshots" if request.config.getoption("--screenshots") else None


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """A small folder of real documents: two knowledge files and a ward leaflet (ingest and index tests)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ["how-blinatumomab-was-given.md", "glossary.md"]:
        shutil.copy(Path(__file__).resolve().parent.parent / "knowledge" / name, folder / name)
    (folder / "ward.txt").write_text("Ward 5 leaflet\n\nThe ward phone line is open day and night for parents.\n")
    return folder
