"""``svc.exposition.TextExposition`` renders exactly what ``generate_latest`` renders."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeHistogramMetricFamily, StateSetMetricFamily
from prometheus_client.registry import Collector

from svc import exposition
from svc.exposition import TextExposition

AWKWARD = ["plain", 'quote"d', "back\\slash", "new\nline", "ünïcode ✓", ""]


class _OpenMetricsOnly(Collector):
    """Families whose types the text format munges (gaugehistogram, stateset)."""

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeHistogramMetricFamily(
            "queue_seconds", "Help with a \\ and a\nnewline.", labels=["tier"]
        )
        family.add_metric(["data"], [("0.1", 3.0), ("+Inf", 5.0)], gsum_value=1.5)
        yield family
        states = StateSetMetricFamily("feature", "A state set.", labels=["name"])
        states.add_metric(["x"], {"on": True, "off": False})
        yield states


def _registry(label_value: str, value: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("orders", "Orders sent.", ["status"], registry=registry).labels(label_value).inc(3)
    Gauge("depth", "Queue depth.", ["tier"], registry=registry).labels(label_value).set(value)
    histogram = Histogram(
        "stage_seconds", "Stage time.", ["stage"], buckets=(1e-6, 1e-3, 1.0), registry=registry
    )
    histogram.labels(label_value).observe(2e-4)
    histogram.labels("other").observe(5.0)
    Summary("audit_seconds", "Audit writes.", registry=registry).observe(0.01)
    Info("build", "Build information.", registry=registry).info({"version": label_value})
    Gauge("unlabelled", "No labels at all.", registry=registry).set(value)
    registry.register(_OpenMetricsOnly())
    return registry


@pytest.mark.parametrize("label_value", AWKWARD)
def test_the_same_bytes_as_generate_latest(label_value: str) -> None:
    registry = _registry(label_value, 1.25)
    rendered = TextExposition().render(registry)
    assert rendered == generate_latest(registry)
    assert b"# TYPE queue_seconds histogram" in rendered  # munged, not lost


@settings(max_examples=60, deadline=None)
@given(
    label_value=st.text(max_size=12),
    value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**18), 10**18),
)
def test_any_label_value_and_number_render_identically(label_value: str, value: float) -> None:
    registry = _registry(label_value, float(value))
    assert TextExposition().render(registry) == generate_latest(registry)


def test_values_change_between_renders_while_the_series_prefix_is_reused() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("depth", "Queue depth.", ["tier"], registry=registry)
    text = TextExposition()
    for value in (1.0, 2.5, math.inf, -0.0):
        gauge.labels("data").set(value)
        assert text.render(registry) == generate_latest(registry)


def test_the_series_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exposition, "MAX_CACHED_SERIES", 10)
    registry = CollectorRegistry()
    gauge = Gauge("depth", "Queue depth.", ["tier"], registry=registry)
    text = TextExposition()
    for index in range(25):
        gauge.labels(f"tier-{index}").set(index)
        assert text.render(registry) == generate_latest(registry)
        assert len(text._series) <= 10 + 1  # cleared after the render that passed the bound
