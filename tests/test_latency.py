"""LatencyHistogram and StageRecorder against exact reference computations."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svc.latency import (
    BUCKET_UPPER_BOUNDS,
    OVERFLOW_INDEX,
    STAGES,
    TICK_OUTCOMES,
    HistogramSnapshot,
    LatencyHistogram,
    StageRecorder,
    bucket_index,
)

BOUNDED = (1 << 42) - 1  # the largest value that is not overflow
values = st.lists(st.integers(min_value=0, max_value=BOUNDED), min_size=1, max_size=300)
percentiles = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


def exact_percentile(data: list[int], q: float) -> int:
    """Nearest-rank percentile, the definition the histogram approximates."""
    ordered = sorted(data)
    rank = max(1, math.ceil(q * len(ordered) / 100.0))
    return ordered[rank - 1]


def filled(data: list[int]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for ns in data:
        histogram.record(ns)
    return histogram


@settings(max_examples=300)
@given(data=values, q=percentiles)
def test_percentile_within_bucket_error_of_exact(data: list[int], q: float) -> None:
    estimate = filled(data).percentile(q)
    exact = exact_percentile(data, q)
    # Never under-reports; over-reports by less than one bucket width, at most 1/8 of the value.
    assert exact <= estimate <= exact + (exact >> 3)
    assert estimate <= max(data)


@given(data=values)
def test_count_sum_min_max_are_exact(data: list[int]) -> None:
    histogram = filled(data)
    snapshot = histogram.snapshot()
    assert histogram.count == snapshot.count == len(data) == sum(snapshot.counts)
    assert histogram.sum == snapshot.sum == sum(data)
    assert (snapshot.min, snapshot.max) == (min(data), max(data))
    assert snapshot.mean == pytest.approx(sum(data) / len(data))


@given(ns=st.integers(min_value=0, max_value=BOUNDED))
def test_value_lies_within_its_bucket(ns: int) -> None:
    index = bucket_index(ns)
    lower = BUCKET_UPPER_BOUNDS[index - 1] + 1 if index else 0
    assert lower <= ns <= BUCKET_UPPER_BOUNDS[index]
    assert BUCKET_UPPER_BOUNDS[index] - lower <= max(lower >> 3, 0)  # width <= 1/8 of lower
    histogram = LatencyHistogram()
    histogram.record(ns)
    assert histogram.snapshot().counts[index] == 1


def test_boundaries_are_strictly_increasing_and_contiguous() -> None:
    assert len(BUCKET_UPPER_BOUNDS) == OVERFLOW_INDEX
    assert BUCKET_UPPER_BOUNDS[:16] == tuple(range(16))  # small values are exact
    assert all(a < b for a, b in pairwise(BUCKET_UPPER_BOUNDS))
    assert BUCKET_UPPER_BOUNDS[-1] == BOUNDED
    for index, upper in enumerate(BUCKET_UPPER_BOUNDS):
        assert bucket_index(upper) == index
        assert bucket_index(upper + 1) == index + 1
    snapshot = LatencyHistogram().snapshot()
    assert len(snapshot.counts) == len(snapshot.boundaries) + 1  # OpenTelemetry's layout


def test_zero_negative_and_huge_values() -> None:
    histogram = LatencyHistogram()
    histogram.record(0)
    histogram.record(-5)  # clocks that disagree: recorded as 0
    huge = 10**18  # ~31 years, far beyond the bounded range
    histogram.record(huge)
    snapshot = histogram.snapshot()
    assert snapshot.counts[0] == 2
    assert snapshot.counts[OVERFLOW_INDEX] == 1
    assert (snapshot.count, snapshot.sum, snapshot.min, snapshot.max) == (3, huge, 0, huge)
    assert histogram.percentile(0) == 0
    assert histogram.percentile(50) == 0
    assert histogram.percentile(100) == huge  # the overflow bucket reports the exact maximum


def test_empty_histogram_and_invalid_percentile() -> None:
    histogram = LatencyHistogram()
    assert (histogram.count, histogram.min, histogram.max, histogram.percentile(99)) == (0, 0, 0, 0)
    assert histogram.snapshot().mean == 0.0
    with pytest.raises(ValueError, match="within"):
        histogram.percentile(100.5)
    with pytest.raises(ValueError, match="within"):
        histogram.percentile(-1)


@given(first=values, second=values)
def test_merge_equals_recording_everything_in_one(first: list[int], second: list[int]) -> None:
    merged = filled(first)
    merged.merge(filled(second))
    assert merged.snapshot() == filled(first + second).snapshot()
    from_snapshot = filled(first)
    from_snapshot.merge(filled(second).snapshot())
    assert from_snapshot.snapshot() == merged.snapshot()


def test_merge_of_empty_keeps_min() -> None:
    histogram = filled([500, 700])
    histogram.merge(LatencyHistogram())
    assert (histogram.min, histogram.max, histogram.count) == (500, 700, 2)


def test_reset_empties_in_place() -> None:
    histogram = filled([1, 100, 10_000])
    record = histogram.record  # a bound method held by hot-path code keeps working
    before = histogram.snapshot()
    histogram.reset()
    assert histogram.snapshot() == LatencyHistogram().snapshot()
    record(42)
    assert (histogram.count, histogram.min, histogram.max) == (1, 42, 42)
    assert before.count == 3  # snapshots are copies, untouched by reset


@given(data=values)
def test_rebucket_on_own_boundaries_is_exact(data: list[int]) -> None:
    # Published boundaries near 1, 10, 100 us and 1 ms, aligned to the histogram's own.
    coarse = tuple(BUCKET_UPPER_BOUNDS[bucket_index(b)] for b in (999, 9_999, 99_999, 999_999))
    folded = filled(data).snapshot().rebucket(coarse)
    expected = [0] * (len(coarse) + 1)
    for ns in data:
        expected[next((i for i, b in enumerate(coarse) if ns <= b), len(coarse))] += 1
    assert folded == tuple(expected)


def test_snapshot_is_immutable() -> None:
    snapshot = filled([3]).snapshot()
    assert isinstance(snapshot, HistogramSnapshot)
    with pytest.raises(AttributeError):
        snapshot.count = 7  # type: ignore[misc]


def test_stage_recorder_covers_the_vocabulary() -> None:
    recorder = StageRecorder()
    assert tuple(recorder.stages) == STAGES
    assert tuple(recorder.ticks) == TICK_OUTCOMES
    assert recorder.stages["parse"] is recorder.parse
    assert recorder.ticks["order"] is recorder.tick_order
    assert len({id(h) for h in (*recorder.stages.values(), *recorder.ticks.values())}) == 13


def test_stage_recorder_summary_and_snapshot() -> None:
    recorder = StageRecorder()
    rng = random.Random(7)
    parse_values = [rng.randrange(1_000, 5_000) for _ in range(1_000)]
    for ns in parse_values:
        recorder.parse.record(ns)
    recorder.tick_signal.record(250_000)

    snapshot = recorder.snapshot()
    assert snapshot.stages["parse"].count == 1_000
    assert snapshot.stages["risk"].count == 0
    assert snapshot.ticks["signal"].max == 250_000

    summary = recorder.summary()
    assert list(summary) == [*STAGES, *("tick." + o for o in TICK_OUTCOMES)]
    parse = summary["parse"]
    assert parse["count"] == 1_000
    assert parse["max_us"] == max(parse_values) / 1_000
    for key, q in (("p50_us", 50.0), ("p99_us", 99.0), ("p999_us", 99.9)):
        exact_us = exact_percentile(parse_values, q) / 1_000
        assert exact_us <= parse[key] <= exact_us * 1.125
    assert parse["p50_us"] <= parse["p99_us"] <= parse["p999_us"] <= parse["max_us"]
    assert summary["tick.signal"] == {
        "count": 1,
        "p50_us": 250.0,
        "p99_us": 250.0,
        "p999_us": 250.0,
        "max_us": 250.0,
    }
    assert summary["audit"]["count"] == 0

    recorder.reset()
    assert recorder.parse.count == recorder.tick_signal.count == 0


# ------------------------------------------------------------------ BufferedHistogram


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(min_value=-(10**6), max_value=2**42 + 10**6),
            st.integers(min_value=0, max_value=2**62),
            st.sampled_from([0, 1, 15, 16, 17, 2**42 - 1, 2**42, 2**42 + 1]),
        ),
        max_size=300,
    ),
    st.integers(min_value=0, max_value=300),
)
def test_buffered_histogram_equals_record_by_record(values: list[int], fold_at: int) -> None:
    from svc.latency import BufferedHistogram  # noqa: PLC0415

    direct = LatencyHistogram()
    buffered = BufferedHistogram()
    for position, value in enumerate(values):
        direct.record(value)
        buffered.record(value)
        if position == fold_at:
            buffered.fold()  # a fold in the middle changes nothing
    assert buffered.snapshot() == direct.snapshot()
    assert buffered.count == len(values)
    assert buffered.percentile(99) == direct.percentile(99)


def test_buffered_histogram_takes_values_beyond_int64_without_losing_the_others() -> None:
    """A record is a bare list append, so nothing refuses a huge value on the hot path; the
    fold clamps it into the overflow bucket (or to 0 below) and keeps every other value."""
    from svc.latency import OVERFLOW_INDEX, BufferedHistogram  # noqa: PLC0415

    histogram = BufferedHistogram()
    for value in (100, 2**70, -(2**70), 200):
        histogram.record(value)
    histogram.fold()
    counts = histogram.snapshot().counts
    assert histogram.count == 4
    assert counts[OVERFLOW_INDEX] == 1
    assert counts[0] == 1  # the huge negative value, as record() clamps negatives
    assert histogram.max == 2**63 - 1
    assert histogram.min == 0


def test_buffered_histogram_folds_a_prefix_and_keeps_later_records() -> None:
    from svc.latency import BufferedHistogram  # noqa: PLC0415

    histogram = BufferedHistogram()
    for value in range(1000):
        histogram.record(value)
    assert histogram.pending == 1000
    histogram.fold()
    assert histogram.pending == 0
    histogram.record(5)
    assert histogram.pending == 1
    assert histogram.count == 1001
    histogram.reset()
    assert histogram.count == 0
    assert histogram.snapshot() == LatencyHistogram().snapshot()
