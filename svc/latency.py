"""Hot-path stage timing: preallocated log-linear histograms over integer nanoseconds.

Every stage of every message is timed, so one ``record`` must cost a fraction of a
microsecond: no OpenTelemetry call, no lock, no allocation. A ``LatencyHistogram`` keeps a
fixed ``list[int]`` of counts; the bucket index comes from integer arithmetic on the value
(HDR-style: the position of the top bit picks a power of two, the next three bits pick one
of eight linear sub-buckets), so the relative error of any bucket is at most 1/8 (12.5%).

Layout (``ns`` is the recorded value):

* ``0 <= ns < 16``: one bucket per value (exact);
* ``16 <= ns < 2**42`` (about 73 minutes): eight buckets per power of two;
* ``ns >= 2**42``: one overflow bucket, reported as the exact maximum.

Negative values (two clocks disagreeing) are recorded as 0.

Concurrency: a histogram belongs to one thread (the event loop). ``snapshot`` may be called
from another thread (the metrics reader): the counts are copied by one C-level operation
under the GIL, so ``count`` always equals the sum of the copied counts; ``sum``/``min``/
``max`` may include a record that the counts do not yet show. Metrics tolerate that.

OpenTelemetry (collection time only): ``HistogramSnapshot.boundaries`` and ``.counts`` have
exactly the layout of an explicit-bucket histogram data point (``len(counts) ==
len(boundaries) + 1``, bucket ``i`` holds values in ``(boundaries[i-1], boundaries[i]]``);
``rebucket`` folds them onto a coarser published boundary set.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from types import MappingProxyType
from typing import Final, TypedDict

import numpy as np

STAGES: Final = (
    "receive",
    "parse",
    "publish",
    "queue_wait",
    "strategy",
    "risk",
    "submit",
    "ack",
    "fill",
    "audit",
)
"""The one stage vocabulary: span names, the ``stage`` attribute, dashboards, runbooks."""

TICK_OUTCOMES: Final = ("no_signal", "signal", "order")
"""Values of the ``outcome`` attribute of ``svc.tick.duration``."""

_SUB_BITS: Final = 3  # 2**3 linear sub-buckets per power of two: relative error <= 1/8
_EXACT_LIMIT: Final = 1 << (_SUB_BITS + 1)  # below 16 every value has its own bucket
_MAX_BIT_LENGTH: Final = 42  # 2**42 ns ~ 73 minutes; anything above is overflow
OVERFLOW_INDEX: Final = ((_MAX_BIT_LENGTH - _SUB_BITS - 1) << _SUB_BITS) + _EXACT_LIMIT
"""Index of the overflow bucket; also the number of bounded buckets."""
_OVERFLOW_FROM: Final = 1 << _MAX_BIT_LENGTH


def _upper_bound(index: int) -> int:
    """Largest integer ns that falls into bounded bucket ``index`` (inclusive)."""
    if index < _EXACT_LIMIT:
        return index
    shift = (index >> _SUB_BITS) - 1
    mantissa = (index & ((1 << _SUB_BITS) - 1)) | (1 << _SUB_BITS)
    return ((mantissa + 1) << shift) - 1


BUCKET_UPPER_BOUNDS: Final[tuple[int, ...]] = tuple(
    _upper_bound(index) for index in range(OVERFLOW_INDEX)
)
"""Inclusive upper bound in ns of every bounded bucket, ascending (the overflow bucket has none)."""

_ZEROS: Final = (0,) * (OVERFLOW_INDEX + 1)


def bucket_index(ns: int) -> int:
    """The bucket ``ns`` falls into (the same arithmetic as ``LatencyHistogram.record``)."""
    if ns >= _EXACT_LIMIT:
        if ns >= _OVERFLOW_FROM:
            return OVERFLOW_INDEX
        shift = ns.bit_length() - _SUB_BITS - 1
        return (shift << _SUB_BITS) + (ns >> shift)
    return max(ns, 0)


def _percentile(counts: Sequence[int], total: int, low: int, high: int, q: float) -> int:
    """Nearest-rank percentile: the upper bound of the bucket holding the rank-th value,
    clamped to ``[low, high]`` (so it never under-reports and never exceeds the maximum)."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q!r}")
    if total == 0:
        return 0
    rank = max(1, math.ceil(q * total / 100.0))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            if index == OVERFLOW_INDEX:
                return high
            return max(low, min(BUCKET_UPPER_BOUNDS[index], high))
    return high  # unreachable when total == sum(counts); kept for torn concurrent reads


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """An immutable copy of a ``LatencyHistogram``. All values are integer nanoseconds.

    ``counts[i]`` for ``i < len(boundaries)`` counts values ``<= boundaries[i]`` and above
    the previous boundary; ``counts[-1]`` counts values above ``boundaries[-1]``.
    """

    boundaries: tuple[int, ...]
    counts: tuple[int, ...]
    count: int
    sum: int
    min: int
    max: int

    def percentile(self, q: float) -> int:
        """Nearest-rank percentile ``q`` in [0, 100], ns; 0 when empty. Error <= 12.5% high."""
        return _percentile(self.counts, self.count, self.min, self.max, q)

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def rebucket(self, boundaries: Sequence[int]) -> tuple[int, ...]:
        """Counts on coarser ascending ``boundaries`` (ns): ``len(boundaries) + 1`` values.

        Exact when every boundary is one of ``BUCKET_UPPER_BOUNDS``; otherwise a fine bucket
        that straddles a boundary is counted in the bucket above it (never under-reports).
        """
        folded = [0] * (len(boundaries) + 1)
        for index, count in enumerate(self.counts):
            if count:
                if index == OVERFLOW_INDEX:
                    folded[-1] += count
                else:
                    folded[bisect_left(boundaries, BUCKET_UPPER_BOUNDS[index])] += count
        return tuple(folded)


_NO_MIN: Final = 1 << 62


class LatencyHistogram:
    """Counts of integer-nanosecond durations in preallocated log-linear buckets."""

    __slots__ = ("_counts", "_max", "_min", "_sum")

    def __init__(self) -> None:
        self._counts = list(_ZEROS)
        self._sum = 0
        self._min = _NO_MIN
        self._max = 0

    def record(self, ns: int) -> None:
        """Count one duration in ns. The hot-path call: integer arithmetic, no allocation."""
        if ns >= _EXACT_LIMIT:
            if ns >= _OVERFLOW_FROM:
                index = OVERFLOW_INDEX
            else:
                shift = ns.bit_length() - _SUB_BITS - 1
                index = (shift << _SUB_BITS) + (ns >> shift)
        elif ns >= 0:
            index = ns
        else:
            index = ns = 0
        self._counts[index] += 1
        self._sum += ns
        # Comparisons, not max()/min(): a builtin call costs more than the whole update.
        if ns > self._max:  # noqa: PLR1730
            self._max = ns
        if ns < self._min:  # noqa: PLR1730
            self._min = ns

    @property
    def count(self) -> int:
        # Derived, not kept: one increment less on every record.
        return sum(self._counts)

    @property
    def sum(self) -> int:
        return self._sum

    @property
    def min(self) -> int:
        return 0 if self._min == _NO_MIN else self._min

    @property
    def max(self) -> int:
        return self._max

    def percentile(self, q: float) -> int:
        """Nearest-rank percentile ``q`` in [0, 100], ns; 0 when empty. Error <= 12.5% high."""
        counts = tuple(self._counts)
        return _percentile(counts, sum(counts), self.min, self._max, q)

    def snapshot(self) -> HistogramSnapshot:
        counts = tuple(self._counts)
        return HistogramSnapshot(
            boundaries=BUCKET_UPPER_BOUNDS,
            counts=counts,
            count=sum(counts),
            sum=self._sum,
            min=self.min,
            max=self._max,
        )

    def merge(self, other: LatencyHistogram | BufferedHistogram | HistogramSnapshot) -> None:
        """Add another histogram's (or snapshot's) counts into this one."""
        source = other if isinstance(other, HistogramSnapshot) else other.snapshot()
        if source.count == 0:
            return
        counts = self._counts
        for index, count in enumerate(source.counts):
            counts[index] += count
        self._sum += source.sum
        self._min = min(self._min, source.min)
        self._max = max(self._max, source.max)

    def reset(self) -> None:
        self._counts[:] = _ZEROS  # in place: callers may hold a bound ``record``
        self._sum = 0
        self._min = _NO_MIN
        self._max = 0


_FOLD_CHUNK: Final = 1 << 20  # values per numpy pass: their sum stays far below 2**63
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


class BufferedHistogram:
    """A ``LatencyHistogram`` whose ``record`` is a bare ``list.append`` (~15 ns).

    The hot path of a message records six or more durations; bucketing each in Python costs
    ~150 ns (several int allocations per record), which ``bench pipeline`` showed to be most
    of svc's telemetry overhead. Here ``record`` *is* the bound ``append`` of a list (no
    Python frame at all), and ``fold()`` buckets the pending values with numpy (~30 ns a
    value, conversion included) into the same log-linear layout. Every reader
    (``snapshot``, ``count``, ``percentile``, ...) folds first, so results equal
    ``LatencyHistogram``'s exactly.

    Why a list and not an ``array('q')``: ``array.append`` parses its argument through the
    generic argument parser and costs ~65 ns; ``list.append`` keeps the int object that the
    subtraction has just made, ~15 ns. The price is memory until the next fold (an int
    object and a pointer, ~40 bytes a record instead of 8). Values outside int64 are
    recorded like any other and land in the overflow bucket (above) or at 0 (below).

    Boundedness: the owner folds periodically on the recording thread (``svc.app`` every
    0.25 s) and every metrics collection folds too, so the pending list holds at most a
    fraction of a second of records. Thread safety: ``append`` is one C call under the GIL;
    a fold copies and deletes a prefix of the list (two C calls) under a lock, so records
    made meanwhile stay pending and none is counted twice.
    """

    __slots__ = ("_folded", "_lock", "_pending", "record")

    def __init__(self) -> None:
        self._folded = LatencyHistogram()
        self._pending: list[int] = []
        self._lock = threading.Lock()
        self.record: Callable[[int], None] = self._pending.append
        """Record one duration in ns."""

    def fold(self) -> None:
        """Bucket the pending values; callable from any thread."""
        with self._lock:
            pending = self._pending
            while True:
                count = len(pending)
                if not count:
                    return
                take = min(count, _FOLD_CHUNK)
                chunk = pending[:take]
                del pending[:take]
                _fold_values(self._folded, chunk)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def count(self) -> int:
        self.fold()
        return self._folded.count

    @property
    def sum(self) -> int:
        self.fold()
        return self._folded.sum

    @property
    def min(self) -> int:
        self.fold()
        return self._folded.min

    @property
    def max(self) -> int:
        self.fold()
        return self._folded.max

    @property
    def mean(self) -> float:
        return self.snapshot().mean

    def percentile(self, q: float) -> int:
        self.fold()
        return self._folded.percentile(q)

    def snapshot(self) -> HistogramSnapshot:
        self.fold()
        with self._lock:
            return self._folded.snapshot()

    def merge(self, other: LatencyHistogram | BufferedHistogram | HistogramSnapshot) -> None:
        source = other.snapshot() if not isinstance(other, HistogramSnapshot) else other
        self.fold()
        with self._lock:
            self._folded.merge(source)

    def reset(self) -> None:
        with self._lock:
            del self._pending[:]
            self._folded.reset()


def _fold_values(target: LatencyHistogram, chunk: list[int]) -> None:
    """Add ``chunk``'s values to ``target`` exactly as ``LatencyHistogram.record`` would.

    One formula covers every bucket: with ``v`` clipped to ``[0, 2**42]`` and ``shift`` =
    ``max(bit_length(v) - 4, 0)``, the index is ``(shift << 3) + (v >> shift)``: ``v`` itself
    below 16, the log-linear bucket up to 2**42, and ``OVERFLOW_INDEX`` at 2**42 (values above
    were clipped to it). ``frexp``'s exponent is the bit length, exact below 2**53.
    """
    try:
        raw = np.fromiter(chunk, dtype=np.int64, count=len(chunk))
    except OverflowError:  # a value outside int64: clamp it (sum and max then hold the clamp)
        raw = np.array([min(max(v, _INT64_MIN), _INT64_MAX) for v in chunk], dtype=np.int64)
    values = np.clip(raw, 0, _OVERFLOW_FROM)
    _mantissa, bits = np.frexp(values.astype(np.float64))
    shift = np.maximum(bits - (_SUB_BITS + 1), 0).astype(np.int64)
    index = (shift << _SUB_BITS) + (values >> shift)
    counts = np.bincount(index, minlength=OVERFLOW_INDEX + 1)
    buckets = np.flatnonzero(counts)
    target_counts = target._counts
    for bucket, count in zip(buckets.tolist(), counts[buckets].tolist(), strict=True):
        target_counts[bucket] += count
    low, high = max(int(raw.min()), 0), int(raw.max())  # record() clamps negatives to 0
    if high < _OVERFLOW_FROM:  # the usual case: the int64 sum of <= 2**20 values cannot wrap
        target._sum += int(values.sum())
    else:
        bounded = raw < _OVERFLOW_FROM
        target._sum += int(values[bounded].sum()) + sum(raw[~bounded].tolist())
    target._min = min(target._min, low)
    target._max = max(target._max, high)


class StageSummary(TypedDict):
    """One line of a status summary; durations in microseconds."""

    count: int
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float


def summarize(snapshot: HistogramSnapshot) -> StageSummary:
    return StageSummary(
        count=snapshot.count,
        p50_us=snapshot.percentile(50.0) / 1_000.0,
        p99_us=snapshot.percentile(99.0) / 1_000.0,
        p999_us=snapshot.percentile(99.9) / 1_000.0,
        max_us=snapshot.max / 1_000.0,
    )


@dataclass(frozen=True, slots=True)
class RecorderSnapshot:
    """Snapshots keyed by stage (``svc.stage.duration``) and by tick outcome
    (``svc.tick.duration``); both mappings are read-only and in vocabulary order."""

    stages: Mapping[str, HistogramSnapshot]
    ticks: Mapping[str, HistogramSnapshot]


class StageRecorder:
    """One histogram per stage and per tick outcome.

    Hot path: ``recorder.parse.record(ns)`` (one slot load and a C ``list.append``; mypy
    catches a misspelt stage). The histograms are ``BufferedHistogram``s: whoever owns the
    recorder calls ``fold()`` every fraction of a second on the recording thread.
    Loops and dynamic lookups: ``recorder.stages["parse"]``, ``recorder.ticks["order"]``.
    """

    __slots__ = (
        "ack",
        "audit",
        "feed_lag_by_stream",
        "fill",
        "parse",
        "publish",
        "queue_wait",
        "receive",
        "risk",
        "stages",
        "strategy",
        "submit",
        "tick_no_signal",
        "tick_order",
        "tick_signal",
        "ticks",
    )

    def __init__(self) -> None:
        self.receive = BufferedHistogram()
        self.parse = BufferedHistogram()
        self.publish = BufferedHistogram()
        self.queue_wait = BufferedHistogram()
        self.strategy = BufferedHistogram()
        self.risk = BufferedHistogram()
        self.submit = BufferedHistogram()
        self.ack = BufferedHistogram()
        self.fill = BufferedHistogram()
        self.audit = BufferedHistogram()
        self.tick_no_signal = BufferedHistogram()
        self.tick_signal = BufferedHistogram()
        self.tick_order = BufferedHistogram()
        self.feed_lag_by_stream: dict[str, BufferedHistogram] = {}
        """``ts_init - ts_event`` of every market event by stream (``svc.feed.lag{stream}``);
        not a stage. The feed bounds the number of streams."""
        self.stages: Mapping[str, BufferedHistogram] = MappingProxyType(
            {stage: getattr(self, stage) for stage in STAGES}
        )
        self.ticks: Mapping[str, BufferedHistogram] = MappingProxyType(
            {outcome: getattr(self, "tick_" + outcome) for outcome in TICK_OUTCOMES}
        )

    def snapshot(self) -> RecorderSnapshot:
        return RecorderSnapshot(
            stages=MappingProxyType({name: h.snapshot() for name, h in self.stages.items()}),
            ticks=MappingProxyType({name: h.snapshot() for name, h in self.ticks.items()}),
        )

    def summary(self) -> dict[str, StageSummary]:
        """Stage name -> counts and percentiles in us, then ``tick.<outcome>`` entries."""
        snapshot = self.snapshot()
        result = {name: summarize(s) for name, s in snapshot.stages.items()}
        result.update({"tick." + name: summarize(s) for name, s in snapshot.ticks.items()})
        return result

    def stream_lag(self, stream: str) -> BufferedHistogram:
        """The feed-lag histogram of ``stream`` (created on first use)."""
        histogram = self.feed_lag_by_stream.get(stream)
        if histogram is None:
            histogram = self.feed_lag_by_stream[stream] = BufferedHistogram()
        return histogram

    @property
    def feed_lag(self) -> LatencyHistogram:
        """The feed lag of every stream together (a merged copy)."""
        merged = LatencyHistogram()
        for histogram in list(self.feed_lag_by_stream.values()):
            merged.merge(histogram)
        return merged

    def _all(self) -> Iterable[BufferedHistogram]:
        return chain(
            self.stages.values(), self.ticks.values(), list(self.feed_lag_by_stream.values())
        )

    def fold(self) -> None:
        """Bucket every pending record (see ``BufferedHistogram``); call it periodically."""
        for histogram in self._all():
            histogram.fold()

    def reset(self) -> None:
        for histogram in self._all():
            histogram.reset()
