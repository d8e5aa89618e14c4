"""Runtime pauses the trading path cannot see itself: garbage-collection stalls and event-loop lag.

Both are *sources*: they fill ``svc.latency.LatencyHistogram``s and know nothing about any
metrics SDK. A separate bridge publishes the histograms (``svc.gc.pause`` per generation,
``svc.loop.lag``) at collection time.

GC pauses (DESIGN.md, telemetry point 4). ``gc.callbacks`` run *inside* the collector, on
whichever thread triggered the collection, with the GIL held and possibly while another lock
of that thread is held. A metrics call from there (prometheus_client, OpenTelemetry) takes
the SDK's own lock and has deadlocked both in the wild. So the callback does the least that
can be done: read a clock, append one tuple to a bounded ``deque`` (an atomic C operation),
count an overflow. ``GcPauses.drain`` - from a background task or the metric collection
thread - turns the tuples into histograms later.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypedDict

from svc.latency import LatencyHistogram

GENERATIONS: Final = (0, 1, 2)
"""Values of the ``generation`` attribute of ``svc.gc.pause``."""

GcCallback = Callable[[str, dict[str, Any]], None]


class GcStatistics(TypedDict):
    """What ``GcPauses.statistics`` reports; durations in ns."""

    collections: dict[int, int]
    """Drained collections per generation."""
    dropped: int
    """Pauses lost because the buffer was full (``drain`` ran too rarely)."""
    pending: int
    """Pauses recorded but not drained yet."""
    max_pause_ns: int
    capacity: int


class GcPauses:
    """Times every garbage collection through ``gc.callbacks``.

    ``install()`` once at start-up, ``await run()`` under the supervisor (or call ``drain()``
    before reading ``histograms``), ``uninstall()`` at shutdown. ``clock_ns`` must be a
    monotonic ns clock that never collects garbage itself (``time.perf_counter_ns``, or
    ``Clock.monotonic_ns`` of ``svc.clock``).
    """

    def __init__(
        self,
        *,
        capacity: int = 4096,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self._events: deque[tuple[int, int, int]] = deque(maxlen=capacity)
        self._clock_ns = clock_ns
        self._drain_lock = threading.Lock()
        self._callback: GcCallback | None = None
        self.dropped = 0
        """Pauses lost to a full buffer; written only by the GC callback."""
        self.histograms: dict[int, LatencyHistogram] = {g: LatencyHistogram() for g in GENERATIONS}
        """Pause durations (ns) per generation; filled by ``drain``."""

    @property
    def installed(self) -> bool:
        return self._callback is not None

    def install(self) -> None:
        """Append the callback to ``gc.callbacks``; a second call does nothing."""
        if self._callback is None:
            self._callback = self._make_callback()
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Remove the callback from ``gc.callbacks``; safe to call any number of times."""
        callback, self._callback = self._callback, None
        if callback is not None and callback in gc.callbacks:
            gc.callbacks.remove(callback)

    def _make_callback(self) -> GcCallback:
        # A closure, not a method: locals and cells instead of attribute lookups, and nothing
        # but the deque, the clock and ``self.dropped`` is reachable from it. Collections never
        # nest (the interpreter does not start one while another runs), so one start slot is
        # enough even when several threads allocate.
        events = self._events
        clock_ns = self._clock_ns
        capacity = events.maxlen
        start_ns = -1  # negative: no collection in progress (clock readings are >= 0)

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            nonlocal start_ns
            if phase == "start":
                start_ns = clock_ns()
                return
            if start_ns < 0:  # installed from inside a collection: no start seen
                return
            stop_ns = clock_ns()
            if len(events) == capacity:
                self.dropped += 1  # the append below evicts the oldest pause
            events.append((info["generation"], start_ns, stop_ns))
            start_ns = -1

        return on_gc

    def drain(self) -> int:
        """Move recorded pauses into ``histograms``; returns how many were moved.

        Safe from any thread (the event loop's reader task and the metric collection thread
        may both call it). Moves at most what was buffered on entry, so collections that
        happen while it runs cannot keep it busy.
        """
        events = self._events
        histograms = self.histograms
        moved = 0
        with self._drain_lock:
            for _ in range(len(events)):
                try:
                    generation, start_ns, stop_ns = events.popleft()
                except IndexError:  # pragma: no cover - only this method pops, under the lock
                    break
                histogram = histograms.get(generation)
                if histogram is None:  # an interpreter with more generations
                    histogram = histograms[generation] = LatencyHistogram()
                histogram.record(stop_ns - start_ns)
                moved += 1
        return moved

    async def run(self, interval: float = 1.0) -> None:
        """Drain every ``interval`` seconds until cancelled; drains once more on the way out."""
        try:
            while True:
                self.drain()
                await asyncio.sleep(interval)
        finally:
            self.drain()

    def statistics(self) -> GcStatistics:
        """Drained counts per generation, drops, pending pauses and the longest pause (ns)."""
        histograms = dict(self.histograms)  # drain may add a generation while we read
        return GcStatistics(
            collections={g: h.count for g, h in histograms.items()},
            dropped=self.dropped,
            pending=len(self._events),
            max_pause_ns=max((h.max for h in histograms.values()), default=0),
            capacity=self._events.maxlen or 0,
        )


def freeze_after_warmup() -> int:
    """Collect once, then move every surviving object into the permanent generation.

    Call it after start-up (config, exchange info, strategy state, imported modules): those
    objects live for the whole process, yet every gen2 collection would traverse them again.
    Frozen objects are never scanned, so full collections only walk what the trading path
    allocated since (DESIGN.md: ~210 ms -> ~24 ms with ~1M live objects). The first
    ``gc.collect()`` keeps start-up garbage out of the frozen set. Returns how many objects
    are frozen (``gc.get_freeze_count()``).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class LoopLagStatistics(TypedDict):
    """What ``LoopLag.statistics`` reports; durations in ns."""

    count: int
    last_ns: int
    max_ns: int


class LoopLag:
    """Measures how late the event loop wakes a timer (``svc.loop.lag``).

    ``run()`` sleeps ``interval`` seconds again and again; each wake-up records the lateness
    (elapsed - interval, floored at 0) in ns into ``histogram``. A blocked loop (a
    synchronous call, a long GC, the GIL held by an export thread) shows up as lag.

    It sleeps with ``asyncio.sleep`` on purpose, not through the ``svc.clock`` seam: the lag of
    the real loop is the thing measured, and a fake clock would measure nothing.
    """

    def __init__(
        self,
        *,
        interval: float = 0.05,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.interval = interval
        self._clock_ns = clock_ns
        self.histogram = LatencyHistogram()
        self.last_ns = 0
        self.max_ns = 0

    async def run(self) -> None:
        """Measure until cancelled. Per iteration: one sleep, one clock read, one record."""
        interval = self.interval
        interval_ns = round(interval * 1_000_000_000)
        clock_ns = self._clock_ns
        record = self.histogram.record
        sleep = asyncio.sleep
        before = clock_ns()
        while True:
            await sleep(interval)
            now = clock_ns()
            # Floored: asyncio may wake a timer up to one clock resolution early.
            lag = max(now - before - interval_ns, 0)
            record(lag)
            self.last_ns = lag
            self.max_ns = max(self.max_ns, lag)
            before = now

    def statistics(self) -> LoopLagStatistics:
        return LoopLagStatistics(
            count=self.histogram.count, last_ns=self.last_ns, max_ns=self.max_ns
        )
