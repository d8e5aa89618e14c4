"""Orders over the simulator's WebSocket API (``/ws-api/v3``), with python-binance's client.

The client is the unmodified python-binance ``AsyncClient`` (its ``ws_*`` methods) pointed at
the simulator on loopback; a few tests speak the wire protocol directly with aiohttp to see
what python-binance hides (``rateLimits``, the order of answers on one connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException
from binance.ws.constants import WSListenerState
from binance.ws.websocket_api import WebsocketAPI

from svc.binance import FrameDecoder
from svc.clock import FakeClock
from svc.errors import AuthenticationFailed, DuplicateOrder, TimestampOutsideWindow
from svc.model import OrderUpdate
from svc.sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimConfig, SimExchange
from tests.simclient import RESTING_LIMIT_ORDER as LIMIT_ORDER
from tests.simclient import as_svc_error, recv

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    exchange = SimExchange(SimConfig(port=0, rate=50, speed=60))
    await exchange.start()
    yield exchange
    await exchange.stop()


@asynccontextmanager
async def ws_client(
    sim: SimExchange, *, api_secret: str = DEFAULT_API_SECRET
) -> AsyncIterator[AsyncClient]:
    """python-binance with REST and the WebSocket API pointed at the simulator."""
    client = AsyncClient(DEFAULT_API_KEY, api_secret)
    client.API_URL = f"{sim.http_url}/api"
    client.ws_api = WebsocketAPI(url=f"{sim.ws_url}/ws-api/v3")
    try:
        yield client
    finally:
        # python-binance's read loop notices the end only when a receive returns (10 s);
        # closing the connection first wakes it at once.
        client.ws_api.ws_state = WSListenerState.EXITING
        if client.ws_api.ws is not None:
            with contextlib.suppress(Exception):
                await client.ws_api.ws.close()
        await client.close_connection()


@asynccontextmanager
async def raw_ws_api() -> AsyncIterator[
    tuple[SimExchange, aiohttp.ClientSession, aiohttp.ClientWebSocketResponse, int]
]:
    """A simulator on a clock that stands still (the weight's minute never rolls over
    mid-test), an aiohttp session and a raw WS API connection; with the clock's time in ms."""
    clock = FakeClock(start_ns=time.time_ns())
    async with (
        SimExchange(SimConfig(port=0), clock=clock) as sim,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{sim.ws_url}/ws-api/v3") as ws,
    ):
        yield sim, session, ws, clock.time_ns() // 1_000_000


def signed(params: dict[str, Any], *, timestamp_ms: int) -> dict[str, Any]:
    """Sign as Binance's WebSocket API expects: HMAC-SHA256 of the sorted urlencoded params."""
    params = {"apiKey": DEFAULT_API_KEY, "timestamp": timestamp_ms, **params}
    payload = urlencode(sorted(params.items()))
    digest = hmac.new(DEFAULT_API_SECRET.encode(), payload.encode(), hashlib.sha256)
    return {**params, "signature": digest.hexdigest()}


async def answer(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
    return message


async def test_market_order_fills_like_rest_and_reaches_the_user_stream(
    sim: SimExchange,
) -> None:
    decoder = FrameDecoder()
    async with ws_client(sim) as client, BinanceSocketManager(client).user_socket() as user:
        placed = await client.ws_create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01", newClientOrderId="ws-m-1"
        )
        rest = await client.create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01", newClientOrderId="re-m-1"
        )
        assert set(placed) == set(rest)
        assert placed["status"] == "FILLED"
        assert placed["clientOrderId"] == "ws-m-1"
        assert placed["executedQty"] == "0.01000000"
        assert sum(Decimal(f["qty"]) for f in placed["fills"]) == Decimal("0.01")
        updates: list[OrderUpdate] = []
        while len(updates) < 2:
            event = decoder.decode(json.dumps(await recv(user)), 1)
            if isinstance(event, OrderUpdate):
                updates.append(event)
    assert [u.execution_type for u in updates] == ["NEW", "TRADE"]
    assert {u.client_order_id for u in updates} == {"ws-m-1"}
    assert updates[1].filled_quantity == Decimal("0.01")
    assert sim.stats["orders_placed"] == 2


async def test_limit_order_status_open_orders_and_cancel(sim: SimExchange) -> None:
    async with ws_client(sim) as client:
        placed = await client.ws_create_order(**LIMIT_ORDER, newClientOrderId="ws-l-1")
        assert placed["status"] == "NEW"
        status = await client.ws_get_order(symbol="BTCUSDT", origClientOrderId="ws-l-1")
        assert (status["orderId"], status["status"]) == (placed["orderId"], "NEW")
        rest_status = await client.get_order(symbol="BTCUSDT", orderId=placed["orderId"])
        assert status == rest_status
        open_orders = await client.ws_get_open_orders(symbol="BTCUSDT")
        assert [o["clientOrderId"] for o in open_orders] == ["ws-l-1"]
        assert [o["clientOrderId"] for o in await client.ws_get_open_orders()] == ["ws-l-1"]
        canceled = await client.ws_cancel_order(symbol="BTCUSDT", orderId=placed["orderId"])
        assert (canceled["status"], canceled["origClientOrderId"]) == ("CANCELED", "ws-l-1")
        status = await client.ws_get_order(symbol="BTCUSDT", orderId=placed["orderId"])
        assert status["status"] == "CANCELED"
        assert await client.ws_get_open_orders(symbol="BTCUSDT") == []
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_cancel_order(symbol="BTCUSDT", orderId=placed["orderId"])
        assert caught.value.code == -2011


async def test_numbers_in_params_are_read_as_a_rest_query_would_carry_them(
    sim: SimExchange,
) -> None:
    async with ws_client(sim) as client:
        numbers = {**LIMIT_ORDER, "quantity": 0.001, "price": 30000.0}
        placed = await client.ws_create_order(**numbers)
        assert (placed["origQty"], placed["price"]) == ("0.00100000", "30000.00000000")
        status = await client.ws_get_order(symbol="BTCUSDT", orderId=placed["orderId"])
        assert status["clientOrderId"] == placed["clientOrderId"]


async def test_unknown_symbol_duplicate_id_and_unknown_order_use_binance_codes(
    sim: SimExchange,
) -> None:
    async with ws_client(sim) as client:
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_create_order(**{**LIMIT_ORDER, "symbol": "NOPEUSDT"})
        assert (caught.value.status_code, caught.value.code) == (400, -1121)
        await client.ws_create_order(**LIMIT_ORDER, newClientOrderId="ws-dup")
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_create_order(**LIMIT_ORDER, newClientOrderId="ws-dup")
        assert (caught.value.code, caught.value.message) == (-2010, "Duplicate order sent.")
        assert isinstance(as_svc_error(caught.value), DuplicateOrder)
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_get_order(symbol="BTCUSDT", orderId=999_999)
        assert caught.value.code == -2013
    assert sim.stats["orders_placed"] == 1


async def test_wrong_secret_is_refused_with_minus_1022(sim: SimExchange) -> None:
    async with ws_client(sim, api_secret="not-the-secret") as client:
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_create_order(**LIMIT_ORDER)
    assert (caught.value.status_code, caught.value.code) == (400, -1022)
    assert isinstance(as_svc_error(caught.value), AuthenticationFailed)
    assert sim.stats["orders_placed"] == 0
    assert sim.engine.open_orders() == []


async def test_timestamp_outside_recv_window_is_minus_1021(sim: SimExchange) -> None:
    async with ws_client(sim) as client:
        stale = int(time.time() * 1000) - 60_000
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_get_open_orders(symbol="BTCUSDT", timestamp=stale)
        assert caught.value.code == -1021
        assert isinstance(as_svc_error(caught.value), TimestampOutsideWindow)
        sim.set_faults(clock_skew_ms=-120_000)
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_create_order(**LIMIT_ORDER)
        assert caught.value.code == -1021
        sim.set_faults(clock_skew_ms=0)
        assert (await client.ws_create_order(**LIMIT_ORDER))["status"] == "NEW"


async def test_rate_limit_fault_answers_429_then_418_with_retry_after(sim: SimExchange) -> None:
    async with ws_client(sim) as client:
        await client.ws_ping()  # the connection is open before the limit starts
        sim.set_faults(rate_limit_seconds=30, ban_after=1, ban_seconds=60)
        statuses = []
        for _ in range(2):
            with pytest.raises(BinanceAPIException) as caught:
                await client.ws_create_order(**LIMIT_ORDER)
            statuses.append(caught.value.status_code)
            assert caught.value.code == -1003
            refused = caught.value.response
            data = refused["error"]["data"]
            assert data["retryAfter"] - data["serverTime"] >= 29_000
            assert refused["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
        assert statuses == [429, 418]
        assert (sim.stats["http_429"], sim.stats["http_418"]) == (1, 1)
        assert sim.stats["orders_placed"] == 0
        sim.set_faults(rate_limit_seconds=0)
        assert (await client.ws_create_order(**LIMIT_ORDER))["status"] == "NEW"
        sim.set_faults(extra_weight=6000)
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_get_open_orders(symbol="BTCUSDT")
        assert (caught.value.status_code, caught.value.code) == (429, -1003)


async def test_order_latency_and_reject_next_faults_apply(sim: SimExchange) -> None:
    loop = asyncio.get_running_loop()
    async with ws_client(sim) as client:
        await client.ws_ping()
        sim.set_faults(order_latency_ms=400, reject_next=1)
        started = loop.time()
        with pytest.raises(BinanceAPIException) as caught:
            await client.ws_create_order(**LIMIT_ORDER)
        assert loop.time() - started >= 0.4
        assert caught.value.code == -2010
        started = loop.time()
        assert (await client.ws_create_order(**LIMIT_ORDER))["status"] == "NEW"
        assert loop.time() - started >= 0.4


async def test_answers_on_one_connection_are_matched_by_id(sim: SimExchange) -> None:
    sim.set_faults(order_latency_ms=300)
    async with ws_client(sim) as client:
        await client.ws_get_time()
        placed, open_orders = await asyncio.gather(
            client.ws_create_order(**LIMIT_ORDER, newClientOrderId="ws-slow", id="req-slow"),
            client.ws_get_open_orders(symbol="BTCUSDT", id="req-fast"),
        )
    assert placed["clientOrderId"] == "ws-slow"
    # Answered in request order: the query waited for the slow order and sees it.
    assert [o["clientOrderId"] for o in open_orders] == ["ws-slow"]


async def test_raw_answers_come_in_request_order_with_their_ids() -> None:
    async with raw_ws_api() as (sim, _session, ws, now_ms):
        sim.set_faults(order_latency_ms=200)
        order = {**LIMIT_ORDER, "newClientOrderId": "raw-1"}
        requests = [
            {"id": 7, "method": "order.place", "params": signed(order, timestamp_ms=now_ms)},
            {"id": "t", "method": "time"},
            {
                "id": "q",
                "method": "order.status",
                "params": signed(
                    {"symbol": "BTCUSDT", "origClientOrderId": "raw-1"}, timestamp_ms=now_ms
                ),
            },
        ]
        for request in requests:
            await ws.send_str(json.dumps(request))
        answers = [await answer(ws) for _ in requests]
    assert [a["id"] for a in answers] == [7, "t", "q"]
    assert answers[0]["result"]["clientOrderId"] == "raw-1"
    assert answers[1]["result"] == {"serverTime": now_ms}
    assert answers[2]["result"]["status"] == "NEW"


async def test_answers_carry_the_request_weight_shared_with_rest() -> None:
    async with raw_ws_api() as (sim, session, ws, now_ms):

        async def weight_after(ident: str, method: str, params: dict[str, Any]) -> int:
            request = {"id": ident, "method": method, "params": signed(params, timestamp_ms=now_ms)}
            await ws.send_str(json.dumps(request))
            reply = await answer(ws)
            assert reply["id"] == ident
            (limit,) = reply["rateLimits"]
            assert {k: v for k, v in limit.items() if k != "count"} == {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            }
            count: int = limit["count"]
            return count

        first = await weight_after("a", "openOrders.status", {"symbol": "BTCUSDT"})
        assert await weight_after("b", "openOrders.status", {}) == first + 80
        # An error answer counts its weight and says so too.
        missing = {"symbol": "BTCUSDT", "orderId": 999_999}
        assert await weight_after("c", "order.status", missing) == first + 84
        assert await weight_after("d", "order.place", LIMIT_ORDER) == first + 85
        async with session.get(f"{sim.http_url}/api/v3/ping") as response:
            assert int(response.headers["X-MBX-USED-WEIGHT-1M"]) == first + 86


async def test_an_orders_answer_precedes_its_user_data_events_on_the_same_connection() -> None:
    async with raw_ws_api() as (_sim, _session, ws, now_ms):
        subscribe = {
            "id": "s",
            "method": "userDataStream.subscribe.signature",
            "params": signed({}, timestamp_ms=now_ms),
        }
        await ws.send_str(json.dumps(subscribe))
        assert (await answer(ws))["result"]["subscriptionId"] is not None
        order = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "MARKET",
            "quantity": "0.001",
            "newClientOrderId": "raw-first",
        }
        request = {"id": "o", "method": "order.place", "params": signed(order, timestamp_ms=now_ms)}
        await ws.send_str(json.dumps(request))
        # the answer, then executionReports NEW and TRADE, then the account position
        frames = [await answer(ws) for _ in range(4)]
    assert frames[0]["id"] == "o"
    assert frames[0]["result"]["status"] == "FILLED"
    events = [f["event"]["e"] for f in frames[1:]]
    assert events == ["executionReport", "executionReport", "outboundAccountPosition"]
    assert [f["event"]["x"] for f in frames[1:3]] == ["NEW", "TRADE"]
    assert frames[1]["event"]["c"] == "raw-first"
