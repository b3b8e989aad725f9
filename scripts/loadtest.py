"""Load test of the running family chat: concurrent conversations through the page's own /ask endpoint.

    python app.py &                                   # the app, on loopback
    python scripts/loadtest.py --url http://127.0.0.1:7860/

Stage 1: 20 conversations of 10 questions each, all at once. Stage 2: 50 conversations, stopped after
60 s. Each conversation is one asyncio task (httpx, one session each) that posts to the page's own /ask
endpoint and sends its kept conversation back with each question, as the browser does. Reports p50,
p95 and errors per stage, and checks for cross-talk: every conversation has its own follow-up question,
and each reply must carry exactly that conversation's questions, in order, ending with the one just
sent. `follow_ups_naming_topic` counts follow-up answers that name their conversation's topic; it is
for information only (answer quality is measured by the evals). Targets (issue 13): 20 -> p95 <= 1 s and 0 errors;
50 -> p95 <= 2 s. With --check the exit code is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field

import httpx

ASK_PATH = "/gradio_api/run/ask"  # the endpoint the page's Send button calls

# (opening question, a word its follow-up answer should be about)
TOPICS = [
    ("What is blinatumomab?", "blinatumomab"),
    ("What is KMT2A-rearranged leukemia?", "kmt2a"),
    ("What side effects did the babies have?", "side effect"),
    ("What is MRD?", "mrd"),
    ("What is cytokine release syndrome?", "cytokine"),
]
FOLLOW_UPS = [
    "Can you tell me more about it?", "Is it common?", "How is it found?", "Why does it matter?", "Is it safe?",
    "How does it work?", "What does it mean for us?", "Who gets it?", "Can you explain it more simply?", "Is it serious?",
]
MORE = [
    "How is blinatumomab given to babies?",
    "What did the study find?",
    "How long is the blinatumomab drip given for?",
    "How many babies were in the study?",
    "Was the study randomised?",
    "What are the signs of ALL in babies?",
    "What is a stem cell transplant?",
    "Who paid for the study?",
    "Could babies get more than 1 course of blinatumomab?",
    "What should I ask the care team about my baby's leukemia?",
]
TARGETS = {20: 1.0, 50: 2.0}  # conversations -> p95 target in seconds


def conversation_questions(i: int, n: int) -> tuple[list[str], int, str]:
    """The questions of conversation i, the index of its own follow-up, and that follow-up's topic word."""
    opening, word = TOPICS[i % len(TOPICS)]
    # Distinct for every conversation: the baby's age in weeks, then a follow-up about "it" from the pool.
    follow = f"My baby is {i + 2} weeks old. {FOLLOW_UPS[(i // len(TOPICS) + i) % len(FOLLOW_UPS)]}"
    rest = [MORE[(i + k) % len(MORE)] for k in range(max(0, n - 2))]
    return [opening, follow, *rest][:n], 1, word


@dataclass
class Stage:
    conversations: int
    questions: int
    max_seconds: float | None
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cross_talk: int = 0
    follow_ups_naming_topic: int = 0
    follow_ups: int = 0

    def summary(self, wall_s: float) -> dict[str, object]:
        lat = sorted(self.latencies)
        pct = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99
        target = TARGETS.get(self.conversations)
        return {
            "conversations": self.conversations,
            "answers": len(lat),
            "errors": len(self.errors),
            "cross_talk": self.cross_talk,
            "p50_ms": round(pct[49] * 1000) if lat else None,
            "p95_ms": round(pct[94] * 1000) if lat else None,
            "max_ms": round(lat[-1] * 1000) if lat else None,
            "answers_per_s": round(len(lat) / wall_s, 1) if wall_s else None,
            "wall_s": round(wall_s, 1),
            "follow_ups_naming_topic": f"{self.follow_ups_naming_topic}/{self.follow_ups}",
            "target_p95_ms": round(target * 1000) if target else None,
            "met": bool(lat) and not self.errors and (target is None or pct[94] <= target),
            "first_errors": self.errors[:5],
        }


async def run_conversation(client: httpx.AsyncClient, i: int, stage: Stage, deadline: float | None) -> None:
    """One family: its questions in turn, each sent with the conversation kept so far (as the page does)."""
    questions, follow_at, word = conversation_questions(i, stage.questions)
    kept: object = {"v": 1, "turns": []}
    sent: list[str] = []
    session = f"load-{stage.conversations}-{i}-{uuid.uuid4().hex[:8]}"
    for k, q in enumerate(questions):
        if deadline and time.monotonic() > deadline:
            return
        t0 = time.perf_counter()
        try:
            resp = await client.post(ASK_PATH, json={"data": [q, kept], "session_hash": session})
            resp.raise_for_status()
            kept = resp.json()["data"][1]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            stage.errors.append(f"conversation {i}, question {k + 1}: {type(exc).__name__}: {exc}")
            return
        stage.latencies.append(time.perf_counter() - t0)
        sent.append(q)
        turns = kept.get("turns", []) if isinstance(kept, dict) else []
        got = [t.get("question") for t in turns]
        if got != sent:  # another conversation's question, or a lost one
            stage.cross_talk += 1
            stage.errors.append(f"conversation {i}, question {k + 1}: cross-talk: sent {sent[-2:]}, got back {got[-2:]}")
            return
        if k == follow_at:
            stage.follow_ups += 1
            if word in str(turns[-1]["answer"].get("answer", "")).lower():
                stage.follow_ups_naming_topic += 1


async def run_stage(url: str, conversations: int, questions: int, max_seconds: float | None) -> dict[str, object]:
    stage = Stage(conversations, questions, max_seconds)
    # Idle connections are dropped before the server's keep-alive (5 s) can close one under a new request.
    limits = httpx.Limits(max_connections=conversations, max_keepalive_connections=conversations, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        (await client.get("/")).raise_for_status()
        for q, _ in TOPICS:  # a running app is warm: its first answers load what they need, unmeasured
            (await client.post(ASK_PATH, json={"data": [q, {"v": 1, "turns": []}], "session_hash": "warm-up"})).raise_for_status()
        t0 = time.monotonic()
        deadline = t0 + max_seconds if max_seconds else None
        await asyncio.gather(*(run_conversation(client, i, stage, deadline) for i in range(conversations)))
        wall = time.monotonic() - t0
    return stage.summary(wall)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:7860/", help="the running app (loopback)")
    ap.add_argument("--questions", type=int, default=10, help="questions per conversation")
    ap.add_argument("--stages", default="20,50", help="concurrent conversations of each stage, comma-separated")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time limit of every stage after the first")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    results = []
    for n, conversations in enumerate(int(s) for s in args.stages.split(",")):
        limit = None if n == 0 else args.max_seconds
        result = asyncio.run(run_stage(args.url, conversations, args.questions, limit))
        results.append(result)
        print(json.dumps(result), flush=True)
    ok = all(r["met"] for r in results)
    print(f"{'all targets met' if ok else 'a target was missed'}", file=sys.stderr)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
