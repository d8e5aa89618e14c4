"""Property tests: what the simulator encodes, the client decodes to the same svc event.

Wire structs are built with Binance-style decimal strings, encoded by ``svc.binance``'s own
encoders (bare, combined, WebSocket-API subscription envelope) and decoded by
``FrameDecoder``. The expected event is built here by a small reference model written
independently of the converters: floats are ``float(str)``, Decimals are ``Decimal(str)``,
timestamps are milliseconds times 10**6.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from svc import errors
from svc.binance import rest
from svc.binance import streams as wire
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
)

MS = 1_000_000
PROPERTY = settings(max_examples=40, deadline=None)

# ---------------------------------------------------------------- strategies


@st.composite
def decimal_strings(draw: st.DrawFn, *, signed: bool = False) -> str:
    """Binance's decimal strings: up to 8 places (spot always 8, futures fewer)."""
    places = draw(st.sampled_from([8, 8, 5, 3, 2, 1, 0]))
    units = draw(st.integers(0, 10**15))
    text = f"{units // 10**places}.{units % 10**places:0{places}d}" if places else str(units)
    if signed and units and draw(st.booleans()):  # Binance never writes "-0"
        text = "-" + text
    return text


numbers = decimal_strings()
millis = st.integers(1_000_000_000_000, 4_000_000_000_000)
ids = st.integers(0, 2**53)
ts_inits = st.integers(0, 2**62)
symbols = st.from_regex(r"[A-Z0-9]{2,12}", fullmatch=True)
client_ids = st.from_regex(r"[A-Za-z0-9_-]{1,36}", fullmatch=True)
intervals = st.sampled_from(["1s", "1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M"])
sides = st.sampled_from(["BUY", "SELL"])
order_types = st.sampled_from(["LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS_LIMIT"])
tifs = st.sampled_from(["GTC", "IOC", "FOK"])
statuses = st.sampled_from(["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"])
assets = st.from_regex(r"[A-Z]{2,6}", fullmatch=True)
levels = st.lists(st.tuples(numbers, numbers), max_size=20)


def unset_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(msgspec.UNSET), strategy)


klines = st.builds(
    wire.KlineEvent[str],
    event_time=millis,
    symbol=symbols,
    kline=st.builds(
        wire.KlineBar[str],
        open_time=millis,
        close_time=millis,
        symbol=symbols,
        interval=intervals,
        first_trade_id=ids,
        last_trade_id=ids,
        open=numbers,
        close=numbers,
        high=numbers,
        low=numbers,
        volume=numbers,
        trades=st.integers(0, 2**31),
        closed=st.booleans(),
        quote_volume=numbers,
        taker_buy_volume=numbers,
        taker_buy_quote_volume=numbers,
        ignore=unset_or(st.just("0")),
    ),
)
agg_trades = st.builds(
    wire.AggTradeEvent[str],
    event_time=millis,
    symbol=symbols,
    agg_trade_id=ids,
    price=numbers,
    quantity=numbers,
    first_trade_id=ids,
    last_trade_id=ids,
    trade_time=millis,
    buyer_is_maker=st.booleans(),
    ignore=unset_or(st.booleans()),
)
trades = st.builds(
    wire.TradeEvent[str],
    event_time=millis,
    symbol=symbols,
    trade_id=ids,
    price=numbers,
    quantity=numbers,
    buyer_order_id=unset_or(ids),
    seller_order_id=unset_or(ids),
    trade_time=millis,
    buyer_is_maker=st.booleans(),
    ignore=unset_or(st.booleans()),
)
spot_book_tickers = st.builds(
    wire.BookTickerEvent[str],
    update_id=ids,
    symbol=symbols,
    bid_price=numbers,
    bid_size=numbers,
    ask_price=numbers,
    ask_size=numbers,
)
futures_book_tickers = st.builds(
    wire.BookTickerEvent[str],
    event_type=st.just("bookTicker"),
    update_id=ids,
    event_time=millis,
    transaction_time=millis,
    symbol=symbols,
    bid_price=numbers,
    bid_size=numbers,
    ask_price=numbers,
    ask_size=numbers,
)
depth_updates = st.builds(
    wire.DepthUpdateEvent[str],
    event_time=millis,
    transaction_time=unset_or(millis),
    symbol=symbols,
    first_update_id=ids,
    final_update_id=ids,
    previous_final_update_id=unset_or(ids),
    bids=levels,
    asks=levels,
)
execution_reports = st.builds(
    wire.ExecutionReportEvent,
    event_time=millis,
    symbol=symbols,
    client_order_id=client_ids,
    side=sides,
    order_type=order_types,
    time_in_force=tifs,
    quantity=numbers,
    price=numbers,
    original_client_order_id=st.one_of(st.just(""), client_ids),  # set on cancels
    execution_type=st.sampled_from(["NEW", "TRADE", "CANCELED", "REJECTED", "EXPIRED"]),
    status=statuses,
    reject_reason=st.sampled_from(["NONE", "INSUFFICIENT_BALANCES"]),
    order_id=ids,
    last_quantity=numbers,
    filled_quantity=numbers,
    last_price=numbers,
    commission=numbers,
    commission_asset=st.one_of(st.none(), assets),
    transaction_time=millis,
    trade_id=st.one_of(st.just(-1), ids),
    is_working=st.booleans(),
    is_maker=st.booleans(),
    created_time=millis,
    cumulative_quote=numbers,
    working_time=unset_or(millis),
)
account_positions = st.builds(
    wire.AccountPositionEvent,
    event_time=millis,
    last_update_time=millis,
    balances=st.lists(
        st.builds(wire.BalanceEntry, asset=assets, free=numbers, locked=numbers), max_size=6
    ),
)
order_trade_updates = st.builds(
    wire.OrderTradeUpdateEvent,
    event_time=millis,
    transaction_time=millis,
    order=st.builds(
        wire.FuturesOrder,
        symbol=symbols,
        client_order_id=client_ids,
        side=sides,
        order_type=order_types,
        time_in_force=tifs,
        quantity=numbers,
        price=numbers,
        execution_type=st.sampled_from(["NEW", "TRADE", "CANCELED"]),
        status=statuses,
        order_id=ids,
        last_quantity=numbers,
        filled_quantity=numbers,
        last_price=numbers,
        commission_asset=st.one_of(st.none(), assets),
        commission=numbers,
        trade_id=ids,
        is_maker=st.booleans(),
        reduce_only=st.booleans(),
        position_side=st.sampled_from(["BOTH", "LONG", "SHORT"]),
    ),
)
account_updates = st.builds(
    wire.AccountUpdateEvent,
    event_time=millis,
    transaction_time=millis,
    account=st.builds(
        wire.FuturesAccount,
        reason=st.sampled_from(["ORDER", "FUNDING_FEE", "DEPOSIT"]),
        balances=st.lists(
            st.builds(
                wire.FuturesBalance,
                asset=assets,
                wallet_balance=numbers,
                cross_wallet_balance=numbers,
                balance_change=unset_or(decimal_strings(signed=True)),
            ),
            max_size=4,
        ),
        positions=st.lists(
            st.builds(
                wire.FuturesPosition,
                symbol=symbols,
                amount=decimal_strings(signed=True),
                entry_price=numbers,
                position_side=st.sampled_from(["BOTH", "LONG", "SHORT"]),
            ),
            max_size=4,
        ),
    ),
)

# ---------------------------------------------------------------- the reference model


def expected_event(event: wire.WireEvent, ts_init: int) -> Event:
    """What ``FrameDecoder`` must produce for ``event``, written without the converters."""
    match event:
        case wire.KlineEvent():
            k = event.kline
            return Candle(
                symbol=event.symbol,
                interval=k.interval,
                open_time=k.open_time * MS,
                close_time=k.close_time * MS,
                open=float(k.open),
                high=float(k.high),
                low=float(k.low),
                close=float(k.close),
                volume=float(k.volume),
                quote_volume=float(k.quote_volume),
                trades=k.trades,
                closed=k.closed,
                ts_event=event.event_time * MS,
                ts_init=ts_init,
            )
        case wire.AggTradeEvent() | wire.TradeEvent():
            aggregated = isinstance(event, wire.AggTradeEvent)
            trade_id = event.agg_trade_id if aggregated else event.trade_id  # type: ignore[union-attr]
            return Trade(
                event.symbol,
                trade_id,
                float(event.price),
                float(event.quantity),
                event.buyer_is_maker,
                aggregated,
                event.event_time * MS,
                ts_init,
            )
        case wire.BookTickerEvent():
            venue = event.event_time
            return Quote(
                event.symbol,
                event.update_id,
                float(event.bid_price),
                float(event.bid_size),
                float(event.ask_price),
                float(event.ask_size),
                ts_init if isinstance(venue, msgspec.UnsetType) else venue * MS,
                ts_init,
            )
        case wire.DepthUpdateEvent():
            return BookDelta(
                event.symbol,
                event.first_update_id,
                event.final_update_id,
                tuple((float(p), float(q)) for p, q in event.bids),
                tuple((float(p), float(q)) for p, q in event.asks),
                event.event_time * MS,
                ts_init,
            )
        case wire.ExecutionReportEvent():
            return OrderUpdate(
                symbol=event.symbol,
                # A cancel's own request id is `c`; the order's id is `C`.
                client_order_id=event.original_client_order_id or event.client_order_id,
                order_id=event.order_id,
                side=event.side,
                order_type=event.order_type,
                time_in_force=event.time_in_force,
                quantity=Decimal(event.quantity),
                price=Decimal(event.price),
                execution_type=event.execution_type,
                status=event.status,
                reject_reason=event.reject_reason,
                last_quantity=Decimal(event.last_quantity),
                last_price=Decimal(event.last_price),
                filled_quantity=Decimal(event.filled_quantity),
                commission=Decimal(event.commission),
                commission_asset=event.commission_asset or "",
                trade_id=event.trade_id,
                is_maker=event.is_maker,
                ts_event=event.event_time * MS,
                ts_init=ts_init,
            )
        case wire.OrderTradeUpdateEvent():
            o = event.order
            return OrderUpdate(
                symbol=o.symbol,
                client_order_id=o.client_order_id,
                order_id=o.order_id,
                side=o.side,
                order_type=o.order_type,
                time_in_force=o.time_in_force,
                quantity=Decimal(o.quantity),
                price=Decimal(o.price),
                execution_type=o.execution_type,
                status=o.status,
                reject_reason="NONE",
                last_quantity=Decimal(o.last_quantity),
                last_price=Decimal(o.last_price),
                filled_quantity=Decimal(o.filled_quantity),
                commission=Decimal(o.commission),
                commission_asset=o.commission_asset or "",
                trade_id=o.trade_id,
                is_maker=o.is_maker,
                ts_event=event.event_time * MS,
                ts_init=ts_init,
            )
        case wire.AccountPositionEvent():
            return AccountUpdate(
                tuple(Balance(b.asset, Decimal(b.free), Decimal(b.locked)) for b in event.balances),
                (),
                "",
                event.event_time * MS,
                ts_init,
            )
        case wire.AccountUpdateEvent():
            a = event.account
            return AccountUpdate(
                tuple(Balance(b.asset, Decimal(b.wallet_balance), Decimal(0)) for b in a.balances),
                tuple(
                    Position(p.symbol, Decimal(p.amount), Decimal(p.entry_price), p.position_side)
                    for p in a.positions
                ),
                a.reason,
                event.event_time * MS,
                ts_init,
            )
    raise AssertionError(f"no reference for {type(event).__name__}")


def assert_exact(decoded: Event, expected: Event) -> None:
    """Equal, and Decimals keep their exact string (``1.10`` stays ``1.10``)."""
    assert decoded == expected
    assert repr(decoded) == repr(expected)


def round_trip_market(stream: str, event: wire.WireEvent, ts_init: int) -> None:
    expected = expected_event(event, ts_init)
    bare = wire.encode_event(event)
    assert_exact(wire.FrameDecoder(stream=stream).decode(bare, ts_init), expected)
    frame = wire.encode_combined(stream, event)
    decoder = wire.FrameDecoder()
    assert_exact(decoder.decode(frame, ts_init), expected)
    assert_exact(decoder.decode(frame, ts_init), expected)  # second time: cached route
    # The same frame with `stream` written last takes the two-pass route.
    reordered = b'{"data":%s,"stream":%s}' % (bare, json.dumps(stream).encode())
    assert_exact(wire.FrameDecoder().decode(reordered, ts_init), expected)


def round_trip_user(event: wire.WireEvent, subscription_id: int, ts_init: int) -> None:
    expected = expected_event(event, ts_init)
    listen_key = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"
    decoder = wire.FrameDecoder(stream=listen_key)
    assert_exact(decoder.decode(wire.encode_event(event), ts_init), expected)
    assert_exact(wire.FrameDecoder().decode(wire.encode_event(event), ts_init), expected)
    assert_exact(decoder.decode(wire.encode_combined(listen_key, event), ts_init), expected)
    envelope = wire.encode_subscription_event(subscription_id, event)
    assert json.loads(envelope)["subscriptionId"] == subscription_id
    assert_exact(decoder.decode(envelope, ts_init), expected)


# ---------------------------------------------------------------- market data


@PROPERTY
@given(klines, ts_inits)
def test_kline_round_trip(event: wire.KlineEvent[str], ts_init: int) -> None:
    stream = f"{event.symbol.lower()}@kline_{event.kline.interval}"
    round_trip_market(stream, event, ts_init)


@PROPERTY
@given(agg_trades, ts_inits)
def test_agg_trade_round_trip(event: wire.AggTradeEvent[str], ts_init: int) -> None:
    round_trip_market(f"{event.symbol.lower()}@aggTrade", event, ts_init)


@PROPERTY
@given(trades, ts_inits)
def test_trade_round_trip(event: wire.TradeEvent[str], ts_init: int) -> None:
    round_trip_market(f"{event.symbol.lower()}@trade", event, ts_init)


@PROPERTY
@given(st.one_of(spot_book_tickers, futures_book_tickers), ts_inits)
def test_book_ticker_round_trip(event: wire.BookTickerEvent[str], ts_init: int) -> None:
    encoded = json.loads(wire.encode_event(event))
    assert ("e" in encoded) is (event.event_type == "bookTicker")
    round_trip_market(f"{event.symbol.lower()}@bookTicker", event, ts_init)


@PROPERTY
@given(depth_updates, st.sampled_from(["@depth", "@depth@100ms"]), ts_inits)
def test_depth_update_round_trip(
    event: wire.DepthUpdateEvent[str], suffix: str, ts_init: int
) -> None:
    round_trip_market(event.symbol.lower() + suffix, event, ts_init)


# ---------------------------------------------------------------- user data


@PROPERTY
@given(
    st.one_of(execution_reports, account_positions, order_trade_updates, account_updates),
    st.integers(0, 2**31),
    ts_inits,
)
def test_user_data_round_trip(event: wire.WireEvent, subscription_id: int, ts_init: int) -> None:
    round_trip_user(event, subscription_id, ts_init)


# ---------------------------------------------------------------- REST

fills = st.lists(
    st.builds(
        rest.OrderFill,
        price=numbers,
        qty=numbers,
        commission=numbers,
        commission_asset=assets,
        trade_id=ids,
    ),
    min_size=1,
    max_size=5,
)
# The keys of each newOrderRespType, as in the docs examples (rest-api.md lines 2205-2292).
ACK_FIELDS = {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
RESULT_FIELDS = ACK_FIELDS | {
    "price",
    "origQty",
    "executedQty",
    "origQuoteOrderQty",
    "cummulativeQuoteQty",
    "status",
    "timeInForce",
    "type",
    "side",
    "workingTime",
    "selfTradePreventionMode",
}
FIELDS_BY_SHAPE = {"ACK": ACK_FIELDS, "RESULT": RESULT_FIELDS, "FULL": RESULT_FIELDS | {"fills"}}


@st.composite
def order_responses(draw: st.DrawFn) -> tuple[str, rest.OrderResponse]:
    shape = draw(st.sampled_from(["ACK", "RESULT", "FULL"]))
    ack: dict[str, Any] = {
        "symbol": draw(symbols),
        "order_id": draw(ids),
        "client_order_id": draw(client_ids),
        "transact_time": draw(millis),
    }
    if shape == "ACK":
        return shape, rest.OrderResponse(**ack)
    result = rest.OrderResponse(
        **ack,
        price=draw(numbers),
        orig_qty=draw(numbers),
        executed_qty=draw(numbers),
        orig_quote_order_qty=draw(numbers),
        cummulative_quote_qty=draw(numbers),
        status=draw(statuses),
        time_in_force=draw(tifs),
        type=draw(order_types),
        side=draw(sides),
        working_time=draw(millis),
        self_trade_prevention_mode="NONE",
    )
    if shape == "RESULT":
        return shape, result
    return shape, msgspec.structs.replace(result, fills=draw(fills))


@PROPERTY
@given(order_responses())
def test_order_response_round_trip(shaped: tuple[str, rest.OrderResponse]) -> None:
    shape, response = shaped
    encoded = rest.encode_payload(response)
    assert set(json.loads(encoded)) == FIELDS_BY_SHAPE[shape]
    assert rest.decode_order_response(encoded) == response


cancels = st.builds(
    rest.CancelResponse,
    symbol=symbols,
    orig_client_order_id=client_ids,
    order_id=ids,
    client_order_id=client_ids,
    transact_time=millis,
    price=numbers,
    orig_qty=numbers,
    executed_qty=numbers,
    cummulative_quote_qty=numbers,
    status=st.just("CANCELED"),
    time_in_force=tifs,
    type=order_types,
    side=sides,
)
order_states = st.builds(
    rest.OrderState,
    symbol=symbols,
    order_id=ids,
    client_order_id=client_ids,
    price=numbers,
    orig_qty=numbers,
    executed_qty=numbers,
    cummulative_quote_qty=numbers,
    status=statuses,
    time_in_force=tifs,
    type=order_types,
    side=sides,
    time=millis,
    update_time=millis,
    is_working=st.booleans(),
    working_time=unset_or(millis),
)


@PROPERTY
@given(cancels, st.lists(order_states, max_size=5))
def test_cancel_and_order_state_round_trip(
    cancel: rest.CancelResponse, states: list[rest.OrderState]
) -> None:
    assert rest.decode_cancel_response(rest.encode_payload(cancel)) == cancel
    assert rest.decode_open_orders(rest.encode_payload(states)) == states
    for state in states:
        assert rest.decode_order_state(rest.encode_payload(state)) == state


kline_rows = st.builds(
    rest.KlineRow,
    open_time=millis,
    open=numbers,
    high=numbers,
    low=numbers,
    close=numbers,
    volume=numbers,
    close_time=millis,
    quote_volume=numbers,
    trades=st.integers(0, 2**31),
    taker_buy_volume=numbers,
    taker_buy_quote_volume=numbers,
)


@PROPERTY
@given(st.lists(kline_rows, max_size=20), millis, ts_inits)
def test_klines_round_trip(rows: list[rest.KlineRow], now_ms: int, ts_init: int) -> None:
    encoded = rest.encode_payload(rows)
    assert all(len(row) == 12 for row in json.loads(encoded))
    decoded = rest.decode_klines(encoded)
    assert decoded == rows
    candles = rest.klines_to_candles(
        decoded, symbol="BTCUSDT", interval="1h", ts_init=ts_init, now_ms=now_ms
    )
    for row, candle in zip(rows, candles, strict=True):
        closed = row.close_time < now_ms
        assert candle == Candle(
            symbol="BTCUSDT",
            interval="1h",
            open_time=row.open_time * MS,
            close_time=row.close_time * MS,
            open=float(row.open),
            high=float(row.high),
            low=float(row.low),
            close=float(row.close),
            volume=float(row.volume),
            quote_volume=float(row.quote_volume),
            trades=row.trades,
            closed=closed,
            ts_event=row.close_time * MS if closed else ts_init,
            ts_init=ts_init,
        )


ERROR_CODES = st.sampled_from(
    [
        (-1021, errors.TimestampOutsideWindow),
        (-1022, errors.AuthenticationFailed),
        (-2014, errors.AuthenticationFailed),
        (-2015, errors.AuthenticationFailed),
        (-1013, errors.FilterViolation),
        (-2011, errors.UnknownOrder),
        (-2013, errors.UnknownOrder),
        (-1121, errors.InvalidRequest),
        (-1100, errors.InvalidRequest),
        (-1199, errors.InvalidRequest),
        (-9999, errors.ExchangeError),
    ]
)


@PROPERTY
@given(ERROR_CODES, st.text(max_size=80))
def test_error_body_round_trip(
    code_and_kind: tuple[int, type[errors.ExchangeError]], msg: str
) -> None:
    code, kind = code_and_kind
    encoded = rest.encode_error(code, msg)
    assert rest.decode_error(encoded) == rest.ErrorBody(code=code, msg=msg)
    error = rest.error_from_response(encoded, http_status=400)
    assert type(error) is kind
    assert (error.code, error.msg, error.http_status) == (code, msg, 400)


@PROPERTY
@given(
    st.sampled_from(
        [
            ("Duplicate order sent.", errors.DuplicateOrder),
            ("Account has insufficient balance for requested action.", errors.InsufficientBalance),
            ("Market is closed.", errors.OrderRejected),
        ]
    ),
    st.sampled_from([400, 429, 418, 503]),
)
def test_order_rejections_and_statuses(
    msg_and_kind: tuple[str, type[errors.ExchangeError]], status: int
) -> None:
    msg, kind = msg_and_kind
    error = rest.error_from_response(rest.encode_error(-2010, msg), http_status=status)
    # The HTTP status outranks the code: 418 bans, 429 limits, 5xx is an outage.
    expected = {
        400: kind,
        429: errors.RateLimited,
        418: errors.IpBanned,
        503: errors.ExchangeUnavailable,
    }[status]
    assert type(error) is expected
