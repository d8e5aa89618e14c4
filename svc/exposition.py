"""The Prometheus text exposition (format 0.0.4) of a ``prometheus_client`` registry.

``TextExposition.render(registry)`` returns exactly the bytes of
``prometheus_client.generate_latest(registry)``; ``tests/test_exposition.py`` compares them.
It exists because a scrape holds the GIL while it formats, and the event loop waits for it:
``generate_latest`` escapes and validates every label name and value of every sample again
on every scrape (about 5 ms for svc's ~600 series on the reference machine), while here each
series' escaped name and labels are rendered once and kept, so a scrape only formats the
values (about half the time; ``bench/README.md`` has the scrape cost).

The cache holds one string per series ever exposed; it is emptied when it passes
``MAX_CACHED_SERIES`` (label values bounded by svc's own cardinality rules keep it far below).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

MAX_CACHED_SERIES = 50_000

# OpenMetrics-only samples: generate_latest moves them into a gauge after their family.
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
# generate_latest's munging of OpenMetrics types into the Prometheus text format.
_TEXT_TYPES = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_ESCAPING = openmetrics.UNDERSCORES
_go_float = cast("Callable[[float], str]", floatToGoString)  # untyped in prometheus_client


def _escape_help(documentation: str) -> str:
    return documentation.replace("\\", r"\\").replace("\n", r"\n")


def _family_header(name: str, documentation: str, kind: str) -> str:
    escaped = openmetrics.escape_metric_name(name, _ESCAPING)
    return f"# HELP {escaped} {documentation}\n# TYPE {escaped} {kind}\n"


class TextExposition:
    """Renders registries like ``generate_latest``, remembering each series' prefix."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    def render(self, registry: Collector) -> bytes:
        output: list[str] = []
        for metric in registry.collect():
            try:
                self._family(metric, output)
            except Exception as exception:  # the same context generate_latest adds
                exception.args = (exception.args or ("",)) + (metric,)
                raise
        if len(self._series) > MAX_CACHED_SERIES:
            self._series.clear()
        return "".join(output).encode("utf-8")

    def _family(self, metric: Metric, output: list[str]) -> None:
        name, kind = metric.name, metric.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name += "_info"
        documentation = _escape_help(metric.documentation)
        output.append(_family_header(name, documentation, _TEXT_TYPES.get(kind, kind)))
        moved: dict[str, list[str]] = {}
        for sample in metric.samples:
            line = self._line(sample)
            for suffix in _OM_SUFFIXES:
                if sample.name == metric.name + suffix:
                    moved.setdefault(suffix, []).append(line)
                    break
            else:
                output.append(line)
        for suffix, lines in sorted(moved.items()):
            output.append(_family_header(metric.name + suffix, documentation, "gauge"))
            output.extend(lines)

    def _line(self, sample: Sample) -> str:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        prefix = self._series.get(key)
        if prefix is None:
            prefix = self._series[key] = _series_prefix(sample.name, key[1])
        value = _go_float(sample.value)
        if sample.timestamp is None:
            return f"{prefix} {value}\n"
        return f"{prefix} {value} {int(float(sample.timestamp) * 1000):d}\n"


def _series_prefix(name: str, labels: Iterable[tuple[str, str]]) -> str:
    """``name{label="value",...}`` escaped as generate_latest escapes them.

    With the UNDERSCORES escaping every name is a legacy one: no quoted ``{"name",...}`` form.
    """
    rendered = ",".join(f'{_label_name(label)}="{_label_value(value)}"' for label, value in labels)
    escaped = openmetrics.escape_metric_name(name, _ESCAPING)
    return f"{escaped}{{{rendered}}}" if rendered else escaped


def _label_name(label: str) -> str:
    return openmetrics.escape_label_name(label, _ESCAPING)


def _label_value(value: str) -> str:
    """Label values may be any UTF-8: only backslash, newline and double quote are escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
