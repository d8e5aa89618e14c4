"""The service in-process against the embedded simulator: faults injected mid-run."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from svc.app import Service
from svc.config import build_config
from tests.simclient import RecordingService

pytestmark = pytest.mark.integration


async def test_disconnects_mid_run_lose_no_closed_kline(tmp_path: Path) -> None:
    config = build_config(
        environ={},
        overrides={
            "symbols": "BTCUSDT",
            "intervals": "1m",
            "duration": "14",
            "audit": {"path": str(tmp_path / "audit.jsonl")},
            "telemetry": {"health_port": "0"},
            "feed": {"warmup_klines": "5", "backoff_initial": "0.05", "backoff_max": "0.2"},
        },
    )
    service = RecordingService(config, status=io.StringIO())

    async def inject_faults() -> None:
        while service.feed is None:  # noqa: ASYNC110  (the feed is built inside run())
            await asyncio.sleep(0.05)
        await service.feed.warmed_up.wait()
        assert service.sim is not None
        await asyncio.sleep(2)
        service.sim.set_faults(disconnect_every=1.5)
        await asyncio.sleep(6)
        service.sim.set_faults(disconnect_every=0)

    faults = asyncio.create_task(inject_faults())
    result = await service.run()
    await faults
    assert result.exit_code == 0
    feed = result.summary["feed"]
    assert sum(feed["reconnects"].values()) >= 2
    seen = service.closed[("BTCUSDT", "1m")]
    assert seen == sorted(set(seen)), "closed klines arrive once each, in order"
    produced = [t * 1_000_000 for t in service.sim_closed_klines]
    window = [t for t in produced if seen[0] <= t <= seen[-1]]
    assert window, "the simulator closed klines during the run"
    missing = sorted(set(window) - set(seen))
    assert missing == [], (feed, result.summary["queues"], [t - seen[0] for t in missing])
    assert feed["kline_gaps"] >= 1
    assert feed["klines_backfilled"] >= 1


async def test_a_tenfold_burst_does_not_overflow_python_binance(tmp_path: Path) -> None:
    # The default market is 20 ticks/s; 200 ticks/s over 8 streams is ~1,600 frames/s.
    config = build_config(
        environ={},
        overrides={
            "duration": "5",
            "sim": {"rate": "200"},
            "audit": {"path": str(tmp_path / "audit.jsonl")},
            "telemetry": {"health_port": "0"},
        },
    )
    result = await Service(config, status=io.StringIO()).run()
    assert result.exit_code == 0
    feed = result.summary["feed"]
    frames = sum(sum(by_stream.values()) for by_stream in feed["messages"].values())
    assert frames > 3_000
    assert feed["reconnects"].get("queue_overflow", 0) == 0
    assert feed["malformed"] == {}
    assert result.summary["queues"]["order"]["dropped"] == 0


async def test_every_stage_of_every_message_is_counted(tmp_path: Path) -> None:
    config = build_config(
        environ={},
        overrides={
            "duration": "4",
            "audit": {"path": str(tmp_path / "audit.jsonl")},
            "telemetry": {"health_port": "-1"},
        },
    )
    service = Service(config, status=io.StringIO())
    result = await service.run()
    assert result.exit_code == 0
    feed = service.feed
    assert feed is not None
    decoded = sum(feed.statistics.messages.values()) + sum(feed.statistics.unknown.values())
    assert service.recorder.parse.count == decoded > 100
    assert service.recorder.publish.count == decoded - feed.statistics.duplicates
    # warm-up klines reach the strategies without passing parse/publish
    handled = service.recorder.tick_no_signal.count + service.recorder.tick_signal.count
    assert handled == service.recorder.strategy.count
    assert handled == service.recorder.publish.count + feed.statistics.backfilled
    stages = result.summary["stages"]
    assert stages["parse"]["count"] == decoded
