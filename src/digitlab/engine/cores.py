"""How many threads one network's epoch should use now: the cores other programs leave free, and
the count that has measured faster.

The C epoch has its threads meet at a barrier three (_train.c) or eight (_deep.c) times per
batch. With a core each, that costs microseconds; when another program keeps a core busy, every
meeting waits for the scheduler to give the other thread its turn, and two threads measured 1.7
to 2 times slower than one. The results are the same bits for any thread count, so the count can
follow the load: after each epoch, `FreeCores.threads(wanted)` reads how busy this process's
cores were (Linux's /proc/stat), takes away this process's own CPU time, and gives the cores left
over, at least one. Where /proc/stat cannot be read it gives `wanted`.

/proc/stat does not see everything that slows two threads down: what a virtual machine's host does
to the guest's cores (on the 2-core machine of docs/engine.md the deep net's epoch on two threads
went from 0.10 to 0.25-0.33 s for seconds at a time while one thread's stayed at 0.14 s, and the
guest's counters showed nothing), and a thread of this process that keeps a core busy (this
process's own time). So the count also follows the epochs' own times
(`SpeedCheck`, fed by `FreeCores.record`): two epochs in a row on several threads much slower than the
best seen on them are followed by one on one thread; if that one is faster the network stays on one
thread and tries the wanted count again after a while, less often while it keeps losing. The
browser's engine (static/engine/engine.js) has the same rule in JavaScript: tests/test_wasm.py feeds
both the same times and compares their choices, so a change here is a change there.

Natively the check also reads how far apart two cores are now, before the epochs where that could change
the count (`sparse.handover_ns`: a cache line's round trip between two threads: 60-80 ns or 200-345 ns on
the 2-core machine of docs/engine.md as its host places the two virtual cores). Two threads lose
to one when the cores are far apart, so after one slow epoch a round trip at least FARTHER times the one read
beside fast epochs sends the next epoch to a probe on one thread, and in a stretch on one thread two round
trips in a row at most NEARER times the stretch's first end it (the cores have come near), where the times alone
would wait up to PROBE_MOST epochs. The times still decide: a try that loses sends the network back to one
thread as before. The browser has no such read (its rule is the times' alone, as this one's where the read
cannot be made).
"""

from __future__ import annotations

import collections
import os
import statistics
import time
from collections.abc import Callable

# Decide again once this many seconds have passed (an epoch of the book's net is ~0.2 s; the
# kernel counts CPU time in 10 ms ticks, so shorter windows are mostly rounding).
WINDOW_S = 0.5
# Two epochs in a row on several threads this many times slower than the best seen on them are followed by
# one on one thread (the epochs of a quiet machine spread by +-15% around their median).
SLOWER = 1.4
# Epochs on one thread, after it measured faster, before the wanted count is tried again; doubled each time
# that try loses, up to PROBE_MOST.
PROBE_EVERY, PROBE_MOST = 8, 64
# How many of the latest epochs on several threads a probe on one thread is compared with (their median).
RECENT = 3
# The cores' hand-over (a cache line's round trip between two threads), read before an epoch where it could
# change the count (SpeedCheck.wants_handover): after one slow epoch on several threads, at least FARTHER times
# the reference (read before an epoch on several threads that was not slow) makes it the cores' placement, not
# a hiccup, and a probe follows at once; in a stretch on one thread, two reads in a row at most NEARER times
# the stretch's first end it. The 2-core machine's two placements: 60-80 ns and 200-345 ns (a few reads of
# 30 ns came with slower epochs on two threads, so the least read is no reference). Read every REFERENCE_EVERY
# epochs on several threads besides, to keep the reference.
FARTHER, NEARER, REFERENCE_EVERY = 2.0, 0.5, 16


class FreeCores:
    """Tracks how busy this process's cores are, to say how many threads an epoch should use now."""

    def __init__(self, follow_speed: bool = True, handover: Callable[[], float | None] | None = None):
        self.cores: list[int] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._sample()
        self.free: float | None = None
        # follow_speed=False: the load alone decides (digitlab bench times the count it asks for).
        self.speed = SpeedCheck() if follow_speed else None
        # Measures the cores' hand-over in ns (sparse.handover_ns), or None where it cannot.
        self.handover = handover

    def before_epoch(self, wanted: int) -> None:
        """Reads how far apart two cores are now, for the next epoch's count (`SpeedCheck.measured`), where
        it could change that count and several threads are wanted and the load leaves them room."""
        if self.speed is None or self.handover is None or wanted <= 1 or not self.speed.wants_handover():
            return
        if self._free_threads(wanted) > 1:
            self.speed.measured(self.handover())

    def record(self, threads: int, seconds: float) -> None:
        """Tells how long a network's epoch took on `threads` threads (its C call alone, no validation)."""
        if self.speed is not None:
            self.speed.record(threads, seconds)

    def threads(self, wanted: int) -> int:
        """How many of `wanted` threads to run now (never fewer than one)."""
        if wanted <= 1:
            return 1
        allowed = wanted if self.speed is None else self.speed.allowed(wanted)
        return min(self._free_threads(wanted), allowed)

    def _free_threads(self, wanted: int) -> int:
        """How many of `wanted` threads the cores' load leaves room for."""
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


class SpeedCheck:
    """Which thread count an epoch should use by the epochs' own times: the wanted count, or one thread
    while one has measured faster. `record` after each epoch; `allowed(wanted)` between them (as often as
    asked: validation asks too), which changes only with what `record` is told.

    One epoch on one thread is timed early (the third), to compare with from the start; later, two epochs
    in a row on several threads, each SLOWER times the best on them, are followed by another such probe,
    unless an epoch on one thread within the last PROBE_MOST took longer than them (a probe would lose: the
    whole machine is slow, not the threads; on the 2-core machine such probes were 7-16 of a 200-epoch run,
    20-25 ms each, and nearly all lost). One slow epoch among fast ones is a hiccup, not a slow stretch: on
    that machine about one epoch a second took 25-45 ms longer, in a bare loop of C epochs too (the virtual
    machine's doing, not the run's), and a probe after each cost 22 ms more. A probe faster than the median
    of the last RECENT epochs on several threads (so that one slow epoch among fast ones does not count) keeps
    the network on one thread for `wait` epochs (PROBE_EVERY, doubled each time in a row that several threads
    lose again, up to PROBE_MOST); then several are tried again, and compared with the latest one-thread
    epoch. `measured`, before an epoch, tells the cores' hand-over (module docstring: FARTHER, NEARER)."""

    def __init__(self):
        self.best_many: float | None = None  # The fastest epoch on several threads (after the first epoch).
        self.slow_before = False  # The latest epoch on several threads was slow (a probe follows a second).
        self.recent_many: collections.deque = collections.deque(maxlen=RECENT)  # The latest ones.
        self.last_one: float | None = None  # The latest epoch on one thread that this check chose,
        self.last_one_epoch = 0  # and its number.
        self.one_thread = False  # The epochs run on one thread: a probe, or a stretch after one won.
        self.probing = False  # The next epoch on one thread is a probe against recent_many,
        self.probe_against: float | None = None  # or against this epoch's time where it is not None.
        self.trying = False  # The next epoch on several threads is a try against last_one.
        self.left = 0  # Epochs on one thread left in the stretch.
        self.wait = PROBE_EVERY
        self.epochs = 0
        self.handover: float | None = None  # The hand-over read before the coming epoch (None: not read),
        self.reference: float | None = None  # the latest read before an epoch on several threads not slow,
        self.stretch_handover: float | None = None  # the first read in this stretch on one thread,
        self.near_reads = 0  # and how many reads in a row since were at most NEARER times it.

    def wants_handover(self) -> bool:
        """Whether the cores' hand-over, read before the next epoch, could change what it runs on: in a
        stretch on one thread, after one slow epoch on several, until there is a reference to compare with,
        and every REFERENCE_EVERY epochs to keep it (a read costs about 0.15 ms)."""
        if self.one_thread:
            return not self.probing
        return self.slow_before or self.reference is None or self.epochs % REFERENCE_EVERY == 0

    def measured(self, handover_ns: float | None) -> None:
        """Tells the cores' hand-over before the coming epoch (None: not measured). In a stretch on one
        thread, two reads in a row at most NEARER times the stretch's first end it (the next epoch tries
        several; the first near read may come while the host moves the cores); after one slow epoch on
        several, a read at least FARTHER times the reference sends the next epoch to a probe on one thread,
        against that slow epoch (the median of the recent ones is still fast)."""
        self.handover = handover_ns
        if handover_ns is None:
            return
        if self.one_thread and not self.probing:
            if self.stretch_handover is None:
                self.stretch_handover = handover_ns
            near = handover_ns <= self.stretch_handover * NEARER
            self.near_reads = self.near_reads + 1 if near else 0
            if self.near_reads >= 2:  # The cores came near again, and stayed (the first may be mid-move).
                self.one_thread, self.trying, self.left = False, True, 0
        elif not self.one_thread and self.slow_before and self.reference is not None:
            if handover_ns >= self.reference * FARTHER:  # The cores' placement, not a hiccup.
                self.one_thread = self.probing = True
                self.slow_before = False
                self.probe_against = self.recent_many[-1]  # The slow epoch (slow_before: there is one).

    def allowed(self, wanted: int) -> int:
        """How many of `wanted` threads the next epoch may use: all of them, or one."""
        return 1 if self.one_thread else wanted

    def record(self, threads: int, seconds: float) -> None:
        """Tells how long an epoch took on `threads` threads; decides what `allowed` says next."""
        self.epochs += 1
        handover, self.handover = self.handover, None  # Read before this epoch, or None.
        if self.epochs == 1:
            return  # The first epoch fills the caches and pages: not the threads' speed.
        if threads > 1:
            self.recent_many.append(seconds)
            if self.trying:
                self.trying = False
                if self.last_one is not None and seconds >= self.last_one:
                    self._stay_on_one()  # Several threads lost again: a longer stretch on one.
                    return
                self.wait = PROBE_EVERY  # Several threads won: the slowness has passed.
            slow = self.best_many is not None and seconds > self.best_many * SLOWER
            if slow and self.last_one is not None and self.epochs - self.last_one_epoch <= PROBE_MOST:
                slow = seconds > self.last_one  # One thread took longer lately: it would not win now.
            if handover is not None and not slow:
                self.reference = handover
            again, self.slow_before = slow and self.slow_before, slow
            if again or self.epochs == 2:  # After the second epoch (the first timed): the early probe, the third.
                self.one_thread = self.probing = True
                self.slow_before = False
                self.probe_against = None
            self.best_many = seconds if self.best_many is None else min(self.best_many, seconds)
            return
        if not self.one_thread:
            return  # One thread because the cores were busy (FreeCores): nothing to compare.
        self.last_one, self.last_one_epoch = seconds, self.epochs
        if self.probing:
            self.probing = False
            against = self.probe_against
            if against is None and self.recent_many:
                against = statistics.median(self.recent_many)
            if against is not None and seconds < against:
                self._stay_on_one()
            else:
                self.one_thread = False  # The slowness was not the threads': back to several.
            return
        self.left -= 1
        if self.left <= 0:
            self.one_thread, self.trying = False, True

    def _stay_on_one(self) -> None:
        self.one_thread, self.left = True, self.wait
        self.stretch_handover, self.near_reads = None, 0
        self.wait = min(self.wait * 2, PROBE_MOST)
