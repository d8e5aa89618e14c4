"""Exchange faults against the whole service: a minute of disconnects, a silent stream,
clock skew (-1021), rejected orders. Each runs ``svc``'s real ``Service`` with the embedded
simulator over loopback sockets and injects the fault through the simulator.

The 429/418 cases are in ``tests/test_throttle.py``; the matrix is ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import io
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from svc.app import Service
from svc.binance_client import BinanceClient
from svc.config import build_config
from svc.sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimConfig, SimExchange
from tests.simclient import RecordingService, market_order

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def _wait_warm(service: Service) -> None:
    while service.feed is None:  # noqa: ASYNC110  (the feed is built inside run())
        await asyncio.sleep(0.05)
    await service.feed.warmed_up.wait()


async def test_a_minute_of_disconnects_every_2_s_loses_and_duplicates_no_closed_kline(
    tmp_path: Path,
) -> None:
    config = build_config(
        environ={},
        overrides={
            "symbols": "BTCUSDT",
            "intervals": "1m",
            "duration": "68",
            "audit": {"path": str(tmp_path / "audit.jsonl")},
            "telemetry": {"health_port": "-1"},
            "feed": {"warmup_klines": "5", "backoff_initial": "0.05", "backoff_max": "0.5"},
        },
    )
    service = RecordingService(config, status=io.StringIO())
    rss: list[int] = []

    async def inject() -> None:
        await _wait_warm(service)
        assert service.sim is not None
        await asyncio.sleep(2)
        rss.append(_rss_kib())
        service.sim.set_faults(disconnect_every=2.0)
        await asyncio.sleep(60)
        service.sim.set_faults(disconnect_every=0)
        rss.append(_rss_kib())

    faults = asyncio.create_task(inject())
    result = await service.run()
    await faults
    assert result.exit_code == 0
    feed = result.summary["feed"]
    assert sum(feed["reconnects"].values()) >= 20, feed["reconnects"]
    seen = service.closed[("BTCUSDT", "1m")]
    assert seen == sorted(set(seen)), "each closed kline arrives once, in order"
    produced = [t * 1_000_000 for t in service.sim_closed_klines]
    window = [t for t in produced if seen[0] <= t <= seen[-1]]
    assert len(window) > 60, "the simulator closed klines all through the minute"
    assert sorted(set(window) - set(seen)) == []
    assert feed["klines_backfilled"] >= 1
    # Memory stays flat: a reconnect must not leave sockets, tasks or buffers behind.
    assert rss[1] - rss[0] < 40 * 1024, f"RSS grew from {rss[0]} to {rss[1]} KiB"


async def test_a_silent_stream_is_reconnected_by_the_watchdog(tmp_path: Path) -> None:
    config = build_config(
        environ={},
        overrides={
            "symbols": "BTCUSDT",
            "intervals": "1m",
            "duration": "12",
            "audit": {"path": str(tmp_path / "audit.jsonl")},
            "telemetry": {"health_port": "-1"},
            "feed": {"warmup_klines": "5", "watchdog_seconds": "1.5", "backoff_initial": "0.05"},
        },
    )
    service = RecordingService(config, status=io.StringIO())
    silent_from: list[int] = []

    async def inject() -> None:
        await _wait_warm(service)
        assert service.sim is not None
        await asyncio.sleep(1)
        service.sim.set_faults(silent=True)
        silent_from.append(len(service.closed.get(("BTCUSDT", "1m"), [])))
        await asyncio.sleep(4)
        service.sim.set_faults(silent=False)

    faults = asyncio.create_task(inject())
    result = await service.run()
    await faults
    assert result.exit_code == 0
    reconnects = result.summary["feed"]["reconnects"]
    assert reconnects.get("silent", 0) >= 1, reconnects
    assert len(service.closed[("BTCUSDT", "1m")]) > silent_from[0], (
        "data flows again after the silence"
    )


@pytest.fixture
async def sim() -> SimExchange:
    exchange = SimExchange(SimConfig(port=0, rate=20, speed=60))
    await exchange.start()
    yield exchange  # type: ignore[misc]
    await exchange.stop()


_order = market_order


async def test_clock_skew_minus_1021_resyncs_with_server_time_and_retries_once(
    sim: SimExchange,
) -> None:
    client = await BinanceClient.connect(
        venue="sim", api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET, sim_url=sim.http_url
    )
    try:
        sim.set_faults(clock_skew_ms=120_000)  # beyond recvWindow: signed requests get -1021
        update = await client.new_order(_order("svct-skew-1"))
        assert update.status == "FILLED"
        assert client.resyncs == 1
        again = await client.new_order(_order("svct-skew-2"))
        assert again.status == "FILLED"
        assert client.resyncs == 1, "in step with the exchange now: no second resync"
        assert sim.stats["orders_placed"] == 2, "each order was placed exactly once"
    finally:
        await client.close()


async def test_rejected_orders_leave_positions_unchanged_and_trading_goes_on(
    tmp_path: Path,
) -> None:
    config = build_config(
        environ={},
        overrides={
            "symbols": "ETHUSDT",
            "intervals": "1m",
            "duration": "10",
            "audit": {"path": str(tmp_path / "audit.jsonl")},
            "telemetry": {"health_port": "-1"},
            "feed": {"warmup_klines": "0"},
        },
    )
    config = msgspec.structs.replace(
        config,
        strategies=(
            {
                "kind": "trade_flow",
                "symbol": "ETHUSDT",
                "window": 10,
                "threshold": 0.05,
                "quantity": 0.01,
                "cooldown_ns": 200_000_000,
            },
        ),
    )
    service = Service(config, status=io.StringIO())

    async def inject() -> None:
        await _wait_warm(service)
        assert service.sim is not None
        service.sim.set_faults(reject_next=3)

    faults = asyncio.create_task(inject())
    result = await service.run()
    await faults
    assert result.exit_code == 0
    orders = result.summary["orders"]
    assert orders["orders_by_state"].get("REJECTED", 0) == 3, orders
    filled = orders["orders_by_state"].get("FILLED", 0)
    assert filled >= 1, "trading went on after the rejects"
    assert service.orders is not None
    # Only filled orders move the position: 3 rejects booked nothing.
    bought = sum(
        o.filled_quantity for o in service.orders._orders.values() if o.order.side == "BUY"
    )
    sold = sum(o.filled_quantity for o in service.orders._orders.values() if o.order.side == "SELL")
    position = service.orders.positions.position("ETHUSDT").quantity
    fees = abs(position - (bought - sold))
    assert fees < Decimal("0.001"), (position, bought, sold)
