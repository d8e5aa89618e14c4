"""Tick tracing on the hot path: decide once per message, record cheaply, emit later.

A message is sampled at receive, before anything else happens to it. The decision is a
countdown: ``TickTracer.countdown`` is the number of messages until the next one sampled by
ratio, drawn from the geometric distribution with ``p = ratio`` each time it runs out, which
picks the same messages in distribution as one random draw per message, for one integer
decrement per message. The feed decrements it inline and calls ``chosen`` when it reaches
zero; other callers use ``start``, which does both. An unsampled message touches no other
tracing code; a sampled one gets a ``TickTrace`` that travels with the event across the bus
tiers (wrapped in ``Traced``) and collects ``(stage, start, end)`` boundaries as plain
integers. When the tick is over, ``finish`` hands the record to a
bounded queue; a background thread (``svc.otel``) turns it into real OpenTelemetry spans —
a root ``tick`` and one child per stage — with the ids chosen here, so the trace id is known
from the first microsecond (logs and the audit journal carry it) and no span object is
built on the event loop.

Ticks that were not sampled are still recorded when they are slow (receive to decision
above ``slow_threshold_ns``) or end in an error: ``record_slow`` / ``record_error`` build the
record after the fact from the durations already measured for the histograms, marked with
``svc.sampled_because`` = ``slow`` / ``error``.

The cost of a trace is paid on the export thread (SDK spans, OTLP encoding: tens of
microseconds per span, under the GIL), so it grows with the message rate: 1% of 50,000
messages/s is 500 traces/s, several percent of a core. ``max_per_second`` caps ratio-sampled
and slow ticks with a token bucket (burst = one second's worth) so telemetry's cost stays
bounded when the market is busiest; ticks the cap refuses are counted in ``rate_limited``.
Error ticks are never capped.

Times: stage boundaries are taken with ``time.perf_counter_ns`` and converted to Unix-epoch
nanoseconds with the tick's own anchor (``ts_init`` and the perf counter at receive).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

_MAX_STAGES: Final = 32


class TickTrace:
    """One sampled (or forced) tick: ids, anchor times, stage boundaries, attributes."""

    __slots__ = (
        "attributes",
        "end_ns",
        "error",
        "perf_anchor",
        "reason",
        "span_id",
        "stages",
        "trace_id",
        "wall_anchor",
    )

    def __init__(
        self, *, trace_id: int, span_id: int, wall_anchor: int, perf_anchor: int, reason: str
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.wall_anchor = wall_anchor
        self.perf_anchor = perf_anchor
        self.reason = reason
        self.stages: list[tuple[str, int, int]] = []
        self.attributes: dict[str, Any] = {}
        self.error = ""
        self.end_ns = 0

    def stage(self, name: str, start_perf: int, end_perf: int) -> None:
        """Record a stage measured with ``time.perf_counter_ns``."""
        if len(self.stages) < _MAX_STAGES:
            offset = self.wall_anchor - self.perf_anchor
            self.stages.append((name, start_perf + offset, end_perf + offset))

    def wall(self, perf_ns: int) -> int:
        return perf_ns + self.wall_anchor - self.perf_anchor

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"


class Traced:
    """An item on a bus tier together with the trace of the tick it belongs to."""

    __slots__ = ("item", "trace")

    def __init__(self, item: Any, trace: TickTrace) -> None:
        self.item = item
        self.trace = trace


class TickTracer:
    """The hot-path side of tick tracing (see the module docstring)."""

    def __init__(
        self,
        *,
        ratio: float,
        slow_threshold_ns: int = 0,
        capacity: int = 10_000,
        rng: Callable[[], float] | None = None,
        bits: Callable[[int], int] | None = None,
        max_per_second: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._random = rng or random.random
        self._ratio = 0.0
        self.countdown = -1
        """Messages until the next one sampled by ratio, this one counted (1: the next
        message); a decrement per message, the message that takes it to 0 is sampled.
        Negative when the ratio is 0: it never reaches 0."""
        self.ratio = ratio
        self.max_per_second = max(0.0, max_per_second)
        self._monotonic = monotonic
        self._tokens = self.max_per_second
        self._refilled = monotonic()
        self.rate_limited = 0
        self.slow_threshold_ns = slow_threshold_ns
        self._bits = bits or random.getrandbits
        self.finished: deque[TickTrace] = deque()
        self._capacity = capacity
        self.sampled = 0
        self.forced = 0
        self.dropped = 0

    @property
    def ratio(self) -> float:
        """The share of messages sampled, 0..1 (setting it draws a new countdown)."""
        return self._ratio

    @ratio.setter
    def ratio(self, ratio: float) -> None:
        self._ratio = max(0.0, min(1.0, ratio))
        self.countdown = self._gap()

    def _gap(self) -> int:
        """A geometric draw on 1, 2, ...: P(gap = k) = (1 - ratio) ** (k - 1) * ratio."""
        ratio = self._ratio
        if ratio <= 0.0:
            return -1
        if ratio >= 1.0:
            return 1
        # 1 - random() lies in (0, 1]: the logarithm is finite and <= 0.
        return int(math.log(1.0 - self._random()) / math.log1p(-ratio)) + 1

    def start(self, wall_ns: int, perf_ns: int) -> TickTrace | None:
        """Decide whether the message received at ``wall_ns``/``perf_ns`` is traced."""
        self.countdown -= 1
        if self.countdown:
            return None
        return self.chosen(wall_ns, perf_ns)

    def chosen(self, wall_ns: int, perf_ns: int) -> TickTrace | None:
        """The countdown reached 0 at this message: draw the next gap and trace the message,
        unless the cap (``max_per_second``) refuses it."""
        self.countdown = self._gap()
        if self.max_per_second and not self._admit():
            return None
        self.sampled += 1
        return self._new(wall_ns, perf_ns, "ratio")

    def _admit(self) -> bool:
        """Take a token from the bucket (``max_per_second``); False when it is empty."""
        now = self._monotonic()
        rate = self.max_per_second
        tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if tokens < 1.0:
            self._tokens = tokens
            self.rate_limited += 1
            return False
        self._tokens = tokens - 1.0
        return True

    def _new(self, wall_ns: int, perf_ns: int, reason: str) -> TickTrace:
        trace_id = self._bits(128) or 1
        span_id = self._bits(64) or 1
        return TickTrace(
            trace_id=trace_id,
            span_id=span_id,
            wall_anchor=wall_ns,
            perf_anchor=perf_ns,
            reason=reason,
        )

    def finish(self, trace: TickTrace, *, end_perf: int | None = None) -> None:
        """The tick is over: queue it for export (bounded; counted when full)."""
        trace.end_ns = trace.wall(time.perf_counter_ns() if end_perf is None else end_perf)
        if len(self.finished) >= self._capacity:
            self.dropped += 1
            return
        self.finished.append(trace)

    def record_slow(
        self,
        *,
        wall_anchor: int,
        perf_anchor: int,
        stages: list[tuple[str, int, int]],
        attributes: dict[str, Any],
    ) -> None:
        """An unsampled tick that turned out slow: record what was measured, after the fact."""
        if self.max_per_second and not self._admit():
            return
        self._forced(wall_anchor, perf_anchor, stages, attributes, reason="slow", error="")

    def record_error(
        self,
        *,
        wall_anchor: int,
        perf_anchor: int,
        stages: list[tuple[str, int, int]],
        attributes: dict[str, Any],
        error: str,
    ) -> None:
        self._forced(wall_anchor, perf_anchor, stages, attributes, reason="error", error=error)

    def _forced(
        self,
        wall_anchor: int,
        perf_anchor: int,
        stages: list[tuple[str, int, int]],
        attributes: dict[str, Any],
        *,
        reason: str,
        error: str,
    ) -> None:
        self.forced += 1
        trace = self._new(wall_anchor, perf_anchor, reason)
        for name, start, end in stages:
            trace.stage(name, start, end)
        trace.attributes.update(attributes)
        trace.error = error
        self.finish(trace)

    def drain(self, limit: int = 10_000) -> list[TickTrace]:
        """Take finished ticks (called by the exporting thread; deque ops are atomic)."""
        out: list[TickTrace] = []
        finished = self.finished
        while finished and len(out) < limit:
            out.append(finished.popleft())
        return out

    def statistics(self) -> dict[str, int]:
        return {
            "sampled": self.sampled,
            "forced": self.forced,
            "dropped": self.dropped,
            "rate_limited": self.rate_limited,
            "pending": len(self.finished),
        }


def ratio_from_environment(environ: dict[str, str] | Any, default: float = 0.01) -> float:
    """The sampling ratio OpenTelemetry's standard variables ask for.

    ``always_on``/``parentbased_always_on`` -> 1, ``always_off``/``parentbased_always_off``
    -> 0, ``traceidratio``/``parentbased_traceidratio`` -> ``OTEL_TRACES_SAMPLER_ARG``
    (default ``default``). Unset: ``parentbased_traceidratio`` at ``default``.
    """
    sampler = str(environ.get("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")).strip().lower()
    if sampler in ("always_on", "parentbased_always_on"):
        return 1.0
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    argument = environ.get("OTEL_TRACES_SAMPLER_ARG")
    try:
        ratio = float(argument) if argument not in (None, "") else default
    except ValueError:
        return default
    return min(1.0, max(0.0, ratio))


CURRENT_TRACE: ContextVar[TickTrace | None] = ContextVar("svc_current_trace", default=None)
"""The sampled tick being handled, if any; log records made meanwhile carry its ids."""


class TraceContextFilter(logging.Filter):
    """Stamps ``trace_id``/``span_id`` of the current sampled tick on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = CURRENT_TRACE.get()
        if trace is not None:
            record.trace_id = trace.trace_id_hex
            record.span_id = trace.span_id_hex
        return True
