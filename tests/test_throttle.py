"""svc.throttle.RequestGate: back off after 429, halt after 418, resume only when allowed.

Unit tests drive a fake clock; the integration tests put svc's real ``BinanceClient`` in
front of the simulator with its rate-limit faults and count what reached the exchange.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Literal

import pytest

from svc.audit import MemoryAuditSink
from svc.binance_client import BinanceClient
from svc.errors import IpBanned, RateLimited
from svc.orders import OrderManager, OrderState
from svc.sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimConfig, SimExchange
from svc.throttle import RequestGate
from tests.simclient import market_order


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_429_closes_the_gate_for_retry_after_then_it_opens() -> None:
    clock = Clock()
    gate = RequestGate(monotonic=clock)
    gate.check()
    gate.on_limited(RateLimited(-1003, "too much", retry_after=3.0))
    assert gate.state == "backing_off"
    with pytest.raises(RateLimited) as refused:
        gate.check()
    assert not isinstance(refused.value, IpBanned)
    assert refused.value.retry_after == pytest.approx(3.0)
    clock.now += 2.9
    with pytest.raises(RateLimited):
        gate.check()
    clock.now += 0.2
    gate.check()
    assert gate.state == "open"
    assert gate.throttled == {"429": 1, "418": 0}
    assert gate.refused == {"backing_off": 2, "banned": 0}


def test_without_retry_after_the_back_off_doubles_and_resets_after_a_success() -> None:
    clock = Clock()
    gate = RequestGate(monotonic=clock, min_backoff=1.0, max_backoff=5.0)
    waits = []
    for _ in range(5):
        gate.on_limited(RateLimited(-1003, "too much"))
        waits.append(gate.remaining())
        clock.now += gate.remaining()
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    gate.on_success()
    gate.on_limited(RateLimited(-1003, "too much"))
    assert gate.remaining() == 1.0


def test_a_418_halts_until_the_ban_ends_and_a_429_does_not_shorten_it() -> None:
    clock = Clock()
    gate = RequestGate(monotonic=clock)
    gate.on_limited(IpBanned(-1003, "banned", http_status=418, retry_after=60.0))
    assert gate.state == "banned"
    gate.on_limited(RateLimited(-1003, "too much", retry_after=1.0))
    assert gate.state == "banned"
    assert gate.remaining() == pytest.approx(60.0)
    with pytest.raises(IpBanned):
        gate.check()
    clock.now += 60.0
    gate.check()
    assert gate.refused["banned"] == 1


def test_each_state_change_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    gate = RequestGate(monotonic=clock)
    with caplog.at_level(logging.INFO, logger="svc.throttle"):
        gate.on_limited(RateLimited(-1003, "too much", retry_after=2.0))
        gate.on_limited(RateLimited(-1003, "too much", retry_after=2.0))  # still backing off
        gate.on_limited(IpBanned(-1003, "banned", http_status=418, retry_after=5.0))
        clock.now += 6
        gate.on_success()
        gate.on_success()
    messages = [record.getMessage() for record in caplog.records]
    assert sum("HTTP 429" in m for m in messages) == 1
    assert sum("HTTP 418" in m for m in messages) == 1
    assert sum("allowed again" in m for m in messages) == 1


# ------------------------------------------------------------------ against the simulator


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    exchange = SimExchange(SimConfig(port=0, rate=20, speed=60))
    await exchange.start()
    yield exchange
    await exchange.stop()


@pytest.fixture
async def client(sim: SimExchange) -> AsyncIterator[BinanceClient]:
    connected = await BinanceClient.connect(
        venue="sim", api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET, sim_url=sim.http_url
    )
    yield connected
    await connected.close()


_order = market_order


@pytest.mark.integration
async def test_after_a_429_orders_are_not_sent_until_retry_after_so_no_ban_follows(
    sim: SimExchange, client: BinanceClient
) -> None:
    sim.set_faults(rate_limit_seconds=1.5, ban_after=2)
    with pytest.raises(RateLimited) as first:
        await client.new_order(_order("svct-a-1"))
    assert first.value.http_status == 429
    assert first.value.retry_after >= 1
    for attempt in range(5):
        with pytest.raises(RateLimited):
            await client.new_order(_order(f"svct-b-{attempt}"))
    assert sim.stats["http_429"] == 1, "refused requests must not reach the exchange"
    assert sim.stats.get("http_418", 0) == 0
    assert client.gate.refused["backing_off"] == 5
    await asyncio.sleep(client.gate.remaining() + 0.1)
    answer = await client.new_order(_order("svct-c-1"))
    assert answer.status == "FILLED"
    assert client.gate.state == "open"


@pytest.mark.integration
async def test_a_418_halts_order_submission_until_the_ban_ends(
    sim: SimExchange, client: BinanceClient
) -> None:
    rules = await client.symbol_rules(["BTCUSDT"])
    audit = MemoryAuditSink()
    orders = OrderManager(exchange=client, audit=audit, rules=rules, id_prefix="svct")
    sim.set_faults(rate_limit_seconds=30.0, ban_after=0, ban_seconds=1.5)
    signal_order = _order("svct-x-1")
    with pytest.raises(IpBanned):
        await orders.submit(signal_order)
    assert client.gate.state == "banned"
    refused = _order("svct-x-2")
    with pytest.raises(IpBanned):
        await orders.submit(refused)
    tracked = orders.get("svct-x-2")
    assert tracked is not None
    assert tracked.state is OrderState.REJECTED
    assert sim.stats["http_418"] == 1, "the refused order never reached the exchange"
    await asyncio.sleep(client.gate.remaining() + 0.1)
    # The ban is over (Retry-After was the ban's end); the exchange's limit is lifted too.
    sim.set_faults(rate_limit_seconds=0.0)
    done = await orders.submit(_order("svct-x-3"))
    assert done.state is OrderState.FILLED
    assert client.gate.throttled["418"] == 1


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["ws", "rest"])
async def test_the_used_weight_is_read_from_either_order_transport(
    sim: SimExchange, transport: Literal["ws", "rest"]
) -> None:
    connected = await BinanceClient.connect(
        venue="sim",
        api_key=DEFAULT_API_KEY,
        api_secret=DEFAULT_API_SECRET,
        sim_url=sim.http_url,
        order_transport=transport,
    )
    try:
        sim.set_faults(extra_weight=4000)  # other clients' weight on the same IP
        before = connected.requests
        answer = await connected.new_order(_order(f"svct-w-{transport}"))
        assert answer.status == "FILLED"
        assert connected.requests == before + 1
        # The answer's own report: REST's X-MBX-USED-WEIGHT-1M, the WS API's rateLimits.
        assert 4000 < connected.used_weight < 4100
    finally:
        await connected.close()
