"""Measure the hardening figures of issue 11 (items 3 and 6) on this machine, for the README.

    .venv/bin/python scripts/attack_figures.py            # uses the index in BOT_INDEX_DIR (default .index/)

Prints: the cost of hostile batch lines (53 MB of history, 100,000 nested brackets, a lone surrogate),
the cost of a 2,000-character message of ~290 short sentences (CPU time of the asking thread and wall
time), and how long a normal question takes while 7 such messages are in flight. The load average is
printed too: on a shared machine wall times grow with it, CPU times much less.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bot.assistant import build_assistant  # noqa: E402
from bot.cli import run_batch  # noqa: E402
from bot.settings import get_settings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_attacks import long_message  # noqa: E402


def batch_lines() -> dict[str, bytes]:
    turn = {"role": "user", "content": "What is blinatumomab and how is it given to babies? " * 190}
    reply = {"role": "assistant", "content": "It is a medicine. " * 560}
    history = [turn, reply] * 2650
    return {
        "53 MB of history": json.dumps({"id": "big", "question": "How long is the blinatumomab infusion?",
                                        "history": history}).encode(),
        "100,000 nested brackets": b"[" * 100_000 + b"]" * 100_000,
        "lone surrogate escape": b'{"id": "s", "question": "my baby has a fever \\ud800 of 39"}',
        "a normal line": b'{"id": "n", "question": "What is blinatumomab?"}',
    }


def main() -> None:
    bot = build_assistant(get_settings())
    bot.ask("What is blinatumomab?")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    print("\nbatch lines (one line each; time and peak Python memory while it is read and answered)")
    for name, line in batch_lines().items():
        tracemalloc.start()
        t0 = time.perf_counter()
        out = list(run_batch(bot, line))
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"  {name:<26} {len(line) / 1e6:7.2f} MB  {took * 1000:8.0f} ms  peak {peak / 1e6:6.1f} MB  -> {out[0]['kind']}")

    print("\na 2,000-character message of ~290 short sentences through Assistant.ask")
    bot.ask(long_message(0))
    cpu, wall, safety = [], [], []
    for seed in range(1, 8):
        c0, t0 = time.thread_time(), time.perf_counter()
        answer = bot.ask(long_message(seed))
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
        safety.append(answer.timings_ms.get("safety", 0.0))
    print(f"  median {statistics.median(cpu) * 1000:.0f} ms CPU, {statistics.median(wall) * 1000:.0f} ms wall "
          f"(safety stage {statistics.median(safety):.0f} ms); worst {max(wall) * 1000:.0f} ms wall")

    print("\na normal question while 7 such messages are in flight (threads calling Assistant.ask)")
    for trial in range(3):
        started = threading.Barrier(8)
        done: list[float] = []

        def attacker(seed: int, started: threading.Barrier = started, done: list[float] = done) -> None:
            started.wait()
            t0 = time.perf_counter()
            bot.ask(long_message(seed))
            done.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=attacker, args=(1000 + 100 * trial + i,)) for i in range(7)]
        for t in threads:
            t.start()
        started.wait()
        time.sleep(0.05)
        t0 = time.perf_counter()
        kind = bot.ask("What is blinatumomab?").kind
        normal = time.perf_counter() - t0
        for t in threads:
            t.join()
        print(f"  trial {trial + 1}: normal question {normal * 1000:.0f} ms ({kind}); the 7 long ones took "
              f"{min(done):.2f}-{max(done):.2f} s")


if __name__ == "__main__":
    main()
