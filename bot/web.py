"""The family chat page: a thin Gradio shell around the same Assistant the CLI uses."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

# Gradio reads this at import time; the app must never phone home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from bot.feedback import FeedbackStore
from bot.schema import Answer, Citation
from bot.settings import Settings

log = logging.getLogger(__name__)

CSS_PATH = Path(__file__).resolve().parent / "static" / "web.css"
STREAM_DELAY_S = 0.02  # pause between revealed words: calm, readable, still quick
CARE_FILE_NAME = "questions-for-my-care-team.txt"

STARTER_QUESTIONS = (
    "How is blinatumomab given to babies?",
    "What did the study find?",
    "What is KMT2A-rearranged leukemia?",
    "What side effects did the babies have?",
)
SAFETY_NOTE = (
    "This chat gives general information from trusted sources. It is not a doctor and cannot "
    "advise on your child. If you are worried about your child right now, call your care team "
    "or your emergency number."
)
EMERGENCY_TITLE = "This may be an emergency: get help now"
ERROR_MESSAGE = (
    "Sorry, something went wrong on our side and no answer was made. Please try again. "
    "If you are worried about your child, call your care team."
)
KIND_LABELS = {
    "answer": "Answer",
    "urgent": "Emergency",
    "out_of_scope": "Outside what I can help with",
    "unknown": "Not in my sources",
    "error": "Please check your question",
}

# Wires the buttons inside the transcript (rendered as plain HTML) to Python, and lets a [n]
# marker open its source. No markup from a question or a document ever reaches this code.
TRANSCRIPT_JS = """
element.addEventListener('click', (ev) => {
  const cite = ev.target.closest('a.cite');
  if (cite) {
    const item = element.querySelector('#' + CSS.escape(cite.getAttribute('href').slice(1)));
    if (item) {
      ev.preventDefault();
      const box = item.querySelector('details');
      if (box) box.open = true;
      item.scrollIntoView({block: 'nearest'});
      const summary = item.querySelector('summary');
      if (summary) summary.focus();
    }
    return;
  }
  const btn = ev.target.closest('button[data-action]');
  if (!btn) return;
  const turn = Number(btn.dataset.turn);
  const box = element.querySelector('#comment-' + turn);
  const comment = box ? box.value : '';
  if (btn.dataset.action === 'save') {
    btn.setAttribute('aria-pressed', 'true');
    btn.textContent = 'Added to my care-team list';
  } else if (btn.dataset.action === 'vote') {
    element.querySelectorAll('button[data-action=vote][data-turn="' + turn + '"]').forEach((b) => {
      b.setAttribute('aria-pressed', b === btn ? 'true' : 'false');
    });
  }
  trigger('click', {action: btn.dataset.action, turn: turn, helpful: btn.dataset.helpful || '', comment: comment});
});
"""

# Make the status line a polite live region once; its content is replaced on every update.
STATUS_JS = "element.setAttribute('role', 'status'); element.setAttribute('aria-live', 'polite');"


class AssistantLike(Protocol):
    """What the page needs from the assistant (bot.assistant.Assistant)."""

    def ask(self, question: str, history: list[dict[str, str]] | None = None, qid: str | None = None) -> Answer: ...


# ---------------------------------------------------------------- rendering (pure, escaped)


def esc(text: object) -> str:
    """Escape anything shown on the page; question and document text are never trusted."""
    return html.escape("" if text is None else str(text), quote=True)


def safe_url(url: str | None) -> str | None:
    """The URL if it is a plain http(s) link, else None (no javascript:, data:, ...)."""
    if not url:
        return None
    parsed = urlparse(url.strip())
    if parsed.scheme.lower() in ("http", "https") and parsed.netloc:
        return url.strip()
    return None


def highlight(passage: str | None, quote: str) -> str:
    """The escaped passage with the quote marked; whitespace may differ between the two."""
    tokens = quote.split()
    if not passage or not tokens:
        return f"<mark>{esc(quote)}</mark>"
    escaped = esc(passage)
    pattern = r"\s+".join(re.escape(esc(t)) for t in tokens)
    found = re.search(pattern, escaped)
    if not found:  # quote not inside this passage: show the quote itself, still marked
        return f"<mark>{esc(quote)}</mark>"
    return f"{escaped[: found.start()]}<mark>{found.group(0)}</mark>{escaped[found.end() :]}"


def render_text(text: str, turn: int, cited: set[int]) -> str:
    """Escaped answer text, paragraphs kept, each known [n] marker a link to its source."""

    def marker(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if n not in cited:
            return m.group(0)
        return f'<a class="cite" href="#src-{turn}-{n}" aria-label="Source {n}">[{n}]</a>'

    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()] or [""]
    out = []
    for p in paragraphs:
        body = re.sub(r"\[(\d+)\]", marker, esc(p)).replace("\n", "<br>")
        out.append(f"<p>{body}</p>")
    return "".join(out)


def render_citation(turn: int, c: Citation) -> str:
    """One numbered source: title and publication; opening it shows the marked passage and a link."""
    url = safe_url(c.url)
    link = (
        f'<p class="src-link"><a href="{esc(url)}" target="_blank" rel="noopener noreferrer">'
        'Open the original publication<span class="sr-only"> (opens in a new tab)</span></a></p>'
        if url
        else ""
    )
    section = f'<p class="src-section">Section: {esc(c.section)}</p>' if c.section else ""
    return (
        f'<li id="src-{turn}-{c.n}" class="source" data-doc-id="{esc(c.doc_id)}"><details>'
        f'<summary><span class="src-n">[{c.n}]</span> <span class="src-title">{esc(c.title)}</span>'
        f'<span class="src-pub">{esc(c.source)}</span></summary>'
        f'<div class="src-body">{section}'
        f'<p class="src-hint">The highlighted words are the ones this answer relies on.</p>'
        f'<blockquote class="passage">{highlight(c.passage, c.quote)}</blockquote>{link}</div>'
        f"</details></li>"
    )


def render_actions(turn: int, state: dict[str, Any]) -> str:
    """Save-for-care-team and feedback controls under one answer (native buttons, labelled)."""
    saved = bool(state.get("saved"))
    helpful = state.get("helpful")
    save_label = "Added to my care-team list" if saved else "Add this question to my care-team list"

    def vote(value: bool, label: str) -> str:
        pressed = "true" if helpful is value else "false"
        return (
            f'<button type="button" class="vote" data-action="vote" data-turn="{turn}" '
            f'data-helpful="{int(value)}" aria-pressed="{pressed}">{label}</button>'
        )

    return (
        f'<div class="actions">'
        f'<button type="button" class="save" data-action="save" data-turn="{turn}" '
        f'aria-pressed="{str(saved).lower()}">{save_label}</button>'
        f'<div class="feedback" role="group" aria-labelledby="fb-{turn}">'
        f'<span id="fb-{turn}" class="fb-q">Was this answer helpful?</span>'
        f"{vote(True, 'Helpful')}{vote(False, 'Not helpful')}"
        f'<label class="fb-comment" for="comment-{turn}">Comment (optional, please no names)</label>'
        f'<span class="fb-row"><input type="text" id="comment-{turn}" maxlength="1000" autocomplete="off">'
        f'<button type="button" data-action="comment" data-turn="{turn}">Send comment</button></span>'
        f"</div></div>"
    )


def render_turn(turn: int, state: dict[str, Any], shown_words: int | None = None) -> str:
    """One question and its answer; with shown_words, only that many words of the answer so far."""
    question = state["question"]
    raw = state.get("answer")
    complete = shown_words is None
    stage = "pending" if raw is None else ("done" if complete else "streaming")
    head = (
        f'<article class="turn" data-state="{stage}" aria-labelledby="q-{turn}">'
        f'<div class="you"><span class="who">You asked</span><p id="q-{turn}">{esc(question)}</p></div>'
    )
    if raw is None:
        return head + '<div class="bot pending"><p>Looking in the sources…</p></div></article>'
    ans = Answer.model_validate(raw)
    cited = {c.n for c in ans.citations}
    text = ans.answer
    if not complete:
        text = " ".join(text.split(" ")[:shown_words])
    parts = [f'<div class="bot kind-{esc(ans.kind)}">']
    if ans.kind == "urgent":
        parts.append(f'<div class="emergency"><p class="emergency-title">{esc(EMERGENCY_TITLE)}</p>')
        parts.append(render_text(text, turn, cited))
        parts.append("</div>")
    else:
        parts.append(f'<p class="kind-label">{esc(KIND_LABELS.get(ans.kind, "Answer"))}</p>')
        parts.append(f'<div class="answer-text">{render_text(text, turn, cited)}</div>')
    if complete:
        if ans.citations:
            items = "".join(render_citation(turn, c) for c in sorted(ans.citations, key=lambda c: c.n))
            parts.append(
                f'<section class="sources" aria-labelledby="srch-{turn}">'
                f'<h3 id="srch-{turn}">Sources (open one to check the exact words)</h3><ol>{items}</ol></section>'
            )
        if ans.disclaimer:
            parts.append(f'<p class="disclaimer">{esc(ans.disclaimer)}</p>')
        if ans.kind != "error":
            parts.append(render_actions(turn, state))
    parts.append("</div></article>")
    return head + "".join(parts)


def render_transcript(turns: list[dict[str, Any]], streaming: tuple[int, int] | None = None) -> str:
    """The whole conversation; streaming=(turn, words) shows that turn's answer partly."""
    if not turns:
        return (
            '<div class="empty"><h2>Ask a question</h2><p>Type your question below, or choose one of the '
            "suggested questions. Every answer shows its sources so you can check them.</p></div>"
        )
    html_turns = []
    for i, t in enumerate(turns):
        words = streaming[1] if streaming and streaming[0] == i else None
        html_turns.append(render_turn(i, t, words))
    return f'<h2 class="sr-only">Conversation</h2>{"".join(html_turns)}'


def render_banner(turns: list[dict[str, Any]]) -> str:
    """The page-top emergency message while the conversation holds an urgent answer, else ''."""
    urgent = [t for t in turns if t.get("answer") and t["answer"].get("kind") == "urgent"]
    if not urgent:
        return ""
    last = Answer.model_validate(urgent[-1]["answer"])
    message = re.sub(r"\s*\[\d+\]", "", last.answer)  # the sources are shown with the answer itself
    return (
        f'<div class="emergency-banner" role="alert"><p class="emergency-title">{esc(EMERGENCY_TITLE)}</p>'
        f"<p>{esc(message)}</p></div>"
    )


def care_text(lines: str) -> str:
    """The downloadable list: a heading, the date, and one numbered question per line."""
    questions = [q.strip() for q in (lines or "").splitlines() if q.strip()]
    head = f"Questions for my care team\nWritten on {date.today():%d %B %Y}\n\n"
    if not questions:
        return head + "(No questions yet.)\n"
    return head + "".join(f"{i}. {q}\n" for i, q in enumerate(questions, start=1))


_CARE_ROOT = Path(tempfile.gettempdir()) / "bot-care-lists"
_CARE_MAX_AGE_S = 3600


def write_care_file(lines: str) -> str:
    """Write the list to a fresh temporary .txt (one per edit, so families never share a file)."""
    _CARE_ROOT.mkdir(mode=0o700, exist_ok=True)
    # A family's questions are private: drop lists older than an hour.
    for old in _CARE_ROOT.iterdir():
        try:
            if time.time() - old.stat().st_mtime > _CARE_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue
    folder = Path(tempfile.mkdtemp(dir=_CARE_ROOT))
    path = folder / CARE_FILE_NAME
    path.write_text(care_text(lines), encoding="utf-8")
    return str(path)


def history_for_assistant(turns: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Earlier turns as {role, content} messages for the follow-up resolver."""
    out: list[dict[str, str]] = []
    for t in turns:
        ans = t.get("answer")
        if not ans or ans.get("kind") == "error":
            continue
        out.append({"role": "user", "content": t["question"]})
        out.append({"role": "assistant", "content": ans.get("answer", "")})
    return out


# ---------------------------------------------------------------- the app


def create_app(assistant: AssistantLike, settings: Settings) -> gr.Blocks:
    """Build (not launch) the chat page around an assistant."""
    store = FeedbackStore(settings.feedback_db)
    limit = settings.max_question_chars
    ask_lock = threading.Lock()  # one retrieval at a time; the word-by-word reveal runs in parallel

    def ask(question: str, turns: list[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
        """Answer one question, revealing the answer word by word."""
        q = (question or "").strip()
        if not q:
            yield gr.update(), turns, gr.update(), "Please type a question first.", gr.update(), gr.update(), gr.update()
            return
        if len(q) > limit:
            msg = (
                f"Your question is {len(q):,} characters long. Please shorten it to {limit:,} characters "
                "or fewer and send it again."
            )
            yield gr.update(), turns, gr.update(), msg, gr.update(), gr.update(), gr.update()
            return
        turns = [*turns, {"question": q, "answer": None, "saved": False, "helpful": None, "feedback_id": None}]
        i = len(turns) - 1
        yield (
            render_transcript(turns),
            turns,
            "",
            "Looking in the sources…",
            gr.update(),
            gr.update(visible=False),
            gr.update(interactive=False),
        )
        try:
            with ask_lock:
                ans = assistant.ask(q, history=history_for_assistant(turns[:-1]))
        except Exception:  # the family sees a calm message, staff see the traceback
            log.exception("assistant.ask failed")
            ans = Answer(question=q, kind="error", answer=ERROR_MESSAGE)
        turns[i] = {**turns[i], "answer": ans.model_dump(mode="json")}
        banner = render_banner(turns)
        if ans.kind != "urgent":  # an emergency is shown at once, in full
            words = ans.answer.split(" ")
            for n in range(1, len(words)):
                yield (
                    render_transcript(turns, streaming=(i, n)),
                    turns,
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                )
                time.sleep(STREAM_DELAY_S)
        done = "Emergency message shown at the top." if ans.kind == "urgent" else "Answer ready."
        yield (
            render_transcript(turns),
            turns,
            gr.update(),
            done,
            gr.update(value=banner, visible=bool(banner)),
            gr.update(),
            gr.update(interactive=True),
        )

    def clear() -> tuple[Any, ...]:
        """Start a new conversation (the care-team list is kept)."""
        return render_transcript([]), [], "", "Conversation cleared.", gr.update(value="", visible=False), gr.update(visible=True)

    def on_action(turns: list[dict[str, Any]], care: str, evt: gr.EventData) -> tuple[Any, ...]:
        """A button under an answer: save the question, or record feedback."""
        data = evt._data or {}
        try:
            i = int(data.get("turn", -1))
        except (TypeError, ValueError):
            i = -1
        if not 0 <= i < len(turns) or not turns[i].get("answer"):
            return turns, gr.update(), gr.update(), "That answer is no longer on the page."
        turn = dict(turns[i])
        turns = [*turns[:i], turn, *turns[i + 1 :]]
        action = data.get("action")
        comment = str(data.get("comment") or "")
        if action == "save":
            lines = [ln for ln in (care or "").splitlines() if ln.strip()]
            turn["saved"] = True
            if turn["question"] in (ln.strip() for ln in lines):
                return turns, gr.update(), gr.update(), "This question is already on your care-team list."
            new = "\n".join([*lines, turn["question"]])
            return turns, new, write_care_file(new), "Added to your list of questions for your care team."
        if action in ("vote", "comment"):
            ans = Answer.model_validate(turn["answer"])
            if action == "vote":
                turn["helpful"] = data.get("helpful") == "1"
            elif turn.get("helpful") is None:
                return turns, gr.update(), gr.update(), "Please choose Helpful or Not helpful first, then send your comment."
            citations = json.dumps([c.model_dump(mode="json") for c in ans.citations], ensure_ascii=False)
            try:
                if turn.get("feedback_id"):
                    store.update(turn["feedback_id"], helpful=turn["helpful"], comment=comment)
                else:
                    turn["feedback_id"] = store.add(ans.question, ans.answer, citations, turn["helpful"], comment)
            except (sqlite3.Error, OSError):  # never let a family believe feedback was kept when it was not
                log.exception("feedback could not be stored")
                return turns, gr.update(), gr.update(), "Sorry, your feedback could not be saved. Please try again later."
            msg = "Thank you. Your comment was saved." if action == "comment" else "Thank you. Your feedback was saved."
            return turns, gr.update(), gr.update(), msg
        return turns, gr.update(), gr.update(), gr.update()

    theme = gr.themes.Default(
        primary_hue="blue",
        neutral_hue="slate",
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    ).set(
        # Darker than the defaults so text meets WCAG AA contrast (checked by axe in the tests).
        button_primary_background_fill="*primary_700",
        button_primary_background_fill_hover="*primary_800",
        button_primary_text_color="white",
        block_info_text_color="*neutral_600",
        body_text_color_subdued="*neutral_600",
    )
    with gr.Blocks(title="Family questions: infant leukemia", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        app._bot_theme = theme  # type: ignore[attr-defined]  # launch() takes theme and css in Gradio 6
        turns_state = gr.State([])
        gr.HTML(
            '<header class="site-header"><h1>Questions about infant leukemia and blinatumomab</h1>'
            '<p class="lede">Plain-language answers from trusted sources, with the exact words they rely on.</p>'
            f'<p class="safety-note"><strong>Please note:</strong> {esc(SAFETY_NOTE)}</p></header>',
            js_on_load=None,
        )
        banner = gr.HTML("", visible=False, elem_id="emergency-banner", js_on_load=None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300, elem_id="chat-column"):
                transcript = gr.HTML(render_transcript([]), elem_id="transcript", js_on_load=TRANSCRIPT_JS)
                question = gr.Textbox(
                    label="Your question",
                    placeholder="Type your question here…",
                    info=f"Up to {limit:,} characters. Press Enter or the Send button to send.",
                    lines=1,
                    max_lines=8,
                    elem_id="question",
                )
                with gr.Row(elem_id="send-row"):
                    send = gr.Button("Send", variant="primary", elem_id="send", min_width=120)
                    clear_btn = gr.Button("Clear conversation", variant="secondary", elem_id="clear", min_width=120)
                status = gr.HTML("", elem_id="status", js_on_load=STATUS_JS)
                # Under the input, so on a phone the question box is on the first screen.
                with gr.Column(elem_id="starters") as starters:
                    gr.HTML('<h2 class="starters-title">Suggested questions</h2>', js_on_load=None)
                    starter_buttons = [gr.Button(s, size="sm", variant="secondary") for s in STARTER_QUESTIONS]
            with gr.Column(scale=2, min_width=280, elem_id="care-column"):
                gr.HTML(
                    '<h2 class="care-title">Questions for my care team</h2>'
                    '<p class="care-help">Save questions from the chat, edit them here, and download the list '
                    "to bring to your next appointment.</p>",
                    js_on_load=None,
                )
                care = gr.Textbox(
                    label="My questions (one per line)",
                    lines=6,
                    max_lines=20,
                    elem_id="care-list",
                )
                download = gr.DownloadButton(
                    "Download my questions (.txt)", value=write_care_file(""), elem_id="care-download", size="md"
                )

        outputs = [transcript, turns_state, question, status, banner, starters, send]
        send.click(ask, [question, turns_state], outputs, concurrency_limit=8)
        question.submit(ask, [question, turns_state], outputs, concurrency_limit=8)
        for b, text in zip(starter_buttons, STARTER_QUESTIONS, strict=True):
            b.click(lambda t=text: t, None, question).then(ask, [question, turns_state], outputs, concurrency_limit=8)
        clear_btn.click(clear, None, [transcript, turns_state, question, status, banner, starters])
        transcript.click(on_action, [turns_state, care], [turns_state, care, download, status])
        care.change(write_care_file, care, download)
    return app


def launch(app: gr.Blocks, settings: Settings, block: bool = True) -> None:
    """Serve the page on settings.host:port (loopback by default), with an optional login."""
    auth = None
    if settings.auth_username or settings.auth_password:
        if not (settings.auth_username and settings.auth_password):
            raise SystemExit("Set both BOT_AUTH_USERNAME and BOT_AUTH_PASSWORD to turn on the login, or neither.")
        auth = (settings.auth_username, settings.auth_password)
    app.queue(default_concurrency_limit=4)
    app.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=False,
        auth=auth,
        auth_message="Please sign in to use the family chat." if auth else None,
        theme=getattr(app, "_bot_theme", None),
        css_paths=[CSS_PATH],
        footer_links=[],
        run_history=False,  # never keep families' questions in the browser's run history
        enable_monitoring=False,
        mcp_server=False,
        ssr_mode=False,
        show_error=False,
        inbrowser=False,
        prevent_thread_lock=not block,
    )
