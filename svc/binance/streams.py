"""Binance websocket frames: wire structs, the hot-path decoder, and encoders for the simulator.

Wire structs mirror Binance's JSON field for field (readable Python names, Binance's
one-letter keys via ``name=``), keep prices as the exchange's decimal strings, and are
encoded back to the same bytes shape by ``encode_*``. ``FrameDecoder.decode`` turns one
raw frame into one ``svc.model`` event:

* combined-stream frames ``{"stream": "btcusdt@kline_1m", "data": {...}}`` are dispatched
  on the stream name (spot ``bookTicker`` payloads carry no ``e``);
* bare frames (``/ws/<stream>``, user-data streams) are dispatched on their ``e`` field;
* WebSocket-API user-data envelopes ``{"subscriptionId": n, "event": {...}}`` are unwrapped.

A malformed frame raises ``svc.errors.DecodeError`` naming the stream and the JSON path;
a well-formed frame of a type svc does not handle comes back as ``UnknownEvent``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Final, Generic, NamedTuple, TypeVar

import msgspec
from msgspec import UNSET, UnsetType, field

from svc.binance._codec import (
    INVALID_UTF8,
    NESTED_TOO_DEEPLY,
    NS_PER_MS,
    decode_as,
    encode,
    field_of,
    reason_of,
)
from svc.errors import DecodeError
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

# ---------------------------------------------------------------- market-data wire structs

P = TypeVar("P")
"""The number type of price and quantity fields: ``str`` as on the wire (the simulator
encodes exact decimal strings); when decoding, ``MarketNumber`` for market data and
``Decimal`` for user data. msgspec converts in C (``strict=False`` lets it read numbers from
strings) and reports a malformed number with its JSON path."""

MarketNumber = Annotated[float, msgspec.Meta(ge=0.0, le=sys.float_info.max)]
"""A market-data price or quantity: finite and not negative. msgspec's lax mode also reads
the strings "NaN" and "Infinity" as floats; these bounds refuse them, in C (NaN fails every
comparison), with the field's path."""

MAX_EVENT_TIME_MS: Final = (2**63 - 1) // 1_000_000
"""The last millisecond whose nanoseconds fit int64 (in the year 2262)."""
EventTimeMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EVENT_TIME_MS)]
"""An event time ``E`` in ms since the epoch. Bounded so that ``ts_event`` and every latency
computed from it fit int64 nanoseconds; a frame beyond it is malformed at ``$.data.E``."""


@cache
def _wire_names(kind: type) -> tuple[tuple[str, str], ...]:
    return tuple((f.name, f.encode_name) for f in msgspec.structs.fields(kind))


def _finite_decimals(struct: msgspec.Struct) -> None:
    """``__post_init__`` of the user-data structs: lax mode reads "NaN", "sNaN" and "Infinity"
    as Decimals too, and an order's quantities must be numbers. msgspec turns the ValueError
    into a validation error at the struct's path; the reason names the field."""
    for name, wire in _wire_names(type(struct)):
        value = getattr(struct, name)
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValueError(f"`{wire}` is not a finite number")


class KlineBar(msgspec.Struct, Generic[P], kw_only=True):
    """The ``k`` object of a kline event."""

    open_time: int = field(name="t")
    close_time: int = field(name="T")
    symbol: str = field(name="s")
    interval: str = field(name="i")
    first_trade_id: int = field(name="f")
    last_trade_id: int = field(name="L")
    open: P = field(name="o")
    close: P = field(name="c")
    high: P = field(name="h")
    low: P = field(name="l")
    volume: P = field(name="v")
    trades: int = field(name="n")
    closed: bool = field(name="x")
    quote_volume: P = field(name="q")
    taker_buy_volume: P = field(name="V")
    taker_buy_quote_volume: P = field(name="Q")
    ignore: str | UnsetType = field(name="B", default=UNSET)


class KlineEvent(msgspec.Struct, Generic[P], kw_only=True, tag="kline", tag_field="e"):
    event_time: EventTimeMs = field(name="E")
    symbol: str = field(name="s")
    kline: KlineBar[P] = field(name="k")


class AggTradeEvent(msgspec.Struct, Generic[P], kw_only=True, tag="aggTrade", tag_field="e"):
    event_time: EventTimeMs = field(name="E")
    symbol: str = field(name="s")
    agg_trade_id: int = field(name="a")
    price: P = field(name="p")
    quantity: P = field(name="q")
    first_trade_id: int = field(name="f")
    last_trade_id: int = field(name="l")
    trade_time: int = field(name="T")
    buyer_is_maker: bool = field(name="m")
    ignore: bool | UnsetType = field(name="M", default=UNSET)  # spot only


class TradeEvent(msgspec.Struct, Generic[P], kw_only=True, tag="trade", tag_field="e"):
    event_time: EventTimeMs = field(name="E")
    symbol: str = field(name="s")
    trade_id: int = field(name="t")
    price: P = field(name="p")
    quantity: P = field(name="q")
    buyer_order_id: int | UnsetType = field(name="b", default=UNSET)  # dropped by Binance in 2025
    seller_order_id: int | UnsetType = field(name="a", default=UNSET)
    trade_time: int = field(name="T", default=0)
    buyer_is_maker: bool = field(name="m", default=False)
    ignore: bool | UnsetType = field(name="M", default=UNSET)


class BookTickerEvent(msgspec.Struct, Generic[P], kw_only=True):
    """Spot frames are ``{u,s,b,B,a,A}``; USD-M adds ``e``, ``E`` and ``T``."""

    event_type: str | UnsetType = field(name="e", default=UNSET)
    update_id: int = field(name="u")
    event_time: EventTimeMs | UnsetType = field(name="E", default=UNSET)
    transaction_time: int | UnsetType = field(name="T", default=UNSET)
    symbol: str = field(name="s")
    bid_price: P = field(name="b")
    bid_size: P = field(name="B")
    ask_price: P = field(name="a")
    ask_size: P = field(name="A")


class DepthUpdateEvent(msgspec.Struct, Generic[P], kw_only=True, tag="depthUpdate", tag_field="e"):
    event_time: EventTimeMs = field(name="E")
    transaction_time: int | UnsetType = field(name="T", default=UNSET)  # USD-M only
    symbol: str = field(name="s")
    first_update_id: int = field(name="U")
    final_update_id: int = field(name="u")
    previous_final_update_id: int | UnsetType = field(name="pu", default=UNSET)  # USD-M only
    bids: list[tuple[P, P]] = field(name="b")
    asks: list[tuple[P, P]] = field(name="a")


# ---------------------------------------------------------------- user-data wire structs


class ExecutionReportEvent(
    msgspec.Struct, Generic[P], kw_only=True, tag="executionReport", tag_field="e"
):
    event_time: EventTimeMs = field(name="E")
    symbol: str = field(name="s")
    client_order_id: str = field(name="c")
    side: str = field(name="S")
    order_type: str = field(name="o")
    time_in_force: str = field(name="f")
    quantity: P = field(name="q")
    price: P = field(name="p")
    stop_price: P | UnsetType = field(name="P", default=UNSET)
    iceberg_quantity: P | UnsetType = field(name="F", default=UNSET)
    order_list_id: int = field(name="g", default=-1)
    original_client_order_id: str = field(name="C", default="")
    execution_type: str = field(name="x")
    status: str = field(name="X")
    reject_reason: str = field(name="r", default="NONE")
    order_id: int = field(name="i")
    last_quantity: P = field(name="l")
    filled_quantity: P = field(name="z")
    last_price: P = field(name="L")
    commission: P | UnsetType = field(name="n", default=UNSET)
    commission_asset: str | None = field(name="N", default=None)
    transaction_time: int = field(name="T", default=0)
    trade_id: int = field(name="t", default=-1)
    ignore_i: int | UnsetType = field(name="I", default=UNSET)
    is_working: bool = field(name="w", default=False)
    is_maker: bool = field(name="m", default=False)
    ignore_m: bool | UnsetType = field(name="M", default=UNSET)
    created_time: int = field(name="O", default=0)
    cumulative_quote: P | UnsetType = field(name="Z", default=UNSET)
    last_quote: P | UnsetType = field(name="Y", default=UNSET)
    quote_order_quantity: P | UnsetType = field(name="Q", default=UNSET)
    working_time: int | UnsetType = field(name="W", default=UNSET)
    self_trade_prevention: str | UnsetType = field(name="V", default=UNSET)

    def __post_init__(self) -> None:
        _finite_decimals(self)


class BalanceEntry(msgspec.Struct, Generic[P], kw_only=True):
    asset: str = field(name="a")
    free: P = field(name="f")
    locked: P = field(name="l")

    def __post_init__(self) -> None:
        _finite_decimals(self)


class AccountPositionEvent(
    msgspec.Struct, Generic[P], kw_only=True, tag="outboundAccountPosition", tag_field="e"
):
    event_time: EventTimeMs = field(name="E")
    last_update_time: int = field(name="u")
    balances: list[BalanceEntry[P]] = field(name="B")


class FuturesOrder(msgspec.Struct, Generic[P], kw_only=True):
    """The ``o`` object of a USD-M ``ORDER_TRADE_UPDATE``."""

    symbol: str = field(name="s")
    client_order_id: str = field(name="c")
    side: str = field(name="S")
    order_type: str = field(name="o")
    time_in_force: str = field(name="f")
    quantity: P = field(name="q")
    price: P = field(name="p")
    average_price: P | UnsetType = field(name="ap", default=UNSET)
    stop_price: P | UnsetType = field(name="sp", default=UNSET)
    execution_type: str = field(name="x")
    status: str = field(name="X")
    order_id: int = field(name="i")
    last_quantity: P = field(name="l")
    filled_quantity: P = field(name="z")
    last_price: P = field(name="L")
    commission_asset: str | None = field(name="N", default=None)
    commission: P | UnsetType = field(name="n", default=UNSET)
    trade_time: int = field(name="T", default=0)
    trade_id: int = field(name="t", default=0)
    is_maker: bool = field(name="m", default=False)
    reduce_only: bool = field(name="R", default=False)
    position_side: str = field(name="ps", default="BOTH")
    realized_profit: P | UnsetType = field(name="rp", default=UNSET)

    def __post_init__(self) -> None:
        _finite_decimals(self)


class OrderTradeUpdateEvent(
    msgspec.Struct, Generic[P], kw_only=True, tag="ORDER_TRADE_UPDATE", tag_field="e"
):
    event_time: EventTimeMs = field(name="E")
    transaction_time: int = field(name="T")
    order: FuturesOrder[P] = field(name="o")


class FuturesBalance(msgspec.Struct, Generic[P], kw_only=True):
    asset: str = field(name="a")
    wallet_balance: P = field(name="wb")
    cross_wallet_balance: P | UnsetType = field(name="cw", default=UNSET)
    balance_change: P | UnsetType = field(name="bc", default=UNSET)

    def __post_init__(self) -> None:
        _finite_decimals(self)


class FuturesPosition(msgspec.Struct, Generic[P], kw_only=True):
    symbol: str = field(name="s")
    amount: P = field(name="pa")
    entry_price: P = field(name="ep")
    accumulated_realized: P | UnsetType = field(name="cr", default=UNSET)
    unrealized_pnl: P | UnsetType = field(name="up", default=UNSET)
    margin_type: str = field(name="mt", default="cross")
    isolated_wallet: P | UnsetType = field(name="iw", default=UNSET)
    position_side: str = field(name="ps", default="BOTH")

    def __post_init__(self) -> None:
        _finite_decimals(self)


class FuturesAccount(msgspec.Struct, Generic[P], kw_only=True):
    reason: str = field(name="m", default="")
    balances: list[FuturesBalance[P]] = field(name="B", default_factory=list)
    positions: list[FuturesPosition[P]] = field(name="P", default_factory=list)


class AccountUpdateEvent(
    msgspec.Struct, Generic[P], kw_only=True, tag="ACCOUNT_UPDATE", tag_field="e"
):
    event_time: EventTimeMs = field(name="E")
    transaction_time: int = field(name="T")
    account: FuturesAccount[P] = field(name="a")


WireEvent = (
    KlineEvent[str]
    | AggTradeEvent[str]
    | TradeEvent[str]
    | BookTickerEvent[str]
    | DepthUpdateEvent[str]
    | ExecutionReportEvent[str]
    | AccountPositionEvent[str]
    | OrderTradeUpdateEvent[str]
    | AccountUpdateEvent[str]
)

# ---------------------------------------------------------------- wire -> domain converters


def kline_to_candle(event: KlineEvent[float], ts_init: int) -> Candle:
    k = event.kline
    return Candle(
        event.symbol,
        k.interval,
        k.open_time * NS_PER_MS,
        k.close_time * NS_PER_MS,
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        k.quote_volume,
        k.trades,
        k.closed,
        event.event_time * NS_PER_MS,
        ts_init,
    )


def agg_trade_to_trade(event: AggTradeEvent[float], ts_init: int) -> Trade:
    return Trade(
        event.symbol,
        event.agg_trade_id,
        event.price,
        event.quantity,
        event.buyer_is_maker,
        True,  # noqa: FBT003  (aggregated)
        event.event_time * NS_PER_MS,
        ts_init,
    )


def trade_to_trade(event: TradeEvent[float], ts_init: int) -> Trade:
    return Trade(
        event.symbol,
        event.trade_id,
        event.price,
        event.quantity,
        event.buyer_is_maker,
        False,  # noqa: FBT003  (aggregated)
        event.event_time * NS_PER_MS,
        ts_init,
    )


def book_ticker_to_quote(event: BookTickerEvent[float], ts_init: int) -> Quote:
    venue = event.event_time
    return Quote(
        event.symbol,
        event.update_id,
        event.bid_price,
        event.bid_size,
        event.ask_price,
        event.ask_size,
        ts_init if venue is UNSET else venue * NS_PER_MS,
        ts_init,
    )


def depth_to_delta(event: DepthUpdateEvent[float], ts_init: int) -> BookDelta:
    return BookDelta(
        symbol=event.symbol,
        first_update_id=event.first_update_id,
        final_update_id=event.final_update_id,
        bids=tuple(event.bids),
        asks=tuple(event.asks),
        ts_event=event.event_time * NS_PER_MS,
        ts_init=ts_init,
    )


_ZERO = Decimal(0)


def _or_zero(value: Decimal | UnsetType) -> Decimal:
    return _ZERO if value is UNSET else value


def execution_report_to_update(event: ExecutionReportEvent[Decimal], ts_init: int) -> OrderUpdate:
    # A cancel reports the id of the cancel request in `c` and the order's own id in `C`.
    client_id = event.original_client_order_id or event.client_order_id
    return OrderUpdate(
        symbol=event.symbol,
        client_order_id=client_id,
        order_id=event.order_id,
        side=event.side,
        order_type=event.order_type,
        time_in_force=event.time_in_force,
        quantity=event.quantity,
        price=event.price,
        execution_type=event.execution_type,
        status=event.status,
        reject_reason=event.reject_reason,
        last_quantity=event.last_quantity,
        last_price=event.last_price,
        filled_quantity=event.filled_quantity,
        commission=_or_zero(event.commission),
        commission_asset=event.commission_asset or "",
        trade_id=event.trade_id,
        is_maker=event.is_maker,
        ts_event=event.event_time * NS_PER_MS,
        ts_init=ts_init,
    )


def order_trade_update_to_update(
    event: OrderTradeUpdateEvent[Decimal], ts_init: int
) -> OrderUpdate:
    o = event.order
    return OrderUpdate(
        symbol=o.symbol,
        client_order_id=o.client_order_id,
        order_id=o.order_id,
        side=o.side,
        order_type=o.order_type,
        time_in_force=o.time_in_force,
        quantity=o.quantity,
        price=o.price,
        execution_type=o.execution_type,
        status=o.status,
        reject_reason="NONE",
        last_quantity=o.last_quantity,
        last_price=o.last_price,
        filled_quantity=o.filled_quantity,
        commission=_or_zero(o.commission),
        commission_asset=o.commission_asset or "",
        trade_id=o.trade_id,
        is_maker=o.is_maker,
        ts_event=event.event_time * NS_PER_MS,
        ts_init=ts_init,
    )


def account_position_to_update(event: AccountPositionEvent[Decimal], ts_init: int) -> AccountUpdate:
    return AccountUpdate(
        balances=tuple(Balance(b.asset, b.free, b.locked) for b in event.balances),
        positions=(),
        reason="",
        ts_event=event.event_time * NS_PER_MS,
        ts_init=ts_init,
    )


def account_update_to_update(event: AccountUpdateEvent[Decimal], ts_init: int) -> AccountUpdate:
    a = event.account
    return AccountUpdate(
        balances=tuple(Balance(b.asset, b.wallet_balance, _ZERO) for b in a.balances),
        positions=tuple(
            Position(p.symbol, p.amount, p.entry_price, p.position_side) for p in a.positions
        ),
        reason=a.reason,
        ts_event=event.event_time * NS_PER_MS,
        ts_init=ts_init,
    )


# ---------------------------------------------------------------- the decoder

W = TypeVar("W")


class Combined(msgspec.Struct, Generic[W]):
    """A combined-stream frame with a typed payload: decoded in one pass."""

    stream: str
    data: W


class _Route(NamedTuple):
    bare: msgspec.json.Decoder[Any]
    combined: msgspec.json.Decoder[Any]
    convert: Callable[[Any, int], Event]
    guess: bool = False
    """True for the user-data route, which only guesses the type: on a validation error
    the frame takes the slow path, which names unknown types and malformed fields exactly."""


def _route(kind: Any, convert: Callable[[Any, int], Event], *, guess: bool = False) -> _Route:
    # strict=False lets msgspec turn Binance's decimal strings into floats in C.
    return _Route(
        msgspec.json.Decoder(kind, strict=False),
        msgspec.json.Decoder(Combined[kind], strict=False),
        convert,
        guess,
    )


_BY_EVENT_TYPE: dict[str, _Route] = {
    "kline": _route(KlineEvent[MarketNumber], kline_to_candle),
    "aggTrade": _route(AggTradeEvent[MarketNumber], agg_trade_to_trade),
    "trade": _route(TradeEvent[MarketNumber], trade_to_trade),
    "bookTicker": _route(BookTickerEvent[MarketNumber], book_ticker_to_quote),
    "depthUpdate": _route(DepthUpdateEvent[MarketNumber], depth_to_delta),
    "executionReport": _route(ExecutionReportEvent[Decimal], execution_report_to_update),
    "outboundAccountPosition": _route(AccountPositionEvent[Decimal], account_position_to_update),
    "ORDER_TRADE_UPDATE": _route(OrderTradeUpdateEvent[Decimal], order_trade_update_to_update),
    "ACCOUNT_UPDATE": _route(AccountUpdateEvent[Decimal], account_update_to_update),
}

_USER_DATA_CONVERTERS: dict[type, Callable[[Any, int], Event]] = {
    ExecutionReportEvent: execution_report_to_update,
    AccountPositionEvent: account_position_to_update,
    OrderTradeUpdateEvent: order_trade_update_to_update,
    AccountUpdateEvent: account_update_to_update,
}
# User-data streams (listen keys) carry several event types; a tagged union on `e` decodes
# the common ones in one pass.
_USER_DATA = _route(
    ExecutionReportEvent[Decimal]
    | AccountPositionEvent[Decimal]
    | OrderTradeUpdateEvent[Decimal]
    | AccountUpdateEvent[Decimal],
    lambda event, ts_init: _USER_DATA_CONVERTERS[type(event)](event, ts_init),
    guess=True,
)

EVENT_TYPES = frozenset(_BY_EVENT_TYPE)
"""The event types ``FrameDecoder`` turns into svc events; everything else is ``UnknownEvent``."""


def channel_of(stream: str) -> str:
    """The event type a stream name carries: ``btcusdt@kline_1m`` -> ``kline``.

    Returns ``""`` for channels svc has no decoder for, and for user-data streams (listen
    keys), whose frames name their own type in ``e``.
    """
    _, at, rest = stream.partition("@")
    if not at:
        return ""
    name = rest.partition("@")[0]
    if name.startswith("kline_"):
        return "kline"
    if name in ("aggTrade", "trade", "bookTicker"):
        return name
    if name == "depth":
        return "depthUpdate"  # diff depth: `depth` or `depth@100ms`; `depth5/10/20` are snapshots
    return ""


def _route_of(stream: str) -> _Route | None:
    """The route of a combined stream: by channel, or the user-data union for listen keys."""
    channel = channel_of(stream)
    if channel:
        return _BY_EVENT_TYPE[channel]
    return _USER_DATA if "@" not in stream and not stream.startswith("!") else None


def _stream_kind(stream: str) -> str:
    """``btcusdt@depth5@100ms`` -> ``depth5``: the name of a channel svc does not decode."""
    return stream.partition("@")[2].partition("@")[0] or stream


_NO_RAW = msgspec.Raw()


class _Envelope(msgspec.Struct):
    """Just enough of any frame to route it; the payload stays raw."""

    stream: str | None = None
    data: msgspec.Raw = _NO_RAW
    e: Any = None  # the event type, when the frame is a bare event
    subscriptionId: int | None = None  # noqa: N815  (Binance's name)
    event: msgspec.Raw = _NO_RAW
    u: Any = None  # present in bookTicker, which may carry no `e`
    result: Any = UNSET
    error: Any = UNSET


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_COMBINED_PREFIX = b'{"stream":"'


class FrameDecoder:
    """Turns raw websocket frames into ``svc.model`` events.

    One decoder serves every stream of a connection. ``stream`` names the connection's
    stream for bare frames (``/ws/btcusdt@bookTicker``) so that payloads without ``e``
    can be routed; combined-stream frames name their stream themselves.

    Binance writes ``"stream"`` first in combined frames, so the decoder reads the stream
    name straight from the bytes and decodes the whole frame in one typed pass; any other
    layout takes the slower two-pass route through ``_Envelope``.
    """

    __slots__ = ("_routes", "_stream", "_user_data")

    def __init__(self, *, stream: str = "") -> None:
        self._stream = stream
        self._user_data = bool(stream) and "@" not in stream  # a listen key
        # stream name (bytes, as on the wire) -> route or None; one entry per subscribed stream.
        self._routes: dict[bytes, _Route | None] = {}

    def decode(self, raw: bytes | str, ts_init: int) -> Event:
        """Decode one frame received at ``ts_init`` (ns). Raises ``DecodeError``."""
        if isinstance(raw, str):
            try:
                raw = raw.encode()
            except UnicodeError:
                raise DecodeError(self._stream or "?", "$", INVALID_UTF8) from None
        if raw.startswith(_COMBINED_PREFIX):
            end = raw.find(b'"', 11)
            key = raw[11:end]
            if key in self._routes:
                route = self._routes[key]
            else:
                route = _route_of(key.decode(errors="replace"))
                if len(self._routes) < 4096:
                    self._routes[key] = route
            if route is not None:
                try:
                    event: Event = route.convert(route.combined.decode(raw).data, ts_init)
                except msgspec.DecodeError as error:
                    if route.guess:
                        return self._decode_slow(raw, ts_init)
                    stream = key.decode(errors="replace")
                    raise DecodeError(stream, field_of(error), reason_of(error)) from None
                except UnicodeError:
                    raise DecodeError(key.decode(errors="replace"), "$", INVALID_UTF8) from None
                except RecursionError:
                    stream = key.decode(errors="replace")
                    raise DecodeError(stream, "$", NESTED_TOO_DEEPLY) from None
                return event
        if self._user_data:
            try:
                return _USER_DATA.convert(_USER_DATA.bare.decode(raw), ts_init)
            except (msgspec.DecodeError, UnicodeError, RecursionError):
                pass  # not one of the common types, or malformed: the slow path says which
        return self._decode_slow(raw, ts_init)

    def _decode_slow(self, raw: bytes, ts_init: int) -> Event:
        own = self._stream or "?"
        if raw.lstrip()[:1] == b"[":
            # `!miniTicker@arr` and friends: an array of events, none of which svc trades on.
            decode_as(_ARRAY, raw, stream=own)
            return UnknownEvent(stream=own, event_type="array", ts_init=ts_init)
        envelope = decode_as(_ENVELOPE, raw, stream=own)
        if envelope.stream is not None:
            stream = envelope.stream
            if not envelope.data:
                raise DecodeError(stream, "$.data", "combined-stream frame without data")
            return self._payload(envelope.data, stream, "$.data", ts_init, None)
        if envelope.event and envelope.subscriptionId is not None:
            return self._payload(envelope.event, own, "$.event", ts_init, None)
        if envelope.e is None and envelope.result is not UNSET:
            return UnknownEvent(stream=own, event_type="result", ts_init=ts_init)
        if envelope.e is None and envelope.error is not UNSET:
            return UnknownEvent(stream=own, event_type="error", ts_init=ts_init)
        return self._payload(raw, own, "$", ts_init, envelope)

    def _payload(
        self,
        payload: bytes | msgspec.Raw,
        stream: str,
        prefix: str,
        ts_init: int,
        envelope: _Envelope | None,
    ) -> Event:
        """Decode one event payload; ``envelope`` is its already-parsed routing view, if any."""
        if bytes(memoryview(payload)[:1]) == b"[":
            decode_as(_ARRAY, payload, stream=stream, prefix=prefix)
            return UnknownEvent(stream=stream, event_type="array", ts_init=ts_init)
        channel = channel_of(stream)
        if not channel:
            inner = envelope or decode_as(_ENVELOPE, payload, stream=stream, prefix=prefix)
            if isinstance(inner.e, str):
                channel = inner.e
            elif inner.e is not None:
                # The value is not quoted: reasons are counted, and input text must not
                # become a new counter key (or metric attribute) per frame.
                raise DecodeError(stream, f"{prefix}.e", "expected a string")
            elif inner.u is not None:
                channel = "bookTicker"  # spot bookTicker has no `e`
            elif "@" in stream:
                # A stream svc does not decode whose payload names no type (spot `@depth5`).
                return UnknownEvent(stream=stream, event_type=_stream_kind(stream), ts_init=ts_init)
            else:
                raise DecodeError(stream, f"{prefix}.e", "frame has no event type and no stream")
        route = _BY_EVENT_TYPE.get(channel)
        if route is None:
            return UnknownEvent(stream=stream, event_type=channel, ts_init=ts_init)
        event = route.convert(decode_as(route.bare, payload, stream=stream, prefix=prefix), ts_init)
        if isinstance(event, BookDelta) and _stream_kind(stream)[5:].isdigit():
            # USD-M `@depth5/10/20` frames look like diffs but are top-N snapshots.
            event = msgspec.structs.replace(event, partial=True)
        return event


_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])


# ---------------------------------------------------------------- encoders (the simulator's side)


class CombinedFrame(msgspec.Struct):
    stream: str
    data: msgspec.Raw


def encode_event(event: WireEvent) -> bytes:
    """One bare frame, as sent on ``/ws/<stream>`` and on user-data streams."""
    return encode(event)


def encode_combined(stream: str, event: WireEvent) -> bytes:
    """One combined-stream frame ``{"stream": ..., "data": ...}``."""
    return encode(CombinedFrame(stream=stream, data=msgspec.Raw(encode(event))))


def encode_subscription_event(subscription_id: int, event: WireEvent) -> bytes:
    """A WebSocket-API user-data event ``{"subscriptionId": n, "event": {...}}``."""
    return b'{"subscriptionId":%d,"event":%s}' % (subscription_id, encode(event))
