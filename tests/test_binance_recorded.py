"""Recorded Binance payloads (real captures and documentation examples) decode as expected.

Counts per event class were computed once by running the decoder and then checked frame by
frame against the raw data; values are spot-checked against the raw text by hand.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

from svc import errors
from svc.binance import rest
from svc.binance.streams import EVENT_TYPES, FrameDecoder
from svc.model import (
    AccountUpdate,
    Balance,
    BookDelta,
    Candle,
    Event,
    OrderUpdate,
    Position,
    Quote,
    Trade,
    UnknownEvent,
)

TS_INIT = 1_700_000_000_123_456_789
MS = 1_000_000  # ns per ms


def label(event: Event) -> str:
    """``Candle``, ..., or ``UnknownEvent:<event_type>``: the key the counts are kept by."""
    if isinstance(event, UnknownEvent):
        return f"UnknownEvent:{event.event_type}"
    return type(event).__name__


def unicorn_records(data: Path) -> list[dict[str, Any]]:
    path = data / "ws" / "unittest_unicorn_fy.messages.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def gocryptotrader_frames(data: Path) -> list[str]:
    text = (data / "ws" / "wsHandleData.json").read_text()
    return [line for line in text.splitlines() if line.strip()]


def examples(data: Path, name: str) -> dict[str, Any]:
    """The payloads of one ``docs/*.examples.json`` file, keyed by their ``md_lines``."""
    records = json.loads((data / "docs" / name).read_text())["examples"]
    by_lines = {record["md_lines"]: record["payload"] for record in records}
    assert len(by_lines) == len(records), f"{name}: md_lines are not unique"
    return by_lines


# ---------------------------------------------------------------- websocket captures

UNICORN_COUNTS = Counter(
    {
        "Trade": 3,  # spot aggTrade + trade, COIN-M aggTrade
        "Candle": 3,  # spot kline_1m, USD-M kline_15m, COIN-M kline_5m
        "Quote": 3,  # USD-M bookTicker bare + combined, COIN-M bookTicker
        "BookDelta": 4,  # USD-M and COIN-M depth5 and depth, all e=depthUpdate
        "AccountUpdate": 2,  # USD-M and COIN-M ACCOUNT_UPDATE
        "OrderUpdate": 2,  # USD-M and COIN-M ORDER_TRADE_UPDATE
        "UnknownEvent:array": 8,  # `!...@arr` streams: bare JSON arrays
        "UnknownEvent:24hrTicker": 3,
        "UnknownEvent:24hrMiniTicker": 3,
        "UnknownEvent:forceOrder": 3,
        "UnknownEvent:markPriceUpdate": 2,
        "UnknownEvent:continuous_kline": 2,
        "UnknownEvent:MARGIN_CALL": 2,
        "UnknownEvent:ACCOUNT_CONFIG_UPDATE": 2,
        "UnknownEvent:compositeIndex": 1,
        "UnknownEvent:indexPriceUpdate": 1,
        "UnknownEvent:indexPrice_kline": 1,
        "UnknownEvent:markPrice_kline": 1,
        "UnknownEvent:listStatus": 1,
        "UnknownEvent:balanceUpdate": 1,
        "UnknownEvent:result": 1,  # {"result":null,"id":2}: a subscribe acknowledgement
        "UnknownEvent:error": 1,  # {"error":"blahblah"}
    }
)

KNOWN_CLASS = {
    "kline": Candle,
    "aggTrade": Trade,
    "trade": Trade,
    "bookTicker": Quote,
    "depthUpdate": BookDelta,
    "executionReport": OrderUpdate,
    "ORDER_TRADE_UPDATE": OrderUpdate,
    "outboundAccountPosition": AccountUpdate,
    "ACCOUNT_UPDATE": AccountUpdate,
}


def test_unicorn_fy_frames_all_decode_with_exact_counts(binance_data: Path) -> None:
    records = unicorn_records(binance_data)
    assert len(records) == 50
    decoder = FrameDecoder()
    events = [decoder.decode(record["raw"], TS_INIT) for record in records]
    assert Counter(label(event) for event in events) == UNICORN_COUNTS
    assert sum(UNICORN_COUNTS.values()) == 50
    assert all(event.ts_init == TS_INIT for event in events)


def test_unicorn_fy_frames_match_their_labelled_event(binance_data: Path) -> None:
    """unicorn-fy labels each frame with its event type; the decoder must agree."""
    assert set(KNOWN_CLASS) == EVENT_TYPES
    decoder = FrameDecoder()
    for record in unicorn_records(binance_data):
        event = decoder.decode(record["raw"], TS_INIT)
        name, raw = record["event"], record["raw"]
        if name in KNOWN_CLASS:
            assert isinstance(event, KNOWN_CLASS[name]), raw[:120]
        elif raw.lstrip().startswith("["):
            assert event == UnknownEvent(stream="?", event_type="array", ts_init=TS_INIT)
        elif name is not None:
            assert isinstance(event, UnknownEvent), raw[:120]
            assert event.event_type == name
            stream = json.loads(raw).get("stream", "?")
            assert event.stream == stream


def test_gocryptotrader_frames_all_decode_with_exact_counts(binance_data: Path) -> None:
    frames = gocryptotrader_frames(binance_data)
    assert len(frames) == 8
    decoder = FrameDecoder()
    counts = Counter(label(decoder.decode(frame, TS_INIT)) for frame in frames)
    assert counts == Counter(
        {
            "UnknownEvent:24hrTicker": 1,
            "Candle": 1,
            "Trade": 1,
            "BookDelta": 1,
            "UnknownEvent:balanceUpdate": 1,
            "UnknownEvent:listStatus": 1,
            "OrderUpdate": 1,
            "AccountUpdate": 1,
        }
    )


def test_spot_kline_values(binance_data: Path) -> None:
    raw = unicorn_records(binance_data)[7]["raw"]
    assert raw.startswith('{"stream":"btcusdt@kline_1m"')
    assert FrameDecoder().decode(raw, TS_INIT) == Candle(
        symbol="BTCUSDT",
        interval="1m",
        open_time=1601630220000 * MS,
        close_time=1601630279999 * MS,
        open=10437.32,
        high=10441.8,
        low=10437.32,
        close=10441.8,
        volume=20.639574,
        quote_volume=215452.69236872,
        trades=183,
        closed=False,
        ts_event=1601630228469 * MS,
        ts_init=TS_INIT,
    )


def test_docs_kline_with_spaces_values(binance_data: Path) -> None:
    raw = gocryptotrader_frames(binance_data)[1]
    candle = FrameDecoder().decode(raw, TS_INIT)
    assert isinstance(candle, Candle)
    assert (candle.symbol, candle.interval, candle.closed) == ("BNBBTC", "1m", False)
    assert (candle.open, candle.high, candle.low, candle.close) == (0.001, 0.0025, 0.0015, 0.002)
    assert candle.ts_event == 1234567880 * MS
    assert candle.open_time == 1234000000 * MS


def test_trade_and_agg_trade_values(binance_data: Path) -> None:
    records = unicorn_records(binance_data)
    decoder = FrameDecoder()
    assert decoder.decode(records[2]["raw"], TS_INIT) == Trade(
        "BTCUSDT", 315753210, 9319.0, 0.018649, True, True, 1592584651517 * MS, TS_INIT
    )
    assert decoder.decode(records[3]["raw"], TS_INIT) == Trade(
        "BTCUSDT", 343719861, 9302.0, 0.001019, False, False, 1592591955766 * MS, TS_INIT
    )
    # COIN-M aggTrade has no `M`; quantities are contracts.
    assert decoder.decode(records[30]["raw"], TS_INIT) == Trade(
        "BTCUSD_PERP", 193054733, 29882.6, 2.0, False, True, 1654856742439 * MS, TS_INIT
    )


def test_futures_book_ticker_bare_and_combined_agree(binance_data: Path) -> None:
    records = unicorn_records(binance_data)
    expected = Quote(
        "GALAUSDT", 1592216279872, 0.07661, 40088.0, 0.07662, 929.0, 1654792470073 * MS, TS_INIT
    )
    decoder = FrameDecoder()
    assert decoder.decode(records[12]["raw"], TS_INIT) == expected
    assert decoder.decode(records[13]["raw"], TS_INIT) == expected


def test_futures_depth5_is_a_book_delta(binance_data: Path) -> None:
    raw = unicorn_records(binance_data)[25]["raw"]
    assert raw.startswith('{"stream":"btcusdt@depth5"')
    delta = FrameDecoder().decode(raw, TS_INIT)
    assert isinstance(delta, BookDelta)
    assert (delta.symbol, delta.first_update_id, delta.final_update_id) == (
        "BTCUSDT",
        1594316854355,
        1594316863126,
    )
    assert len(delta.bids) == len(delta.asks) == 5
    assert delta.bids[0] == (29965.0, 5.041)
    assert delta.asks[-1] == (29966.1, 0.001)
    assert delta.ts_event == 1654853780525 * MS


def test_futures_account_update_positions(binance_data: Path) -> None:
    raw = unicorn_records(binance_data)[23]["raw"]
    assert FrameDecoder().decode(raw, TS_INIT) == AccountUpdate(
        balances=(Balance("USDT", Decimal("1790.86605837"), Decimal(0)),),
        positions=(
            Position("CHZUSDT", Decimal(0), Decimal(0), "BOTH"),
            Position("CHZUSDT", Decimal(2684), Decimal("0.45855"), "LONG"),
        ),
        reason="ORDER",
        ts_event=1617859763511 * MS,
        ts_init=TS_INIT,
    )


def test_coin_m_account_update_signed_positions(binance_data: Path) -> None:
    update = FrameDecoder().decode(unicorn_records(binance_data)[48]["raw"], TS_INIT)
    assert isinstance(update, AccountUpdate)
    assert [b.asset for b in update.balances] == ["BTC", "ETH"]
    assert [(p.amount, p.side) for p in update.positions] == [
        (Decimal(0), "BOTH"),
        (Decimal(20), "LONG"),
        (Decimal(-10), "SHORT"),
    ]
    assert update.positions[2].entry_price == Decimal("6563.8")


def test_futures_order_trade_update_values(binance_data: Path) -> None:
    update = FrameDecoder().decode(unicorn_records(binance_data)[24]["raw"], TS_INIT)
    assert isinstance(update, OrderUpdate)
    assert update.client_order_id == "electron_6LyJZ9KPgmRbhKfFamx3"
    assert (update.symbol, update.order_id, update.side) == ("SANDUSDT", 315803079, "BUY")
    assert (update.quantity, update.price) == (Decimal(1000), Decimal("0.63428"))
    assert (update.execution_type, update.status) == ("NEW", "NEW")
    assert update.commission_asset == ""  # the frame has no `N`
    assert update.ts_event == 1617859867772 * MS


def test_spot_execution_report_values(binance_data: Path) -> None:
    update = FrameDecoder().decode(gocryptotrader_frames(binance_data)[6], TS_INIT)
    assert update == OrderUpdate(
        symbol="BNBBTC",
        client_order_id="c4wyKsIhoAaittTYlIVLqk",
        order_id=5340845958,
        side="BUY",
        order_type="LIMIT",
        time_in_force="GTC",
        quantity=Decimal("0.00028400"),
        price=Decimal("52789.10000000"),
        execution_type="NEW",
        status="NEW",
        reject_reason="NONE",
        last_quantity=Decimal(0),
        last_price=Decimal(0),
        filled_quantity=Decimal(0),
        commission=Decimal(0),
        commission_asset="BTC",
        trade_id=-1,
        is_maker=False,
        ts_event=1616627567900 * MS,
        ts_init=TS_INIT,
    )
    assert isinstance(update, OrderUpdate)
    assert str(update.quantity) == "0.00028400"  # exact, not via float


def test_spot_account_position_values(binance_data: Path) -> None:
    update = FrameDecoder().decode(gocryptotrader_frames(binance_data)[7], TS_INIT)
    assert update == AccountUpdate(
        balances=(
            Balance("BTC", Decimal("0.00225109"), Decimal("0.00123000")),
            Balance("BNB", Decimal(0), Decimal(0)),
            Balance("USDT", Decimal("54.43390661"), Decimal(0)),
        ),
        positions=(),
        reason="",
        ts_event=1616628815745 * MS,
        ts_init=TS_INIT,
    )


def test_unknown_frames_name_their_stream(binance_data: Path) -> None:
    frames = gocryptotrader_frames(binance_data)
    listen_key = "jTfvpakT2yT0hVIo5gYWVihZhdM2PrBgJUZ5PyfZ4EVpCkx4Uoxk5timcrQc"
    decoder = FrameDecoder()
    assert decoder.decode(frames[0], TS_INIT) == UnknownEvent(
        "BNBBTC@ticker", "24hrTicker", TS_INIT
    )
    assert decoder.decode(frames[4], TS_INIT) == UnknownEvent(listen_key, "balanceUpdate", TS_INIT)


# ---------------------------------------------------------------- documentation examples

# md_lines -> the stream a bare docs payload arrives on, and what it must decode to.
WEB_SOCKET_EXAMPLES = {
    "72-75": ("!serverShutdown", "UnknownEvent:serverShutdown"),
    "81-87": ("", "UnknownEvent:serverShutdown"),  # combined: names its own stream
    "221-226": ("bazusd@referencePrice", "UnknownEvent:referencePrice"),
    "238-250": ("bnbbtc@aggTrade", "Trade"),
    "262-272": ("bnbbtc@trade", "Trade"),
    "283-292": ("bnbbtc@blockTrade", "UnknownEvent:blockTrade"),
    "327-350": ("bnbbtc@kline_1m", "Candle"),
    "371-394": ("bnbbtc@kline_1m@+08:00", "Candle"),
    "406-416": ("bnbbtc@miniTicker", "UnknownEvent:24hrMiniTicker"),
    "428-432": ("!miniTicker@arr", "UnknownEvent:array"),
    "444-468": ("bnbbtc@ticker", "UnknownEvent:24hrTicker"),
    "488-506": ("bnbbtc@ticker_1h", "UnknownEvent:1hTicker"),
    "523-528": ("!ticker_1h@arr", "UnknownEvent:array"),
    "542-549": ("bnbusdt@bookTicker", "Quote"),
    "563-570": ("btcusdt@avgPrice", "UnknownEvent:avgPrice"),
    "582-596": ("bnbbtc@depth5", "UnknownEvent:depth5"),  # a snapshot without `e`
    "608-626": ("bnbbtc@depth", "BookDelta"),
}


def decode_docs_stream(data: Path, md_lines: str) -> Event:
    stream, _ = WEB_SOCKET_EXAMPLES[md_lines]
    payload = examples(data, "web-socket-streams.examples.json")[md_lines]
    return FrameDecoder(stream=stream).decode(json.dumps(payload), TS_INIT)


def test_web_socket_stream_examples_all_decode(binance_data: Path) -> None:
    payloads = examples(binance_data, "web-socket-streams.examples.json")
    assert set(payloads) == set(WEB_SOCKET_EXAMPLES)
    for md_lines, (stream, expected) in WEB_SOCKET_EXAMPLES.items():
        event = decode_docs_stream(binance_data, md_lines)
        assert label(event) == expected, md_lines
        if isinstance(event, UnknownEvent) and stream:
            assert event.stream == stream


def test_spot_book_ticker_has_no_venue_time(binance_data: Path) -> None:
    quote = decode_docs_stream(binance_data, "542-549")
    assert quote == Quote(
        "BNBUSDT", 400900217, 25.3519, 31.21, 25.3652, 40.66, ts_event=TS_INIT, ts_init=TS_INIT
    )


def test_docs_stream_values(binance_data: Path) -> None:
    agg = decode_docs_stream(binance_data, "238-250")
    assert agg == Trade("BNBBTC", 12345, 0.001, 100.0, True, True, 1672515782136 * MS, TS_INIT)
    delta = decode_docs_stream(binance_data, "608-626")
    assert delta == BookDelta(
        "BNBBTC", 157, 160, ((0.0024, 10.0),), ((0.0026, 100.0),), 1672515782136 * MS, TS_INIT
    )
    candle = decode_docs_stream(binance_data, "371-394")
    assert isinstance(candle, Candle)
    assert (candle.open_time, candle.close_time) == (1672515780000 * MS, 1672515839999 * MS)


def test_user_data_stream_examples_unwrap_the_subscription_envelope(binance_data: Path) -> None:
    payloads = examples(binance_data, "user-data-stream.examples.json")
    decoder = FrameDecoder(stream="userData")
    labels = {
        md_lines: label(decoder.decode(json.dumps(payload), TS_INIT))
        for md_lines, payload in payloads.items()
    }
    assert labels == {
        "34-49": "AccountUpdate",
        "61-70": "UnknownEvent:balanceUpdate",
        "79-118": "OrderUpdate",
        "280-307": "UnknownEvent:listStatus",
        "335-341": "UnknownEvent:eventStreamTerminated",
        "351-360": "UnknownEvent:externalLockUpdate",
    }
    order = decoder.decode(json.dumps(payloads["79-118"]), TS_INIT)
    assert isinstance(order, OrderUpdate)
    assert order.client_order_id == "mUvoqJxFIILMdfAW5iGSOW"
    assert (order.quantity, order.price) == (Decimal(1), Decimal("0.10264410"))
    assert order.commission_asset == ""  # "N": null
    assert order.ts_event == 1499405658658 * MS
    account = decoder.decode(json.dumps(payloads["34-49"]), TS_INIT)
    assert account == AccountUpdate(
        (Balance("ETH", Decimal(10000), Decimal(0)),), (), "", 1564034571105 * MS, TS_INIT
    )


# ---------------------------------------------------------------- REST documentation examples


def rest_examples(data: Path) -> dict[str, Any]:
    return examples(data, "rest-api.examples.json")


def reencoded(obj: Any) -> Any:
    """A wire struct encoded and parsed back to plain JSON values."""
    return json.loads(rest.encode_payload(obj))


def test_new_order_ack_result_full(binance_data: Path) -> None:
    payloads = rest_examples(binance_data)
    ack = rest.decode_order_response(json.dumps(payloads["2205-2211"]))
    result = rest.decode_order_response(json.dumps(payloads["2216-2233"]))
    full = rest.decode_order_response(json.dumps(payloads["2238-2292"]))
    for response in (ack, result, full):
        assert (response.symbol, response.order_id) == ("BTCUSDT", 28)
        assert response.client_order_id == "6gCrw2kRUAF9CvJDGP16IP"
        assert response.transact_time == 1507725176595
    assert ack.status is msgspec.UNSET
    assert ack.fills is msgspec.UNSET
    assert (result.status, result.executed_qty, result.side) == ("FILLED", "10.00000000", "SELL")
    assert result.fills is msgspec.UNSET
    assert not isinstance(full.fills, msgspec.UnsetType)
    assert [fill.trade_id for fill in full.fills] == [56, 57, 58, 59, 60]
    assert sum(Decimal(fill.qty) for fill in full.fills) == Decimal(10)
    assert full.fills[1].commission == "19.99500000"
    # Encoding writes exactly the fields of each shape (ACK stays five fields).
    assert reencoded(ack) == payloads["2205-2211"]
    assert reencoded(result) == payloads["2216-2233"]
    assert reencoded(full) == payloads["2238-2292"]


def test_cancel_query_open_orders_account(binance_data: Path) -> None:
    payloads = rest_examples(binance_data)
    cancel = rest.decode_cancel_response(json.dumps(payloads["2410-2427"]))
    assert (cancel.orig_client_order_id, cancel.client_order_id) == ("myOrder1", "cancelMyOrder1")
    assert (cancel.status, cancel.order_id) == ("CANCELED", 4)
    assert reencoded(cancel) == payloads["2410-2427"]

    state = rest.decode_order_state(json.dumps(payloads["4261-4282"]))
    assert (state.client_order_id, state.price, state.orig_qty) == ("myOrder1", "0.1", "1.0")
    assert (state.is_working, state.time) == (True, 1499827319559)
    assert reencoded(state) == payloads["4261-4282"]

    open_orders = rest.decode_open_orders(json.dumps(payloads["4311-4334"]))
    assert open_orders == [state]

    account = rest.decode_account(json.dumps(payloads["4196-4229"]))
    assert [(b.asset, Decimal(b.free)) for b in account.balances] == [
        ("BTC", Decimal("4723846.89208129")),
        ("LTC", Decimal("4763368.68006011")),
    ]
    assert (account.maker_commission, account.uid, account.can_trade) == (15, 354937868, True)
    assert reencoded(account) == payloads["4196-4229"]


def test_rest_docs_klines_and_server_time(binance_data: Path) -> None:
    payloads = rest_examples(binance_data)
    (row,) = rest.decode_klines(json.dumps(payloads["1163-1178"]))
    assert (row.open_time, row.open, row.high, row.trades) == (
        1499040000000,
        "0.01634790",
        "0.80000000",
        308,
    )
    assert rest.decode_server_time(json.dumps(payloads["767-769"])).server_time == 1499827319559


def test_rest_docs_error_bodies(binance_data: Path) -> None:
    payloads = rest_examples(binance_data)
    expected = {
        "126-129": errors.InvalidRequest,  # -1121
        "2069-2072": errors.ExchangeError,  # -2043 no reference price: no narrower class
        "2440-2443": errors.InvalidRequest,  # -1145
        "2447-2450": errors.UnknownOrder,  # -2011 cancel restrictions
        "2851-2863": errors.ExchangeError,  # -2022 cancel-replace failed (carries `data`)
        "2948-2951": errors.RateLimited,  # -1015 too many new orders
    }
    for md_lines, kind in expected.items():
        body = payloads[md_lines]
        error = rest.error_from_response(json.dumps(body), http_status=400)
        assert type(error) is kind, md_lines
        assert (error.code, error.msg, error.http_status) == (body["code"], body["msg"], 400)


# ---------------------------------------------------------------- REST captures


def test_spot_exchange_info_rules(binance_data: Path) -> None:
    rules = rest.exchange_rules((binance_data / "rest" / "api_v3_exchangeInfo.json").read_bytes())
    assert len(rules) == 25
    assert Counter(r.status for r in rules.values()) == Counter({"BREAK": 13, "TRADING": 12})
    btc = rules["BTCUSDT"]
    assert (btc.symbol, btc.status, btc.base_asset, btc.quote_asset) == (
        "BTCUSDT",
        "TRADING",
        "BTC",
        "USDT",
    )
    assert (btc.tick_size, btc.min_price, btc.max_price) == (
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal(1000000),
    )
    assert (btc.step_size, btc.min_quantity, btc.max_quantity) == (
        Decimal("0.00001"),
        Decimal("0.00001"),
        Decimal(9000),
    )
    assert (btc.min_notional, btc.max_notional) == (Decimal(5), Decimal(9000000))
    assert btc.apply_min_notional_to_market is True
    assert btc.order_types == (
        "LIMIT",
        "LIMIT_MAKER",
        "MARKET",
        "STOP_LOSS",
        "STOP_LOSS_LIMIT",
        "TAKE_PROFIT",
        "TAKE_PROFIT_LIMIT",
    )
    assert str(btc.tick_size) == "0.01000000"  # exact strings, never via float
    assert all(r.tick_size > 0 and r.step_size > 0 for r in rules.values())


def test_futures_exchange_info_min_notional(binance_data: Path) -> None:
    raw = (binance_data / "rest" / "fapi_v1_exchangeInfo.json").read_bytes()
    rules = rest.exchange_rules(raw)
    assert len(rules) == 25
    btc = rules["BTCUSDT"]
    assert (btc.tick_size, btc.min_price, btc.max_price) == (
        Decimal("0.10"),
        Decimal("556.80"),
        Decimal(4529764),
    )
    assert (btc.step_size, btc.min_quantity, btc.max_quantity) == (
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal(1000),
    )
    # USD-M's MIN_NOTIONAL is {"notional": "100"}; no maximum.
    assert (btc.min_notional, btc.max_notional) == (Decimal(100), Decimal(0))
    assert rules["ETHUSDT"].min_notional == Decimal(20)


class KlineCapture(NamedTuple):
    name: str
    rows: int
    interval_ms: int
    first: tuple[Any, ...]  # open time (ms), open, high, low, close, volume, trades
    last_open_time: int


KLINE_CAPTURES = [
    KlineCapture(
        "api_v3_klines_BTCUSDT_1h_20200501_1000.json",
        1000,
        3_600_000,
        (1588280400000, 8819.15, 8849.8, 8734.5, 8761.92, 3089.560545, 34467),
        1591876800000,
    ),
    KlineCapture(
        "api_v3_klines_BTCUSDT_1d_2019_366.json",
        366,
        86_400_000,
        (1546300800000, 3701.23, 3810.16, 3642.0, 3797.14, 23741.687033, 154227),
        1577836800000,
    ),
]


@pytest.mark.parametrize("capture", KLINE_CAPTURES, ids=lambda c: c.name)
def test_rest_klines(binance_data: Path, capture: KlineCapture) -> None:
    name, rows, interval_ms, first, last_open_time = capture
    decoded = rest.decode_klines((binance_data / "klines" / name).read_bytes())
    assert len(decoded) == rows
    assert decoded[-1].open_time == last_open_time
    last_close_ms = decoded[-1].close_time
    candles = rest.klines_to_candles(
        decoded, symbol="BTCUSDT", interval="x", ts_init=TS_INIT, now_ms=last_close_ms + 1
    )
    assert len(candles) == rows
    c = candles[0]
    assert (c.open_time // MS, c.open, c.high, c.low, c.close, c.volume, c.trades) == first
    assert c.close_time == (first[0] + interval_ms - 1) * MS
    for row, candle in zip(decoded, candles, strict=True):
        assert candle.closed
        assert candle.ts_event == row.close_time * MS
        assert candle.close_time - candle.open_time == (interval_ms - 1) * MS
        # Column order check: a swapped high/low or open/close would break these.
        assert candle.high >= max(candle.open, candle.close) >= candle.low
        assert candle.low <= min(candle.open, candle.close)
        assert candle.open == float(row.open)
        assert candle.quote_volume == float(row.quote_volume)
    # Contiguous: no missing intervals in either capture.
    assert all(b.open_time - a.open_time == interval_ms * MS for a, b in pairwise(candles))
    # With "now" inside the last interval, that row is still forming.
    forming = rest.klines_to_candles(
        decoded, symbol="BTCUSDT", interval="x", ts_init=TS_INIT, now_ms=last_close_ms
    )
    assert not forming[-1].closed
    assert forming[-1].ts_event == TS_INIT
    assert forming[-2].closed


# ---------------------------------------------------------------- error bodies

CATALOG_EXPECTED: dict[tuple[int, str], type[errors.ExchangeError]] = {
    (-1021, "Timestamp for this request is outside of the recvWindow."): (
        errors.TimestampOutsideWindow
    ),
    (-1021, "Timestamp for this request was 1000ms ahead of the server's time."): (
        errors.TimestampOutsideWindow
    ),
    (-1003, "Too many requests queued."): errors.RateLimited,
    (
        -1003,
        (
            "Too much request weight used; current limit is %s request weight per %s. "
            "Please use WebSocket Streams for live updates to avoid polling the API."
        ),
    ): errors.RateLimited,
    (
        -1003,
        (
            "Way too much request weight used; IP banned until %s. "
            "Please use WebSocket Streams for live updates to avoid bans."
        ),
    ): errors.IpBanned,
    (-2011, "Unknown order sent."): errors.UnknownOrder,
    (-2010, "Duplicate order sent."): errors.DuplicateOrder,
    (-2010, "Market is closed."): errors.OrderRejected,
    (-2010, "Account has insufficient balance for requested action."): (errors.InsufficientBalance),
    (-2010, "Order would immediately match and take."): errors.OrderRejected,
    (-1013, "Filter failure: PRICE_FILTER"): errors.FilterViolation,
    (-1013, "Filter failure: PERCENT_PRICE"): errors.FilterViolation,
    (-1013, "Filter failure: LOT_SIZE"): errors.FilterViolation,
    (-1013, "Filter failure: MIN_NOTIONAL"): errors.FilterViolation,
    (-1013, "Filter failure: NOTIONAL"): errors.FilterViolation,
    (-1013, "Filter failure: MARKET_LOT_SIZE"): errors.FilterViolation,
    (-1121, "Invalid symbol."): errors.InvalidRequest,
    (-2013, "Order does not exist."): errors.UnknownOrder,
    (-1022, "Signature for this request is not valid."): errors.AuthenticationFailed,
}


def test_error_catalog_bodies_map_to_the_narrowest_class(binance_data: Path) -> None:
    catalog = json.loads((binance_data / "docs" / "errors.catalog.json").read_text())
    bodies = catalog["example_bodies"]
    assert len(bodies) == len(CATALOG_EXPECTED) == 19
    statuses = Counter()
    for entry in bodies:
        body, status = entry["body"], entry["http_status"]
        error = rest.error_from_response(
            json.dumps(body).encode(), http_status=status, retry_after=7.0, route="POST /x"
        )
        assert type(error) is CATALOG_EXPECTED[body["code"], body["msg"]], body
        assert (error.code, error.msg, error.http_status) == (body["code"], body["msg"], status)
        if isinstance(error, errors.RateLimited):
            assert error.retry_after == 7.0
        statuses[status] += 1
    assert statuses == Counter({400: 16, 429: 2, 418: 1})


def test_error_catalog_codes_for_api_keys(binance_data: Path) -> None:
    catalog = json.loads((binance_data / "docs" / "errors.catalog.json").read_text())
    messages = {entry["code"]: entry["messages"][0] for entry in catalog["error_codes"]}
    for code in (-2014, -2015, -1022):
        body = json.dumps({"code": code, "msg": messages[code]})
        assert type(rest.error_from_response(body, http_status=401)) is errors.AuthenticationFailed
    body = json.dumps({"code": -1021, "msg": messages[-1021]})
    assert type(rest.error_from_response(body, http_status=400)) is errors.TimestampOutsideWindow


def test_recorded_error_responses(binance_data: Path) -> None:
    recorded = json.loads((binance_data / "rest" / "error_responses.json").read_text())
    kinds = [
        type(rest.error_from_response(json.dumps(r["body"]), http_status=400, route=r["route"]))
        for r in recorded
    ]
    assert kinds == [
        errors.AuthenticationFailed,  # -2014 API-key format invalid
        errors.AuthenticationFailed,
        errors.ExchangeError,  # -4088 futures-only code: no narrower class
        errors.InvalidRequest,  # -1121 invalid symbol
    ]


def test_non_json_error_bodies_map_by_status() -> None:
    html = b"<html><body>502 Bad Gateway</body></html>"
    unavailable = rest.error_from_response(html, http_status=502)
    assert type(unavailable) is errors.ExchangeUnavailable
    assert unavailable.code == 0
    assert "502 Bad Gateway" in unavailable.msg
    banned = rest.error_from_response(b"", http_status=418, retry_after=120.0)
    assert type(banned) is errors.IpBanned
    assert banned.retry_after == 120.0
    limited = rest.error_from_response(b"Too Many Requests", http_status=429, retry_after=1.5)
    assert type(limited) is errors.RateLimited
    assert limited.retry_after == 1.5
