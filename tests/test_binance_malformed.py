"""Malformed frames and bodies raise ``DecodeError`` naming the stream and the JSON path.

Market-data decoding is lax on purpose (msgspec ``strict=False``: ``"o": 12`` is accepted as
12.0), so the cases here are the ones that must still fail: non-numeric strings, nulls,
wrong containers, missing fields, truncation. Well-formed frames of types svc does not
handle are ``UnknownEvent``, never an exception.

The last section holds regressions: bugs found by these tests and fixed in ``svc.binance``
(non-numeric decimals in user data, garbage arrays, invalid UTF-8, unnamed envelope streams,
NaN or negative filter values).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from svc.binance import rest
from svc.binance.streams import FrameDecoder
from svc.errors import DecodeError, SvcError
from svc.model import UnknownEvent
from tests.recorded import CAPTURED_KLINE

TS_INIT = 1_700_000_000_000_000_000

KLINE_STREAM = "btcusdt@kline_1m"
KLINE = CAPTURED_KLINE
AGG_TRADE = {
    "e": "aggTrade",
    "E": 1592584651517,
    "s": "BTCUSDT",
    "a": 315753210,
    "p": "9319.00000000",
    "q": "0.01864900",
    "f": 343675554,
    "l": 343675554,
    "T": 1592584651516,
    "m": True,
    "M": True,
}
DEPTH = {
    "e": "depthUpdate",
    "E": 1672515782136,
    "s": "BNBBTC",
    "U": 157,
    "u": 160,
    "b": [["0.0024", "10"], ["0.0023", "5"]],
    "a": [["0.0026", "100"]],
}
SPOT_BOOK_TICKER = {
    "u": 400900217,
    "s": "BNBUSDT",
    "b": "25.35190000",
    "B": "31.21000000",
    "a": "25.36520000",
    "A": "40.66000000",
}
EXECUTION_REPORT = {
    "e": "executionReport",
    "E": 1616627567900,
    "s": "BNBBTC",
    "c": "c4wyKsIhoAaittTYlIVLqk",
    "S": "BUY",
    "o": "LIMIT",
    "f": "GTC",
    "q": "0.00028400",
    "p": "52789.10000000",
    "P": "0.00000000",
    "F": "0.00000000",
    "g": -1,
    "C": "",
    "x": "NEW",
    "X": "NEW",
    "r": "NONE",
    "i": 5340845958,
    "l": "0.00000000",
    "z": "0.00000000",
    "L": "0.00000000",
    "n": "0",
    "N": "BTC",
    "T": 1616627567900,
    "t": -1,
    "w": True,
    "m": False,
    "O": 1616627567900,
    "Z": "0.00000000",
    "Y": "0.00000000",
    "Q": "0.00000000",
}
USER_STREAM = "userDataListenKey"


def combined(stream: str, data: Any) -> str:
    """A combined-stream frame written compactly, stream first, as Binance writes it."""
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":"))


def with_field(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``payload`` with ``path`` (``k.o``) set to ``value``."""
    copy = json.loads(json.dumps(payload))
    *parents, last = path.split(".")
    target = copy
    for key in parents:
        target = target[key]
    target[last] = value
    return copy


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


def decode_error(raw: str | bytes, *, stream: str = "") -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        FrameDecoder(stream=stream).decode(raw, TS_INIT)
    return caught.value


# ---------------------------------------------------------------- market data


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("k.o", "abc", "$.data.k.o"),
        ("k.o", "", "$.data.k.o"),
        ("k.o", None, "$.data.k.o"),
        ("k.o", True, "$.data.k.o"),
        ("k.o", [], "$.data.k.o"),
        ("k.h", {"v": 1}, "$.data.k.h"),
        ("k.x", "no", "$.data.k.x"),
        ("k.t", "yesterday", "$.data.k.t"),
        ("k.n", 1.5, "$.data.k.n"),
        ("k", None, "$.data.k"),
        ("k", [], "$.data.k"),
        ("E", None, "$.data.E"),
        ("E", -1, "$.data.E"),
        ("E", 9_223_372_036_855, "$.data.E"),  # its nanoseconds would not fit int64
        ("s", 5, "$.data.s"),
        ("e", "trade", "$.data.e"),  # a trade on a kline stream
    ],
)
def test_combined_kline_with_a_bad_field(path: str, value: Any, field: str) -> None:
    error = decode_error(combined(KLINE_STREAM, with_field(KLINE, path, value)))
    assert (error.stream, error.field) == (KLINE_STREAM, field)
    assert isinstance(error, SvcError)
    assert KLINE_STREAM in str(error)
    assert field in str(error)


def test_lax_market_data_accepts_json_numbers() -> None:
    """msgspec strict=False: a number where Binance writes a decimal string is fine."""
    candle = FrameDecoder().decode(combined(KLINE_STREAM, with_field(KLINE, "k.o", 12)), TS_INIT)
    assert getattr(candle, "open", None) == 12.0


@pytest.mark.parametrize("missing", ["k", "E", "s"])
def test_combined_kline_missing_a_field(missing: str) -> None:
    error = decode_error(combined(KLINE_STREAM, without(KLINE, missing)))
    assert error.stream == KLINE_STREAM
    assert error.field in ("$.data", f"$.data.{missing}")
    assert f"`{missing}`" in error.reason


def test_kline_bar_missing_a_field() -> None:
    bar = without(KLINE["k"], "c")
    error = decode_error(combined(KLINE_STREAM, {**KLINE, "k": bar}))
    assert (error.stream, error.field) == (KLINE_STREAM, "$.data.k")


@pytest.mark.parametrize(
    "frame",
    [
        '{"stream":"btcusdt@kline_1m"}',
        '{"stream":"btcusdt@kline_1m","data":null}',
        '{"stream":"btcusdt@kline_1m","data":[1,2]}',
        '{"stream":"btcusdt@kline_1m","data":"kline"}',
    ],
)
def test_combined_frame_without_an_object_payload(frame: str) -> None:
    error = decode_error(frame)
    assert error.stream == KLINE_STREAM
    assert error.field in ("$", "$.data")


def test_combined_frame_of_an_undecoded_stream_without_data() -> None:
    error = decode_error('{"stream":"btcusdt@avgPrice"}')
    assert (error.stream, error.field) == ("btcusdt@avgPrice", "$.data")


def test_combined_frame_with_stream_written_last() -> None:
    """The slow two-pass route reports the same stream and path as the fast one."""
    bad = with_field(KLINE, "k.o", "abc")
    frame = f'{{"data":{json.dumps(bad)},"stream":"{KLINE_STREAM}"}}'
    error = decode_error(frame)
    assert (error.stream, error.field) == (KLINE_STREAM, "$.data.k.o")


@pytest.mark.parametrize(
    ("payload", "stream", "field"),
    [
        (with_field(AGG_TRADE, "p", "abc"), "btcusdt@aggTrade", "$.p"),
        (with_field(AGG_TRADE, "m", "yes"), "btcusdt@aggTrade", "$.m"),
        (with_field(AGG_TRADE, "a", None), "btcusdt@aggTrade", "$.a"),
        (with_field(DEPTH, "b", [["0.0024"]]), "bnbbtc@depth", "$.b[0]"),
        (with_field(DEPTH, "b", [["0.0024", "10"], ["0.0023", "x"]]), "bnbbtc@depth", "$.b[1][1]"),
        (with_field(DEPTH, "a", {"0.0026": "100"}), "bnbbtc@depth", "$.a"),
        (with_field(SPOT_BOOK_TICKER, "b", "bid"), "bnbusdt@bookTicker", "$.b"),
        (without(SPOT_BOOK_TICKER, "A"), "bnbusdt@bookTicker", "$"),
    ],
)
def test_bare_market_data_with_a_bad_field(payload: Any, stream: str, field: str) -> None:
    error = decode_error(json.dumps(payload), stream=stream)
    assert (error.stream, error.field) == (stream, field)
    # The same payload in a combined frame: the path gains `.data`.
    error = decode_error(combined(stream, payload))
    assert (error.stream, error.field) == (stream, "$.data" + field[1:])


@pytest.mark.parametrize(("raw", "stream"), [("not json", "?"), ("{", "?"), ("", "?")])
def test_invalid_json_without_a_stream(raw: str, stream: str) -> None:
    error = decode_error(raw)
    assert (error.stream, error.field) == (stream, "$")


@pytest.mark.parametrize("raw", ["not json", "{'e': 'kline'}", '{"e":"kline",}', "42", "null"])
def test_invalid_json_names_the_connection_stream(raw: str) -> None:
    error = decode_error(raw, stream="btcusdt@trade")
    assert (error.stream, error.field) == ("btcusdt@trade", "$")


def test_every_truncation_of_a_combined_frame() -> None:
    frame = combined(KLINE_STREAM, KLINE)
    head = len('{"stream":"btcusdt@kline_1m"')
    for end in range(head, len(frame)):
        error = decode_error(frame[:end])
        assert (error.stream, error.field) == (KLINE_STREAM, "$"), frame[:end]


def test_every_truncation_of_a_bare_frame() -> None:
    frame = json.dumps(AGG_TRADE)
    for end in range(1, len(frame)):
        error = decode_error(frame[:end], stream="btcusdt@aggTrade")
        assert (error.stream, error.field) == ("btcusdt@aggTrade", "$"), frame[:end]


def test_event_type_that_is_not_a_string() -> None:
    error = decode_error('{"e":5,"E":1}')
    assert (error.stream, error.field) == ("?", "$.e")
    error = decode_error('{"stream":"btcusdt@foo","data":{"e":5,"E":1}}')
    assert (error.stream, error.field) == ("btcusdt@foo", "$.data.e")


def test_frame_with_no_event_type_and_no_stream() -> None:
    error = decode_error('{"E":1,"s":"BTCUSDT"}')
    assert (error.stream, error.field) == ("?", "$.e")


@pytest.mark.parametrize(
    ("raw", "stream", "expected"),
    [
        ('{"e":"somethingNew","E":1}', "", UnknownEvent("?", "somethingNew", TS_INIT)),
        ('{"e":"somethingNew","E":1}', "x@new", UnknownEvent("x@new", "somethingNew", TS_INIT)),
        (
            '{"stream":"btcusdt@new","data":{"e":"somethingNew"}}',
            "",
            UnknownEvent("btcusdt@new", "somethingNew", TS_INIT),
        ),
        (
            '{"subscriptionId":1,"event":{"e":"somethingNew","E":1}}',
            USER_STREAM,
            UnknownEvent(USER_STREAM, "somethingNew", TS_INIT),
        ),
        ('{"result":null,"id":7}', "", UnknownEvent("?", "result", TS_INIT)),
        (
            '{"error":{"code":2,"msg":"Invalid request"},"id":7}',
            "",
            UnknownEvent("?", "error", TS_INIT),
        ),
    ],
)
def test_unknown_event_types_are_not_errors(raw: str, stream: str, expected: UnknownEvent) -> None:
    assert FrameDecoder(stream=stream).decode(raw, TS_INIT) == expected


# ---------------------------------------------------------------- user data


@pytest.mark.parametrize(
    ("key", "value"),
    # Decimal fields also accept JSON numbers (msgspec reads both exactly); lists never pass.
    [("q", [1.5]), ("q", None), ("p", "abc"), ("i", "x"), ("E", "soon"), ("w", "yes"), ("c", 7)],
)
def test_execution_report_with_a_wrong_type(key: str, value: Any) -> None:
    """User data is strict: quantities must be strings, ids must be integers."""
    payload = with_field(EXECUTION_REPORT, key, value)
    error = decode_error(json.dumps(payload), stream=USER_STREAM)
    assert (error.stream, error.field) == (USER_STREAM, f"$.{key}")
    error = decode_error(combined(USER_STREAM, payload))
    assert (error.stream, error.field) == (USER_STREAM, f"$.data.{key}")
    envelope = json.dumps({"subscriptionId": 3, "event": payload})
    error = decode_error(envelope, stream=USER_STREAM)
    assert (error.stream, error.field) == (USER_STREAM, f"$.event.{key}")


@pytest.mark.parametrize("key", ["q", "p", "s", "c", "S"])
def test_execution_report_missing_a_required_field(key: str) -> None:
    error = decode_error(json.dumps(without(EXECUTION_REPORT, key)), stream=USER_STREAM)
    assert (error.stream, error.field) == (USER_STREAM, "$")
    assert f"`{key}`" in error.reason


def test_account_updates_with_wrong_containers() -> None:
    raw = json.dumps({"e": "outboundAccountPosition", "E": 1, "u": 1, "B": {}})
    assert decode_error(raw, stream=USER_STREAM).field == "$.B"
    raw = json.dumps(
        {"e": "ACCOUNT_UPDATE", "E": 1, "T": 1, "a": {"P": [{"s": "X", "pa": [1], "ep": "0"}]}}
    )
    assert decode_error(raw, stream=USER_STREAM).field == "$.a.P[0].pa"


# ---------------------------------------------------------------- REST


def exchange_info(binance_data: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        (binance_data / "rest" / "api_v3_exchangeInfo.json").read_text()
    )
    return result


BTCUSDT_INDEX = 11  # position of BTCUSDT in the captured exchangeInfo


@pytest.mark.parametrize(
    ("filter_index", "key", "value"),
    [
        (0, "tickSize", "abc"),
        (0, "tickSize", None),
        (0, "minPrice", [1]),
        (1, "stepSize", "0.0.1"),
        (1, "maxQty", True),
        (6, "minNotional", "five"),
    ],
)
def test_exchange_info_filter_with_a_garbage_decimal(
    binance_data: Path, filter_index: int, key: str, value: Any
) -> None:
    info = exchange_info(binance_data)
    symbol = info["symbols"][BTCUSDT_INDEX]
    assert symbol["symbol"] == "BTCUSDT"
    symbol["filters"][filter_index][key] = value
    with pytest.raises(DecodeError) as caught:
        rest.exchange_rules(json.dumps(info))
    path = f"$.symbols[{BTCUSDT_INDEX}].filters[{filter_index}].{key}"
    assert (caught.value.stream, caught.value.field) == ("/api/v3/exchangeInfo", path)


def test_exchange_info_structural_errors(binance_data: Path) -> None:
    info = exchange_info(binance_data)
    del info["symbols"][3]["filters"][2]["filterType"]
    with pytest.raises(DecodeError) as caught:
        rest.exchange_rules(json.dumps(info))
    assert caught.value.field == "$.symbols[3].filters[2].filterType"

    info = exchange_info(binance_data)
    del info["symbols"][4]["baseAsset"]
    with pytest.raises(DecodeError) as caught:
        rest.exchange_rules(json.dumps(info))
    assert caught.value.field == "$.symbols[4]"

    with pytest.raises(DecodeError) as caught:
        rest.exchange_rules(json.dumps(exchange_info(binance_data))[:5000])
    assert (caught.value.stream, caught.value.field) == ("/api/v3/exchangeInfo", "$")


KLINE_ROW = [
    1588280400000,
    "8819.15000000",
    "8849.80000000",
    "8734.50000000",
    "8761.92000000",
    "3089.56054500",
    1588283999999,
    "27174569.16633405",
    34467,
    "1553.36149800",
    "13666586.86496907",
    "0",
]


@pytest.mark.parametrize(
    ("rows", "field"),
    [
        ([KLINE_ROW[:5]], "$[0]"),
        ([KLINE_ROW, [*KLINE_ROW[:1], 8819.15, *KLINE_ROW[2:]]], "$[1][1]"),
        ([[*KLINE_ROW[:8], "34467", *KLINE_ROW[9:]]], "$[0][8]"),
        ([{"openTime": 1}], "$[0]"),
        ({"code": -1121}, "$"),
    ],
)
def test_klines_with_a_bad_row(rows: Any, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        rest.decode_klines(json.dumps(rows))
    assert (caught.value.stream, caught.value.field) == ("/api/v3/klines", field)


@pytest.mark.parametrize(
    ("decode", "body", "route", "field"),
    [
        (
            rest.decode_order_response,
            {"symbol": "X", "orderId": "1", "clientOrderId": "c", "transactTime": 1},
            "POST /api/v3/order",
            "$.orderId",
        ),
        (
            rest.decode_order_response,
            {
                "symbol": "X",
                "orderId": 1,
                "clientOrderId": "c",
                "transactTime": 1,
                "fills": [{"price": "1", "qty": "1", "commission": "0", "commissionAsset": "B"}],
            },
            "POST /api/v3/order",
            "$.fills[0]",
        ),
        (rest.decode_cancel_response, {"symbol": "X"}, "DELETE /api/v3/order", "$"),
        (rest.decode_open_orders, [{"symbol": "X"}], "GET /api/v3/openOrders", "$[0]"),
        (
            rest.decode_account,
            {"balances": [{"asset": "A", "free": 1, "locked": "0"}]},
            "GET /api/v3/account",
            "$.balances[0].free",
        ),
    ],
)
def test_rest_bodies_with_a_bad_field(decode: Any, body: Any, route: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(json.dumps(body))
    assert (caught.value.stream, caught.value.field) == (route, field)


def test_klines_to_candles_non_numeric_price() -> None:
    """``decode_klines`` keeps prices as strings; the conversion names the bad cell."""
    row = [*KLINE_ROW[:2], "n/a", *KLINE_ROW[3:]]
    rows = rest.decode_klines(json.dumps([KLINE_ROW, row]))
    with pytest.raises(DecodeError) as caught:
        rest.klines_to_candles(rows, symbol="BTCUSDT", interval="1h", ts_init=TS_INIT)
    assert (caught.value.stream, caught.value.field) == ("/api/v3/klines", "$[1][2]")


def test_error_body_decoding_names_the_route() -> None:
    with pytest.raises(DecodeError) as caught:
        rest.decode_error('{"code":"-1121","msg":"Invalid symbol."}', route="GET /api/v3/depth")
    assert (caught.value.stream, caught.value.field) == ("GET /api/v3/depth", "$.code")


# ---------------------------------------------------------------- REGRESSIONS


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (with_field(EXECUTION_REPORT, "q", "abc"), "$.q"),
        (with_field(EXECUTION_REPORT, "p", ""), "$.p"),
        (with_field(EXECUTION_REPORT, "n", "fee"), "$.n"),
        (
            {"e": "outboundAccountPosition", "E": 1, "u": 1, "B": [{"a": "X", "f": "?", "l": "0"}]},
            "$.B[0].f",
        ),
        (
            {
                "e": "ACCOUNT_UPDATE",
                "E": 1,
                "T": 1,
                "a": {"P": [{"s": "X", "pa": "1e", "ep": "0"}]},
            },
            "$.a.P[0].pa",
        ),
        (
            {
                "e": "ORDER_TRADE_UPDATE",
                "E": 1,
                "T": 1,
                "o": {"s": "X", "c": "c", "S": "BUY", "o": "LIMIT", "f": "GTC", "q": "x", "p": "1"},
            },
            "$.o.q",
        ),
    ],
)
def test_user_data_non_numeric_decimal_string(payload: dict[str, Any], field: str) -> None:
    """BUG: user-data converters call ``Decimal(str)`` after decoding, so a non-numeric string
    escapes as ``decimal.InvalidOperation`` instead of ``DecodeError``."""
    error = decode_error(json.dumps(payload), stream=USER_STREAM)
    assert (error.stream, error.field) == (USER_STREAM, field)


@pytest.mark.parametrize("raw", ["[garbage", "[1,2", '[{"e":"24hrMiniTicker"'])
def test_malformed_array_frame(raw: str) -> None:
    """BUG: any frame starting with ``[`` is reported as an ``array`` UnknownEvent unparsed."""
    error = decode_error(raw, stream="!miniTicker@arr")
    assert (error.stream, error.field) == ("!miniTicker@arr", "$")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","s":"\xff"}}',
        b'{"e":"aggTrade\xff","E":1}',
        b'{"stream":"btcusdt@foo\xff","data":{}}',
    ],
)
def test_invalid_utf8_frame(raw: bytes) -> None:
    """BUG: msgspec raises ``UnicodeDecodeError`` (not ``msgspec.DecodeError``) on invalid
    UTF-8 inside a string, and it escapes the decoder."""
    error = decode_error(raw)
    assert error.field == "$"


def test_subscription_envelope_without_a_stream_name() -> None:
    """BUG (minor): every other route reports an unnamed connection as ``"?"``; the
    subscription-envelope route passes ``""`` through."""
    error = decode_error('{"subscriptionId":0,"event":{"e":"executionReport"}}')
    assert error.stream == "?"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-0.01", "sNaN"])
def test_exchange_info_non_finite_or_negative_filter(binance_data: Path, value: str) -> None:
    """BUG: ``Decimal("NaN")``, infinities and negative sizes pass as filter values."""
    info = exchange_info(binance_data)
    info["symbols"][BTCUSDT_INDEX]["filters"][0]["tickSize"] = value
    with pytest.raises(DecodeError) as caught:
        rest.exchange_rules(json.dumps(info))
    path = f"$.symbols[{BTCUSDT_INDEX}].filters[0].tickSize"
    assert caught.value.field == path
