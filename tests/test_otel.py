"""svc.otel: the SDK bootstrap, the histogram bridge, and an end-to-end run through a real
OpenTelemetry collector (rotel) on loopback.

Every test passes ``environ`` explicitly, so the runner's own OTEL_* variables never leak in,
and none installs the global providers (one test does, in a subprocess).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.parser import text_string_to_metric_families

from svc import names, otel
from svc.errors import ConfigError
from svc.latency import LatencyHistogram, StageRecorder
from svc.otel import BridgedHistogram, Telemetry, setup_telemetry
from tests.collector import LOOPBACK, free_port, rotel_agent, wait_for_output, wait_listening

BOUNDS_NS = tuple(round(b * 1e9) for b in names.LATENCY_BUCKETS_SECONDS)
LE_LABELS = (*(str(b) for b in names.LATENCY_BUCKETS_SECONDS), "+Inf")


# ------------------------------------------------------------------------------------ helpers
def filled_histogram(n: int = 1000) -> LatencyHistogram:
    """``n`` durations from 300 ns to ~7 ms, spread over most published buckets."""
    histogram = LatencyHistogram()
    for i in range(n):
        histogram.record(300 + 7 * i * i)
    return histogram


def sources_of(*entries: tuple[str, dict[str, str], LatencyHistogram]) -> otel.HistogramSources:
    """Sources that snapshot the given histograms at collection time, like the app does."""

    def sources() -> Iterable[BridgedHistogram]:
        for name, attributes, histogram in entries:
            yield name, "s", attributes, histogram.snapshot()

    return sources


@pytest.fixture
def telemetry_factory() -> Iterator[list[Telemetry]]:
    """Shuts down every Telemetry a test built, so no reader thread outlives the test."""
    built: list[Telemetry] = []
    yield built
    for telemetry in built:
        telemetry.shutdown(timeout_s=5.0)


def setup(built: list[Telemetry], *, sources: otel.HistogramSources, **env: str) -> Telemetry:
    telemetry = setup_telemetry(service_version="1.2.3", sources=sources, environ=env)
    built.append(telemetry)
    return telemetry


def no_sources() -> Iterable[BridgedHistogram]:
    return ()


def samples(text: bytes, sample_name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``sample_name``, keyed by its sorted labels minus otel_scope_*."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == sample_name:
                labels = tuple(
                    sorted((k, v) for k, v in sample.labels.items() if not k.startswith("otel_"))
                )
                assert labels not in found, f"duplicate sample {sample_name}{labels}"
                found[labels] = sample.value
    return found


def cumulative(counts: Sequence[int]) -> list[int]:
    total, result = 0, []
    for count in counts:
        total += count
        result.append(total)
    return result


def bucket_values(text: bytes, name: str, **labels: str) -> dict[str, float]:
    """``le`` -> cumulative count of histogram ``name`` for the series with ``labels``."""
    result: dict[str, float] = {}
    for key, value in samples(text, name + "_bucket").items():
        as_dict = dict(key)
        le = as_dict.pop("le")
        if as_dict == labels:
            result[le] = value
    return result


# ------------------------------------------------------------------------- no endpoint, /metrics
def test_no_endpoint_means_no_exporter_and_nothing_sent(
    telemetry_factory: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(protocol: str, endpoint: str) -> object:
        raise AssertionError(f"exporter built for {protocol} {endpoint}")

    monkeypatch.setattr(otel, "_span_exporter", forbidden)
    monkeypatch.setattr(otel, "_metric_exporter", forbidden)
    # The process environment is not consulted when ``environ`` is given.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")

    telemetry = setup(telemetry_factory, sources=no_sources)

    assert not telemetry.exporting
    processors = telemetry.tracer_provider._active_span_processor._span_processors
    assert processors == ()
    readers = telemetry.meter_provider._metric_readers
    assert [type(r).__name__ for r in readers] == ["_BridgedPrometheusReader"]
    with telemetry.tracer_provider.get_tracer("svc").start_as_current_span("tick"):
        pass
    assert telemetry.force_flush(timeout_s=2.0)
    assert telemetry.dropped_spans() == 0


def test_prometheus_text_carries_bridged_histogram_and_sdk_instruments(
    telemetry_factory: list[Telemetry],
) -> None:
    parse = filled_histogram(1000)
    telemetry = setup(
        telemetry_factory, sources=sources_of((names.STAGE_DURATION, {"stage": "parse"}, parse))
    )
    snapshot = parse.snapshot()
    assert snapshot.count == 1000

    # No SDK instrument of the caller's yet: the bridge must still show up.
    text = telemetry.prometheus_text()
    assert b'svc_stage_duration_seconds_bucket{le="1e-05"' in text
    expected = cumulative(snapshot.rebucket(BOUNDS_NS))
    got = bucket_values(text, "svc_stage_duration_seconds", stage="parse")
    assert got == dict(zip(LE_LABELS, map(float, expected), strict=True))
    assert got["+Inf"] == 1000
    assert 0 < got["0.0001"] < got["0.001"] < 1000  # the data spans several buckets
    count = samples(text, "svc_stage_duration_seconds_count")
    total = samples(text, "svc_stage_duration_seconds_sum")
    assert count == {(("stage", "parse"),): 1000.0}
    assert total[(("stage", "parse"),)] == pytest.approx(snapshot.sum / 1e9, rel=1e-12)

    # An SDK instrument shares the same exposition.
    meter = telemetry.meter_provider.get_meter(names.METER_NAME)
    meter.create_counter(names.ORDERS).add(3, {"status": "filled"})
    meter.create_histogram(names.LOOP_LAG, unit="s").record(0.000_3)
    more = [2_500_000] * 10
    for ns in more:
        parse.record(ns)
    # A push-style flush must not queue a batch that the next scrape prints twice.
    telemetry.meter_provider.force_flush()

    text = telemetry.prometheus_text()
    assert samples(text, "svc_orders_total") == {(("status", "filled"),): 3.0}
    assert bucket_values(text, "svc_loop_lag_seconds")["0.0005"] == 1.0  # the latency view
    assert bucket_values(text, "svc_loop_lag_seconds")["0.0002"] == 0.0
    assert samples(text, "svc_telemetry_spans_dropped_total") == {(): 0.0}
    # Cumulative, read at collection time.
    got = bucket_values(text, "svc_stage_duration_seconds", stage="parse")
    assert got["+Inf"] == 1010
    assert got == dict(
        zip(LE_LABELS, map(float, cumulative(parse.snapshot().rebucket(BOUNDS_NS))), strict=True)
    )
    assert text.count(b"# TYPE svc_stage_duration_seconds histogram") == 1
    assert otel.PROMETHEUS_CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_prometheus_exposition_negotiates_openmetrics(telemetry_factory: list[Telemetry]) -> None:
    parse = filled_histogram(10)
    telemetry = setup(
        telemetry_factory, sources=sources_of((names.STAGE_DURATION, {"stage": "parse"}, parse))
    )
    body, content_type = telemetry.prometheus_exposition("")
    assert content_type == otel.PROMETHEUS_CONTENT_TYPE
    assert b"svc_stage_duration_seconds_count" in body
    body, content_type = telemetry.prometheus_exposition("application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'svc_stage_duration_seconds_bucket{le="+Inf"' in body


def test_bridge_buckets_match_recorded_values(telemetry_factory: list[Telemetry]) -> None:
    """Independent of ``rebucket``: values well inside published buckets land in them."""
    histogram = LatencyHistogram()
    for ns in (1_500, 150_000, 3_000_000):  # 1.5 us, 150 us, 3 ms
        histogram.record(ns)
    telemetry = setup(
        telemetry_factory, sources=sources_of((names.FEED_LAG, {"stream": "kline"}, histogram))
    )
    got = bucket_values(telemetry.prometheus_text(), "svc_feed_lag_seconds", stream="kline")
    assert got["1e-06"] == 0
    assert got["2e-06"] == 1
    assert got["0.0001"] == 1
    assert got["0.0002"] == 2
    assert got["0.002"] == 2
    assert got["0.005"] == 3
    assert got["+Inf"] == 3


def histogram_points(metric: Metric, key: str) -> dict[str, HistogramDataPoint]:
    assert isinstance(metric.data, Histogram)
    assert metric.data.aggregation_temporality == AggregationTemporality.CUMULATIVE
    points: dict[str, HistogramDataPoint] = {}
    for point in metric.data.data_points:
        assert point.attributes is not None
        points[str(point.attributes[key])] = point
    return points


def test_bridge_data_points() -> None:
    """The OTLP-side view: one cumulative Histogram per name, one point per attribute set."""
    recorder = StageRecorder()
    recorder.parse.record(4_000)
    recorder.tick_order.record(9_000_000)
    bridge = otel._HistogramBridge(
        sources=otel.recorder_sources(recorder),
        resource=otel.build_resource(service_version="1", environ={}),
        scope=InstrumentationScope("svc", "1"),
    )
    metrics = {metric.name: metric for metric in bridge.metrics()}
    assert set(metrics) == {names.STAGE_DURATION, names.TICK_DURATION}
    assert metrics[names.STAGE_DURATION].unit == "s"
    points = histogram_points(metrics[names.STAGE_DURATION], names.ATTR_STAGE)
    assert list(points) == list(recorder.stages)
    parse = points["parse"]
    assert (parse.count, parse.sum, parse.min, parse.max) == (1, 4e-6, 4e-6, 4e-6)
    assert tuple(parse.explicit_bounds) == names.LATENCY_BUCKETS_SECONDS
    assert len(parse.bucket_counts) == len(names.LATENCY_BUCKETS_SECONDS) + 1
    assert parse.bucket_counts[2] == 1  # (2 us, 5 us]
    assert parse.start_time_unix_nano <= parse.time_unix_nano
    assert points["receive"].count == 0
    ticks = histogram_points(metrics[names.TICK_DURATION], names.ATTR_OUTCOME)
    assert list(ticks) == list(recorder.ticks)
    assert ticks["order"].max == pytest.approx(0.009)


def test_exported_ticks_leave_exemplars_on_the_bucket_they_landed_in() -> None:
    """A traced tick's stage and tick durations become exemplars carrying its trace id."""
    from svc.tracing import TickTracer  # noqa: PLC0415

    recorder = StageRecorder()
    recorder.parse.record(4_000)
    recorder.tick_order.record(9_000_000)
    bridge = otel._HistogramBridge(
        sources=otel.recorder_sources(recorder),
        resource=otel.build_resource(service_version="1", environ={}),
        scope=InstrumentationScope("svc", "1"),
    )
    tracer = TickTracer(ratio=1.0)
    trace = tracer.start(1_000_000_000, 0)
    assert trace is not None
    trace.stage("parse", 0, 4_000)
    trace.attributes[names.ATTR_OUTCOME] = "order"
    tracer.finish(trace, end_perf=9_000_000)
    spans: list[ReadableSpan] = []

    class Collect:
        def on_end(self, span: ReadableSpan) -> None:
            spans.append(span)

    exporter = otel.TickSpanExporter(
        tracer=tracer,
        processor=Collect(),  # type: ignore[arg-type]
        resource=otel.build_resource(service_version="1", environ={}),
        exemplars=bridge.exemplars,
    )
    assert exporter.export_pending() == 2
    metrics = {metric.name: metric for metric in bridge.metrics()}
    parse = histogram_points(metrics[names.STAGE_DURATION], names.ATTR_STAGE)["parse"]
    (exemplar,) = parse.exemplars
    assert exemplar.trace_id == trace.trace_id
    assert exemplar.span_id == spans[1].context.span_id  # the parse span, not the root
    assert exemplar.value == pytest.approx(4e-6)
    assert (
        histogram_points(metrics[names.STAGE_DURATION], names.ATTR_STAGE)["strategy"].exemplars
        == []
    )
    order = histogram_points(metrics[names.TICK_DURATION], names.ATTR_OUTCOME)["order"]
    assert [e.span_id for e in order.exemplars] == [trace.span_id]
    assert order.exemplars[0].value == pytest.approx(0.009)


def test_bucket_boundaries_convert_exactly_to_ns() -> None:
    assert BOUNDS_NS[:4] == (1_000, 2_000, 5_000, 10_000)
    assert BOUNDS_NS[-1] == 10_000_000_000
    assert otel._LATENCY_BOUNDS_NS == BOUNDS_NS


def test_failing_source_is_counted_and_sdk_metrics_still_exported(
    telemetry_factory: list[Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Iterable[BridgedHistogram]:
        raise RuntimeError("source exploded")

    telemetry = setup(telemetry_factory, sources=broken)
    with caplog.at_level(logging.ERROR, logger="svc.otel"):
        text = telemetry.prometheus_text()
    assert samples(text, "svc_telemetry_spans_dropped_total") == {(): 0.0}
    assert b"svc_stage_duration" not in text
    assert telemetry.bridge_failures() == 1
    assert "source exploded" in caplog.text


# ------------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize(
    ("env", "description"),
    [
        ({}, "ParentBased{root:TraceIdRatioBased{0.01},"),
        ({"OTEL_TRACES_SAMPLER_ARG": "0.25"}, "ParentBased{root:TraceIdRatioBased{0.25},"),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, "AlwaysOnSampler"),
        ({"OTEL_TRACES_SAMPLER": "ALWAYS_OFF"}, "AlwaysOffSampler"),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, "ParentBased{root:AlwaysOnSampler,"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
            "TraceIdRatioBased{0.5}",
        ),
        # An explicit ratio sampler without an argument gets the specification's 1.0.
        ({"OTEL_TRACES_SAMPLER": "traceidratio"}, "TraceIdRatioBased{1.0}"),
        ({"OTEL_TRACES_SAMPLER_ARG": "lots"}, "ParentBased{root:TraceIdRatioBased{0.01},"),
        ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "ParentBased{root:TraceIdRatioBased{0.01},"),
        ({"OTEL_TRACES_SAMPLER": "nonsense"}, "ParentBased{root:TraceIdRatioBased{0.01},"),
    ],
)
def test_sampler_from_environment(
    telemetry_factory: list[Telemetry], env: dict[str, str], description: str
) -> None:
    telemetry = setup(telemetry_factory, sources=no_sources, **env)
    assert telemetry.tracer_provider.sampler.get_description().startswith(description)


def test_default_environ_is_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-from-os")
    telemetry = setup_telemetry(service_version="1", sources=no_sources)
    try:
        assert telemetry.tracer_provider.sampler.get_description() == "AlwaysOnSampler"
        assert telemetry.resource.attributes["service.name"] == "svc-from-os"
    finally:
        assert telemetry.shutdown(timeout_s=5.0)


# ------------------------------------------------------------------------------------ resource
def test_resource_defaults(telemetry_factory: list[Telemetry]) -> None:
    first = setup(telemetry_factory, sources=no_sources).resource.attributes
    second = setup(telemetry_factory, sources=no_sources).resource.attributes
    assert first["service.name"] == "svc"
    assert first["service.version"] == "1.2.3"
    uuid.UUID(str(first["service.instance.id"]))
    assert first["service.instance.id"] != second["service.instance.id"]
    assert first["telemetry.sdk.name"] == "opentelemetry"
    assert "k8s.pod.name" not in first


def test_resource_from_environment(telemetry_factory: list[Telemetry]) -> None:
    telemetry = setup(
        telemetry_factory,
        sources=no_sources,
        OTEL_SERVICE_NAME="svc-shard-1",
        OTEL_RESOURCE_ATTRIBUTES=(
            "deployment.environment=test, service.instance.id=svc%200,"
            "k8s.node.name=override,malformed"
        ),
        POD_NAME="svc-0",
        POD_NAMESPACE="trading",
        NODE_NAME="node-a",
    )
    attributes = telemetry.resource.attributes
    assert attributes["service.name"] == "svc-shard-1"
    assert attributes["service.version"] == "1.2.3"
    assert attributes["deployment.environment"] == "test"
    assert attributes["service.instance.id"] == "svc 0"
    assert attributes["k8s.pod.name"] == "svc-0"
    assert attributes["k8s.namespace.name"] == "trading"
    assert attributes["k8s.node.name"] == "override"  # OTEL_RESOURCE_ATTRIBUTES wins
    assert "malformed" not in attributes
    text = telemetry.prometheus_text()
    assert b'k8s_pod_name="svc-0"' in text  # target_info carries the resource


def test_unsupported_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        setup_telemetry(
            service_version="1",
            sources=no_sources,
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
            },
        )


# ------------------------------------------------------------------------------- dropped spans
class BlockingExporter(SpanExporter):
    """Holds the first export until released, so the processor's queue can fill up."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10.0)
        self.exported.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_dropped_spans_are_counted() -> None:
    exporter = BlockingExporter()
    processor = otel._CountingBatchSpanProcessor(
        exporter, max_queue_size=4, max_export_batch_size=4, schedule_delay_millis=60_000
    )
    provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    try:
        for _ in range(4):  # the fourth wakes the worker, which takes all four and blocks
            tracer.start_span("x").end()
        assert exporter.entered.wait(5.0)
        for _ in range(4 + 3):  # four fill the queue again, three more push spans out
            tracer.start_span("x").end()
        assert processor.dropped_spans() == 3
    finally:
        exporter.release.set()
        provider.shutdown()
    assert len(exporter.exported) == 8
    tracer.start_span("after shutdown").end()
    assert processor.dropped_spans() == 4


# ------------------------------------------------------------------------------------ shutdown
def test_shutdown_is_bounded_and_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listener that never answers: the HTTP exporter's request hangs until its own timeout.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")  # read by the SDK from os.environ
    silent = socket.socket()
    silent.bind((LOOPBACK, 0))
    silent.listen()
    port = silent.getsockname()[1]
    try:
        telemetry = setup_telemetry(
            service_version="1",
            sources=no_sources,
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_TRACES_SAMPLER": "always_on",
            },
        )
        assert telemetry.exporting
        with telemetry.tracer_provider.get_tracer("svc").start_as_current_span("tick"):
            pass
        started = time.monotonic()
        assert telemetry.shutdown(timeout_s=0.5) is False
        assert time.monotonic() - started < 1.5
        assert telemetry.shutdown(timeout_s=0.5) is False  # the first result, at once
        assert telemetry.force_flush(timeout_s=0.5) is False
    finally:
        silent.close()  # resets the hung request, so the helper thread ends promptly


def test_install_global_sets_the_api_providers() -> None:
    code = (
        "from opentelemetry import metrics, trace\n"
        "from svc.otel import setup_telemetry\n"
        "t = setup_telemetry(service_version='1', sources=lambda: (), environ={})\n"
        "t.install_global()\n"
        "assert trace.get_tracer_provider() is t.tracer_provider\n"
        "assert metrics.get_meter_provider() is t.meter_provider\n"
        "assert t.shutdown(5.0)\n"
    )
    result = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and a literal
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr


# -------------------------------------------------------------------- end to end with rotel
def parse_point_count(text: str) -> int:
    """The ``Count:`` of the last exported ``stage=parse`` data point in rotel's debug log."""
    block = text.rsplit("-> stage: Str(parse)", 1)[1]
    line = next(line for line in block.splitlines() if line.startswith("Count:"))
    return int(line.removeprefix("Count:"))


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_end_to_end_through_a_collector(tmp_path: Path, protocol: str) -> None:
    agent = rotel_agent()
    grpc_port, http_port = free_port(), free_port()
    log = tmp_path / "rotel.out"
    # fmt: off
    command = [
        str(agent), "start",
        "--otlp-grpc-endpoint", f"{LOOPBACK}:{grpc_port}",
        "--otlp-http-endpoint", f"{LOOPBACK}:{http_port}",
        "--exporter", "blackhole",
        "--debug-log", "traces", "--debug-log", "metrics",
        "--debug-log-verbosity", "detailed",
        "--log-format", "json",
        "--pid-file", str(tmp_path / "rotel.pid"),
        "--log-file", str(tmp_path / "rotel.log"),
    ]
    # fmt: on
    port = grpc_port if protocol == "grpc" else http_port
    parse = filled_histogram(1000)
    telemetry: Telemetry | None = None
    with log.open("wb") as output:
        collector = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603 - fixed argv
    try:
        deadline = time.monotonic() + 15.0
        wait_listening(port, deadline)
        telemetry = setup_telemetry(
            service_version="1.2.3",
            sources=sources_of((names.STAGE_DURATION, {"stage": "parse"}, parse)),
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                "OTEL_TRACES_SAMPLER": "always_on",
            },
        )
        tracer = telemetry.tracer_provider.get_tracer(names.TRACER_NAME)
        with tracer.start_as_current_span(names.SPAN_TICK) as span:
            span.set_attribute(names.ATTR_SYMBOL, "BTCUSDT")
        assert telemetry.force_flush(timeout_s=10.0)
        text = wait_for_output(
            log,
            [
                f"Name           : {names.SPAN_TICK}",
                "-> symbol: Str(BTCUSDT)",
                f"-> Name: {names.STAGE_DURATION}",
                "-> stage: Str(parse)",
            ],
            deadline,
        )
        assert "-> service.name: Str(svc)" in text
        assert parse_point_count(text) == 1000
        assert telemetry.dropped_spans() == 0
    finally:
        if telemetry is not None:
            assert telemetry.shutdown(timeout_s=5.0)
        collector.terminate()
        try:
            collector.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.wait()
