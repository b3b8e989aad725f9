"""Wall and CPU seconds per named step of a run, in the order the steps ran (the ingest report's time per step)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Steps:
    """A stopwatch per named step: `with steps("read"): ...`; a step timed twice adds up.

    CPU seconds are the process's user + system time (every thread's), steadier than wall time on a shared machine.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c

    def as_dict(self) -> dict[str, dict[str, float]]:
        """{step: {"s": wall seconds, "cpu_s": CPU seconds}}, in the order the steps first ran."""
        return {name: {"s": round(self.wall[name], 3), "cpu_s": round(self.cpu[name], 3)} for name in self.wall}

    def line(self) -> str:
        """One line for a report: 'read 0.41 s (CPU 0.39), write 1.20 s (CPU 1.10), ...'."""
        return ", ".join(f"{name} {self.wall[name]:.2f} s (CPU {self.cpu[name]:.2f})" for name in self.wall)
