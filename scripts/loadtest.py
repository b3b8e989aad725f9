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

On a shared machine the figures depend on what else runs, so every stage also reports the machine's
load: the 1-minute load average before and at most during the stage, how busy its CPUs were, and how
much of that was neither the app (--app-pid, with its child processes: the other serving processes)
nor this script; with --app-pid, also the app's CPU milliseconds per answer (app_cpu_ms_per_answer),
which moves far less with the machine's load than the latencies do. --wait-quiet L waits (up to
--wait-max seconds) until the 1-minute load average is below L before each stage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
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


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name ([] when the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _process_seconds(pid: int | None) -> float:
    """CPU seconds used so far by a process and its child processes (user + system; the app's other serving
    processes are its children: BOT_WEB_PROCESSES), 0 when unknown."""
    if not pid:
        return 0.0
    family = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and (_stat(int(p)) or ["", ""])[1] == str(pid)]
    total = 0
    for member in family:
        parts = _stat(member)
        if len(parts) > 12:
            total += int(parts[11]) + int(parts[12])
    return total / os.sysconf("SC_CLK_TCK")


class MachineLoad:
    """How busy the machine was while a stage ran (the latencies depend on it on a shared machine)."""

    def __init__(self, app_pid: int | None) -> None:
        self.app_pid = app_pid
        self.load_before = os.getloadavg()[0]
        self.load_max = self.load_before
        self.ticks = _cpu_ticks()
        self.app = _process_seconds(app_pid)
        self.me = self._own_seconds()
        self.t0 = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._sample())

    @staticmethod
    def _own_seconds() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.load_max = max(self.load_max, os.getloadavg()[0])

    def stop(self) -> dict[str, object]:
        self._task.cancel()
        busy0, total0 = self.ticks
        busy1, total1 = _cpu_ticks()
        cores = os.cpu_count() or 1
        wall = max(1e-9, time.monotonic() - self.t0)
        busy_s = (busy1 - busy0) / max(1, total1 - total0) * wall * cores
        app_s = _process_seconds(self.app_pid) - self.app if self.app_pid else None
        me_s = self._own_seconds() - self.me
        others = busy_s - (app_s or 0.0) - me_s
        return {"cpu_cores": cores, "app_cpu_s": round(app_s, 2) if app_s is not None else None,
                "load_avg_1m_before": round(self.load_before, 2),
                "load_avg_1m_max": round(self.load_max, 2),
                "cpu_busy_pct": round(100 * busy_s / (wall * cores), 1),
                "cpu_app_pct": round(100 * app_s / (wall * cores), 1) if app_s is not None else None,
                "cpu_loadtest_pct": round(100 * me_s / (wall * cores), 1),
                "cpu_others_pct": round(100 * max(0.0, others) / (wall * cores), 1) if app_s is not None else None}


async def wait_quiet(limit: float | None, max_wait: float) -> float:
    """Wait until the 1-minute load average is below `limit` (or `max_wait` passed); returns the seconds waited."""
    t0 = time.monotonic()
    while limit is not None and os.getloadavg()[0] >= limit and time.monotonic() - t0 < max_wait:
        await asyncio.sleep(5)
    return round(time.monotonic() - t0, 1)


async def run_stage(url: str, conversations: int, questions: int, max_seconds: float | None,
                    app_pid: int | None = None, quiet: float | None = None, max_wait: float = 0.0
                    ) -> dict[str, object]:
    waited = await wait_quiet(quiet, max_wait)
    stage = Stage(conversations, questions, max_seconds)
    # Idle connections are dropped before the server's keep-alive (5 s) can close one under a new request.
    limits = httpx.Limits(max_connections=conversations, max_keepalive_connections=conversations, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        (await client.get("/")).raise_for_status()
        for q, _ in TOPICS:  # a running app is warm: its first answers load what they need, unmeasured
            (await client.post(ASK_PATH, json={"data": [q, {"v": 1, "turns": []}], "session_hash": "warm-up"})).raise_for_status()
        t0 = time.monotonic()
        load = MachineLoad(app_pid)
        deadline = t0 + max_seconds if max_seconds else None
        await asyncio.gather(*(run_conversation(client, i, stage, deadline) for i in range(conversations)))
        wall = time.monotonic() - t0
        machine = load.stop()
    summary = stage.summary(wall)
    app_s = machine.pop("app_cpu_s")
    # The primary figure on a shared machine: CPU time moves little with the load, wall time a lot.
    summary["app_cpu_ms_per_answer"] = round(1000 * app_s / len(stage.latencies), 1) if app_s and stage.latencies else None
    return {**summary, "machine": {**machine, "waited_for_quiet_s": waited}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:7860/", help="the running app (loopback)")
    ap.add_argument("--questions", type=int, default=10, help="questions per conversation")
    ap.add_argument("--stages", default="20,50", help="concurrent conversations of each stage, comma-separated")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time limit of every stage after the first")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--app-pid", type=int, default=None, help="the app's process id: its CPU use is reported apart")
    ap.add_argument("--wait-quiet", type=float, default=None, metavar="L",
                    help="before each stage, wait until the 1-minute load average is below L")
    ap.add_argument("--wait-max", type=float, default=600.0, help="longest wait for a quiet machine (seconds)")
    args = ap.parse_args(argv)
    results = []
    for n, conversations in enumerate(int(s) for s in args.stages.split(",")):
        limit = None if n == 0 else args.max_seconds
        result = asyncio.run(run_stage(args.url, conversations, args.questions, limit, args.app_pid,
                                       args.wait_quiet, args.wait_max))
        results.append(result)
        print(json.dumps(result), flush=True)
    ok = all(r["met"] for r in results)
    print(f"{'all targets met' if ok else 'a target was missed'}", file=sys.stderr)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
