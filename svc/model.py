"""The service's own event and value types: what every stage after `parse` sees.

These are not Binance's wire shapes (those live in ``svc.binance``). Every market or
execution event carries ``ts_event`` (venue time) and ``ts_init`` (local receive time) as
integer nanoseconds since the Unix epoch; ``ts_init - ts_event`` is the feed lag.
Market-data prices and sizes are floats; order and balance quantities are ``Decimal``
because they are compared with exchange filters and summed across fills.

Events are ``msgspec.Struct(frozen=True)``: slotted, immutable, and ~10x cheaper to build
than ``@dataclass(frozen=True, slots=True)``. Market-data events hold only scalars, so they
are created with ``gc=False`` and never tracked by the cyclic garbage collector.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Side = Literal["BUY", "SELL"]


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One kline. ``closed`` is False while the interval is still forming."""

    symbol: str
    interval: str
    open_time: int  # ns
    close_time: int  # ns
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    closed: bool
    ts_event: int
    ts_init: int


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One trade (``trade`` stream) or aggregated trade (``aggTrade`` stream)."""

    symbol: str
    trade_id: int
    price: float
    quantity: float
    buyer_is_maker: bool
    aggregated: bool
    ts_event: int
    ts_init: int


class Quote(msgspec.Struct, frozen=True, gc=False):
    """Best bid and offer (``bookTicker``).

    Spot bookTicker frames carry no venue timestamp; for them ``ts_event == ts_init``.
    """

    symbol: str
    update_id: int
    bid_price: float
    bid_size: float
    ask_price: float
    ask_size: float
    ts_event: int
    ts_init: int


class BookDelta(msgspec.Struct, frozen=True):
    """An order-book diff (``depthUpdate``): levels as (price, size); size 0 removes a level.

    ``partial`` marks USD-M ``@depth5/10/20`` frames: the same shape, but the top N levels
    that replace the book rather than a diff to apply.
    """

    symbol: str
    first_update_id: int
    final_update_id: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    ts_event: int
    ts_init: int
    partial: bool = False


class OrderUpdate(msgspec.Struct, frozen=True):
    """A change to one of our orders: spot ``executionReport`` or USD-M ``ORDER_TRADE_UPDATE``.

    ``execution_type`` is what happened (NEW, TRADE, CANCELED, REJECTED, EXPIRED, ...);
    ``status`` is the order's state afterwards. ``last_*`` describe this execution only.
    """

    symbol: str
    client_order_id: str
    order_id: int
    side: str
    order_type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal
    execution_type: str
    status: str
    reject_reason: str
    last_quantity: Decimal
    last_price: Decimal
    filled_quantity: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int
    is_maker: bool
    ts_event: int
    ts_init: int


class Balance(msgspec.Struct, frozen=True):
    asset: str
    free: Decimal
    locked: Decimal


class Position(msgspec.Struct, frozen=True):
    """A futures position (USD-M ``ACCOUNT_UPDATE``); ``amount`` is signed."""

    symbol: str
    amount: Decimal
    entry_price: Decimal
    side: str


class AccountUpdate(msgspec.Struct, frozen=True):
    """Balances (and futures positions) after a change.

    From spot ``outboundAccountPosition`` or USD-M ``ACCOUNT_UPDATE``.
    """

    balances: tuple[Balance, ...]
    positions: tuple[Position, ...]
    reason: str
    ts_event: int
    ts_init: int


class UnknownEvent(msgspec.Struct, frozen=True):
    """A well-formed frame whose event type svc does not handle; counted, never crashed on."""

    stream: str
    event_type: str
    ts_init: int


Event = Candle | Trade | Quote | BookDelta | OrderUpdate | AccountUpdate | UnknownEvent


class SymbolRules(msgspec.Struct, frozen=True):
    """The trading rules of one symbol, from exchangeInfo filters.

    A zero ``tick_size`` or ``step_size`` means the filter is absent or disabled; a zero
    maximum means unbounded.
    """

    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal
    min_notional: Decimal
    max_notional: Decimal
    apply_min_notional_to_market: bool
    order_types: tuple[str, ...]


# ---------------------------------------------------------------- decisions and commands


class Signal(msgspec.Struct, frozen=True):
    """A strategy's decision: trade ``quantity`` of ``symbol`` on ``side``.

    Quantities and prices are floats here; the order manager quantizes them to the symbol's
    filters (as ``Decimal``) only when it builds the order. ``limit_price`` 0 means a market
    order. ``ts_event`` is the venue time of the event that triggered the decision.
    """

    strategy: str
    symbol: str
    side: Side
    quantity: float
    limit_price: float
    reason: str
    ts_event: int
    ts_init: int


class NewOrder(msgspec.Struct, frozen=True):
    """An order command on the order tier: exact, quantized, with its idempotency key."""

    client_order_id: str
    symbol: str
    side: Side
    order_type: Literal["MARKET", "LIMIT"]
    quantity: Decimal
    price: Decimal  # 0 for MARKET
    time_in_force: str  # "" for MARKET
    strategy: str
    ts_init: int


class CancelOrder(msgspec.Struct, frozen=True):
    client_order_id: str
    symbol: str
    reason: str
    ts_init: int


OrderCommand = NewOrder | CancelOrder
