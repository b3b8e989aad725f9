"""Slow down password guessing on the web login: a growing wait after repeated failures."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

LOGIN_PATH = "/login"
MAX_TRACKED = 10_000  # usernames and clients remembered at once; the oldest are forgotten first


class LoginThrottle:
    """Counts failed logins per key (a username, a client address) and says how long the next must wait.

    The first `free_attempts` failures cost nothing; after that each new try waits
    base_delay_s * 2**(failures - free_attempts), capped at max_delay_s, counted from the last failure.
    A success clears the keys it was made with.
    """

    def __init__(self, free_attempts: int = 5, base_delay_s: float = 1.0, max_delay_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_attempts = free_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (count, time of last)
        self._lock = threading.Lock()

    def delay_after(self, failures: int) -> float:
        """Seconds a try must wait after this many failures in a row."""
        if failures < self.free_attempts:
            return 0.0
        return min(self.base_delay_s * 2 ** (failures - self.free_attempts), self.max_delay_s)

    def wait_s(self, keys: Iterable[str]) -> float:
        """How long until a try with these keys is allowed (0 when it is allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                count, last = self._failures.get(key, (0, now))
                wait = max(wait, last + self.delay_after(count) - now)
        return max(wait, 0.0)

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                count, _ = self._failures.pop(key, (0, now))
                self._failures[key] = (count + 1, now)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def login_keys(username: str, client: str) -> list[str]:
    """The keys one login try counts against: its username and the address it came from."""
    return [f"user:{username.strip().casefold()}", f"client:{client}"]


class LoginThrottleMiddleware:
    """ASGI middleware in front of Gradio's POST /login: refuses tries that come too soon (429)."""

    def __init__(self, app: Any, throttle: LoginThrottle) -> None:
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = str(scope.get("path", "")).rstrip("/")
        if scope.get("type") != "http" or scope.get("method") != "POST" or not path.endswith(LOGIN_PATH):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        fields = parse_qs(body.decode("utf-8", "replace"))
        username = (fields.get("username") or [""])[0]
        client = (scope.get("client") or ("unknown", 0))[0]
        keys = login_keys(username, str(client))
        wait = self.throttle.wait_s(keys)
        if wait > 0:
            seconds = math.ceil(wait)
            detail = f"Too many failed sign-ins. Please wait {seconds} seconds, then try again."
            payload = json.dumps({"detail": detail}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(seconds).encode()),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return

        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = 0

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, replay, watch)
        if status == 200:
            self.throttle.succeeded(keys)
        elif status in (400, 401, 403):
            self.throttle.failed(keys)
