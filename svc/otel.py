"""Telemetry bootstrap: the one module that builds the OpenTelemetry SDK (STYLE.md rule 2).

Everything else in svc instruments against ``opentelemetry.trace`` / ``opentelemetry.metrics``
(the API) and stays a no-op until the composition root calls ``setup_telemetry`` and then
``Telemetry.install_global`` once. Nothing here touches the global providers implicitly, so
tests can build as many ``Telemetry`` objects as they like.

What ``setup_telemetry`` builds:

* **Resource**: ``service.name`` (``svc`` unless ``OTEL_SERVICE_NAME``), ``service.version``,
  ``service.instance.id`` (a uuid4 unless ``OTEL_RESOURCE_ATTRIBUTES`` sets one) and, when the
  variables are present, Kubernetes attributes that a manifest fills from the downward API::

      POD_NAME       -> k8s.pod.name        (fieldRef: metadata.name)
      POD_NAMESPACE  -> k8s.namespace.name  (fieldRef: metadata.namespace)
      NODE_NAME      -> k8s.node.name       (fieldRef: spec.nodeName)

  Precedence, lowest first: svc defaults, Kubernetes variables, ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_SERVICE_NAME``; ``Resource.create`` adds ``telemetry.sdk.*``.
* **Traces**: a ``TracerProvider`` whose sampler follows ``OTEL_TRACES_SAMPLER`` /
  ``OTEL_TRACES_SAMPLER_ARG`` exactly as the SDK reads them, except that svc's default (when
  ``OTEL_TRACES_SAMPLER`` is unset) is ``parentbased_traceidratio`` at 0.01. A
  ``BatchSpanProcessor`` with an OTLP exporter exists only when ``OTEL_EXPORTER_OTLP_ENDPOINT``
  or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; otherwise no span leaves the process.
* **Metrics**: a ``MeterProvider`` with an explicit-bucket view (``LATENCY_BUCKETS_SECONDS``)
  for every histogram whose name ends in ``.duration``, ``.lag``, ``.wait``, ``.pause`` or
  ``.roundtrip``; always a Prometheus reader on a private ``CollectorRegistry`` (served by the
  health server's ``/metrics`` through ``Telemetry.prometheus_text`` or
  ``Telemetry.prometheus_exposition``); and an OTLP periodic reader only when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set
  (interval ``OTEL_METRIC_EXPORT_INTERVAL``, 60000 ms by default).
* **Protocol**: ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL``, else
  ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``grpc``; ``http/protobuf`` selects the HTTP exporters
  (the generic endpoint then gets ``/v1/traces`` / ``/v1/metrics`` appended, a signal-specific
  endpoint is used as is). Anything else is a ``ConfigError`` at start-up.

The variables above are read from ``environ`` (``os.environ`` by default), so a test can pass
a plain dict. Exporter details that svc does not interpret (headers, timeouts, compression,
certificates, ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_TIMEOUT``, temporality preference) are
read by the SDK itself from ``os.environ``.

**The histogram bridge.** The hot path times every stage of every message into
``svc.latency.LatencyHistogram`` (integer ns, far cheaper than the SDK's ``record``). The
Python SDK has no MetricProducer, so both readers are subclassed and their
``_receive_metrics`` appends one ``ScopeMetrics`` (scope ``svc``) holding a cumulative
explicit-bucket ``Histogram`` per bridged metric name, built from ``sources()`` at collection
time: the snapshot is folded onto ``LATENCY_BUCKETS_SECONDS`` (as ns) with
``HistogramSnapshot.rebucket``; ``sum``/``min``/``max`` are converted to seconds. OTLP and
``/metrics`` therefore carry identical buckets and counts for the same snapshot. Sources must
not reset their histograms: the series are cumulative from the bridge's start time, even when
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` asks the SDK's own instruments for delta.

The SDK skips ``_receive_metrics`` when no SDK instrument has data, so the bridge relies on
``svc.telemetry.spans.dropped`` (an observable counter registered here that always reports a
value) to make every collection non-empty.

**Prometheus names** (prometheus_client appends the unit, ``s`` becomes ``seconds``; every
series also carries ``otel_scope_name``, ``otel_scope_version`` and ``otel_scope_schema_url``
labels; resource attributes go to ``target_info``)::

    svc.stage.duration (s)           -> svc_stage_duration_seconds_{bucket,count,sum}{stage=...}
    svc.tick.duration (s)            -> svc_tick_duration_seconds_{bucket,count,sum}{outcome=...}
    svc.telemetry.spans.dropped      -> svc_telemetry_spans_dropped_total
    an SDK counter ``svc.orders``    -> svc_orders_total
    buckets are labelled le="1e-06", "2e-06", ..., "0.001", ..., "10.0", "+Inf"

**Dropped spans.** ``BatchSpanProcessor`` drops a span when its queue is full (the oldest
one is pushed out) or when it has been shut down, and reports each drop through
``ProcessorMetricsT.drop_items`` of its internal ``BatchProcessor``; the SDK only turns that
into a metric when ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`` is set and keeps no readable
counter. ``_CountingBatchSpanProcessor`` wraps that metrics object (``_batch_processor.
_metrics``, private SDK state pinned by a test) to count every drop, whatever the SDK setting.

Export failures never reach the caller: the SDK logs them, and ``force_flush``/``shutdown``
run the SDK calls on a helper thread bounded by their timeout.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias
from urllib.parse import unquote

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from opentelemetry.sdk.metrics import Exemplar, MeterProvider
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import (
    KUBERNETES_NAMESPACE_NAME,
    KUBERNETES_POD_NAME,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

from svc import names
from svc.errors import ConfigError
from svc.exposition import TextExposition
from svc.latency import HistogramSnapshot, StageRecorder
from svc.tracing import TickTrace, TickTracer

__all__ = [
    "ENV_NODE_NAME",
    "ENV_POD_NAME",
    "ENV_POD_NAMESPACE",
    "PROMETHEUS_CONTENT_TYPE",
    "BridgedHistogram",
    "HistogramSources",
    "Telemetry",
    "build_resource",
    "recorder_sources",
    "sampler_from_environ",
    "setup_telemetry",
]

_logger = logging.getLogger(__name__)

ENV_POD_NAME: Final = "POD_NAME"
"""Kubernetes pod name (downward API ``metadata.name``) -> ``k8s.pod.name``."""
ENV_POD_NAMESPACE: Final = "POD_NAMESPACE"
"""Kubernetes namespace (downward API ``metadata.namespace``) -> ``k8s.namespace.name``."""
ENV_NODE_NAME: Final = "NODE_NAME"
"""Kubernetes node (downward API ``spec.nodeName``) -> ``k8s.node.name``."""
_KUBERNETES_NODE_NAME: Final = "k8s.node.name"  # the SDK's resources module has no constant

_KUBERNETES_ENV: Final = (
    (ENV_POD_NAME, KUBERNETES_POD_NAME),
    (ENV_POD_NAMESPACE, KUBERNETES_NAMESPACE_NAME),
    (ENV_NODE_NAME, _KUBERNETES_NODE_NAME),
)

PROMETHEUS_CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The ``Content-Type`` of ``Telemetry.prometheus_text()``.

Not ``prometheus_client.CONTENT_TYPE_LATEST``: since 0.22 that says ``version=1.0.0``, which
prometheus_client itself sends only after Accept negotiation and with an ``escaping=``
parameter; for ``generate_latest``'s default output its own handler sends this 0.0.4 type.
``Telemetry.prometheus_exposition`` negotiates like prometheus_client's handler does."""

PROTOCOL_GRPC: Final = "grpc"
PROTOCOL_HTTP_PROTOBUF: Final = "http/protobuf"
DEFAULT_SAMPLER: Final = "parentbased_traceidratio"
DEFAULT_SAMPLER_RATIO: Final = 0.01
_SPEC_DEFAULT_RATIO: Final = 1.0  # what the SDK uses for an explicit ratio sampler without ARG
DEFAULT_METRIC_EXPORT_INTERVAL_MILLIS: Final = 60_000.0

LATENCY_HISTOGRAM_SUFFIXES: Final = (".duration", ".lag", ".wait", ".pause", ".roundtrip")
"""Histogram instruments with these name endings get ``LATENCY_BUCKETS_SECONDS``."""

_LATENCY_BOUNDS_NS: Final = tuple(round(b * 1e9) for b in names.LATENCY_BUCKETS_SECONDS)
# round, not int: a decimal fraction times 1e9 need not come out as an exact integer, and
# int() would truncate 999.9999... to 999 (the current boundaries happen to be exact).

BridgedHistogram: TypeAlias = tuple[str, str, Mapping[str, str], HistogramSnapshot]
"""``(metric name, unit, attributes, snapshot)``: one data point of a bridged histogram."""
HistogramSources: TypeAlias = Callable[[], Iterable[BridgedHistogram]]
"""Called once per collection (scrape or export interval), on the collecting thread."""


# ------------------------------------------------------------------------------ configuration
def _get(environ: Mapping[str, str], name: str) -> str:
    """The stripped value of ``name``; unset and blank both read as ``""``."""
    return environ.get(name, "").strip()


def _parse_resource_attributes(raw: str) -> dict[str, str]:
    """``key=value,key=value`` with percent-encoded values, as the SDK's OTELResourceDetector."""
    attributes: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            _logger.warning("ignoring malformed %s item %r", OTEL_RESOURCE_ATTRIBUTES, item)
            continue
        attributes[key.strip()] = unquote(value.strip())
    return attributes


def build_resource(*, service_version: str, environ: Mapping[str, str]) -> Resource:
    """The process's resource; see the module docstring for the precedence."""
    attributes: dict[str, str] = {
        SERVICE_NAME: names.SERVICE_NAME,
        SERVICE_VERSION: service_version,
        SERVICE_INSTANCE_ID: str(uuid.uuid4()),
    }
    for variable, key in _KUBERNETES_ENV:
        if value := _get(environ, variable):
            attributes[key] = value
    attributes.update(_parse_resource_attributes(_get(environ, OTEL_RESOURCE_ATTRIBUTES)))
    if service_name := _get(environ, OTEL_SERVICE_NAME):
        attributes[SERVICE_NAME] = service_name
    # Resource.create adds telemetry.sdk.* and its own detectors (reading os.environ) beneath
    # these attributes, which win on every key they share.
    return Resource.create(attributes)


_FIXED_SAMPLERS: Final[Mapping[str, Sampler]] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}
_RATIO_SAMPLERS: Final[Mapping[str, Callable[[float], Sampler]]] = {
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}


def sampler_from_environ(environ: Mapping[str, str]) -> Sampler:
    """``OTEL_TRACES_SAMPLER``/``_ARG`` as the SDK reads them, with svc's default.

    Unset sampler: ``parentbased_traceidratio`` at ``OTEL_TRACES_SAMPLER_ARG`` or 0.01. An
    unknown sampler name logs a warning and falls back to that default. An explicitly named
    ratio sampler without a usable argument uses 1.0, as the SDK and the specification do.
    """
    name = _get(environ, OTEL_TRACES_SAMPLER).lower()
    default_ratio = _SPEC_DEFAULT_RATIO
    if not name or (name not in _FIXED_SAMPLERS and name not in _RATIO_SAMPLERS):
        if name:
            _logger.warning("unknown %s %r; using %s", OTEL_TRACES_SAMPLER, name, DEFAULT_SAMPLER)
        name = DEFAULT_SAMPLER
        default_ratio = DEFAULT_SAMPLER_RATIO
    if name in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    raw = _get(environ, OTEL_TRACES_SAMPLER_ARG)
    if raw:
        try:
            return _RATIO_SAMPLERS[name](float(raw))
        except ValueError:  # not a number, or outside [0, 1]
            _logger.warning("invalid %s %r; using %s", OTEL_TRACES_SAMPLER_ARG, raw, default_ratio)
    return _RATIO_SAMPLERS[name](default_ratio)


def _protocol(environ: Mapping[str, str], signal_variable: str) -> str:
    variable = signal_variable if _get(environ, signal_variable) else OTEL_EXPORTER_OTLP_PROTOCOL
    protocol = _get(environ, variable).lower() or PROTOCOL_GRPC
    if protocol not in (PROTOCOL_GRPC, PROTOCOL_HTTP_PROTOBUF):
        raise ConfigError(
            variable, f"expected {PROTOCOL_GRPC!r} or {PROTOCOL_HTTP_PROTOBUF!r}, got {protocol!r}"
        )
    return protocol


def _endpoint(
    environ: Mapping[str, str], signal_variable: str, http_path: str, protocol: str
) -> str:
    """The exporter endpoint for one signal, ``""`` when none is configured."""
    if specific := _get(environ, signal_variable):
        return specific
    base = _get(environ, OTEL_EXPORTER_OTLP_ENDPOINT)
    if base and protocol == PROTOCOL_HTTP_PROTOBUF:
        return f"{base.removesuffix('/')}/{http_path}"
    return base


def _export_interval_millis(environ: Mapping[str, str]) -> float:
    raw = _get(environ, OTEL_METRIC_EXPORT_INTERVAL)
    if not raw:
        return DEFAULT_METRIC_EXPORT_INTERVAL_MILLIS
    try:
        interval = float(raw)
    except ValueError:
        interval = 0.0
    if interval > 0:
        return interval
    _logger.warning(
        "invalid %s %r; using %s ms",
        OTEL_METRIC_EXPORT_INTERVAL,
        raw,
        DEFAULT_METRIC_EXPORT_INTERVAL_MILLIS,
    )
    return DEFAULT_METRIC_EXPORT_INTERVAL_MILLIS


# The exporters are imported only when an endpoint is configured: grpc is slow to import and
# a process without a collector should not load it at all.
def _span_exporter(protocol: str, endpoint: str) -> SpanExporter:
    if protocol == PROTOCOL_HTTP_PROTOBUF:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as GrpcSpanExporter,
    )

    return GrpcSpanExporter(endpoint=endpoint)


def _metric_exporter(protocol: str, endpoint: str) -> MetricExporter:
    if protocol == PROTOCOL_HTTP_PROTOBUF:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as HttpMetricExporter,
        )

        return HttpMetricExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter as GrpcMetricExporter,
    )

    return GrpcMetricExporter(endpoint=endpoint)


# ------------------------------------------------------------------------------ dropped spans
class _DropCounter:
    """Stands in for the SDK's ``ProcessorMetricsT``: counts drops, then delegates."""

    __slots__ = ("_inner", "_lock", "dropped")

    def __init__(self, inner: Any) -> None:  # Any: ProcessorMetricsT is in a private module
        self._inner = inner
        self._lock = threading.Lock()  # drop_items runs on whichever thread ends the span
        self.dropped = 0

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        self._inner.register_queue_size(get_queue_size)

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        with self._lock:
            self.dropped += count
        self._inner.drop_items(count, error_type)

    def finish_items(self, count: int) -> None:
        self._inner.finish_items(count)


class _CountingBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` that counts the spans it drops (queue full or shut down)."""

    def __init__(self, exporter: SpanExporter, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self._drops: _DropCounter | None = None
        try:
            batch = self._batch_processor
            self._drops = _DropCounter(batch._metrics)
            batch._metrics = self._drops
        except AttributeError:  # the SDK changed its internals; tests pin the current layout
            _logger.warning("cannot count dropped spans with this opentelemetry-sdk version")

    def dropped_spans(self) -> int:
        return 0 if self._drops is None else self._drops.dropped


# --------------------------------------------------------------------------- histogram bridge
class ExemplarReservoir:
    """The latest sampled tick per histogram bucket, as exemplars for the bridged histograms.

    Filled by the tick-span thread (``TickSpanExporter``) from each exported trace: a stage
    span offers its duration to ``svc.stage.duration{stage}`` and the root ``tick`` span to
    ``svc.tick.duration{outcome}``; read by the metric readers at collection time. So a
    latency bucket in Grafana links to a trace that landed in it. Only OTLP carries them
    (the SDK's Prometheus exporter writes no exemplars); the collector's Prometheus exporter
    exposes them with ``enable_open_metrics``. Nothing here runs on the event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, Exemplar]] = {}

    def offer(
        self,
        metric: str,
        attributes: Mapping[str, str],
        duration_ns: int,
        *,
        trace_id: int,
        span_id: int,
        time_ns: int,
    ) -> None:
        bucket = bisect.bisect_left(_LATENCY_BOUNDS_NS, duration_ns)
        exemplar = Exemplar(
            filtered_attributes=None,
            value=duration_ns / 1e9,
            time_unix_nano=time_ns,
            span_id=span_id,
            trace_id=trace_id,
        )
        key = (metric, tuple(sorted(attributes.items())))
        with self._lock:
            self._latest.setdefault(key, {})[bucket] = exemplar

    def exemplars(self, metric: str, attributes: Mapping[str, str]) -> tuple[Exemplar, ...]:
        key = (metric, tuple(sorted(attributes.items())))
        with self._lock:
            latest = self._latest.get(key)
            return tuple(latest[b] for b in sorted(latest)) if latest else ()


def _data_point(
    attributes: Mapping[str, str],
    snapshot: HistogramSnapshot,
    start_ns: int,
    now_ns: int,
    exemplars: Sequence[Exemplar] = (),
) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=dict(attributes),
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        count=snapshot.count,
        sum=snapshot.sum / 1e9,
        bucket_counts=snapshot.rebucket(_LATENCY_BOUNDS_NS),
        explicit_bounds=names.LATENCY_BUCKETS_SECONDS,
        min=snapshot.min / 1e9,
        max=snapshot.max / 1e9,
        exemplars=list(exemplars),
    )


class _HistogramBridge:
    """Turns ``sources()`` into OpenTelemetry histogram metrics at collection time."""

    def __init__(
        self, *, sources: HistogramSources, resource: Resource, scope: InstrumentationScope
    ) -> None:
        self._sources = sources
        self._resource = resource
        self._scope = scope
        self.exemplars = ExemplarReservoir()
        self._start_ns = time.time_ns()
        self._lock = threading.Lock()
        self._failures = 0

    @property
    def failures(self) -> int:
        """Collections where ``sources()`` raised; the SDK's own metrics still went out."""
        return self._failures

    def metrics(self) -> list[Metric]:
        now_ns = time.time_ns()
        points: dict[tuple[str, str], list[HistogramDataPoint]] = {}
        for name, unit, attributes, snapshot in self._sources():
            exemplars = self.exemplars.exemplars(name, attributes)
            point = _data_point(attributes, snapshot, self._start_ns, now_ns, exemplars)
            points.setdefault((name, unit), []).append(point)
        return [
            Metric(
                name=name,
                description="",
                unit=unit,
                data=Histogram(
                    data_points=data_points,
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                ),
            )
            for (name, unit), data_points in points.items()
        ]

    def attach(self, metrics_data: MetricsData) -> MetricsData:
        """``metrics_data`` with the bridged scope appended to its first resource."""
        try:
            bridged = self.metrics()
        except Exception:  # a broken source must not stop the SDK's own export
            with self._lock:
                self._failures += 1
            _logger.exception("histogram bridge: sources() failed; exporting SDK metrics only")
            return metrics_data
        if not bridged:
            return metrics_data
        scope_metrics = ScopeMetrics(scope=self._scope, metrics=bridged, schema_url="")
        resource_metrics = list(metrics_data.resource_metrics)
        if resource_metrics:
            first = resource_metrics[0]
            # The OTLP encoder keys scopes by name and version: a second ScopeMetrics with the
            # SDK meter's scope would replace the SDK's metrics, so merge into it instead.
            merged, scopes = False, []
            for existing in first.scope_metrics:
                if existing.scope == self._scope:
                    scopes.append(
                        ScopeMetrics(
                            scope=existing.scope,
                            metrics=[*existing.metrics, *bridged],
                            schema_url=existing.schema_url,
                        )
                    )
                    merged = True
                else:
                    scopes.append(existing)
            if not merged:
                scopes.append(scope_metrics)
            resource_metrics[0] = ResourceMetrics(
                resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
            )
        else:
            resource_metrics.append(
                ResourceMetrics(
                    resource=self._resource,
                    scope_metrics=[scope_metrics],
                    schema_url=self._resource.schema_url,
                )
            )
        return MetricsData(resource_metrics=resource_metrics)


class _BridgedPeriodicReader(PeriodicExportingMetricReader):
    """OTLP push reader whose every export also carries the bridged histograms."""

    def __init__(
        self, exporter: MetricExporter, *, bridge: _HistogramBridge, export_interval_millis: float
    ) -> None:
        self._bridge = bridge  # before super(): the base class starts the export thread
        super().__init__(exporter, export_interval_millis=export_interval_millis)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        super()._receive_metrics(
            self._bridge.attach(metrics_data), timeout_millis=timeout_millis, **kwargs
        )


class _BridgedPrometheusReader(PrometheusMetricReader):
    """Prometheus pull reader (private registry) whose scrapes include the bridged histograms."""

    def __init__(self, *, bridge: _HistogramBridge, registry: CollectorRegistry) -> None:
        self._bridge = bridge
        super().__init__(registry=registry)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        super()._receive_metrics(
            self._bridge.attach(metrics_data), timeout_millis=timeout_millis, **kwargs
        )

    def force_flush(self, timeout_millis: float = 10_000) -> bool:  # noqa: ARG002 - base signature
        # Pull-based: nothing to flush. The base class would collect into the exporter's
        # queue, and the next scrape would then print every family twice.
        return True


def _latency_views() -> list[View]:
    aggregation = ExplicitBucketHistogramAggregation(boundaries=names.LATENCY_BUCKETS_SECONDS)
    return [
        View(
            instrument_type=HistogramInstrument,
            instrument_name="*" + suffix,
            aggregation=aggregation,
        )
        for suffix in LATENCY_HISTOGRAM_SUFFIXES
    ]


def recorder_sources(recorder: StageRecorder) -> HistogramSources:
    """Bridge a ``StageRecorder``: ``svc.stage.duration{stage}`` and
    ``svc.tick.duration{outcome}``, in seconds."""
    stages = [({names.ATTR_STAGE: stage}, h) for stage, h in recorder.stages.items()]
    ticks = [({names.ATTR_OUTCOME: outcome}, h) for outcome, h in recorder.ticks.items()]

    def sources() -> Iterable[BridgedHistogram]:
        for attributes, histogram in stages:
            yield names.STAGE_DURATION, "s", attributes, histogram.snapshot()
        for attributes, histogram in ticks:
            yield names.TICK_DURATION, "s", attributes, histogram.snapshot()

    return sources


# --------------------------------------------------------------------------------- Telemetry
def _run_bounded(what: str, work: Callable[[], bool], timeout_s: float) -> bool:
    """Run ``work`` on a daemon thread for at most ``timeout_s``; never raises.

    The SDK does not bound every call (``BatchSpanProcessor.force_flush`` ignores its timeout;
    the OTLP exporters retry), so the caller's deadline is enforced here. On timeout the
    thread is left to finish on its own; being a daemon it never holds up interpreter exit.
    """
    outcome: list[bool] = []

    def target() -> None:
        try:
            outcome.append(work())
        except Exception:  # telemetry never raises into the caller (STYLE.md rule 9)
            _logger.exception("telemetry %s failed", what)
            outcome.append(False)

    thread = threading.Thread(target=target, name=f"svc-telemetry-{what}", daemon=True)
    thread.start()
    thread.join(max(timeout_s, 0.0))
    if thread.is_alive():
        _logger.warning("telemetry %s did not finish within %.1f s", what, timeout_s)
        return False
    return outcome[0]


class Telemetry:
    """The SDK objects of one process and the few operations the service needs on them."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        registry: CollectorRegistry,
        span_processor: _CountingBatchSpanProcessor | None,
        metric_readers: Sequence[MetricReader],
        bridge: _HistogramBridge,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._registry = registry
        self._span_processor = span_processor
        self._metric_readers = tuple(metric_readers)
        self._bridge = bridge
        self._scrape_lock = threading.Lock()
        self._exposition = TextExposition()
        self._shutdown_lock = threading.Lock()
        self._shutdown_result: bool | None = None
        self._tick_exporter: TickSpanExporter | None = None

    @property
    def tracer_provider(self) -> TracerProvider:
        return self._tracer_provider

    @property
    def meter_provider(self) -> MeterProvider:
        return self._meter_provider

    @property
    def resource(self) -> Resource:
        return self._tracer_provider.resource

    @property
    def exporting(self) -> bool:
        """Whether anything is sent over the network (an OTLP endpoint is configured)."""
        return self._span_processor is not None or any(
            isinstance(reader, PeriodicExportingMetricReader) for reader in self._metric_readers
        )

    def install_global(self) -> None:
        """Make these providers the API's global ones. Call once, from the composition root."""
        trace_api.set_tracer_provider(self._tracer_provider)
        metrics_api.set_meter_provider(self._meter_provider)

    def prometheus_text(self) -> bytes:
        """The Prometheus text exposition of every metric, bridged ones included.

        Serialised: the exporter's collector queues one batch per collection, and two
        interleaved scrapes would each print the other's batch.
        """
        with self._scrape_lock:
            return self._exposition.render(self._registry)

    def prometheus_exposition(self, accept: str = "") -> tuple[bytes, str]:
        """Body and ``Content-Type`` for an HTTP ``Accept`` header, negotiated as
        prometheus_client's own handler does (text 0.0.4 by default, OpenMetrics on request)."""
        encoder, content_type = choose_encoder(accept)
        with self._scrape_lock:
            if encoder is generate_latest:  # the text format: the same bytes, rendered faster
                return self._exposition.render(self._registry), content_type
            return encoder(self._registry), content_type

    def start_tick_spans(
        self, tracer: TickTracer, *, processor: SpanProcessor | None = None
    ) -> TickSpanExporter | None:
        """Export ``tracer``'s finished ticks as spans, through ``processor`` or the OTLP one.

        Without either, nothing could receive them: the tracer's ratio is set to 0 so that no
        message is sampled at all.
        """
        target = processor or self._span_processor
        if target is None:
            tracer.ratio = 0.0
            tracer.slow_threshold_ns = 0
            return None
        exporter = TickSpanExporter(
            tracer=tracer,
            processor=target,
            resource=self.resource,
            exemplars=self._bridge.exemplars,
        )
        exporter.start()
        self._tick_exporter = exporter
        return exporter

    def dropped_spans(self) -> int:
        """Spans the export queue could not take (0 when no exporter is configured)."""
        return 0 if self._span_processor is None else self._span_processor.dropped_spans()

    def bridge_failures(self) -> int:
        """Collections where the histogram sources raised (they are logged too)."""
        return self._bridge.failures

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export queued spans and push metrics now; ``False`` on failure or timeout."""
        if self._shutdown_result is not None:
            return False
        deadline = time.monotonic() + timeout_s

        def work() -> bool:
            ok = self._tracer_provider.force_flush(_millis_left(deadline))
            for reader in self._metric_readers:
                ok = reader.force_flush(_millis_left(deadline)) and ok
            return ok

        return _run_bounded("flush", work, timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Flush, then shut both providers down within ``timeout_s``; never raises.

        Returns whether everything finished in time without error. Idempotent: later calls
        return the first call's result.
        """
        with self._shutdown_lock:
            if self._shutdown_result is not None:
                return self._shutdown_result
            deadline = time.monotonic() + timeout_s

            def work() -> bool:
                if self._tick_exporter is not None:
                    self._tick_exporter.stop(timeout=min(1.0, timeout_s / 4))
                ok = self._tracer_provider.force_flush(_millis_left(deadline))
                self._tracer_provider.shutdown()
                # The periodic reader makes one last collection and export while shutting down.
                self._meter_provider.shutdown(timeout_millis=_millis_left(deadline))
                return ok

            self._shutdown_result = _run_bounded("shutdown", work, timeout_s)
            return self._shutdown_result


def _millis_left(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


# ---------------------------------------------------------------- tick spans, after the fact


class TickSpanExporter:
    """Turns finished ``TickTrace`` records into OpenTelemetry spans on its own thread.

    The hot path only appends plain records to ``TickTracer.finished``; here each becomes a
    root ``tick`` span and one child span per stage, built as ``ReadableSpan``s with the
    trace and span ids chosen at receive, and handed to the span processor (which batches
    and exports them). Nothing here runs on the event loop.
    """

    def __init__(
        self,
        *,
        tracer: TickTracer,
        processor: SpanProcessor,
        resource: Resource,
        interval: float = 0.2,
        exemplars: ExemplarReservoir | None = None,
    ) -> None:
        self._tracer = tracer
        self._exemplars = exemplars
        self._processor = processor
        self._resource = resource
        self._interval = interval
        self._scope = InstrumentationScope(names.TRACER_NAME)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svc-tick-spans", daemon=True)
        self.emitted = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.export_pending()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.export_pending()

    def export_pending(self) -> int:
        count = 0
        for trace in self._tracer.drain():
            for span in self.spans(trace):
                self._processor.on_end(span)
                count += 1
            if self._exemplars is not None:
                self._offer_exemplars(trace)
        self.emitted += count
        return count

    def _offer_exemplars(self, trace: TickTrace) -> None:
        assert self._exemplars is not None
        offer = self._exemplars.offer
        for index, (stage, start, end) in enumerate(trace.stages):
            offer(
                names.STAGE_DURATION,
                {names.ATTR_STAGE: stage},
                end - start,
                trace_id=trace.trace_id,
                span_id=_child_span_id(trace.span_id, index),
                time_ns=end,
            )
        outcome = trace.attributes.get(names.ATTR_OUTCOME)
        if isinstance(outcome, str) and trace.end_ns > trace.wall_anchor:
            offer(
                names.TICK_DURATION,
                {names.ATTR_OUTCOME: outcome},
                trace.end_ns - trace.wall_anchor,
                trace_id=trace.trace_id,
                span_id=trace.span_id,
                time_ns=trace.end_ns,
            )

    def spans(self, trace: TickTrace) -> list[ReadableSpan]:
        flags = TraceFlags(TraceFlags.SAMPLED)
        root = SpanContext(trace.trace_id, trace.span_id, is_remote=False, trace_flags=flags)
        start = trace.wall_anchor
        end = max(trace.end_ns, start)
        attributes = {k: v for k, v in trace.attributes.items() if v is not None}
        attributes[names.ATTR_SAMPLED_BECAUSE] = trace.reason
        status = Status(StatusCode.ERROR, trace.error) if trace.error else Status(StatusCode.UNSET)
        spans = [
            ReadableSpan(
                names.SPAN_TICK,
                context=root,
                parent=None,
                resource=self._resource,
                attributes=attributes,
                kind=SpanKind.INTERNAL,
                status=status,
                start_time=start,
                end_time=end,
                instrumentation_scope=self._scope,
            )
        ]
        for index, (stage, stage_start, stage_end) in enumerate(trace.stages):
            child = SpanContext(
                trace.trace_id,
                _child_span_id(trace.span_id, index),
                is_remote=False,
                trace_flags=flags,
            )
            spans.append(
                ReadableSpan(
                    stage,
                    context=child,
                    parent=root,
                    resource=self._resource,
                    attributes={names.ATTR_STAGE: stage},
                    kind=SpanKind.INTERNAL,
                    start_time=stage_start,
                    end_time=max(stage_end, stage_start),
                    instrumentation_scope=self._scope,
                )
            )
        return spans


def _child_span_id(root_span_id: int, index: int) -> int:
    return (root_span_id + index + 1) & 0xFFFF_FFFF_FFFF_FFFF or 1


def setup_telemetry(
    *,
    service_version: str,
    sources: HistogramSources,
    environ: Mapping[str, str] | None = None,
) -> Telemetry:
    """Build the providers, readers and exporters from ``environ`` (``os.environ`` by default).

    Does not install them globally (see ``Telemetry.install_global``). Raises ``ConfigError``
    for an unsupported OTLP protocol; every other problem is logged, never raised.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    resource = build_resource(service_version=service_version, environ=env)
    scope = InstrumentationScope(names.METER_NAME, service_version)
    bridge = _HistogramBridge(sources=sources, resource=resource, scope=scope)

    metrics_protocol = _protocol(env, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL)
    metrics_endpoint = _endpoint(
        env, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "v1/metrics", metrics_protocol
    )
    traces_protocol = _protocol(env, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
    traces_endpoint = _endpoint(
        env, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "v1/traces", traces_protocol
    )

    registry = CollectorRegistry(auto_describe=False)
    readers: list[MetricReader] = [_BridgedPrometheusReader(bridge=bridge, registry=registry)]
    if metrics_endpoint:
        readers.append(
            _BridgedPeriodicReader(
                _metric_exporter(metrics_protocol, metrics_endpoint),
                bridge=bridge,
                export_interval_millis=_export_interval_millis(env),
            )
        )
    # shutdown_on_exit=False: an atexit flush has no deadline and could outlive the pod's
    # grace period; the composition root calls Telemetry.shutdown(timeout_s) instead.
    meter_provider = MeterProvider(
        metric_readers=readers, resource=resource, views=_latency_views(), shutdown_on_exit=False
    )

    tracer_provider = TracerProvider(
        sampler=sampler_from_environ(env),
        resource=resource,
        shutdown_on_exit=False,
        meter_provider=meter_provider,
    )
    span_processor: _CountingBatchSpanProcessor | None = None
    if traces_endpoint:
        exporter = _span_exporter(traces_protocol, traces_endpoint)
        try:
            span_processor = _CountingBatchSpanProcessor(exporter, meter_provider=meter_provider)
        except ValueError as error:  # OTEL_BSP_* values the SDK refuses (batch > queue, ...)
            raise ConfigError("OTEL_BSP_*", str(error)) from None
        tracer_provider.add_span_processor(span_processor)

    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        registry=registry,
        span_processor=span_processor,
        metric_readers=readers,
        bridge=bridge,
    )

    def observe_dropped_spans(_options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(telemetry.dropped_spans()),)

    meter_provider.get_meter(names.METER_NAME, service_version).create_observable_counter(
        names.SPANS_DROPPED,
        callbacks=[observe_dropped_spans],
        unit="{span}",
        description="Spans the export queue could not take.",
    )
    return telemetry
