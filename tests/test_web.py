"""The family chat page: the real app (`python app.py`) driven by Chromium through Playwright.

The app runs in a subprocess on a free loopback port with the real assistant, a Chroma index
built in a temporary folder and a temporary feedback database. Screenshots of the desktop and
phone views are written to docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.schema import Answer, Citation
from bot.web import care_text, highlight, render_banner, render_transcript, render_turn, safe_url

PROJECT = Path(__file__).resolve().parent.parent
SCREENSHOTS = PROJECT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT_S = 300  # generous: a cold start loads torch and the embedding model
ANSWER_TIMEOUT_MS = 60_000

FIRST_QUESTION = "How is blinatumomab given to babies?"
TOPIC = "What is blinatumomab?"
FOLLOW_UP = "Is it chemotherapy?"  # "it" is blinatumomab only if the history is used
EMERGENCY = "My baby has a fever of 39 and is very sleepy and hard to wake up"
XSS_PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '<img src=x onerror="window.__pwned=1"><svg onload="window.__pwned=2"></svg>',
]


# ---------------------------------------------------------------- rendering, no browser


def _answer(**kw: object) -> dict:
    base = {
        "question": "q",
        "kind": "answer",
        "answer": "It runs for <b>4 weeks</b> [1].",
        "citations": [
            Citation(
                n=1,
                doc_id="d",
                title="<script>t</script>",
                source="S & co",
                url="javascript:alert(1)",
                quote="runs  for\n4 weeks <b>",
                passage="The drip runs for 4 weeks <b> day and night.",
            )
        ],
        "disclaimer": "General information.",
    }
    base.update(kw)
    return Answer.model_validate(base).model_dump(mode="json")


def test_render_escapes_everything_and_links_markers() -> None:
    html = render_turn(0, {"question": "<img src=x onerror=alert(1)>", "answer": _answer()})
    assert "<img" not in html and "<script" not in html and "<b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert '<a class="cite" href="#src-0-1" aria-label="Source 1">[1]</a>' in html
    assert "javascript:" not in html  # only http(s) links are ever made
    assert "S &amp; co" in html


def test_highlight_marks_quote_across_whitespace_after_escaping() -> None:
    out = highlight("The drip runs for 4 weeks <b> day.", "runs  for\n4 weeks <b>")
    assert out == "The drip <mark>runs for 4 weeks &lt;b&gt;</mark> day."
    assert highlight(None, "a <q>") == "<mark>a &lt;q&gt;</mark>"
    assert highlight("elsewhere", "not here") == "<mark>not here</mark>"


def test_safe_url_allows_only_http() -> None:
    assert safe_url("https://doi.org/10.1056/NEJMoa2214171") == "https://doi.org/10.1056/NEJMoa2214171"
    for bad in ("javascript:alert(1)", "data:text/html,x", " JAVASCRIPT:x", "//evil", "", None):
        assert safe_url(bad) is None


def test_streaming_turn_hides_sources_until_done() -> None:
    turn = {"question": "q", "answer": _answer()}
    partial = render_turn(0, turn, shown_words=2)
    assert 'data-state="streaming"' in partial and "Sources" not in partial
    assert 'data-state="done"' in render_turn(0, turn) and "Sources" in render_turn(0, turn)


def test_urgent_banner_and_care_text() -> None:
    urgent = {"question": "q", "answer": _answer(kind="urgent", answer="Call now <b>.", citations=[])}
    assert 'role="alert"' in render_banner([urgent]) and "Call now &lt;b&gt;." in render_banner([urgent])
    assert render_banner([{"question": "q", "answer": _answer()}]) == ""
    assert 'class="emergency"' in render_transcript([urgent])
    text = care_text("First?\n\n  Second?  \n")
    assert text.startswith("Questions for my care team\n") and text.endswith("1. First?\n2. Second?\n")


# ---------------------------------------------------------------- the real app in a browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory, assistant, knowledge_settings) -> Iterator[dict[str, object]]:
    """`python app.py` on a free loopback port; yields its URL and feedback database.

    It serves the temporary index the session's `assistant` fixture built from knowledge/, so the
    index is embedded once; the tests read quoted documents from that same index.
    """
    tmp = tmp_path_factory.mktemp("web")
    port = _free_port()
    db = tmp / "feedback.sqlite"
    log_path = tmp / "app.log"
    env = {
        **os.environ,
        "BOT_PORT": str(port),
        "BOT_FEEDBACK_DB": str(db),
        "BOT_INDEX_DIR": str(knowledge_settings.index_dir),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("BOT_HOST", None)  # the default must be loopback only
    env.pop("BOT_AUTH_USERNAME", None)
    env.pop("BOT_AUTH_PASSWORD", None)
    url = f"http://127.0.0.1:{port}/"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            started = time.monotonic()
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() - started > START_TIMEOUT_S:
                    pytest.fail(f"app.py did not answer on {url} within {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield {"url": url, "port": port, "db": db, "log": log_path}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright."""
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: install it with the project's setup (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Chat:
    """A page of the running app, with what the tests need to watch."""

    def __init__(self, page, url: str) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("request", lambda r: self.requests.append(r.url))
        page.goto(url)
        self.box = page.get_by_label("Your question")
        self.box.wait_for()

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def turns(self):  # noqa: ANN201
        return self.page.locator("#transcript article.turn")

    def ask(self, question: str):  # noqa: ANN201
        """Type a question, press Enter, wait until its answer is fully shown; return that turn."""
        n = self.turns().count()
        self.box.fill(question)
        self.box.press("Enter")
        turn = self.turns().nth(n)
        turn.and_(self.page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT_MS)
        return turn


@pytest.fixture
def chat(browser, app_server) -> Iterator[Chat]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    yield Chat(page, str(app_server["url"]))
    context.close()


# Notes whether an answer was ever on the page only in part (the word-by-word reveal).
WATCH_STREAMING = """() => {
  window.__sawStreaming = false;
  new MutationObserver(() => {
    if (document.querySelector('#transcript [data-state=streaming]')) window.__sawStreaming = true;
  }).observe(document.querySelector('#transcript'), {subtree: true, childList: true});
}"""


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.browser
def test_cited_answer_and_highlighted_quote(chat: Chat, assistant) -> None:
    page = chat.page
    page.evaluate(WATCH_STREAMING)
    turn = chat.ask(FIRST_QUESTION)
    assert page.evaluate("window.__sawStreaming") is True, "the answer should appear progressively"
    assert turn.locator(".bot.kind-answer").count() == 1
    markers = turn.locator(".answer-text a.cite")
    sources = turn.locator("li.source")
    assert markers.count() >= 1 and sources.count() >= 1
    shown = {int(m) for m in re.findall(r"\[(\d+)\]", turn.locator(".answer-text").inner_text())}
    assert shown == {i + 1 for i in range(sources.count())}, "every [n] needs its numbered source"
    # Each source names its title and publication before it is opened.
    first = sources.first
    assert first.locator(".src-title").inner_text().strip() and first.locator(".src-pub").inner_text().strip()
    assert not first.locator("mark").is_visible()

    markers.first.click()  # a marker opens its source and shows the quoted words
    mark = first.locator("blockquote.passage mark")
    mark.wait_for(state="visible")
    quote = mark.inner_text()
    passage = first.locator("blockquote.passage").inner_text()
    assert len(quote.split()) >= 3 and _norm(quote) in _norm(passage)
    doc_id = first.get_attribute("data-doc-id")
    assert doc_id and _norm(quote) in _norm(assistant.index.document_text(doc_id)), "quote must be verbatim"
    link = first.locator(".src-link a")
    if link.count():
        assert re.match(r"https?://", link.get_attribute("href") or "")
        assert link.get_attribute("rel") == "noopener noreferrer"

    # The permanent safety note is on the page, and nothing was fetched from the network.
    assert "not a doctor" in page.locator(".safety-note").inner_text()
    outside = [u for u in chat.requests if not u.startswith(("http://127.0.0.1", "data:", "blob:"))]
    assert outside == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "desktop.png"), full_page=True)


@pytest.mark.browser
def test_follow_up_uses_the_conversation(chat: Chat) -> None:
    page = chat.page
    first = chat.ask(TOPIC)
    first_docs = set(first.locator("li.source").evaluate_all("els => els.map(e => e.dataset.docId)"))
    follow = chat.ask(FOLLOW_UP)
    assert follow.locator(".bot.kind-answer").count() == 1
    follow_docs = set(follow.locator("li.source").evaluate_all("els => els.map(e => e.dataset.docId)"))
    assert follow_docs & first_docs, "the follow-up should be answered from the topic of the first question"
    assert "blinatumomab" in _first_sentence(follow), "the answer should be about what 'it' refers to"

    # Cleared, the same words have no history to lean on: the reply is no longer about blinatumomab.
    page.get_by_role("button", name="Clear conversation").click()
    page.locator("#transcript .empty").wait_for()
    assert chat.turns().count() == 0
    alone = chat.ask(FOLLOW_UP)
    assert "blinatumomab" not in _first_sentence(alone)


def _first_sentence(turn) -> str:
    text = turn.locator(".bot").inner_text().lower()
    return re.split(r"\[1\]|(?<=\.)\s", text, maxsplit=1)[0]


@pytest.mark.browser
def test_emergency_banner_comes_first(chat: Chat) -> None:
    page = chat.page
    chat.ask(FIRST_QUESTION)
    turn = chat.ask(EMERGENCY)
    banner = page.locator("#emergency-banner [role=alert]")
    banner.wait_for(state="visible")
    assert re.search(r"call|emergency|now", banner.inner_text(), re.I)
    # The banner sits above the conversation, and the urgent answer opens with its own red box.
    assert banner.bounding_box()["y"] < page.locator("#transcript").bounding_box()["y"]
    first_child_class = turn.locator(".bot > *").first.get_attribute("class")
    assert first_child_class == "emergency"
    assert turn.locator(".bot.kind-urgent").count() == 1
    # A new conversation clears it.
    page.get_by_role("button", name="Clear conversation").click()
    page.locator("#transcript .empty").wait_for()
    banner.wait_for(state="hidden")


@pytest.mark.browser
def test_care_team_list_can_be_edited_and_downloaded(chat: Chat, tmp_path: Path) -> None:
    page = chat.page
    turn = chat.ask(FIRST_QUESTION)
    turn.get_by_role("button", name="Add this question to my care-team list").click()
    care = page.get_by_label("My questions (one per line)")
    page.wait_for_function("q => document.querySelector('#care-list textarea').value.includes(q)", arg=FIRST_QUESTION)
    assert turn.locator("button[data-action=save]").get_attribute("aria-pressed") == "true"
    care.press("End")
    care.type("\nCan we see the scan results?")
    content = ""
    for _ in range(20):  # the file is rewritten after each edit; wait until it has the new line
        with page.expect_download() as info:
            page.get_by_role("button", name="Download my questions (.txt)").click()
        download = info.value
        target = tmp_path / download.suggested_filename
        download.save_as(target)
        content = target.read_text(encoding="utf-8")
        if "scan results" in content:
            break
        time.sleep(0.25)
    assert download.suggested_filename.endswith(".txt")
    assert content.startswith("Questions for my care team")
    assert f"1. {FIRST_QUESTION}\n" in content and "2. Can we see the scan results?\n" in content


@pytest.mark.browser
def test_feedback_is_stored_in_sqlite(chat: Chat, app_server) -> None:
    page = chat.page
    turn = chat.ask(FIRST_QUESTION)
    turn.get_by_label("Comment (optional, please no names)").fill("Clear and kind")
    turn.get_by_role("button", name="Helpful", exact=True).click()
    page.locator("#status", has_text="Your feedback was saved").wait_for()
    rows = _feedback_rows(app_server["db"])
    assert len(rows) == 1
    row = rows[0]
    assert row["question"] == FIRST_QUESTION and row["helpful"] == 1 and row["comment"] == "Clear and kind"
    assert _norm(row["answer"])[:40] in _norm(turn.locator(".answer-text").inner_text())
    assert '"doc_id"' in row["citations"] and row["created_at"]
    # Changing one's mind updates the same row rather than adding another.
    turn.get_by_role("button", name="Not helpful").click()
    deadline = time.monotonic() + 10
    while _feedback_rows(app_server["db"])[0]["helpful"] != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    rows = _feedback_rows(app_server["db"])
    assert len(rows) == 1 and rows[0]["helpful"] == 0


@pytest.mark.browser
def test_feedback_that_cannot_be_stored_is_not_reported_as_saved(chat: Chat, app_server) -> None:
    db = Path(str(app_server["db"]))
    moved = db.with_name("feedback-moved.sqlite")
    turn = chat.ask(FIRST_QUESTION)
    if db.exists():
        db.rename(moved)
    db.mkdir()  # a folder where the database should be: SQLite cannot open it
    try:
        turn.get_by_role("button", name="Helpful", exact=True).click()
        chat.page.locator("#status", has_text="could not be saved").wait_for()
        assert "was saved" not in chat.page.locator("#status").inner_text()
    finally:
        db.rmdir()
        if moved.exists():
            moved.rename(db)


def _feedback_rows(db: object) -> list[dict]:
    with sqlite3.connect(str(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY id")]


@pytest.mark.browser
def test_html_and_script_in_questions_never_run(chat: Chat) -> None:
    page = chat.page
    for payload in XSS_PAYLOADS:
        turn = chat.ask(payload)
        # The question is shown as the very characters typed.
        assert turn.locator(".you p").inner_text() == payload
    page.wait_for_timeout(500)  # give any injected handler time to fire
    assert chat.dialogs == []
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("#transcript script, #transcript svg, #transcript img").count() == 0


@pytest.mark.browser
def test_question_length_is_limited_with_a_clear_message(chat: Chat) -> None:
    page = chat.page
    chat.box.fill("a" * 2001)
    chat.box.press("Enter")
    page.locator("#status", has_text="2,000 characters").wait_for()
    assert chat.turns().count() == 0
    assert chat.box.input_value() == "a" * 2001  # kept, so the family can shorten it


@pytest.mark.browser
def test_phone_view_has_no_horizontal_scroll(browser, app_server) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        chat = Chat(context.new_page(), str(app_server["url"]))
        turn = chat.ask(FIRST_QUESTION)
        turn.locator(".answer-text a.cite").first.click()
        turn.locator("blockquote.passage mark").first.wait_for(state="visible")
        page = chat.page
        page.evaluate("window.scrollTo(0, 0)")
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        client_width = page.evaluate("document.documentElement.clientWidth")
        assert scroll_width <= client_width == 390
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "phone.png"), full_page=True)
    finally:
        context.close()


@pytest.mark.browser
def test_no_serious_accessibility_violations_with_an_answer(chat: Chat) -> None:
    from axe_playwright_python.sync_playwright import Axe

    turn = chat.ask(FIRST_QUESTION)
    turn.locator(".answer-text a.cite").first.click()
    turn.locator("blockquote.passage mark").first.wait_for(state="visible")
    results = Axe().run(chat.page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], results.generate_report()


@pytest.mark.browser
def test_keyboard_alone_can_ask_and_open_a_source(chat: Chat) -> None:
    page = chat.page
    chat.box.focus()
    page.keyboard.type(FIRST_QUESTION)
    page.keyboard.press("Enter")
    turn = chat.turns().first
    turn.and_(page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT_MS)
    turn.locator("li.source summary").first.focus()
    page.keyboard.press("Enter")
    turn.locator("blockquote.passage mark").first.wait_for(state="visible")


def _outward_ip() -> str | None:
    """This machine's address on its network (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_binds_to_loopback_by_default(app_server) -> None:
    with urllib.request.urlopen(str(app_server["url"]), timeout=5) as resp:
        assert resp.status == 200
    ip = _outward_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(OSError):
        socket.create_connection((ip, int(app_server["port"])), timeout=2).close()


def test_optional_login_from_settings(assistant, knowledge_settings, tmp_path: Path) -> None:
    import httpx

    from bot.web import create_app, launch

    port = _free_port()
    settings = knowledge_settings.model_copy(
        update={"port": port, "feedback_db": tmp_path / "f.sqlite", "auth_username": "family", "auth_password": "pw-123456"}
    )
    app = create_app(assistant, settings)
    launch(app, settings, block=False)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/config").status_code == 401
            assert client.post("/login", data={"username": "family", "password": "wrong"}).status_code == 400
            assert client.post("/login", data={"username": "family", "password": "pw-123456"}).status_code == 200
            assert client.get("/config").status_code == 200
    finally:
        app.close()
    half = knowledge_settings.model_copy(update={"auth_username": "family", "auth_password": None})
    with pytest.raises(SystemExit, match="BOT_AUTH_PASSWORD"):
        launch(create_app(assistant, half), half, block=False)


@pytest.mark.browser
def test_starter_questions_on_first_visit(chat: Chat) -> None:
    page = chat.page
    starters = page.locator("#starters")
    assert starters.is_visible()
    page.get_by_role("button", name=FIRST_QUESTION).click()
    turn = chat.turns().first
    turn.and_(page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert turn.locator(".you p").inner_text() == FIRST_QUESTION
    assert turn.locator("li.source").count() >= 1
    starters.wait_for(state="hidden")
    page.get_by_role("button", name="Clear conversation").click()
    starters.wait_for(state="visible")
