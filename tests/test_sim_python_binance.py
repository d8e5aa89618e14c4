"""python-binance against the simulated exchange over real loopback sockets.

The client is the unmodified python-binance ``AsyncClient``/``BinanceSocketManager``; only its
URLs point at the simulator. Frames it receives are decoded with svc's own decoder.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from binance.exceptions import BinanceAPIException

from svc.binance import FrameDecoder
from svc.errors import (
    AuthenticationFailed,
    DuplicateOrder,
    FilterViolation,
    InsufficientBalance,
    InvalidRequest,
    IpBanned,
    RateLimited,
    TimestampOutsideWindow,
    UnknownOrder,
)
from svc.model import Candle, OrderUpdate, Quote, Trade
from svc.sim.server import DEFAULT_API_KEY, SimConfig, SimExchange
from tests.simclient import RESTING_LIMIT_ORDER, as_svc_error, binance_client, recv

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> SimExchange:
    exchange = SimExchange(SimConfig(port=0, rate=50, speed=60))
    await exchange.start()
    yield exchange  # type: ignore[misc]
    await exchange.stop()


async def test_market_streams_decode_into_svc_events(sim: SimExchange) -> None:
    decoder = FrameDecoder()
    seen: dict[type, int] = {}
    async with binance_client(sim) as (_, manager):
        streams = ["btcusdt@kline_1m", "btcusdt@bookTicker", "btcusdt@aggTrade", "ethusdt@trade"]
        async with manager.multiplex_socket(streams) as socket:
            for _ in range(40):
                message = await recv(socket)
                event = decoder.decode(json.dumps(message), 1)
                seen[type(event)] = seen.get(type(event), 0) + 1
                assert message["stream"] in streams
                if isinstance(event, Candle):
                    assert event.symbol == "BTCUSDT"
                    assert event.interval == "1m"
                    assert event.low <= min(event.open, event.close) <= event.high
                if isinstance(event, Quote):
                    assert event.bid_price < event.ask_price
    assert set(seen) == {Candle, Quote, Trade}


async def test_single_stream_and_closed_klines(sim: SimExchange) -> None:
    # speed=60: a 1m kline closes every wall second.
    decoder = FrameDecoder(stream="btcusdt@kline_1m")
    closed: list[Candle] = []
    async with binance_client(sim) as (_, manager), manager.kline_socket("BTCUSDT") as socket:
        while len(closed) < 2:
            event = decoder.decode(json.dumps(await recv(socket)), 1)
            assert isinstance(event, Candle)
            if event.closed:
                closed.append(event)
    assert closed[1].open_time - closed[0].open_time == 60 * 10**9


async def test_rest_klines_serve_history_for_backfill(sim: SimExchange) -> None:
    async with binance_client(sim) as (client, _):
        rows = await client.get_klines(symbol="BTCUSDT", interval="1m", limit=100)
        assert len(rows) == 100
        open_times = [row[0] for row in rows]
        assert all(b - a == 60_000 for a, b in itertools.pairwise(open_times))
        window = await client.get_klines(
            symbol="ETHUSDT", interval="5m", startTime=open_times[0], endTime=open_times[50]
        )
        assert window[0][0] >= open_times[0]
        assert window[-1][0] <= open_times[50]


async def test_market_order_fills_and_reaches_the_user_stream(sim: SimExchange) -> None:
    decoder = FrameDecoder()
    async with binance_client(sim) as (client, manager), manager.user_socket() as user:
        response = await client.create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01", newClientOrderId="m-1"
        )
        assert response["status"] == "FILLED"
        assert response["executedQty"] == "0.01000000"
        assert sum(Decimal(f["qty"]) for f in response["fills"]) == Decimal("0.01")
        updates = []
        while len(updates) < 2:
            event = decoder.decode(json.dumps(await recv(user)), 1)
            if isinstance(event, OrderUpdate):
                updates.append(event)
        assert [u.execution_type for u in updates] == ["NEW", "TRADE"]
        assert updates[1].client_order_id == "m-1"
        assert updates[1].status == "FILLED"
        assert updates[1].filled_quantity == Decimal("0.01")
        account = await client.get_account()
        balances = {b["asset"]: Decimal(b["free"]) for b in account["balances"]}
        assert balances["BTC"] == Decimal(1) + Decimal("0.01") - updates[1].commission


async def test_limit_order_query_and_cancel(sim: SimExchange) -> None:
    async with binance_client(sim) as (client, _):
        placed = await client.create_order(
            symbol="BTCUSDT",
            side="BUY",
            type="LIMIT",
            timeInForce="GTC",
            quantity="0.001",
            price="30000.00",
            newClientOrderId="rest-1",
        )
        assert placed["status"] == "NEW"
        assert (await client.get_order(symbol="BTCUSDT", origClientOrderId="rest-1"))[
            "status"
        ] == "NEW"
        assert [o["clientOrderId"] for o in await client.get_open_orders(symbol="BTCUSDT")] == [
            "rest-1"
        ]
        canceled = await client.cancel_order(symbol="BTCUSDT", orderId=placed["orderId"])
        assert canceled["status"] == "CANCELED"
        assert canceled["origClientOrderId"] == "rest-1"
        assert await client.get_open_orders(symbol="BTCUSDT") == []
        with pytest.raises(BinanceAPIException) as caught:
            await client.cancel_order(symbol="BTCUSDT", orderId=placed["orderId"])
        assert isinstance(as_svc_error(caught.value), UnknownOrder)
        with pytest.raises(BinanceAPIException) as caught:
            await client.get_order(symbol="BTCUSDT", orderId=999_999)
        assert caught.value.code == -2013


@pytest.mark.parametrize(
    ("params", "code", "message", "kind"),
    [
        (
            {"price": "30000.001", "quantity": "0.001"},
            -1013,
            "Filter failure: PRICE_FILTER",
            FilterViolation,
        ),
        (
            {"price": "30000", "quantity": "0.0000001"},
            -1013,
            "Filter failure: LOT_SIZE",
            FilterViolation,
        ),
        ({"price": "100", "quantity": "0.001"}, -1013, "Filter failure: NOTIONAL", FilterViolation),
        (
            {"price": "30000", "quantity": "100"},
            -2010,
            "Account has insufficient balance for requested action.",
            InsufficientBalance,
        ),
    ],
)
async def test_order_rejections_use_binance_codes(
    sim: SimExchange, params: dict[str, str], code: int, message: str, kind: type
) -> None:
    async with binance_client(sim) as (client, _):
        with pytest.raises(BinanceAPIException) as caught:
            await client.create_order(
                symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", **params
            )
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (
        400,
        code,
        message,
    )
    assert isinstance(as_svc_error(caught.value), kind)


async def test_duplicate_client_order_id_is_rejected(sim: SimExchange) -> None:
    async with binance_client(sim) as (client, _):
        order = {**RESTING_LIMIT_ORDER, "newClientOrderId": "dup-1"}
        await client.create_order(**order)
        with pytest.raises(BinanceAPIException) as caught:
            await client.create_order(**order)
    assert (caught.value.code, caught.value.message) == (-2010, "Duplicate order sent.")
    assert isinstance(as_svc_error(caught.value), DuplicateOrder)


async def test_wrong_secret_and_wrong_key_are_refused(sim: SimExchange) -> None:
    async with binance_client(sim, api_secret="not-the-secret") as (client, _):
        with pytest.raises(BinanceAPIException) as caught:
            await client.get_account()
    assert (caught.value.code, caught.value.message) == (
        -1022,
        "Signature for this request is not valid.",
    )
    assert isinstance(as_svc_error(caught.value), AuthenticationFailed)
    async with binance_client(sim, api_key="someone-else") as (client, _):
        with pytest.raises(BinanceAPIException) as caught:
            await client.get_account()
    assert (caught.value.status_code, caught.value.code) == (401, -2015)


async def test_unsigned_and_unknown_symbol_requests(sim: SimExchange) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"X-MBX-APIKEY": DEFAULT_API_KEY}
        async with session.get(f"{sim.http_url}/api/v3/account", headers=headers) as response:
            body = await response.json()
            assert (response.status, body["code"]) == (400, -1102)
            assert "timestamp" in body["msg"]
            assert int(response.headers["X-MBX-USED-WEIGHT-1M"]) >= 20
        async with session.get(f"{sim.http_url}/api/v3/account") as response:
            assert (response.status, (await response.json())["code"]) == (401, -2014)
    async with binance_client(sim) as (client, _):
        with pytest.raises(BinanceAPIException) as caught:
            await client.get_klines(symbol="NOPEUSDT", interval="1m")
    assert isinstance(as_svc_error(caught.value), InvalidRequest)
    assert caught.value.code == -1121


async def test_clock_skew_gives_minus_1021(sim: SimExchange) -> None:
    sim.set_faults(clock_skew_ms=-120_000)
    async with binance_client(sim) as (client, _):
        with pytest.raises(BinanceAPIException) as caught:
            await client.get_account()
    assert isinstance(as_svc_error(caught.value), TimestampOutsideWindow)
    sim.set_faults(clock_skew_ms=0)
    async with binance_client(sim) as (client, _):
        assert "balances" in await client.get_account()


async def test_rate_limit_then_ban_carry_retry_after(sim: SimExchange) -> None:
    sim.set_faults(rate_limit_seconds=30, ban_after=2, ban_seconds=60)
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(4):
            async with session.get(f"{sim.http_url}/api/v3/time") as response:
                statuses.append(response.status)
                assert int(response.headers["Retry-After"]) >= 1
                body = await response.json()
                assert body["code"] == -1003
    assert statuses == [429, 429, 418, 418]
    async with binance_client(sim, ping=False) as (client, _):
        with pytest.raises(BinanceAPIException) as caught:
            await client.get_exchange_info()
    assert isinstance(as_svc_error(caught.value), IpBanned)
    assert isinstance(as_svc_error(caught.value), RateLimited)
    sim.set_faults(rate_limit_seconds=0)
    async with binance_client(sim) as (client, _):
        assert len((await client.get_exchange_info())["symbols"]) == 2


async def test_reject_next_and_admin_faults_endpoint(sim: SimExchange) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{sim.http_url}/_sim/faults", json={"reject_next": 1}) as response:
            assert response.status == 200
        async with session.post(f"{sim.http_url}/_sim/faults", json={"no_such": 1}) as response:
            assert response.status == 400
            assert (await response.json())["field"] == "faults.no_such"
    async with binance_client(sim) as (client, _):
        with pytest.raises(BinanceAPIException) as caught:
            await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
        assert caught.value.code == -2010
        filled = await client.create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001"
        )
        assert filled["status"] == "FILLED"


async def test_listen_key_user_stream(sim: SimExchange) -> None:
    decoder = FrameDecoder()
    async with aiohttp.ClientSession() as session:
        headers = {"X-MBX-APIKEY": DEFAULT_API_KEY}
        async with session.post(f"{sim.http_url}/api/v3/userDataStream", headers=headers) as r:
            key = (await r.json())["listenKey"]
        async with session.ws_connect(f"{sim.ws_url}/ws/{key}") as ws:
            await asyncio.sleep(0.05)
            async with binance_client(sim) as (client, _):
                await client.create_order(
                    symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.1"
                )
            kinds = []
            for _ in range(3):
                message = await asyncio.wait_for(ws.receive_str(), 5)
                kinds.append(type(decoder.decode(message, 1)).__name__)
    assert kinds == ["OrderUpdate", "OrderUpdate", "AccountUpdate"]


async def test_forced_disconnect_is_survived_by_python_binance(sim: SimExchange) -> None:
    async with (
        binance_client(sim) as (_, manager),
        manager.multiplex_socket(["btcusdt@bookTicker"]) as socket,
    ):
        await recv(socket)
        sim.set_faults(disconnect_every=0.3)
        await asyncio.sleep(0.5)
        sim.set_faults(disconnect_every=0)
        message = await recv(socket, within=15)
        while message.get("e") == "error":  # python-binance reports the reconnect
            message = await recv(socket, within=15)
        assert message["stream"] == "btcusdt@bookTicker"
    assert sim.stats["forced_disconnects"] >= 1


async def test_frames_replay_is_verbatim(binance_data: Path) -> None:
    source = binance_data / "ws" / "unittest_unicorn_fy.messages.jsonl"
    expected = [json.loads(line)["raw"] for line in source.read_text().splitlines()]
    config = SimConfig(port=0, frames=source, rate=2000)
    async with (
        SimExchange(config) as exchange,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{exchange.ws_url}/stream?streams=btcusdt@trade") as ws,
    ):
        received = [await asyncio.wait_for(ws.receive_str(), 5) for _ in expected]
    assert received == expected
    decoder = FrameDecoder()
    assert all(decoder.decode(frame, 1) is not None for frame in received)


async def test_replayed_klines_market_reproduces_recorded_candles(binance_data: Path) -> None:
    source = binance_data / "klines" / "api_v3_klines_BTCUSDT_1h_20200501_1000.json"
    recorded = json.loads(source.read_text())
    # 3600x: one recorded hour per wall second.
    config = SimConfig(port=0, symbols=("BTCUSDT",), market=str(source), speed=36_000, rate=100)
    async with SimExchange(config) as exchange:
        await asyncio.sleep(2.5)
        async with binance_client(exchange) as (client, _):
            rows = await client.get_klines(symbol="BTCUSDT", interval="1h", limit=1000)
    closed = [row for row in rows if row[6] < rows[-1][0]]
    assert len(closed) >= 2
    for row, original in zip(closed, recorded, strict=False):
        assert [Decimal(v) for v in row[1:5]] == [Decimal(v) for v in original[1:5]]


async def test_frames_replay_at_the_recorded_pace(tmp_path: Path) -> None:
    capture = tmp_path / "paced.jsonl"
    frames = [
        json.dumps(
            {
                "stream": "btcusdt@aggTrade",
                "data": {
                    "e": "aggTrade",
                    "E": ms,
                    "s": "BTCUSDT",
                    "a": i,
                    "p": "1.0",
                    "q": "1.0",
                    "f": i,
                    "l": i,
                    "T": ms,
                    "m": True,
                },
            }
        )
        for i, ms in enumerate((1_000, 1_400, 1_800))
    ]
    capture.write_text("\n".join(frames) + "\n")
    config = SimConfig(port=0, frames=capture, frames_pace="recorded", rate=10_000)
    async with (
        SimExchange(config) as exchange,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{exchange.ws_url}/stream?streams=x") as ws,
    ):
        loop = asyncio.get_running_loop()
        arrivals = []
        for _ in frames:
            await asyncio.wait_for(ws.receive_str(), 5)
            arrivals.append(loop.time())
    # 400 ms apart in the capture: far slower than the 10,000 frames/s rate would give.
    assert arrivals[2] - arrivals[0] >= 0.7
