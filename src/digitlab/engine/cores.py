"""How many threads one network's epoch should use now: the cores other programs leave free.

The C epoch (_train.c) has its threads meet at a barrier three times per batch. With a core
each, that costs microseconds; when another program keeps a core busy, every meeting waits
for the scheduler to give the other thread its turn, and two threads measured 1.7 to 2 times
slower than one. The results are the same bits for any thread count, so the count can follow
the load: after each epoch, `FreeCores.threads(wanted)` reads how busy this process's cores
were (Linux's /proc/stat), takes away this process's own CPU time, and gives the cores left
over, at least one. Where /proc/stat cannot be read it gives `wanted`.
"""

from __future__ import annotations

import os
import time

# Decide again once this many seconds have passed (an epoch of the book's net is ~0.2 s; the
# kernel counts CPU time in 10 ms ticks, so shorter windows are mostly rounding).
WINDOW_S = 0.5


class FreeCores:
    """Tracks how busy this process's cores are, to say how many threads an epoch should use now."""

    def __init__(self):
        self.cores: list[int] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._sample()
        self.free: float | None = None

    def threads(self, wanted: int) -> int:
        """How many of `wanted` threads to run now (never fewer than one)."""
        if wanted <= 1:
            return 1
        if self.last is None:
            return wanted
        if time.monotonic() - self.last[0] >= WINDOW_S:  # /proc/stat is read once per window, not per call.
            sample = self._sample()
            if sample is None:
                return wanted
            (wall, busy, own), (wall_before, busy_before, own_before) = sample, self.last
            others = max(0.0, (busy - busy_before) - (own - own_before)) / (wall - wall_before)
            self.free = len(self.cores) - others
            self.last = sample
        if self.free is None:
            return wanted
        return max(1, min(wanted, int(self.free + 0.5)))

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall seconds, CPU seconds busy on this process's cores, this process's CPU seconds)."""
        if not self.cores:
            return None
        try:
            with open("/proc/stat") as stat:
                lines = stat.read().splitlines()
        except OSError:
            return None
        wanted = {f"cpu{core}" for core in self.cores}
        busy = 0
        for line in lines:
            fields = line.split()
            if fields and fields[0] in wanted:
                # user nice system idle iowait irq softirq steal ...: all but idle and iowait is busy.
                ticks = [int(value) for value in fields[1:9]]
                busy += sum(ticks) - ticks[3] - ticks[4]
        times = os.times()
        return time.monotonic(), busy / self.tick, times.user + times.system
