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

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
from msgspec import UNSET, UnsetType, field

from svc.binance._codec import NS_PER_MS, decode_as, encode, field_of, reason_of
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
"""The number type of market-data fields: ``str`` as on the wire (the simulator encodes
exact decimal strings), ``float`` when decoding (msgspec converts in C, ``strict=False``)."""


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
    event_time: int = field(name="E")
    symbol: str = field(name="s")
    kline: KlineBar[P] = field(name="k")


class AggTradeEvent(msgspec.Struct, Generic[P], kw_only=True, tag="aggTrade", tag_field="e"):
    event_time: int = field(name="E")
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
    event_time: int = field(name="E")
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
    event_time: int | UnsetType = field(name="E", default=UNSET)
    transaction_time: int | UnsetType = field(name="T", default=UNSET)
    symbol: str = field(name="s")
    bid_price: P = field(name="b")
    bid_size: P = field(name="B")
    ask_price: P = field(name="a")
    ask_size: P = field(name="A")


class DepthUpdateEvent(msgspec.Struct, Generic[P], kw_only=True, tag="depthUpdate", tag_field="e"):
    event_time: int = field(name="E")
    transaction_time: int | UnsetType = field(name="T", default=UNSET)  # USD-M only
    symbol: str = field(name="s")
    first_update_id: int = field(name="U")
    final_update_id: int = field(name="u")
    previous_final_update_id: int | UnsetType = field(name="pu", default=UNSET)  # USD-M only
    bids: list[tuple[P, P]] = field(name="b")
    asks: list[tuple[P, P]] = field(name="a")


# ---------------------------------------------------------------- user-data wire structs


class ExecutionReportEvent(msgspec.Struct, kw_only=True, tag="executionReport", tag_field="e"):
    event_time: int = field(name="E")
    symbol: str = field(name="s")
    client_order_id: str = field(name="c")
    side: str = field(name="S")
    order_type: str = field(name="o")
    time_in_force: str = field(name="f")
    quantity: str = field(name="q")
    price: str = field(name="p")
    stop_price: str = field(name="P", default="0.00000000")
    iceberg_quantity: str = field(name="F", default="0.00000000")
    order_list_id: int = field(name="g", default=-1)
    original_client_order_id: str = field(name="C", default="")
    execution_type: str = field(name="x", default="NEW")
    status: str = field(name="X", default="NEW")
    reject_reason: str = field(name="r", default="NONE")
    order_id: int = field(name="i", default=0)
    last_quantity: str = field(name="l", default="0")
    filled_quantity: str = field(name="z", default="0")
    last_price: str = field(name="L", default="0")
    commission: str = field(name="n", default="0")
    commission_asset: str | None = field(name="N", default=None)
    transaction_time: int = field(name="T", default=0)
    trade_id: int = field(name="t", default=-1)
    ignore_i: int | UnsetType = field(name="I", default=UNSET)
    is_working: bool = field(name="w", default=False)
    is_maker: bool = field(name="m", default=False)
    ignore_m: bool | UnsetType = field(name="M", default=UNSET)
    created_time: int = field(name="O", default=0)
    cumulative_quote: str = field(name="Z", default="0")
    last_quote: str = field(name="Y", default="0")
    quote_order_quantity: str = field(name="Q", default="0")
    working_time: int | UnsetType = field(name="W", default=UNSET)
    self_trade_prevention: str | UnsetType = field(name="V", default=UNSET)


class BalanceEntry(msgspec.Struct, kw_only=True):
    asset: str = field(name="a")
    free: str = field(name="f")
    locked: str = field(name="l")


class AccountPositionEvent(
    msgspec.Struct, kw_only=True, tag="outboundAccountPosition", tag_field="e"
):
    event_time: int = field(name="E")
    last_update_time: int = field(name="u")
    balances: list[BalanceEntry] = field(name="B")


class FuturesOrder(msgspec.Struct, kw_only=True):
    """The ``o`` object of a USD-M ``ORDER_TRADE_UPDATE``."""

    symbol: str = field(name="s")
    client_order_id: str = field(name="c")
    side: str = field(name="S")
    order_type: str = field(name="o")
    time_in_force: str = field(name="f")
    quantity: str = field(name="q")
    price: str = field(name="p")
    average_price: str = field(name="ap", default="0")
    stop_price: str = field(name="sp", default="0")
    execution_type: str = field(name="x", default="NEW")
    status: str = field(name="X", default="NEW")
    order_id: int = field(name="i", default=0)
    last_quantity: str = field(name="l", default="0")
    filled_quantity: str = field(name="z", default="0")
    last_price: str = field(name="L", default="0")
    commission_asset: str | None = field(name="N", default=None)
    commission: str = field(name="n", default="0")
    trade_time: int = field(name="T", default=0)
    trade_id: int = field(name="t", default=0)
    is_maker: bool = field(name="m", default=False)
    reduce_only: bool = field(name="R", default=False)
    position_side: str = field(name="ps", default="BOTH")
    realized_profit: str = field(name="rp", default="0")


class OrderTradeUpdateEvent(msgspec.Struct, kw_only=True, tag="ORDER_TRADE_UPDATE", tag_field="e"):
    event_time: int = field(name="E")
    transaction_time: int = field(name="T")
    order: FuturesOrder = field(name="o")


class FuturesBalance(msgspec.Struct, kw_only=True):
    asset: str = field(name="a")
    wallet_balance: str = field(name="wb")
    cross_wallet_balance: str = field(name="cw", default="0")
    balance_change: str | UnsetType = field(name="bc", default=UNSET)


class FuturesPosition(msgspec.Struct, kw_only=True):
    symbol: str = field(name="s")
    amount: str = field(name="pa")
    entry_price: str = field(name="ep")
    accumulated_realized: str = field(name="cr", default="0")
    unrealized_pnl: str = field(name="up", default="0")
    margin_type: str = field(name="mt", default="cross")
    isolated_wallet: str = field(name="iw", default="0")
    position_side: str = field(name="ps", default="BOTH")


class FuturesAccount(msgspec.Struct, kw_only=True):
    reason: str = field(name="m", default="")
    balances: list[FuturesBalance] = field(name="B", default_factory=list)
    positions: list[FuturesPosition] = field(name="P", default_factory=list)


class AccountUpdateEvent(msgspec.Struct, kw_only=True, tag="ACCOUNT_UPDATE", tag_field="e"):
    event_time: int = field(name="E")
    transaction_time: int = field(name="T")
    account: FuturesAccount = field(name="a")


WireEvent = (
    KlineEvent[str]
    | AggTradeEvent[str]
    | TradeEvent[str]
    | BookTickerEvent[str]
    | DepthUpdateEvent[str]
    | ExecutionReportEvent
    | AccountPositionEvent
    | OrderTradeUpdateEvent
    | AccountUpdateEvent
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


def execution_report_to_update(event: ExecutionReportEvent, ts_init: int) -> OrderUpdate:
    # A cancel reports the id of the cancel request in `c` and the order's own id in `C`.
    client_id = event.original_client_order_id or event.client_order_id
    return OrderUpdate(
        symbol=event.symbol,
        client_order_id=client_id,
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
        ts_event=event.event_time * NS_PER_MS,
        ts_init=ts_init,
    )


def order_trade_update_to_update(event: OrderTradeUpdateEvent, ts_init: int) -> OrderUpdate:
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
        ts_event=event.event_time * NS_PER_MS,
        ts_init=ts_init,
    )


def account_position_to_update(event: AccountPositionEvent, ts_init: int) -> AccountUpdate:
    return AccountUpdate(
        balances=tuple(
            Balance(b.asset, Decimal(b.free), Decimal(b.locked)) for b in event.balances
        ),
        positions=(),
        reason="",
        ts_event=event.event_time * NS_PER_MS,
        ts_init=ts_init,
    )


def account_update_to_update(event: AccountUpdateEvent, ts_init: int) -> AccountUpdate:
    a = event.account
    return AccountUpdate(
        balances=tuple(Balance(b.asset, Decimal(b.wallet_balance), Decimal(0)) for b in a.balances),
        positions=tuple(
            Position(p.symbol, Decimal(p.amount), Decimal(p.entry_price), p.position_side)
            for p in a.positions
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


def _route(kind: Any, convert: Callable[[Any, int], Event]) -> _Route:
    # strict=False lets msgspec turn Binance's decimal strings into floats in C.
    return _Route(
        msgspec.json.Decoder(kind, strict=False),
        msgspec.json.Decoder(Combined[kind], strict=False),
        convert,
    )


_BY_EVENT_TYPE: dict[str, _Route] = {
    "kline": _route(KlineEvent[float], kline_to_candle),
    "aggTrade": _route(AggTradeEvent[float], agg_trade_to_trade),
    "trade": _route(TradeEvent[float], trade_to_trade),
    "bookTicker": _route(BookTickerEvent[float], book_ticker_to_quote),
    "depthUpdate": _route(DepthUpdateEvent[float], depth_to_delta),
    "executionReport": _route(ExecutionReportEvent, execution_report_to_update),
    "outboundAccountPosition": _route(AccountPositionEvent, account_position_to_update),
    "ORDER_TRADE_UPDATE": _route(OrderTradeUpdateEvent, order_trade_update_to_update),
    "ACCOUNT_UPDATE": _route(AccountUpdateEvent, account_update_to_update),
}

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

    __slots__ = ("_routes", "_stream")

    def __init__(self, *, stream: str = "") -> None:
        self._stream = stream
        # stream name (bytes, as on the wire) -> route or None; one entry per subscribed stream.
        self._routes: dict[bytes, _Route | None] = {}

    def decode(self, raw: bytes | str, ts_init: int) -> Event:
        """Decode one frame received at ``ts_init`` (ns). Raises ``DecodeError``."""
        if isinstance(raw, str):
            raw = raw.encode()
        if raw.startswith(_COMBINED_PREFIX):
            end = raw.find(b'"', 11)
            key = raw[11:end]
            if key in self._routes:
                route = self._routes[key]
            else:
                route = _BY_EVENT_TYPE.get(channel_of(key.decode(errors="replace")))
                if len(self._routes) < 4096:
                    self._routes[key] = route
            if route is not None:
                try:
                    event: Event = route.convert(route.combined.decode(raw).data, ts_init)
                except msgspec.DecodeError as error:
                    stream = key.decode(errors="replace")
                    raise DecodeError(stream, field_of(error), reason_of(error)) from None
                return event
        return self._decode_slow(raw, ts_init)

    def _decode_slow(self, raw: bytes, ts_init: int) -> Event:
        if raw.lstrip()[:1] == b"[":
            # `!miniTicker@arr` and friends: a bare array of events, none of which svc trades on.
            return UnknownEvent(stream=self._stream or "?", event_type="array", ts_init=ts_init)
        envelope = decode_as(_ENVELOPE, raw, stream=self._stream or "?")
        if envelope.stream is not None:
            stream = envelope.stream
            if not envelope.data:
                raise DecodeError(stream, "$.data", "combined-stream frame without data")
            return self._by_event_type(envelope.data, stream, "$.data", ts_init, channel_of(stream))
        if envelope.event and envelope.subscriptionId is not None:
            return self._by_event_type(envelope.event, self._stream, "$.event", ts_init, "")
        if envelope.result is not UNSET and envelope.e is None:
            return UnknownEvent(stream=self._stream or "?", event_type="result", ts_init=ts_init)
        if envelope.error is not UNSET and envelope.e is None:
            return UnknownEvent(stream=self._stream or "?", event_type="error", ts_init=ts_init)
        return self._by_event_type(raw, self._stream or "?", "$", ts_init, channel_of(self._stream))

    def _by_event_type(
        self, payload: bytes | msgspec.Raw, stream: str, prefix: str, ts_init: int, channel: str
    ) -> Event:
        if bytes(memoryview(payload)[:1]) == b"[":
            return UnknownEvent(stream=stream, event_type="array", ts_init=ts_init)
        if not channel:
            inner = decode_as(_ENVELOPE, payload, stream=stream, prefix=prefix)
            if isinstance(inner.e, str):
                channel = inner.e
            elif inner.e is not None:
                raise DecodeError(stream, f"{prefix}.e", f"expected a string, got {inner.e!r}")
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
        return route.convert(decode_as(route.bare, payload, stream=stream, prefix=prefix), ts_init)


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
