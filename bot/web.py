"""The family chat page: a thin Gradio shell around the same Assistant the CLI uses.

The conversation and the care-team list live in the family's own browser (Gradio BrowserState, kept in
localStorage); the server keeps neither. Each question goes to `Assistant.ask` as typed, with the
earlier turns the browser sends: the assistant is the one door that judges a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from functools import lru_cache, partial
from typing import Any, Protocol
from urllib.parse import urlparse

# Gradio reads this at import time; the app must never phone home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import anyio
import gradio as gr
from pydantic import ValidationError
from starlette.middleware import Middleware

from bot.body_limit import BodySizeLimitMiddleware
from bot.feedback import FeedbackStore
from bot.login import LoginThrottle, LoginThrottleMiddleware
from bot.schema import Answer, Citation
from bot.settings import Settings
from bot.starters import load_starters

log = logging.getLogger(__name__)

CSS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "web.css")
CARE_FILE_NAME = "questions-for-my-care-team.txt"
WORKER_ENV = "FAMILY_CHAT_WORKER_OF"  # set in the serving processes the first one starts: its process id
CONVERSATION_KEY = "family-chat-conversation-v1"  # localStorage keys in the family's browser
CARE_KEY = "family-chat-care-list-v1"
# Gradio encrypts BrowserState with a key it also sends to the page, so this is no secret; a fixed
# value only lets what the browser keeps survive a restart of the app.
BROWSER_KEY = "family-chat-kept-in-this-browser"
MAX_KEPT_TURNS = 50  # the oldest turns are dropped beyond this, to keep the browser's copy small
SHOWN_QUESTION_CHARS = 600  # a very long message is shown cut, with an ellipsis

SAFETY_NOTE = (
    "This chat gives general information from trusted sources. It is not a doctor and cannot "
    "advise on your child. If you are worried about your child right now, call your care team "
    "or your emergency number."
)
PRIVACY_NOTE = (
    "Your conversation and your list of questions are kept only in this web browser, on this device, "
    "so they are still here if you reload the page or close it. They are not kept on our server: "
    "each question is sent to it to be answered, then forgotten. If you press Helpful or Not helpful, "
    "that question, its answer and your comment are stored so staff can improve the answers, "
    "without your name. On a shared device, use \u201cForget everything on this device\u201d when you are done."
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
    "error": "Please check your message",
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
  const note = element.querySelector('#note-' + turn);
  if (note) note.textContent = 'Sending…';
  trigger('click', {action: btn.dataset.action, turn: turn, helpful: btn.dataset.helpful || '', comment: comment});
});
let shownTurns = null;
watch('value', () => {  // a new transcript: whatever was pending has arrived
  const note = document.querySelector('#pending .pending-note');
  if (note) note.hidden = true;
  const turns = element.querySelectorAll('article.turn');
  // One new answer: bring its start into view (on a phone it would open below the fold's top).
  if (shownTurns !== null && turns.length === shownTurns + 1) {
    turns[turns.length - 1].scrollIntoView({block: 'start'});
  }
  shownTurns = turns.length;
});
element.addEventListener('input', (ev) => {
  if (!ev.target.matches('input[id^=comment-]')) return;
  const btn = element.querySelector('button[data-action=comment][data-turn="' + ev.target.id.slice(8) + '"]');
  if (btn) btn.textContent = 'Send comment';
});
"""

# Runs after the server has handled a button under an answer: shows the result beside that button.
ACK_JS = """(ack) => {
  if (!ack || ack.turn === undefined) return;
  const root = document.querySelector('#transcript');
  const note = root && root.querySelector('#note-' + ack.turn);
  if (!note) return;
  note.textContent = ack.message || '';
  note.dataset.ok = ack.ok ? 'true' : 'false';
  if (ack.action === 'save') {
    const b = root.querySelector('button[data-action=save][data-turn="' + ack.turn + '"]');
    if (b && ack.saved) { b.setAttribute('aria-pressed', 'true'); b.textContent = 'Added to my care-team list'; }
  }
  if (ack.action === 'vote' || ack.action === 'comment') {
    root.querySelectorAll('button[data-action=vote][data-turn="' + ack.turn + '"]').forEach((b) => {
      b.setAttribute('aria-pressed', String(ack.helpful !== null && b.dataset.helpful === (ack.helpful ? '1' : '0')));
    });
  }
  if (ack.action === 'comment' && ack.ok) {
    const box = root.querySelector('#comment-' + ack.turn);
    if (box) box.value = '';
    const b = root.querySelector('button[data-action=comment][data-turn="' + ack.turn + '"]');
    if (b) b.textContent = 'Sent';
  }
}"""

# Shown at once on Send, before the server answers (nothing waits for a round trip).
PENDING_JS = """(question, kept) => {
  const note = document.querySelector('#pending .pending-note');
  if (note && (question || '').trim()) note.hidden = false;
  return [question, kept];
}"""

# The care-team list is turned into a file in the browser: it never exists on the server.
DOWNLOAD_JS = """(text) => {
  const questions = (text || '').split('\\n').map((q) => q.trim()).filter((q) => q);
  const today = new Date().toLocaleDateString('en-GB', {day: 'numeric', month: 'long', year: 'numeric'});
  let body = 'Questions for my care team\\nWritten on ' + today + '\\n\\n';
  body += questions.length ? questions.map((q, i) => (i + 1) + '. ' + q).join('\\n') + '\\n' : '(No questions yet.)\\n';
  const url = URL.createObjectURL(new Blob([body], {type: 'text/plain;charset=utf-8'}));
  const a = document.createElement('a');
  a.href = url; a.download = 'CARE_FILE_NAME';
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return [];
}""".replace("CARE_FILE_NAME", CARE_FILE_NAME)

# After "Forget everything": remove the two entries from localStorage altogether.
FORGET_JS = f"""() => {{
  localStorage.removeItem('{CONVERSATION_KEY}');
  localStorage.removeItem('{CARE_KEY}');
  return [];
}}"""

# Make the status lines polite live regions once; their content is replaced on every update.
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


def reviewed_label(reviewed: str | None) -> str:
    """'21 November 2026' for an ISO date, else the text as given ('' when there is none)."""
    if not reviewed:
        return ""
    try:
        return f"{date.fromisoformat(str(reviewed)[:10]):%-d %B %Y}"
    except ValueError:
        return str(reviewed)


def link(url: str | None, text: str) -> str:
    """An escaped link that opens in a new tab, or the escaped text alone when the URL is not http(s)."""
    good = safe_url(url)
    if not good:
        return esc(text)
    return (
        f'<a href="{esc(good)}" target="_blank" rel="noopener noreferrer">{esc(text)}'
        '<span class="sr-only"> (opens in a new tab)</span></a>'
    )


def render_provenance(c: Citation) -> tuple[str, str]:
    """('From: <document>, reviewed <date>', 'Based on: <publications>') for one source.

    The quoted words are in the cited document itself, so 'From' names it (and links to it when it
    has its own address); the publications it was written from follow under 'Based on'. Documents
    without `based_on` (ingested as they are, or written before the field existed) fall back to their
    `source` line when it names something other than the document.
    """
    reviewed = reviewed_label(c.reviewed)
    from_line = f"From: {esc(c.title)}" + (f", reviewed {esc(reviewed)}" if reviewed else "")
    based = [link(b.url, b.citation) for b in c.based_on if b.citation]
    own_link = c.url
    if not based and c.source and c.source.strip() != c.title.strip():
        based = [link(c.url, c.source)]
        own_link = None  # that address is the publication's, not our document's
    if safe_url(own_link):
        from_line += f' <span class="src-open">({link(own_link, "open this document")})</span>'
    based_line = f"Based on: {'; '.join(based)}" if based else ""
    return from_line, based_line


def render_citation(turn: int, c: Citation) -> str:
    """One numbered source: where the words are from and what that was based on; opening it shows them."""
    from_line, based_line = render_provenance(c)
    section = f'<p class="src-section">Section: {esc(c.section)}</p>' if c.section else ""
    based = f'<p class="src-based">{based_line}</p>' if based_line else ""
    return (
        f'<li id="src-{turn}-{c.n}" class="source" data-doc-id="{esc(c.doc_id)}"><details>'
        f'<summary><span class="src-n">[{c.n}]</span> <span class="src-from">{from_line}</span></summary>'
        f'<div class="src-body">{section}'
        f'<p class="src-hint">The highlighted words are the ones this answer relies on, in {esc(c.title)}.</p>'
        f'<blockquote class="passage">{highlight(c.passage, c.quote)}</blockquote>{based}</div>'
        f"</details></li>"
    )


def sign_names(safety: dict[str, Any] | None) -> list[str]:
    """The signs the safety check matched, in words: its `sign_names`, else its `signs`."""
    safety = safety or {}
    raw = safety.get("sign_names") or safety.get("signs")
    if isinstance(raw, str):
        signs = [s.strip() for s in re.split(r"[;\n]", raw) if s.strip()]
    elif isinstance(raw, list | tuple):
        signs = [str(s).strip() for s in raw if str(s).strip()]
    else:
        signs = []
    return list(dict.fromkeys(signs))


def render_signs(safety: dict[str, Any] | None) -> str:
    """The signs the safety check matched, named one by one ('' when it names none)."""
    signs = sign_names(safety)
    if not signs:
        return ""
    items = "".join(f"<li>{esc(s)}</li>" for s in signs)
    return f'<div class="signs"><p>What you told us that needs help now:</p><ul>{items}</ul></div>'


def render_actions(turn: int, state: dict[str, Any]) -> str:
    """Save-for-care-team and feedback controls under one answer, with a live note beside them."""
    saved = bool(state.get("saved"))
    helpful = state.get("helpful")
    save_label = "Added to my care-team list" if saved else "Add this question to my care-team list"

    def vote(value: bool, label: str) -> str:
        pressed = "true" if helpful is value else "false"
        return (
            f'<button type="button" class="vote" data-action="vote" data-turn="{turn}" '
            f'data-helpful="{int(value)}" aria-pressed="{pressed}">{label}</button>'
        )

    sent = "Sent" if state.get("comment_sent") else "Send comment"
    return (
        f'<div class="actions">'
        f'<button type="button" class="save" data-action="save" data-turn="{turn}" '
        f'aria-pressed="{str(saved).lower()}">{save_label}</button>'
        f'<div class="feedback" role="group" aria-labelledby="fb-{turn}">'
        f'<span id="fb-{turn}" class="fb-q">Was this answer helpful?</span>'
        f"{vote(True, 'Helpful')}{vote(False, 'Not helpful')}"
        f'<label class="fb-comment" for="comment-{turn}">Comment (optional, please no names)</label>'
        f'<span class="fb-row"><input type="text" id="comment-{turn}" maxlength="1000" autocomplete="off">'
        f'<button type="button" data-action="comment" data-turn="{turn}">{sent}</button></span>'
        f"</div>"
        f'<p class="note" id="note-{turn}" role="status" aria-live="polite"></p>'
        f"</div>"
    )


def shown_question(question: str) -> str:
    if len(question) <= SHOWN_QUESTION_CHARS:
        return question
    return question[:SHOWN_QUESTION_CHARS].rstrip() + f"… ({len(question):,} characters in all)"


def render_turn(turn: int, state: dict[str, Any]) -> str:
    """One question and its whole answer."""
    head = (
        f'<article class="turn" data-state="done" aria-labelledby="q-{turn}">'
        f'<div class="you"><span class="who">You asked</span><p id="q-{turn}">{esc(shown_question(state["question"]))}</p></div>'
    )
    raw = state["answer"]
    ans = Answer.model_validate(raw)
    cited = {c.n for c in ans.citations}
    parts = [f'<div class="bot kind-{esc(ans.kind)}">']
    if ans.kind == "urgent":
        parts.append(f'<div class="emergency"><p class="emergency-title">{esc(EMERGENCY_TITLE)}</p>')
        parts.append(render_text(ans.answer, turn, cited))
        parts.append(render_signs(raw.get("safety")))
        parts.append("</div>")
    else:
        parts.append(f'<p class="kind-label">{esc(KIND_LABELS.get(ans.kind, "Answer"))}</p>')
        parts.append(f'<div class="answer-text">{render_text(ans.answer, turn, cited)}</div>')
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


def render_transcript(turns: list[dict[str, Any]]) -> str:
    """The whole conversation, or a short invitation when it is empty."""
    if not turns:
        return (
            '<div class="empty"><p>Type your question below, or choose a suggested question. '
            "Every answer shows its sources so you can check them.</p></div>"
        )
    body = "".join(_rendered_turn(i, json.dumps(t, sort_keys=True, ensure_ascii=False)) for i, t in enumerate(turns))
    return f'<h2 class="sr-only">Conversation</h2>{body}'


@lru_cache(maxsize=1024)
def _rendered_turn(turn: int, state_json: str) -> str:
    """render_turn of a turn given as its JSON text. The page is sent whole after every question, so each
    earlier turn of a conversation would be rendered again (its quotes highlighted again) at every question;
    this renders each turn once, keyed by everything it is rendered from (about 9 KB of HTML a turn)."""
    return render_turn(turn, json.loads(state_json))


def render_banner(turns: list[dict[str, Any]]) -> str:
    """The page-top emergency message while the conversation holds an urgent answer, else ''."""
    urgent = [t for t in turns if t["answer"].get("kind") == "urgent"]
    if not urgent:
        return ""
    raw = urgent[-1]["answer"]
    message = re.sub(r"\s*\[\d+\]", "", str(raw.get("answer", "")))  # the sources are shown with the answer
    return (
        f'<div class="emergency-banner" role="alert"><p class="emergency-title">{esc(EMERGENCY_TITLE)}</p>'
        f"<p>{esc(message)}</p>{render_signs(raw.get('safety'))}</div>"
    )


# ---------------------------------------------------------------- what the browser keeps


def kept_answer(ans: Answer) -> dict[str, Any]:
    """The answer as the browser keeps it: what the page shows, not the retrieval details."""
    return ans.model_dump(mode="json", exclude={"retrieved", "timings_ms"})


def signature(key: bytes, question: str, answer: dict[str, Any]) -> str:
    """HMAC of a question and its kept answer, so feedback records only what the bot really said."""
    body = json.dumps([question, answer], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()


def signing_key(settings: Settings) -> bytes:
    """The key that signs answers kept in the browser: the configured secret, or one made once and kept
    beside the feedback database (readable by this user only), so that feedback on a conversation kept
    in the browser still works after the app restarts, and every app process on this machine agrees."""
    if settings.web_secret:
        return settings.web_secret.encode("utf-8")
    path = settings.feedback_db.parent / "web-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:  # first start: write the whole key before anyone reads it (a reader retries a short file)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
    for _ in range(50):
        key = path.read_text(encoding="utf-8").strip()
        if len(key) == 64:
            return key.encode("utf-8")
        time.sleep(0.01)  # another process is writing it right now
    raise RuntimeError(f"{path} is not a key made by this app: delete it (feedback on answers kept "
                       "in browsers stops working) or set BOT_WEB_SECRET.")


def kept_turns(value: Any) -> list[dict[str, Any]]:
    """The turns in what the browser sent, keeping only well-formed ones (it may be old or edited)."""
    turns = value.get("turns") if isinstance(value, dict) else None
    out: list[dict[str, Any]] = []
    for t in turns[-MAX_KEPT_TURNS:] if isinstance(turns, list) else []:
        if not (isinstance(t, dict) and isinstance(t.get("question"), str) and isinstance(t.get("answer"), dict)):
            continue
        try:
            Answer.model_validate(t["answer"])
        except ValidationError:
            continue
        out.append(t)
    return out


def kept_care(value: Any) -> str:
    text = value.get("text") if isinstance(value, dict) else None
    return text if isinstance(text, str) else ""


def history_for_assistant(turns: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Earlier turns as {role, content} messages for follow-up questions."""
    out: list[dict[str, str]] = []
    for t in turns:
        ans = t["answer"]
        if ans.get("kind") == "error":
            continue
        out.append({"role": "user", "content": t["question"]})
        out.append({"role": "assistant", "content": str(ans.get("answer", ""))})
    return out


# ---------------------------------------------------------------- the page's handlers


class ChatHandlers:
    """What each control does; `create_app` only wires these to the page."""

    def __init__(self, assistant: AssistantLike, settings: Settings) -> None:
        self.assistant = assistant
        self.settings = settings
        self.store = FeedbackStore(settings.feedback_db)
        self.key = signing_key(settings)
        # Not a lock around the assistant (it is safe to call from several threads): a small, fair limit
        # on answers computed at once, so that under load each waits its turn instead of all slowing down.
        self._slots = asyncio.Semaphore(max(1, settings.web_answer_slots))

    def _row_sig(self, row: int) -> str:
        """Proof that a feedback row was made for this browser's turn (so no one can rewrite another's)."""
        return hmac.new(self.key, f"feedback-row:{row}".encode(), hashlib.sha256).hexdigest()

    # Outputs of ask / restore / clear, in this order.
    def _page(self, turns: list[dict[str, Any]], status: Any, question: Any = None) -> tuple[Any, ...]:
        banner = render_banner(turns)
        return (
            render_transcript(turns),
            {"v": 1, "turns": turns},
            gr.update() if question is None else question,
            status,
            gr.update(value=banner, visible=bool(banner)),
            gr.update(visible=not turns),
            gr.update(visible=bool(turns)),
        )

    async def ask(self, question: str | None, kept: Any) -> tuple[Any, ...]:
        """Answer one message, in a worker thread once one of the answer slots is free (first come, first served)."""
        async with self._slots:
            return await anyio.to_thread.run_sync(self.answer, question, kept)

    def answer(self, question: str | None, kept: Any) -> tuple[Any, ...]:
        """Answer one message with the conversation the browser holds; the whole answer at once."""
        turns = kept_turns(kept)
        q = question or ""
        if not q.strip():
            return self._page(turns, "Please type a question first.")
        try:
            ans = self.assistant.ask(q, history=history_for_assistant(turns))
        except Exception:  # the family sees a calm message, staff see the traceback
            log.exception("assistant.ask failed")
            ans = Answer(question=q[:200], kind="error", answer=ERROR_MESSAGE)
        answer = kept_answer(ans)
        turns = [*turns, {"question": q, "answer": answer, "sig": signature(self.key, q, answer),
                          "saved": False, "helpful": None, "feedback_id": None}][-MAX_KEPT_TURNS:]
        status = {"urgent": "This may be an emergency. The message is shown at the top of the page.",
                  "error": "Please check your message."}.get(ans.kind, "Answer ready.")
        # A message the assistant could not take stays in the box, so the family can change it.
        return self._page(turns, status, question=gr.update() if ans.kind == "error" else "")

    async def ask_starter(self, text: str, kept: Any) -> tuple[Any, ...]:
        return await self.ask(text, kept)

    def restore(self, kept: Any, care: Any) -> tuple[Any, ...]:
        """On page load: show what this browser kept."""
        turns = kept_turns(kept)
        return (*self._page(turns, ""), kept_care(care))

    def start_over(self) -> tuple[Any, ...]:
        """Start a new conversation (the care-team list is kept)."""
        return (*self._page([], "Started a new conversation. Your list of questions is kept.", question=""),
                gr.update(visible=False))

    def forget(self) -> tuple[Any, ...]:
        """Forget the conversation and the care-team list on this device."""
        return (
            *self._page([], "Everything this chat kept on this device has been deleted.", question=""),
            gr.update(visible=False),
            "",
            {"v": 1, "text": ""},
            "",
        )

    def save_care(self, text: str | None, kept: Any = None) -> tuple[Any, str]:
        """Keep the edited list in the browser, unless it is over the size limit (or already kept as it is)."""
        text = text or ""
        if kept is not None and text == kept_care(kept):
            return gr.update(), gr.update()
        limit = self.settings.care_list_max_chars
        if len(text) > limit:
            return gr.update(), (
                f"Your list is too long to keep ({len(text):,} characters; the limit is {limit:,}). "
                "Please shorten it or remove some questions. Until then, changes are not kept on this device."
            )
        return {"v": 1, "text": text}, ""

    def on_action(self, kept: Any, care: str | None, evt: gr.EventData) -> tuple[Any, ...]:
        """A button under an answer: save the question to the list, or record feedback."""
        data = evt._data or {}
        turns = kept_turns(kept)
        try:
            i = int(data.get("turn", -1))
        except (TypeError, ValueError):
            i = -1
        action = str(data.get("action") or "")
        nothing = gr.update()

        def reply(ok: bool, message: str, care_out: Any = nothing, store_out: Any = nothing) -> tuple[Any, ...]:
            turn = turns[i] if 0 <= i < len(turns) else {}
            ack = {"turn": i, "action": action, "ok": ok, "message": message,
                   "saved": bool(turn.get("saved")), "helpful": turn.get("helpful")}
            # The message is shown and announced beside the button used (its own live region), not twice.
            return {"v": 1, "turns": turns}, care_out, store_out, gr.update(), ack

        if not 0 <= i < len(turns):
            return reply(False, "That answer is no longer on the page.")
        turn = turns[i] = dict(turns[i])
        if action == "save":
            lines = [ln for ln in (care or "").splitlines() if ln.strip()]
            if turn["question"].strip() in (ln.strip() for ln in lines):
                turn["saved"] = True
                return reply(True, "This question is already on your list.")
            new = "\n".join([*lines, turn["question"].strip()])
            limit = self.settings.care_list_max_chars
            if len(new) > limit:
                return reply(False, f"Your list is full (the limit is {limit:,} characters). "
                                    "Remove some questions from it first.")
            turn["saved"] = True
            return reply(True, "Added to your list of questions for your care team.", new, {"v": 1, "text": new})
        if action not in ("vote", "comment"):
            return reply(False, "")
        if not hmac.compare_digest(str(turn.get("sig", "")), signature(self.key, turn["question"], turn["answer"])):
            return reply(False, "Sorry, feedback can only be given on answers from this visit. Please ask again.")
        comment = str(data.get("comment") or "")
        if action == "vote":
            turn["helpful"] = data.get("helpful") == "1"
        elif turn.get("helpful") is None:
            return reply(False, "Please choose Helpful or Not helpful first, then send your comment.")
        ans = Answer.model_validate(turn["answer"])
        citations = json.dumps([c.model_dump(mode="json") for c in ans.citations], ensure_ascii=False)
        row = turn.get("feedback_id")
        own_row = isinstance(row, int) and hmac.compare_digest(str(turn.get("feedback_sig", "")), self._row_sig(row))
        try:
            if own_row:
                self.store.update(int(row), helpful=turn["helpful"], comment=comment or None)
            else:
                turn["feedback_id"] = self.store.add(turn["question"], ans.answer, citations, turn["helpful"], comment)
                turn["feedback_sig"] = self._row_sig(turn["feedback_id"])
        except (sqlite3.Error, OSError, ValueError, TypeError):  # never let a family believe it was kept when it was not
            log.exception("feedback could not be stored")
            return reply(False, "Sorry, your feedback could not be saved. Please try again later.")
        if action == "comment":
            turn["comment_sent"] = True
            return reply(True, "Sent. Thank you, your comment was saved.")
        return reply(True, "Thank you. Your feedback was saved.")


# ---------------------------------------------------------------- the app


def create_app(assistant: AssistantLike, settings: Settings) -> gr.Blocks:
    """Build (not launch) the chat page around an assistant."""
    h = ChatHandlers(assistant, settings)
    starters = [s.question for s in load_starters(settings.prompts_dir)]
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
        button_cancel_background_fill="#b91c1c",
        button_cancel_background_fill_hover="#991b1b",
        button_cancel_text_color="white",
        button_cancel_text_color_hover="white",
    )
    with gr.Blocks(title="Family questions: infant leukemia", analytics_enabled=False) as app:
        app._bot_theme = theme  # type: ignore[attr-defined]  # launch() takes theme and css in Gradio 6
        kept = gr.BrowserState({"v": 1, "turns": []}, storage_key=CONVERSATION_KEY, secret=BROWSER_KEY)
        care_kept = gr.BrowserState({"v": 1, "text": ""}, storage_key=CARE_KEY, secret=BROWSER_KEY)
        ack = gr.JSON(visible=False)
        gr.HTML(
            '<header class="site-header"><h1>Questions about infant leukemia and blinatumomab</h1>'
            '<p class="lede">Plain-language answers from trusted sources, with the exact words they rely on.</p>'
            f'<p class="safety-note"><strong>Please note:</strong> {esc(SAFETY_NOTE)}</p></header>',
            js_on_load=None,
        )
        banner = gr.HTML("", visible=False, elem_id="emergency-banner", js_on_load=None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300, elem_id="chat-column"):
                with gr.Row(visible=False, elem_id="new-row") as new_row:
                    new_btn = gr.Button("Start a new conversation", variant="secondary", size="sm", elem_id="new-conversation")
                with gr.Group(visible=False, elem_id="confirm-new") as confirm_new:
                    gr.HTML('<p class="confirm-text">Start a new conversation? The questions and answers on this page '
                            "will be removed from this device. Your list of questions for your care team is kept.</p>",
                            js_on_load=None)
                    with gr.Row():
                        yes_new = gr.Button("Yes, start a new conversation", variant="stop", size="sm", elem_id="confirm-new-yes")
                        no_new = gr.Button("No, keep this conversation", variant="secondary", size="sm", elem_id="confirm-new-no")
                transcript = gr.HTML(render_transcript([]), elem_id="transcript", js_on_load=TRANSCRIPT_JS)
                question = gr.Textbox(
                    label="Your question",
                    placeholder="Type your question here…",
                    lines=1,
                    max_lines=8,
                    elem_id="question",
                )
                send = gr.Button("Send", variant="primary", elem_id="send")
                gr.HTML('<p class="pending-note" hidden>Looking in the sources…</p>', elem_id="pending", js_on_load=None)
                status = gr.HTML("", elem_id="status", js_on_load=STATUS_JS)
                # Under the input, so on a phone the question box and two of them are on the first screen.
                with gr.Column(elem_id="starters") as starters_col:
                    gr.HTML('<h2 class="starters-title">Suggested questions</h2>', js_on_load=None)
                    starter_buttons = [gr.Button(s, size="sm", variant="secondary") for s in starters]
            with gr.Column(scale=2, min_width=280, elem_id="care-column"):
                gr.HTML(
                    '<h2 class="care-title">Questions for my care team</h2>'
                    '<p class="care-help">Save questions from the chat, edit them here, and download the list '
                    "to bring to your next appointment.</p>",
                    js_on_load=None,
                )
                care = gr.Textbox(label="My questions (one per line)", lines=6, max_lines=20, elem_id="care-list")
                care_status = gr.HTML("", elem_id="care-status", js_on_load=STATUS_JS)
                download = gr.Button("Download my questions (.txt)", elem_id="care-download", size="md")
                gr.HTML(f'<h2 class="privacy-title">What is kept, and where</h2><p class="privacy">{esc(PRIVACY_NOTE)}</p>',
                        elem_id="privacy", js_on_load=None)
                forget_btn = gr.Button("Forget everything on this device", variant="secondary", size="sm", elem_id="forget")
                with gr.Group(visible=False, elem_id="confirm-forget") as confirm_forget:
                    gr.HTML('<p class="confirm-text">Delete the conversation and your list of questions from this '
                            "device? This cannot be undone.</p>", js_on_load=None)
                    with gr.Row():
                        yes_forget = gr.Button("Yes, forget everything", variant="stop", size="sm", elem_id="confirm-forget-yes")
                        no_forget = gr.Button("No, keep them", variant="secondary", size="sm", elem_id="confirm-forget-no")

        page = [transcript, kept, question, status, banner, starters_col, new_row]
        # Every event is one plain request (no queue): the server keeps nothing between requests (the conversation
        # is in the browser), so any of the app's processes can answer any request (see `launch`). The inputs and
        # outputs of a question are already what the page sends and shows (text, HTML, JSON): Gradio's own pre-
        # and post-processing of each would change nothing, at a thread hop apiece.
        plain = {"show_progress": "hidden", "queue": False}
        quiet = {**plain, "preprocess": False, "postprocess": False}
        private = {**plain, "api_visibility": "private"}
        send.click(h.ask, [question, kept], page, js=PENDING_JS, api_name="ask", **quiet)
        question.submit(h.ask, [question, kept], page, js=PENDING_JS, api_visibility="private", **quiet)
        for b, text in zip(starter_buttons, starters, strict=True):
            b.click(partial(h.ask_starter, text), [kept], page, api_visibility="private", **quiet)
        app.load(h.restore, [kept, care_kept], [*page, care], **private)

        new_btn.click(lambda: gr.update(visible=True), None, confirm_new, **private)
        no_new.click(lambda: gr.update(visible=False), None, confirm_new, **private)
        yes_new.click(h.start_over, None, [*page, confirm_new], **private)
        forget_btn.click(lambda: gr.update(visible=True), None, confirm_forget, **private)
        no_forget.click(lambda: gr.update(visible=False), None, confirm_forget, **private)
        forget_out = [*page, confirm_forget, care, care_kept, care_status]
        yes_forget.click(h.forget, None, forget_out, **private).then(None, None, None, js=FORGET_JS, queue=False)

        transcript.click(h.on_action, [kept, care], [kept, care, care_kept, status, ack],
                         **private).then(None, [ack], None, js=ACK_JS, queue=False)
        # `change`, not `input`: a pasted list must be kept too. Values set by the page are already kept.
        care.change(h.save_care, [care, care_kept], [care_kept, care_status], trigger_mode="always_last", **private)
        download.click(None, [care], None, js=DOWNLOAD_JS, queue=False)
    return app


def serving_processes(settings: Settings) -> int:
    """How many processes serve the page: `web_processes`, or 1 when a login is set (Gradio keeps a sign-in
    in the memory of the process that made it, and the login throttle counts in one process)."""
    return 1 if settings.auth_username or settings.auth_password else settings.web_processes


@contextmanager
def more_processes(settings: Settings, command: Sequence[str]) -> Iterator[list[subprocess.Popen]]:
    """Start the other serving processes (`serving_processes - 1`, each running `command`, which builds its own
    assistant over the same index and calls `launch`); stop them when the block ends. Nothing in a process that
    is itself one of them, or when one process serves."""
    n = serving_processes(settings)
    if os.environ.get(WORKER_ENV) or n <= 1:
        yield []
        return
    # Before any of them binds it: something else listening on the port (an old copy of the app, on another index)
    # would otherwise silently take a share of the families.
    family, kind, proto, _, address = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise SystemExit(f"Port {settings.port} on {settings.host} is in use ({exc.strerror}): stop what serves "
                             "there, or set BOT_PORT to a free port.") from None
    env = {**os.environ, WORKER_ENV: str(os.getpid())}
    procs = [subprocess.Popen(list(command), env=env) for _ in range(n - 1)]
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def warm_up(assistant: AssistantLike, settings: Settings, timeout_s: float = 300.0) -> None:
    """In a process started by `more_processes`, before it takes connections (the first process serves
    meanwhile): wait for its model's switch to torch and answer the suggested questions once, so that no family
    waits for what a process's first answers load (the language model, the word tables, torch)."""
    if not os.environ.get(WORKER_ENV):
        return
    wait_ready = getattr(getattr(assistant, "embedder", None), "wait_ready", None)
    if wait_ready is not None:
        wait_ready(timeout_s)
    for starter in load_starters(settings.prompts_dir):
        assistant.ask(starter.question)


def _follow_first_process() -> None:
    """In a process started by `more_processes`: exit when the first process is gone (even after kill -9)."""
    first = int(os.environ.get(WORKER_ENV) or 0)
    if not first:
        return

    def watch() -> None:
        while os.getppid() == first:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="follow-first-process", daemon=True).start()


def shared_port(host: str, port: int) -> socket.socket:
    """A listening socket that the app's other processes bind too (SO_REUSEPORT: the kernel hands each new
    connection to one of them)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def _page_options(app: gr.Blocks, settings: Settings, throttle: LoginThrottle) -> dict[str, Any]:
    """What `launch` gives Gradio whether one process serves or several."""
    return {
        "theme": getattr(app, "_bot_theme", None),
        "css_paths": [CSS_PATH],
        "footer_links": [],
        "run_history": False,  # never keep families' questions in the browser's run history
        "enable_monitoring": False,
        "mcp_server": False,
        "ssr_mode": False,
        "show_error": False,
        "app_kwargs": {"middleware": [Middleware(BodySizeLimitMiddleware, max_bytes=settings.web_max_request_bytes),
                                      Middleware(LoginThrottleMiddleware, throttle=throttle)]},
    }


def launch(app: gr.Blocks, settings: Settings, block: bool = True) -> None:
    """Serve the page on settings.host:port (loopback by default), with an optional, throttled login."""
    auth = None
    if settings.auth_username or settings.auth_password:
        if not (settings.auth_username and settings.auth_password):
            raise SystemExit("Set both BOT_AUTH_USERNAME and BOT_AUTH_PASSWORD to turn on the login, or neither.")
        auth = (settings.auth_username, settings.auth_password)
    throttle = LoginThrottle(free_attempts=settings.login_free_attempts, max_delay_s=settings.login_max_delay_s)
    app.queue(default_concurrency_limit=8)
    if serving_processes(settings) > 1:
        _serve_shared(app, settings, _page_options(app, settings, throttle), block)
        return
    app.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=False,
        auth=auth,
        # Gradio's login page says nothing on HTTP 429, so the wait after wrong tries is explained up front.
        auth_message=(
            "Please sign in to use the family chat. After "
            f"{settings.login_free_attempts} wrong tries, each new try has to wait a little longer "
            f"(from 1 second up to {settings.login_max_delay_s / 60:g} minutes), so if nothing happens, wait and try again."
        ) if auth else None,
        inbrowser=False,
        prevent_thread_lock=not block,
        **_page_options(app, settings, throttle),
    )


def _serve_shared(app: gr.Blocks, settings: Settings, options: dict[str, Any], block: bool) -> None:
    """Serve the page from this process on the port the app's other processes share (see `more_processes`)."""
    import uvicorn
    from fastapi import FastAPI

    first = not os.environ.get(WORKER_ENV)
    sock = shared_port(settings.host, settings.port)
    _follow_first_process()
    site = gr.mount_gradio_app(FastAPI(), app, "/", server_name=settings.host, server_port=settings.port, **options)
    server = uvicorn.Server(uvicorn.Config(site, log_level="warning"))
    if first:
        print(f"* Running on local URL:  http://{settings.host}:{settings.port} (other processes join when warmed up: "
              f"{serving_processes(settings)} in all)", flush=True)
    else:
        print(f"* Another process serves on the same port (process {os.getpid()}, warmed up)", flush=True)
    if block:
        server.run(sockets=[sock])
    else:
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="serve", daemon=True).start()
