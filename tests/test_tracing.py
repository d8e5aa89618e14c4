"""Tick tracing: the sampling decision, the records it keeps, and the trace of a real tick."""

from __future__ import annotations

import io
import itertools
import json
import logging
import random
import statistics
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from svc.app import Service
from svc.config import build_config
from svc.tracing import (
    CURRENT_TRACE,
    TickTracer,
    TraceContextFilter,
    ratio_from_environment,
)


def test_unsampled_ticks_create_nothing_and_sampled_ones_get_ids() -> None:
    never = TickTracer(ratio=0.0)
    assert all(never.start(1, 1) is None for _ in range(1000))
    assert never.statistics() == {
        "sampled": 0,
        "forced": 0,
        "dropped": 0,
        "rate_limited": 0,
        "pending": 0,
    }
    always = TickTracer(ratio=1.0)
    traces = [always.start(1_000, 10) for _ in range(100)]
    assert all(t is not None for t in traces)
    assert len({t.trace_id for t in traces if t is not None}) == 100
    assert all(len(t.trace_id_hex) == 32 and len(t.span_id_hex) == 16 for t in traces if t)


def test_each_draw_sets_the_gap_to_the_next_sampled_message() -> None:
    # gap = floor(log(1 - draw) / log(1 - ratio)) + 1: a draw of 0 samples the next message,
    # 1 - 0.99**2.5 skips two messages and samples the third.
    draws = iter([0.0, 1 - 0.99**2.5, 0.0, 0.5])
    tracer = TickTracer(ratio=0.01, rng=lambda: next(draws))
    sampled = [tracer.start(0, 0) is not None for _ in range(5)]
    assert sampled == [True, False, False, True, True]
    assert tracer.countdown == 69  # the fourth draw: log(0.5) / log(0.99) = 68.97


def test_the_countdown_samples_the_ratio_in_distribution() -> None:
    rng = random.Random(20261126)
    tracer = TickTracer(ratio=0.01, rng=rng.random)
    messages = 1_000_000
    positions = [n for n in range(messages) if tracer.start(0, 0) is not None]
    # Binomial(1e6, 0.01): sd 99.5; five of them either side.
    assert abs(len(positions) - 10_000) < 500
    gaps = [b - a for a, b in itertools.pairwise(positions)]
    assert abs(statistics.fmean(gaps) - 100) < 5  # geometric mean 1 / ratio
    assert 0.007 < sum(gap == 1 for gap in gaps) / len(gaps) < 0.013  # P(gap = 1) = ratio


def test_a_ratio_set_later_takes_effect_at_once() -> None:
    tracer = TickTracer(ratio=1.0)
    tracer.ratio = 0.0  # what Telemetry.start_tick_spans does without an exporter
    assert all(tracer.start(0, 0) is None for _ in range(1000))
    tracer.ratio = 1.0
    assert tracer.start(0, 0) is not None


def test_stage_times_are_converted_to_wall_clock_and_the_queue_is_bounded() -> None:
    tracer = TickTracer(ratio=1.0, capacity=2)
    trace = tracer.start(1_700_000_000_000_000_000, 500)
    assert trace is not None
    trace.stage("parse", 500, 1_500)
    assert trace.stages == [("parse", 1_700_000_000_000_000_000, 1_700_000_000_000_001_000)]
    tracer.finish(trace, end_perf=2_500)
    assert trace.end_ns == 1_700_000_000_000_002_000
    for _ in range(3):
        again = tracer.start(0, 0)
        assert again is not None
        tracer.finish(again)
    assert tracer.statistics()["dropped"] == 2
    assert len(tracer.drain()) == 2
    assert tracer.drain() == []


def test_slow_and_failed_ticks_are_recorded_after_the_fact() -> None:
    tracer = TickTracer(ratio=0.0, slow_threshold_ns=1_000)
    tracer.record_slow(
        wall_anchor=10_000,
        perf_anchor=100,
        stages=[("strategy", 150, 250)],
        attributes={"symbol": "BTCUSDT"},
    )
    tracer.record_error(
        wall_anchor=20_000,
        perf_anchor=0,
        stages=[("submit", 0, 50)],
        attributes={},
        error="RateLimited: -1003",
    )
    slow, failed = tracer.drain()
    assert (slow.reason, failed.reason) == ("slow", "error")
    assert slow.stages == [("strategy", 10_050, 10_150)]
    assert failed.error == "RateLimited: -1003"
    assert tracer.statistics()["forced"] == 2


@pytest.mark.parametrize(
    ("environ", "ratio"),
    [
        ({}, 0.01),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, 1.0),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, 0.0),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, 0.25),
        ({"OTEL_TRACES_SAMPLER_ARG": "7"}, 1.0),
        ({"OTEL_TRACES_SAMPLER_ARG": "lots"}, 0.01),
    ],
)
def test_ratio_from_the_standard_variables(environ: dict[str, str], ratio: float) -> None:
    assert ratio_from_environment(environ) == ratio


def test_log_records_carry_the_current_tick() -> None:
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, "hello", None, None)
    trace = TickTracer(ratio=1.0).start(0, 0)
    assert trace is not None
    token = CURRENT_TRACE.set(trace)
    try:
        assert TraceContextFilter().filter(record)
    finally:
        CURRENT_TRACE.reset(token)
    assert record.trace_id == trace.trace_id_hex
    assert record.span_id == trace.span_id_hex


@pytest.mark.integration
async def test_a_sampled_tick_is_traced_through_every_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    exporter = InMemorySpanExporter()
    audit = tmp_path / "audit.jsonl"
    config = build_config(
        environ={},
        overrides={
            "duration": "6",
            "audit": {"path": str(audit)},
            "telemetry": {"health_port": "-1"},
            # an eager trade-flow strategy, so that some sampled tick surely leads to an order
            "strategies": [
                {
                    "kind": "trade_flow",
                    "symbol": "BTCUSDT",
                    "window": 10,
                    "threshold": 0.1,
                    "quantity": 0.001,
                    "cooldown_ns": 500_000_000,
                },
            ],
        },
    )
    service = Service(config, status=io.StringIO(), span_processor=SimpleSpanProcessor(exporter))
    result = await service.run()
    assert result.exit_code == 0
    spans = exporter.get_finished_spans()
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span)
    roots = [s for s in spans if s.name == "tick"]
    assert len(roots) > 100
    assert all(s.parent is None for s in roots)

    def tree(root: ReadableSpan) -> list[str]:
        assert root.context is not None
        children = [s for s in by_trace[root.context.trace_id] if s.parent is not None]
        assert all(
            c.parent is not None and c.parent.span_id == root.context.span_id for c in children
        )
        assert all(
            root.start_time <= c.start_time <= c.end_time <= root.end_time  # type: ignore[operator]
            for c in children
        )
        return [c.name for c in sorted(children, key=lambda c: c.start_time or 0)]

    quiet = next(r for r in roots if (r.attributes or {}).get("outcome") == "no_signal")
    assert tree(quiet) == ["parse", "publish", "queue_wait", "strategy"]
    ordered = [r for r in roots if (r.attributes or {}).get("outcome") == "order"]
    assert ordered, "at least one tick led to an order"
    assert tree(ordered[0]) == [
        "parse",
        "publish",
        "queue_wait",
        "strategy",
        "risk",
        "submit",
        "ack",
    ]
    attributes = ordered[0].attributes or {}
    assert attributes["svc.sampled_because"] == "ratio"
    assert str(attributes["svc.client_order_id"]).startswith("svc")
    assert ordered[0].context is not None
    trace_hex = f"{ordered[0].context.trace_id:032x}"
    intents = [
        json.loads(line)
        for line in audit.read_text().splitlines()
        if json.loads(line)["kind"] == "intent"
    ]
    assert trace_hex in {record["trace_id"] for record in intents}


def test_the_trace_cap_refuses_ticks_beyond_its_rate_and_refills_with_time() -> None:
    now = [0.0]
    tracer = TickTracer(ratio=1.0, max_per_second=5.0, monotonic=lambda: now[0])
    admitted = [tracer.start(0, 0) is not None for _ in range(20)]
    assert admitted.count(True) == 5  # the burst: one second's worth
    assert tracer.rate_limited == 15
    now[0] += 0.4  # two tokens
    admitted = [tracer.start(0, 0) is not None for _ in range(5)]
    assert admitted.count(True) == 2
    assert tracer.statistics()["sampled"] == 7


def test_slow_ticks_share_the_cap_but_error_ticks_never_wait_for_it() -> None:
    now = [0.0]
    tracer = TickTracer(ratio=0.0, max_per_second=1.0, monotonic=lambda: now[0])
    for _ in range(3):
        tracer.record_slow(wall_anchor=0, perf_anchor=0, stages=[], attributes={})
    for _ in range(3):
        tracer.record_error(wall_anchor=0, perf_anchor=0, stages=[], attributes={}, error="x")
    reasons = [trace.reason for trace in tracer.drain()]
    assert reasons == ["slow", "error", "error", "error"]
    assert tracer.rate_limited == 2
