"""`svc run` exporting to a real OpenTelemetry collector, and scraped at /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.collector import collector, free_port, wait_for_output

pytestmark = pytest.mark.integration

SVC = [sys.executable, "-m", "svc.cli"]
STAGE_SPANS = [
    "Name           : tick",
    "Name           : parse",
    "Name           : publish",
    "Name           : queue_wait",
    "Name           : strategy",
]


async def run_svc(args: list[str], environ: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *SVC,
        "run",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **environ},
    )


def _parsed(text: str) -> float:
    """The ``parse`` stage count in a ``/metrics`` text (0 before the first message)."""
    for family in text_string_to_metric_families(text):
        if family.name == "svc_stage_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count") and sample.labels.get("stage") == "parse":
                    return sample.value
    return 0.0


async def scrape(port: int) -> str:
    """``/metrics`` once orders exist and more than 100 messages were parsed."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                    if "svc_orders_total" in text and _parsed(text) > 100:
                        return text
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("/metrics never showed the stage histograms and orders")
            await asyncio.sleep(0.5)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_spans_and_metrics_reach_the_collector_and_metrics_endpoint(
    tmp_path: Path, protocol: str
) -> None:
    health = free_port()
    with collector(tmp_path) as running:
        process = await run_svc(
            [
                "--duration",
                "10",
                "--audit-path",
                str(tmp_path / "audit.jsonl"),
                "--summary-json",
                str(tmp_path / "summary.json"),
            ],
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": running.endpoint(protocol),
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.2",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "SVC_TELEMETRY_HEALTH_PORT": str(health),
            },
        )
        text = await scrape(health)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()[-2000:]
        output = wait_for_output(
            running.output,
            [
                *STAGE_SPANS,
                "svc.stage.duration",
                "svc.tick.duration",
                "svc.feed.messages",
                "svc.queue.depth",
                "svc.gc.pause",
                "svc.loop.lag",
                "svc.orders",
            ],
            time.monotonic() + 20,
        )
    assert "service.name: Str(svc)" in output
    families = {family.name: family for family in text_string_to_metric_families(text)}
    stage = families["svc_stage_duration_seconds"]
    assert stage.type == "histogram"
    parse_count = next(
        s.value
        for s in stage.samples
        if s.name.endswith("_count") and s.labels.get("stage") == "parse"
    )
    assert parse_count > 100
    buckets = [
        s for s in stage.samples if s.name.endswith("_bucket") and s.labels.get("stage") == "parse"
    ]
    assert buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == parse_count
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tracing"]["sampled"] > 0


async def test_trading_goes_on_when_the_collector_stops(tmp_path: Path) -> None:
    with collector(tmp_path) as running:
        process = await run_svc(
            [
                "--duration",
                "14",
                "--audit-path",
                str(tmp_path / "audit.jsonl"),
                "--summary-json",
                str(tmp_path / "summary.json"),
            ],
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": running.endpoint("grpc"),
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_BSP_MAX_QUEUE_SIZE": "64",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "32",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "SVC_TELEMETRY_HEALTH_PORT": "0",
            },
        )
        await asyncio.sleep(5)
        wait_for_output(running.output, ["Name           : tick"], time.monotonic() + 10)
        running.stop()  # the collector goes away mid-run
        _, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_reason"] == "duration"
    assert summary["telemetry"]["dropped_spans"] > 0
    assert summary["feed"]["malformed"] == {}
    assert sum(sum(s.values()) for s in summary["feed"]["messages"].values()) > 1000
    # the loop kept running: its lag stayed far below a second (a sanity bound, not a target)
    assert summary["runtime"]["loop_lag_p99_us"] < 1_000_000
