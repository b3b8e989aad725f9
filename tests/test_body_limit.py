"""The web app's request size cap, on a real ASGI app (declared and undeclared sizes)."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.body_limit import BodySizeLimitMiddleware


async def _echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that reads the whole body, as Gradio does, and answers with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _post(chunks: list[bytes], declared: int | None, limit: int) -> tuple[int, bytes]:
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "headers": headers}
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(BodySizeLimitMiddleware(_echo_length, max_bytes=limit)(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_requests_under_the_limit_pass_whole() -> None:
    assert _post([b"a" * 600, b"b" * 400], declared=1000, limit=1000) == (200, b"1000")
    assert _post([b"a" * 600, b"b" * 400], declared=None, limit=1000) == (200, b"1000")


def test_a_declared_large_body_is_refused_before_it_is_read() -> None:
    status, body = _post([b"x" * 10], declared=10_000_000, limit=1000)
    assert status == 413 and b"too large" in body


def test_an_undeclared_body_is_cut_off_when_it_passes_the_limit() -> None:
    status, body = _post([b"x" * 600] * 5, declared=None, limit=1000)
    assert status == 413 and b"shorter message" in body
