"""The family chat page: the real app (`python app.py`) driven by Chromium through Playwright, at phone size.

The app runs in a subprocess on a free loopback port with the real assistant, a Chroma index
built in a temporary folder and a temporary feedback database. Screenshots of the phone and
desktop views are written to docs/screenshots/ only with `pytest --screenshots`.
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

from bot.login import LoginThrottle, login_keys
from bot.schema import Answer, Citation
from bot.settings import Settings
from bot.starters import load_starters
from bot.web import (
    ChatHandlers,
    highlight,
    kept_turns,
    render_banner,
    render_provenance,
    render_signs,
    render_transcript,
    render_turn,
    safe_url,
    sign_names,
    signature,
)

PROJECT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
START_TIMEOUT_S = 300  # generous: a cold start loads torch and the embedding model
ANSWER_TIMEOUT_MS = 60_000
SEND_TO_ANSWER_MAX_MS = 500

FIRST_QUESTION = "What is blinatumomab?"
TOPIC = "What is blinatumomab?"
FOLLOW_UP = "Is it chemotherapy?"  # "it" is blinatumomab only if the history is used
EMERGENCY = "My baby has a fever of 39 and is very sleepy and hard to wake up"
XSS_PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '<img src=x onerror="window.__pwned=1"><svg onload="window.__pwned=2"></svg>',
]


# ---------------------------------------------------------------- rendering and state, no browser


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
    assert 'data-state="done"' in html and "Sources" in html  # whole at once: no partial state


def test_highlight_marks_quote_across_whitespace_after_escaping() -> None:
    out = highlight("The drip runs for 4 weeks <b> day.", "runs  for\n4 weeks <b>")
    assert out == "The drip <mark>runs for 4 weeks &lt;b&gt;</mark> day."
    assert highlight(None, "a <q>") == "<mark>a &lt;q&gt;</mark>"
    assert highlight("elsewhere", "not here") == "<mark>not here</mark>"


def test_safe_url_allows_only_http() -> None:
    assert safe_url("https://doi.org/10.1056/NEJMoa2214171") == "https://doi.org/10.1056/NEJMoa2214171"
    for bad in ("javascript:alert(1)", "data:text/html,x", " JAVASCRIPT:x", "//evil", "", None):
        assert safe_url(bad) is None


def _cite(**kw: object) -> Citation:
    base = {"n": 1, "doc_id": "how-given", "title": "How blinatumomab is given", "quote": "q"}
    return Citation.model_validate({**base, **kw})


def test_source_label_names_our_document_then_what_it_is_based_on() -> None:
    nejm = {"citation": "van der Sluis et al., N Engl J Med 2023", "url": "https://doi.org/10.1056/NEJMoa2214171"}
    ours = _cite(source="How blinatumomab is given (our summary)", url=None, reviewed="2026-11-01", based_on=[nejm])
    from_line, based = render_provenance(ours)
    assert from_line == "From: How blinatumomab is given, reviewed 1 November 2026"
    assert based.startswith("Based on: <a href=\"https://doi.org/10.1056/NEJMoa2214171\"")
    assert "van der Sluis et al., N Engl J Med 2023" in based
    # Before `based_on` is filled, the publication in `source` is named as what the document is based on,
    # never as where the highlighted words are.
    older = _cite(source="van der Sluis IM et al. N Engl J Med 2023", url="https://doi.org/x/y")
    from_line, based = render_provenance(older)
    assert from_line == "From: How blinatumomab is given" and "doi.org" not in from_line
    assert "Based on:" in based and "van der Sluis IM" in based and 'href="https://doi.org/x/y"' in based
    # A leaflet ingested as it is: the words are in it, so its own address goes with 'From'.
    leaflet = _cite(title="Fever leaflet", source="Fever leaflet", url="https://hospital.example/fever.pdf")
    from_line, based = render_provenance(leaflet)
    assert 'href="https://hospital.example/fever.pdf"' in from_line and based == ""
    # Unsafe links are dropped, the text stays.
    bad = _cite(based_on=[{"citation": "<b>x</b>", "url": "javascript:alert(1)"}], source="s")
    assert render_provenance(bad)[1] == "Based on: &lt;b&gt;x&lt;/b&gt;"


def test_emergency_box_names_each_sign() -> None:
    assert render_signs({"rule": "x"}) == ""
    listed = render_signs({"signs": ["floppy", "blue lips <b>"]})
    assert "<li>floppy</li>" in listed and "<li>blue lips &lt;b&gt;</li>" in listed
    assert render_signs({"signs": "floppy; hard to wake"}).count("<li>") == 2
    named = render_signs({"signs": ["floppy_card", "colour_card"], "sign_names": ["Floppy", "Blue lips"]})
    assert "<li>Floppy</li>" in named and "<li>Blue lips</li>" in named and "card" not in named
    urgent = {"question": "q", "answer": _answer(kind="urgent", answer="Call now <b>.", citations=[],
                                                 safety={"rule": "r", "signs": "floppy; blue lips"})}
    banner = render_banner([urgent])
    assert 'role="alert"' in banner and "Call now &lt;b&gt;." in banner and "<li>blue lips</li>" in banner
    assert render_banner([{"question": "q", "answer": _answer()}]) == ""
    page = render_transcript([urgent])
    assert 'class="emergency"' in page and "<li>floppy</li>" in page


def test_what_the_browser_sends_back_is_checked() -> None:
    good = {"question": "q", "answer": _answer()}
    kept = {"v": 1, "turns": [good, {"question": 1}, {"question": "x", "answer": {"kind": "nonsense"}}, "junk"]}
    assert kept_turns(kept) == [good]
    for odd in (None, [], "x", {"turns": "x"}):
        assert kept_turns(odd) == []
    many = kept_turns({"turns": [good] * 10_000})  # an edited browser copy cannot make the server work for long
    assert len(many) == 50
    assert signature(b"k", "q", _answer()) != signature(b"k", "q", _answer(answer="Stop all treatment."))


class _Event:
    def __init__(self, **data: object) -> None:
        self._data = data


def test_feedback_only_for_what_the_bot_said_and_only_on_ones_own_row(tmp_path: Path) -> None:
    settings = Settings(feedback_db=tmp_path / "f.sqlite", web_secret="s")
    h = ChatHandlers(assistant=None, settings=settings)  # type: ignore[arg-type]
    answer = _answer()
    turn = {"question": "q", "answer": answer, "sig": signature(h.key, "q", answer)}
    kept, _, _, _, ack = h.on_action({"turns": [turn]}, "", _Event(action="vote", turn=0, helpful="1"))
    assert ack["ok"] and ack["message"] == "Thank you. Your feedback was saved."
    row = kept["turns"][0]["feedback_id"]
    # An edited answer is refused; an edited row number makes a new row instead of rewriting another's.
    forged = {**kept["turns"][0], "answer": _answer(answer="Stop all treatment [1].")}
    assert not h.on_action({"turns": [forged]}, "", _Event(action="vote", turn=0, helpful="0"))[4]["ok"]
    stolen = {**kept["turns"][0], "feedback_id": row + 41}
    kept2 = h.on_action({"turns": [stolen]}, "", _Event(action="vote", turn=0, helpful="0"))[0]
    assert kept2["turns"][0]["feedback_id"] == row + 1
    assert [r["helpful"] for r in h.store.rows()] == [1, 0]


def test_feedback_on_a_kept_conversation_still_works_after_the_app_restarts(tmp_path: Path) -> None:
    settings = Settings(feedback_db=tmp_path / "data" / "f.sqlite")  # no BOT_WEB_SECRET set
    before = ChatHandlers(assistant=None, settings=settings)  # type: ignore[arg-type]
    answer = _answer()
    turn = {"question": "q", "answer": answer, "sig": signature(before.key, "q", answer)}
    after = ChatHandlers(assistant=None, settings=settings)  # type: ignore[arg-type]  # a new process
    *_, ack = after.on_action({"turns": [turn]}, "", _Event(action="vote", turn=0, helpful="1"))
    assert ack["ok"] and [r["helpful"] for r in after.store.rows()] == [1]
    key_file = tmp_path / "data" / "web-secret"
    assert key_file.stat().st_mode & 0o077 == 0  # readable by the app's user only
    other = ChatHandlers(assistant=None, settings=Settings(feedback_db=tmp_path / "elsewhere" / "f.sqlite"))  # type: ignore[arg-type]
    assert other.key != before.key  # a key is made per installation, not a constant


def test_care_list_has_a_size_limit_with_a_clear_message(tmp_path: Path) -> None:
    settings = Settings(feedback_db=tmp_path / "f.sqlite", care_list_max_chars=100)
    h = ChatHandlers(assistant=None, settings=settings)  # type: ignore[arg-type]
    kept, msg = h.save_care("Can we go home?")
    assert kept == {"v": 1, "text": "Can we go home?"} and msg == ""
    kept, msg = h.save_care("x" * 101)
    assert "text" not in kept and "101 characters; the limit is 100" in msg
    answer = _answer(question="y" * 60)
    turn = {"question": "y" * 60, "answer": answer, "sig": signature(h.key, "y" * 60, answer)}
    *_, ack = h.on_action({"turns": [turn]}, "z" * 60, _Event(action="save", turn=0))
    assert not ack["ok"] and "full" in ack["message"]


def test_login_throttle_grows_after_five_failures_per_username_and_per_client() -> None:
    now = [1000.0]
    t = LoginThrottle(free_attempts=5, base_delay_s=1.0, max_delay_s=8.0, clock=lambda: now[0])
    keys = login_keys("Family", "10.0.0.1")
    for _ in range(5):
        assert t.wait_s(keys) == 0
        t.failed(keys)
    assert t.wait_s(keys) == pytest.approx(1.0)
    assert t.wait_s(login_keys("family ", "10.0.0.9")) == pytest.approx(1.0)  # same user, other client
    assert t.wait_s(login_keys("other", "10.0.0.1")) == pytest.approx(1.0)  # same client, other user
    assert t.wait_s(login_keys("other", "10.0.0.9")) == 0
    now[0] += 1.0
    t.failed(keys)
    assert t.wait_s(keys) == pytest.approx(2.0)
    for _ in range(10):
        t.failed(keys)
    assert t.wait_s(keys) == pytest.approx(8.0)  # capped
    t.succeeded(keys)
    assert t.wait_s(keys) == 0


def test_every_suggested_question_gets_the_answer_written_for_it(assistant) -> None:
    starters = load_starters(PROJECT / "prompts")
    assert len(starters) >= 2
    for s in starters:
        ans = assistant.ask(s.question)
        assert ans.kind == "answer", (s.question, ans.answer)
        first = min(ans.citations, key=lambda c: c.n)
        assert first.doc_id == s.answered_by.doc, (s.question, ans.answer)
        assert s.answered_by.section in {c.section for c in ans.citations}, (s.question, ans.answer)


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
        "BOT_WEB_PROCESSES": "2",  # as by default: every browser test also goes through both processes
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TMPDIR": str(tmp / "tmp"),  # to check that the app writes no family data to temporary files
    }
    (tmp / "tmp").mkdir()
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
            # Started means every serving process is taking connections (the second joins once warmed up).
            while len(_listening_pids(port, [proc.pid, *_children(proc.pid)])) < 2:
                if time.monotonic() - started > START_TIMEOUT_S:
                    pytest.fail(f"the second process did not serve within {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield {"url": url, "port": port, "db": db, "log": log_path, "tmp": tmp / "tmp", "pid": proc.pid}
        finally:
            # The harder way to stop: kill -9 of the first process. The others must not serve on without it.
            others = _children(proc.pid)
            proc.kill()
            proc.wait(timeout=15)
            deadline = time.monotonic() + 15
            while any(_alive(pid) for pid in others) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = [pid for pid in others if _alive(pid)]
            for pid in left:
                os.kill(pid, 9)
            assert not left, f"serving processes {left} went on after the first process was killed"


def test_the_running_app_refuses_a_huge_request_and_goes_on_serving(app_server) -> None:
    # A 5 MB message declared up front is answered 413 before its body is read (the server then
    # closes the connection, so the body is not sent at all: the status is read straight away).
    with socket.create_connection(("127.0.0.1", app_server["port"]), timeout=30) as conn:
        conn.sendall(b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n")
        status_line = conn.makefile("rb").readline()
    assert status_line.split()[1] == b"413", status_line
    with urllib.request.urlopen(app_server["url"], timeout=10) as resp:
        assert resp.status == 200


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
        self.url = url
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("request", lambda r: self.requests.append(r.url))
        self.open()

    def open(self) -> None:
        """Load the page and wait until what this browser kept has been put back."""
        # The page's load event sends what the browser kept and shows what comes back (the first request it
        # posts): wait for that answer, not a fixed time (on a busy machine it took more than 300 ms).
        with self.page.expect_response(lambda r: "/gradio_api/" in r.url and r.request.method == "POST",
                                       timeout=ANSWER_TIMEOUT_MS):
            self.page.goto(self.url)
        self.box = self.page.get_by_label("Your question")
        self.box.wait_for()
        self.page.wait_for_function("() => window.gradio_config !== undefined")
        self.page.wait_for_timeout(100)  # the answer is drawn

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def turns(self):  # noqa: ANN201
        return self.page.locator("#transcript article.turn")

    def ask(self, question: str):  # noqa: ANN201
        """Type a question, press Enter, wait until its answer is shown; return that turn."""
        n = self.turns().count()
        self.box.fill(question)
        self.box.press("Enter")
        turn = self.turns().nth(n)
        turn.and_(self.page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT_MS)
        return turn


@pytest.fixture
def context(browser):  # noqa: ANN201
    ctx = browser.new_context(**PHONE, accept_downloads=True)
    yield ctx
    ctx.close()


@pytest.fixture
def chat(context, app_server) -> Chat:
    return Chat(context.new_page(), str(app_server["url"]))


def _shot(page, screenshots_dir: Path | None, name: str) -> None:
    if screenshots_dir is not None:
        screenshots_dir.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshots_dir / name), full_page=True)


def _axe(page, state: str) -> None:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], f"{state}:\n{results.generate_report()}"


# Times from the Send click to the whole new answer on the page, and notes any partial answer.
TIME_ANSWER = """() => {
  window.__answerMs = null; window.__sawPartial = false;
  const before = document.querySelectorAll('#transcript article.turn').length;
  let start = null;
  document.querySelector('#send').addEventListener('click', () => { start = performance.now(); }, {capture: true, once: true});
  new MutationObserver((_, obs) => {
    if (document.querySelector('#transcript [data-state=streaming], #transcript [data-state=pending]')) {
      window.__sawPartial = true;
    }
    const turns = document.querySelectorAll('#transcript article.turn[data-state=done]');
    if (start !== null && turns.length > before && turns[turns.length - 1].querySelector('.disclaimer, .emergency')) {
      window.__answerMs = performance.now() - start; obs.disconnect();
    }
  }).observe(document.querySelector('#transcript'), {subtree: true, childList: true});
}"""


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.browser
def test_whole_answer_soon_after_send_with_honest_sources(chat: Chat, assistant, screenshots_dir) -> None:
    page = chat.page
    chat.ask(FIRST_QUESTION)  # warm: the first answer of a fresh server loads what it needs
    times = []
    for q in ("How long is the blinatumomab drip given for?", "What side effects did the babies have?",
              "What is KMT2A-rearranged leukemia?"):
        page.evaluate(TIME_ANSWER)
        chat.box.fill(q)
        page.locator("#send").click()
        page.wait_for_function("() => window.__answerMs !== null", timeout=ANSWER_TIMEOUT_MS)
        times.append(page.evaluate("window.__answerMs"))
        assert page.evaluate("window.__sawPartial") is False, "the answer should appear whole, not word by word"
    print(f"Send -> whole answer in the browser: {', '.join(f'{t:.0f}' for t in times)} ms")
    assert sorted(times)[1] <= SEND_TO_ANSWER_MAX_MS, times

    turn = chat.turns().last
    top = turn.bounding_box()["y"]
    assert -2 <= top < 844 / 2, f"a new answer opens at its start, in view ({top:.0f} px)"
    assert turn.locator(".bot.kind-answer").count() == 1
    markers = turn.locator(".answer-text a.cite")
    sources = turn.locator("li.source")
    shown = {int(m) for m in re.findall(r"\[(\d+)\]", turn.locator(".answer-text").inner_text())}
    assert shown and shown == {i + 1 for i in range(sources.count())}, "every [n] needs its numbered source"
    first = sources.first
    doc_id = first.get_attribute("data-doc-id")
    title = assistant.index.document_text(doc_id) and first.locator(".src-from").inner_text()
    assert title.startswith("From: "), "the source names the document whose words are highlighted"
    assert not first.locator("mark").is_visible()
    markers.first.click()  # a marker opens its source and shows the quoted words
    mark = first.locator("blockquote.passage mark")
    mark.wait_for(state="visible")
    quote = mark.inner_text()
    assert len(quote.split()) >= 3 and _norm(quote) in _norm(assistant.index.document_text(doc_id)), "quote must be verbatim"
    based = first.locator(".src-based")
    if based.count():  # the publications are named as what the document is based on, never as where the words are
        assert based.inner_text().startswith("Based on: ")
        for a in based.locator("a").all():
            assert re.match(r"https?://", a.get_attribute("href") or "") and a.get_attribute("rel") == "noopener noreferrer"
    assert first.locator(".src-from a[href*='doi.org']").count() == 0

    assert "not a doctor" in page.locator(".safety-note").inner_text()
    outside = [u for u in chat.requests if not u.startswith(("http://127.0.0.1", "data:", "blob:"))]
    assert outside == [], "nothing is fetched from outside"
    page.evaluate("window.scrollTo(0, 0)")
    assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("document.documentElement.clientWidth") == 390
    _shot(page, screenshots_dir, "phone.png")


@pytest.mark.browser
def test_reload_and_a_closed_tab_keep_the_conversation_and_the_list(chat: Chat, context, app_server) -> None:
    page = chat.page
    turn = chat.ask(TOPIC)
    turn.get_by_role("button", name="Add this question to my care-team list").click()
    page.wait_for_function("q => document.querySelector('#care-list textarea').value.includes(q)", arg=TOPIC)
    care = page.get_by_label("My questions (one per line)")
    care.press("End")
    care.type("\nCan we see the scan results?")
    page.wait_for_timeout(600)  # the edit is kept in the browser as it is typed
    page.reload()
    chat.open()
    assert chat.turns().count() == 1 and chat.turns().first.locator(".you p").inner_text() == TOPIC
    assert chat.turns().first.locator("button[data-action=save]").get_attribute("aria-pressed") == "true"
    assert care.input_value() == f"{TOPIC}\nCan we see the scan results?"
    # The conversation still serves follow-ups after the reload: the browser sends it back.
    follow = chat.ask(FOLLOW_UP)
    assert "blinatumomab" in _first_sentence(follow)
    # Closed and opened again on the same device.
    page.close()
    again = Chat(context.new_page(), str(app_server["url"]))
    assert again.turns().count() == 2
    assert again.page.get_by_label("My questions (one per line)").input_value().startswith(TOPIC)
    # Another device (another browser profile) sees none of it: nothing is kept on the server.
    other = context.browser.new_context(**PHONE)
    try:
        stranger = Chat(other.new_page(), str(app_server["url"]))
        assert stranger.turns().count() == 0 and stranger.page.get_by_label("My questions (one per line)").input_value() == ""
    finally:
        other.close()
    assert list(Path(str(app_server["tmp"])).rglob("*.txt")) == [], "no care-team file is written on the server"


def _first_sentence(turn) -> str:
    text = turn.locator(".bot").inner_text().lower()
    return re.split(r"\[1\]|(?<=\.)\s", text, maxsplit=1)[0]


@pytest.mark.browser
def test_new_conversation_asks_first_and_sits_away_from_send(chat: Chat, screenshots_dir) -> None:
    page = chat.page
    new = page.get_by_role("button", name="Start a new conversation")
    assert not new.is_visible(), "nothing to clear yet"
    chat.ask(TOPIC)
    send_box = page.locator("#send").bounding_box()
    new_box = new.bounding_box()
    assert new_box is not None and send_box is not None
    gap = max(send_box["y"] - (new_box["y"] + new_box["height"]), new_box["y"] - (send_box["y"] + send_box["height"]))
    assert gap >= 100, f"'Start a new conversation' must not sit beside Send ({gap:.0f} px apart)"
    new.click()
    confirm = page.locator(".confirm-text", has_text="Start a new conversation?")
    confirm.wait_for(state="visible")
    _axe(page, "confirm before clearing")
    page.get_by_role("button", name="No, keep this conversation").click()
    confirm.wait_for(state="hidden")
    assert chat.turns().count() == 1
    new.click()
    page.get_by_role("button", name="Yes, start a new conversation").click()
    page.locator("#transcript .empty").wait_for(state="attached")
    assert chat.turns().count() == 0 and chat.dialogs == []
    # Without the history, the same words are no longer about blinatumomab.
    alone = chat.ask(FOLLOW_UP)
    assert "blinatumomab" not in _first_sentence(alone)
    page.reload()
    chat.open()
    assert chat.turns().count() == 1


@pytest.mark.browser
def test_forget_everything_clears_both_from_the_device(chat: Chat) -> None:
    page = chat.page
    turn = chat.ask(TOPIC)
    turn.get_by_role("button", name="Add this question to my care-team list").click()
    page.wait_for_function("q => document.querySelector('#care-list textarea').value.includes(q)", arg=TOPIC)
    assert "in this web browser" in page.locator("#privacy").inner_text()
    page.get_by_role("button", name="Forget everything on this device").click()
    page.get_by_role("button", name="Yes, forget everything").wait_for()
    _axe(page, "confirm before forgetting")
    page.get_by_role("button", name="Yes, forget everything").click()
    page.locator("#status", has_text="deleted").wait_for()
    page.wait_for_function("() => localStorage.length === 0")
    assert chat.turns().count() == 0 and page.get_by_label("My questions (one per line)").input_value() == ""
    page.reload()
    chat.open()
    assert chat.turns().count() == 0 and page.get_by_label("My questions (one per line)").input_value() == ""


@pytest.mark.browser
def test_emergency_banner_comes_first_and_names_the_signs(chat: Chat, assistant, screenshots_dir) -> None:
    page = chat.page
    chat.ask(FIRST_QUESTION)
    turn = chat.ask(EMERGENCY)
    banner = page.locator("#emergency-banner [role=alert]")
    banner.wait_for(state="visible")
    assert re.search(r"call|emergency|now", banner.inner_text(), re.I)
    assert banner.bounding_box()["y"] < page.locator("#transcript").bounding_box()["y"]
    assert turn.locator(".bot > *").first.get_attribute("class") == "emergency"
    assert turn.locator(".bot.kind-urgent").count() == 1
    names = sign_names(assistant.ask(EMERGENCY).safety)
    if names:  # each sign the safety check matched is named, in the banner and in the red box
        for name in names:
            assert name in turn.locator(".signs").inner_text() and name in banner.inner_text()
    _axe(page, "emergency")
    _shot(page, screenshots_dir, "phone-emergency.png")
    page.get_by_role("button", name="Start a new conversation").click()
    page.get_by_role("button", name="Yes, start a new conversation").click()
    banner.wait_for(state="hidden")


@pytest.mark.browser
def test_the_emergency_box_names_every_sign_given(chat: Chat) -> None:
    turn = chat.ask("My baby is floppy and her lips are blue")
    signs = [s.lower() for s in turn.locator(".emergency .signs li").all_inner_texts()]
    assert any("floppy" in s for s in signs) and any("blue" in s for s in signs), signs
    banner = chat.page.locator("#emergency-banner [role=alert]")
    assert "floppy" in banner.inner_text().lower() and "blue" in banner.inner_text().lower()


@pytest.mark.browser
def test_a_long_message_with_an_emergency_inside_gets_call_now(chat: Chat) -> None:
    page = chat.page
    story = "We have been at home all week and I wanted to write everything down for you. " * 20
    message = f"{story}Now my baby is floppy and her lips are blue. {story}"[:3000]
    assert len(message) == 3000 and "lips are blue" in message
    chat.box.fill(message)
    chat.box.press("Enter")
    turn = chat.turns().first
    turn.and_(page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert turn.locator(".bot.kind-urgent .emergency").is_visible()
    page.locator("#emergency-banner [role=alert]").wait_for(state="visible")


@pytest.mark.browser
def test_emoji_only_gets_a_kind_prompt_to_type_a_question(chat: Chat) -> None:
    page = chat.page
    turn = chat.ask("😢😢😢")
    reply = turn.locator(".bot")
    assert re.search(r"please type your question", reply.inner_text(), re.I), reply.inner_text()
    assert "could not be read" not in reply.inner_text()
    colour = reply.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour in ("rgb(248, 250, 252)", "rgb(255, 255, 255)", "rgb(255, 251, 235)"), f"not an alarm: {colour}"
    assert page.locator("#emergency-banner [role=alert]").count() == 0
    _axe(page, "emoji")


@pytest.mark.browser
def test_feedback_confirmation_is_beside_the_buttons_used(chat: Chat, app_server, screenshots_dir) -> None:
    page = chat.page
    turn = chat.ask(FIRST_QUESTION)
    box = turn.get_by_label("Comment (optional, please no names)")
    turn.get_by_role("button", name="Not helpful").click()
    note = turn.locator(".note")
    note.filter(has_text="Your feedback was saved").wait_for()
    box.fill("Clear and kind")
    send_comment = turn.get_by_role("button", name="Send comment")
    send_comment.click()
    note.filter(has_text="Sent").wait_for()
    assert note.get_attribute("aria-live") == "polite" and note.get_attribute("role") == "status"
    assert box.input_value() == "" and turn.locator("button[data-action=comment]").inner_text() == "Sent"
    # The confirmation is in view, right by the button that was pressed.
    note_box, button_box = note.bounding_box(), turn.locator("button[data-action=comment]").bounding_box()
    assert 0 <= note_box["y"] and note_box["y"] + note_box["height"] <= 844
    assert abs(note_box["y"] - button_box["y"]) < 150
    rows = _feedback_rows(app_server["db"])
    assert len(rows) == 1
    assert rows[0]["question"] == FIRST_QUESTION and rows[0]["helpful"] == 0 and rows[0]["comment"] == "Clear and kind"
    assert '"doc_id"' in rows[0]["citations"]
    _axe(page, "feedback sent")
    _shot(page, screenshots_dir, "phone-feedback.png")
    # Changing one's mind updates the same row.
    turn.get_by_role("button", name="Helpful", exact=True).click()
    note.filter(has_text="Your feedback was saved").wait_for()
    rows = _feedback_rows(app_server["db"])
    assert len(rows) == 1 and rows[0]["helpful"] == 1 and rows[0]["comment"] == "Clear and kind"


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
        note = turn.locator(".note", has_text="could not be saved")
        note.wait_for()
        assert "was saved" not in note.inner_text()
    finally:
        db.rmdir()
        if moved.exists():
            moved.rename(db)


def _feedback_rows(db: object) -> list[dict]:
    with sqlite3.connect(str(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY id")]


@pytest.mark.browser
def test_care_list_downloads_from_the_browser_and_has_a_limit(chat: Chat, tmp_path: Path) -> None:
    page = chat.page
    turn = chat.ask(FIRST_QUESTION)
    turn.get_by_role("button", name="Add this question to my care-team list").click()
    turn.locator(".note", has_text="Added to your list").wait_for()
    care = page.get_by_label("My questions (one per line)")
    care.press("End")
    care.type("\nCan we see the scan results?")
    page.wait_for_timeout(500)
    before = len(chat.requests)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download my questions (.txt)").click()
    download = info.value
    fetched = [u for u in chat.requests[before:] if u.startswith("http")]
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    content = target.read_text(encoding="utf-8")
    assert download.suggested_filename == "questions-for-my-care-team.txt"
    assert content.startswith("Questions for my care team\nWritten on ")
    assert f"1. {FIRST_QUESTION}\n" in content and "2. Can we see the scan results?\n" in content
    assert fetched == [], f"the file is made in the browser, not fetched: {fetched}"
    care.fill("")
    care.focus()
    page.keyboard.insert_text("x" * 10_001)  # as a paste does
    page.locator("#care-status", has_text="10,001 characters; the limit is 10,000").wait_for()
    care.fill("A pasted question?")
    page.locator("#care-status", has_text="the limit").wait_for(state="hidden")
    page.wait_for_timeout(500)
    page.reload()
    chat.open()
    assert care.input_value() == "A pasted question?"


@pytest.mark.browser
def test_html_and_script_in_questions_never_run(chat: Chat) -> None:
    page = chat.page
    for payload in XSS_PAYLOADS:
        turn = chat.ask(payload)
        assert turn.locator(".you p").inner_text() == payload
    page.wait_for_timeout(500)  # give any injected handler time to fire
    page.reload()
    chat.open()  # what the browser kept is shown escaped too
    assert chat.turns().count() == len(XSS_PAYLOADS)
    assert chat.dialogs == []
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#transcript script, #transcript svg, #transcript img").count() == 0


@pytest.mark.browser
def test_first_phone_screen_has_the_notice_the_box_and_suggested_questions(chat: Chat, screenshots_dir) -> None:
    page = chat.page
    _axe(page, "first screen")
    _shot(page, screenshots_dir, "phone-first-screen.png")

    def on_screen(locator) -> bool:
        b = locator.bounding_box()
        return b is not None and b["y"] >= 0 and b["y"] + b["height"] <= 844

    assert on_screen(page.locator(".safety-note")) and on_screen(chat.box) and on_screen(page.locator("#send"))
    starters = page.locator("#starters button")
    assert sum(on_screen(starters.nth(i)) for i in range(starters.count())) >= 2
    first = starters.first.inner_text()
    starters.first.click()
    turn = chat.turns().first
    turn.and_(page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert turn.locator(".you p").inner_text() == first and turn.locator("li.source").count() >= 1
    page.locator("#starters").wait_for(state="hidden")


@pytest.mark.browser
def test_no_serious_accessibility_issue_the_instant_an_answer_finishes(chat: Chat) -> None:
    page = chat.page
    chat.box.fill(FIRST_QUESTION)
    page.locator("#send").click()
    chat.turns().first.and_(page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT_MS)
    _axe(page, "the instant the answer finished")
    send = page.locator("#send")
    colours = send.evaluate("e => [getComputedStyle(e).opacity, getComputedStyle(e).backgroundColor]")
    assert colours[0] == "1", f"the Send button is not faded: {colours}"
    turn = chat.turns().first
    turn.locator(".answer-text a.cite").first.click()
    turn.locator("blockquote.passage mark").first.wait_for(state="visible")
    _axe(page, "a source open")


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


@pytest.mark.browser
def test_desktop_view(browser, app_server, screenshots_dir) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        chat = Chat(context.new_page(), str(app_server["url"]))
        turn = chat.ask(FIRST_QUESTION)
        turn.locator(".answer-text a.cite").first.click()
        turn.locator("blockquote.passage mark").first.wait_for(state="visible")
        _axe(chat.page, "desktop")
        _shot(chat.page, screenshots_dir, "desktop.png")
    finally:
        context.close()


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


def test_login_is_optional_and_slows_down_after_five_failures(assistant, knowledge_settings, tmp_path: Path) -> None:
    import httpx

    from bot.web import create_app, launch

    port = _free_port()
    settings = knowledge_settings.model_copy(
        update={"port": port, "feedback_db": tmp_path / "f.sqlite", "auth_username": "family", "auth_password": "pw-123456"}
    )
    app = create_app(assistant, settings)
    launch(app, settings, block=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/config").status_code == 401
            assert "wrong tries" in client.get("/").text  # the login page explains the wait
            assert client.post("/login", data={"username": "family", "password": "pw-123456"}).status_code == 200
            assert client.get("/config").status_code == 200
            started = time.monotonic()
            codes = [client.post("/login", data={"username": "family", "password": f"guess-{i}"}).status_code
                     for i in range(20)]
            assert codes[:5] == [400] * 5 and set(codes[5:]) <= {400, 429} and codes.count(429) >= 14, codes
            refused = client.post("/login", data={"username": "family", "password": "pw-123456"})
            assert refused.status_code == 429 and "wait" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) >= 1
            # Another username from the same client is slowed too; after the wait, the right password works.
            assert client.post("/login", data={"username": "staff", "password": "x"}).status_code == 429
            time.sleep(float(refused.headers["retry-after"]) + 0.2)
            assert client.post("/login", data={"username": "family", "password": "pw-123456"}).status_code == 200
            assert time.monotonic() - started < 10
    finally:
        app.close()
    half = knowledge_settings.model_copy(update={"auth_username": "family", "auth_password": None})
    with pytest.raises(SystemExit, match="BOT_AUTH_PASSWORD"):
        launch(create_app(assistant, half), half, block=False)


def test_behind_a_trusted_proxy_the_throttle_counts_the_forwarded_client(assistant, knowledge_settings,
                                                                          tmp_path: Path, monkeypatch) -> None:
    """Behind a proxy every family shares its address: a trusted proxy's X-Forwarded-For names the client
    (uvicorn trusts the addresses in FORWARDED_ALLOW_IPS, by default 127.0.0.1, a proxy on this machine);
    from anyone else the header is ignored, so writing it cannot dodge the throttle."""
    import httpx

    from bot.web import create_app, launch

    def fail_five(client: httpx.Client, forwarded: str, user: str) -> list[int]:
        return [client.post("/login", data={"username": user, "password": f"guess-{i}"},
                            headers={"X-Forwarded-For": forwarded}).status_code for i in range(5)]

    for trusted, second_family_blocked in (("127.0.0.1", False), ("192.0.2.1", True)):
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", trusted)
        port = _free_port()
        settings = knowledge_settings.model_copy(update={
            "port": port, "feedback_db": tmp_path / f"f{port}.sqlite", "auth_username": "family",
            "auth_password": "pw-123456"})
        app = create_app(assistant, settings)
        launch(app, settings, block=False)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                assert fail_five(client, "203.0.113.5", "guesser") == [400] * 5  # now its next try must wait
                # At once, another family behind the same proxy, with its own username:
                other = client.post("/login", data={"username": "family", "password": "pw-123456"},
                                    headers={"X-Forwarded-For": "198.51.100.7"})
                assert (other.status_code == 429) is second_family_blocked, (trusted, other.status_code)
        finally:
            app.close()


def _listening_pids(port: int, pids: list[int]) -> set[int]:
    """Of these processes, those that hold a socket listening on this loopback port (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{cols[9]}]")
    out = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else []:
            try:
                if os.readlink(fd) in inodes:
                    out.add(pid)
                    break
            except OSError:
                continue
    return out


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_two_processes_serve_the_one_port_and_share_the_families(app_server, knowledge_settings) -> None:
    """`python app.py` serves from BOT_WEB_PROCESSES (2) processes on one port: the second joins once it has
    warmed up, every request is answered by either, and a second copy of the app cannot take the port."""
    import httpx

    from bot.web import more_processes

    first = int(app_server["pid"])
    children = _children(first)
    assert len(children) == 1, children
    assert _listening_pids(int(app_server["port"]), [first, *children]) == {first, *children}
    before = {pid: _cpu_ticks(pid) for pid in (first, *children)}
    kinds = []
    for i in range(24):  # a new connection each time: the kernel picks a process for each
        with httpx.Client(base_url=str(app_server["url"]), timeout=60) as client:
            resp = client.post("/gradio_api/run/ask", json={"data": [f"What is MRD? ({i})", {"v": 1, "turns": []}]})
            resp.raise_for_status()
            kinds.append(resp.json()["data"][1]["turns"][-1]["answer"]["kind"])
    assert set(kinds) == {"answer"}, kinds
    busy = [pid for pid in before if _cpu_ticks(pid) - before[pid] >= 5]  # 50 ms: answered some of the 24
    assert sorted(busy) == sorted(before), (before, {pid: _cpu_ticks(pid) for pid in before})
    taken = knowledge_settings.model_copy(update={"port": int(app_server["port"])})
    with pytest.raises(SystemExit, match="in use"), more_processes(taken, [sys.executable, "-c", "pass"]):
        pass


def _alive(pid: int) -> bool:
    """The process runs (an exited one waiting to be reaped, a zombie, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == pid]


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def test_load_test_script_runs_conversations_without_cross_talk(app_server) -> None:
    """scripts/loadtest.py, small: every conversation gets back exactly its own questions."""
    import json

    out = subprocess.run(
        [sys.executable, "scripts/loadtest.py", "--url", str(app_server["url"]), "--stages", "3,4", "--questions", "3",
         "--max-seconds", "30"],
        cwd=PROJECT, capture_output=True, text=True, timeout=180, check=False,
    )
    stages = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [s["conversations"] for s in stages] == [3, 4], out.stdout + out.stderr
    for s in stages:
        assert s["errors"] == 0 and s["cross_talk"] == 0 and s["answers"] == s["conversations"] * 3, s
        assert s["p50_ms"] is not None and s["p95_ms"] >= s["p50_ms"]


@pytest.mark.browser
def test_an_emergency_in_another_language_shows_the_red_box(chat: Chat) -> None:
    page = chat.page
    turn = chat.ask("Mi bebé tiene los labios azules y le cuesta mucho respirar")
    assert turn.locator(".bot.kind-urgent .emergency").is_visible()
    page.locator("#emergency-banner [role=alert]").wait_for(state="visible")
    assert turn.locator(".signs li").count() >= 1, "the red box names the sign it matched"
