"""Orders: building them from signals, tracking their state, and the positions their fills make.

This module owns three things:

* ``quantize_order``: the one place where a strategy's float quantity and price become
  ``Decimal``, rounded to the symbol's filters. A violation raises ``FilterViolation`` here,
  before anything is sent, with the message Binance would have used.
* ``OrderManager``: submits orders with deterministic client order ids, applies the REST
  responses and user-data execution reports through one state machine (``TRANSITIONS``), and
  adopts its own open orders at start-up so a restart never sends an order twice.
* ``Positions``: base quantity, average entry price, realized PnL and fees per symbol, moved
  only by fills the order manager has accepted.

Convergence. The REST response to a new order and the user-data reports for the same order
race each other and may arrive in any order, repeated or late. The manager converges on the
same state whatever the order:

* The state only moves along ``TRANSITIONS``; terminal states never change, and a report of
  an older state (NEW after PARTIALLY_FILLED) changes nothing and is counted as stale.
* Fills are accounted by cumulative filled quantity, which never decreases. A report that
  covers the fills from zero (the REST response, which sums its fills, or the first trade)
  sets the order's cumulative quantity, quote and fees; a single trade that continues exactly
  where the accounted fills end is added; a trade that starts beyond them (an earlier trade
  report is late) is held until the gap closes. Reports already covered are stale; a trade id
  seen before is a duplicate. Both are counted and change nothing.
* Positions move by the delta of each accepted fill only, so no fill is counted twice.

The state of an order and its fills are separate facts: a late trade report is still
accounted after the order has become CANCELED (terminal states do not change, but the fills
that happened before the cancel are real).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from svc.audit import AuditSink
from svc.clock import SYSTEM_CLOCK, Clock
from svc.errors import (
    AuditUnavailable,
    AuthenticationFailed,
    ConfigError,
    DuplicateOrder,
    ExchangeError,
    FilterViolation,
    InvalidRequest,
    OrderRejected,
    RateLimited,
    TimestampOutsideWindow,
    UnknownOrder,
)
from svc.exchange import ExchangeClient
from svc.model import NewOrder, OrderUpdate, Side, Signal, SymbolRules

log = logging.getLogger(__name__)

_ZERO = Decimal(0)

# Audit record kinds written by this module (all critical: they are what we must prove).
AUDIT_ORDER_NEW = "order.new"
AUDIT_ORDER_RESPONSE = "order.response"
AUDIT_ORDER_UPDATE = "order.update"
AUDIT_ORDER_FILL = "order.fill"
AUDIT_ORDER_REJECTED = "order.rejected"
AUDIT_ORDER_UNKNOWN_OUTCOME = "order.unknown_outcome"
AUDIT_ORDER_UNKNOWN = "order.unknown"
AUDIT_ORDER_CANCEL = "order.cancel"
AUDIT_ORDER_CANCEL_FAILED = "order.cancel_failed"
AUDIT_ORDER_ADOPTED = "order.adopted"
AUDIT_ORDER_RECOVERED = "order.recovered"
AUDIT_ORDER_NOT_PLACED = "order.not_placed"

LOT_SIZE = "Filter failure: LOT_SIZE"
PRICE_FILTER = "Filter failure: PRICE_FILTER"
NOTIONAL = "Filter failure: NOTIONAL"

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
"""Binance's rule for ``newClientOrderId``."""


# ------------------------------------------------------------------------- building orders


def to_decimal(value: float) -> Decimal:
    """A float as the decimal it prints as: ``0.1`` is ``Decimal('0.1')``, not its binary
    expansion ``0.1000000000000000055511151231257827...``."""
    return Decimal(repr(value))


# A float carries ~16 significant digits, so a value this close to a multiple of the step
# (absolutely, in steps, or relative to the number of steps) is that multiple: 0.7 - 0.4 is
# 0.29999999999999993 and means 0.3, which must not round down a whole step to 0.2.
_SNAP_STEPS = Decimal("1e-9")
_SNAP_RELATIVE = Decimal("1e-12")


def _round_to(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    """``value`` as a multiple of ``step`` (rounded as told), with the step's exponent."""
    steps = value / step
    nearest = steps.to_integral_value(rounding=ROUND_HALF_EVEN)
    if abs(steps - nearest) <= max(_SNAP_STEPS, abs(nearest) * _SNAP_RELATIVE):
        steps = nearest
    else:
        steps = steps.to_integral_value(rounding=rounding)
    return (steps * step).quantize(step)


def quantize_order(
    signal: Signal,
    rules: SymbolRules,
    *,
    client_order_id: str,
    last_price: float,
    ts_init: int,
) -> NewOrder:
    """Turn ``signal`` into an exact order that passes ``rules``, or raise ``FilterViolation``.

    The quantity is rounded down to ``step_size`` and clamped to ``max_quantity``. A LIMIT
    price (``signal.limit_price > 0``) is rounded to ``tick_size``: down for a BUY, up for a
    SELL, so the order is never more aggressive than asked. A float within float noise of a
    step or tick is taken to be on it. The notional is checked against
    the limit price, or for a MARKET order against ``last_price`` when the symbol applies
    ``min_notional`` to market orders.
    """
    if not math.isfinite(signal.quantity) or signal.quantity <= 0:
        raise FilterViolation(-1013, LOT_SIZE)
    quantity = to_decimal(signal.quantity)
    if rules.step_size > 0:
        quantity = _round_to(quantity, rules.step_size, ROUND_FLOOR)
    if rules.max_quantity > 0:
        quantity = min(quantity, rules.max_quantity)
    if quantity <= 0 or quantity < rules.min_quantity:
        raise FilterViolation(-1013, LOT_SIZE)

    order_type: Literal["MARKET", "LIMIT"] = "LIMIT" if signal.limit_price > 0 else "MARKET"
    if rules.order_types and order_type not in rules.order_types:
        raise InvalidRequest(-1116, "Invalid orderType.")
    if order_type == "MARKET":
        if rules.apply_min_notional_to_market and rules.min_notional > 0:
            if not math.isfinite(last_price) or last_price <= 0:
                raise FilterViolation(-1013, NOTIONAL)
            if to_decimal(last_price) * quantity < rules.min_notional:
                raise FilterViolation(-1013, NOTIONAL)
        return NewOrder(
            client_order_id=client_order_id,
            symbol=signal.symbol,
            side=signal.side,
            order_type="MARKET",
            quantity=quantity,
            price=_ZERO,
            time_in_force="",
            strategy=signal.strategy,
            ts_init=ts_init,
        )

    if not math.isfinite(signal.limit_price):
        raise FilterViolation(-1013, PRICE_FILTER)
    price = to_decimal(signal.limit_price)
    if rules.tick_size > 0:
        if signal.side == "BUY":
            price = _round_to(price, rules.tick_size, ROUND_FLOOR)
        else:
            price = _round_to(price, rules.tick_size, ROUND_CEILING)
    if price <= 0 or price < rules.min_price or (rules.max_price > 0 and price > rules.max_price):
        raise FilterViolation(-1013, PRICE_FILTER)
    notional = price * quantity
    if notional < rules.min_notional or (rules.max_notional > 0 and notional > rules.max_notional):
        raise FilterViolation(-1013, NOTIONAL)
    return NewOrder(
        client_order_id=client_order_id,
        symbol=signal.symbol,
        side=signal.side,
        order_type="LIMIT",
        quantity=quantity,
        price=price,
        time_in_force="GTC",
        strategy=signal.strategy,
        ts_init=ts_init,
    )


def client_order_id(prefix: str, strategy: str, seq: int) -> str:
    """The client order id of the ``seq``-th order of a run: ``{prefix}-{strategy[:8]}-{seq}``.

    Deterministic, so the same (prefix, seq) always names the same order; a restart must use
    a new prefix or a higher ``seq`` (``OrderManager.reconcile`` moves past adopted ids).
    Raises ``ConfigError`` when the result breaks Binance's ``^[\\.A-Z\\:/a-z0-9_-]{1,36}$``.
    """
    if seq < 0:
        raise ConfigError("client_order_id", f"sequence must be >= 0, got {seq}")
    value = f"{prefix}-{strategy[:8]}-{seq}"
    if CLIENT_ORDER_ID_PATTERN.match(value) is None:
        raise ConfigError(
            "client_order_id",
            f"{value!r} must match {CLIENT_ORDER_ID_PATTERN.pattern} (check id_prefix and "
            "the strategy name)",
        )
    return value


# ---------------------------------------------------------------------- the state machine


class OrderState(enum.StrEnum):
    """Where an order is. Values equal Binance's status names where Binance has one."""

    PENDING_NEW = "PENDING_NEW"  # sent, no answer yet (or the answer was lost)
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"  # we asked to cancel, no answer yet
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


TERMINAL_STATES = frozenset(
    {OrderState.FILLED, OrderState.CANCELED, OrderState.REJECTED, OrderState.EXPIRED}
)

_S = OrderState
TRANSITIONS: Mapping[OrderState, frozenset[OrderState]] = {
    _S.PENDING_NEW: frozenset(
        {_S.NEW, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.REJECTED, _S.EXPIRED}
    ),
    _S.NEW: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED, _S.PENDING_CANCEL}),
    _S.PARTIALLY_FILLED: frozenset({_S.FILLED, _S.CANCELED, _S.EXPIRED, _S.PENDING_CANCEL}),
    # Back to NEW/PARTIALLY_FILLED when the cancel request failed and the order is still live.
    _S.PENDING_CANCEL: frozenset({_S.NEW, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED}),
    _S.FILLED: frozenset(),
    _S.CANCELED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
}
"""Every allowed state change; anything else (including staying put) is not a change.

PENDING_NEW is never re-entered, terminal states are never left, and a state never goes
back to an earlier one (NEW after PARTIALLY_FILLED), so reports applied in any order end in
the same state. A cancel of a PENDING_NEW order does not enter PENDING_CANCEL: the order is
not known to be on the exchange yet, and PENDING_NEW could not be restored if the cancel
failed.
"""

_EXCHANGE_STATUS: Mapping[str, OrderState] = {
    "NEW": _S.NEW,
    "PARTIALLY_FILLED": _S.PARTIALLY_FILLED,
    "FILLED": _S.FILLED,
    "CANCELED": _S.CANCELED,
    "PENDING_CANCEL": _S.PENDING_CANCEL,
    "REJECTED": _S.REJECTED,
    "EXPIRED": _S.EXPIRED,
    "EXPIRED_IN_MATCH": _S.EXPIRED,  # self-trade prevention
}


def can_transition(current: OrderState, target: OrderState) -> bool:
    """Whether ``current -> target`` is a change the state machine allows."""
    return target in TRANSITIONS[current]


@dataclasses.dataclass(slots=True, eq=False)
class TrackedOrder:
    """One order as the manager knows it. Mutated only by ``OrderManager``."""

    order: NewOrder
    state: OrderState = OrderState.PENDING_NEW
    order_id: int = 0
    filled_quantity: Decimal = _ZERO  # accounted cumulative fill; never decreases
    filled_quote: Decimal = _ZERO  # quote value of filled_quantity
    fees: dict[str, Decimal] = dataclasses.field(default_factory=dict)  # by asset
    trade_ids: set[int] = dataclasses.field(default_factory=set)
    held_trades: dict[int, OrderUpdate] = dataclasses.field(default_factory=dict)
    sent_ns: int = 0
    acked_ns: int = 0  # first answer from the exchange (REST response or report)
    updated_ns: int = 0
    reject_reason: str = ""
    unknown_outcome: bool = False  # the submit failed in a way that may have placed it
    adopted: bool = False  # found open on the exchange at start-up, not sent by this run

    @property
    def client_order_id(self) -> str:
        return self.order.client_order_id

    @property
    def average_price(self) -> Decimal:
        """Volume-weighted average fill price (0 before the first fill)."""
        if not self.filled_quantity:
            return _ZERO
        return self.filled_quote / self.filled_quantity

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclasses.dataclass(frozen=True, slots=True)
class OrderStatistics:
    """Counters of ``OrderManager.statistics()``."""

    orders_by_state: dict[str, int]
    stale_updates: int
    duplicate_fills: int
    held_fills: int
    unknown_updates: int
    unknown_outcome: int
    rejects_by_reason: dict[str, int]
    evicted_orders: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What start-up reconciliation found on the exchange."""

    open_on_exchange: int
    adopted: tuple[str, ...]
    already_tracked: int
    foreign: int


# ------------------------------------------------------------------------------ positions


@dataclasses.dataclass(slots=True)
class _Book:
    quantity: Decimal = _ZERO  # signed: > 0 long, < 0 short
    average_price: Decimal = _ZERO
    realized_pnl: Decimal = _ZERO
    fees_quote: Decimal = _ZERO  # fees paid in the quote or base asset, valued in quote
    fees: dict[str, Decimal] = dataclasses.field(default_factory=dict)  # by asset, raw


@dataclasses.dataclass(frozen=True, slots=True)
class PositionView:
    """One symbol's position, as a value."""

    symbol: str
    quantity: Decimal
    average_price: Decimal
    realized_pnl: Decimal
    fees_quote: Decimal
    fees: Mapping[str, Decimal]


class Positions:
    """Position, average entry price, realized PnL and fees per symbol, moved by fills.

    Realized PnL is gross: fees are kept apart in ``fees_quote`` (fees paid in the symbol's
    quote or base asset, valued in quote) and ``fees`` (raw amounts by asset, including
    assets such as BNB whose quote value is unknown here). Net PnL is
    ``realized + unrealized - fees_quote``.

    A commission paid in the base asset reduces the base quantity: it is booked as a sale of
    that quantity at the fill price whose proceeds are the fee, so the gain or loss on the
    coins given away is realized like any other.
    """

    def __init__(self, *, rules: Mapping[str, SymbolRules]) -> None:
        self._rules = rules
        self._books: dict[str, _Book] = {}

    def apply_fill(
        self,
        symbol: str,
        side: Side,
        quantity: Decimal,
        quote: Decimal,
        *,
        commission: Decimal = _ZERO,
        commission_asset: str = "",
    ) -> None:
        """Book a fill of ``quantity`` base for ``quote`` (price * quantity) on ``side``."""
        if quantity <= 0:
            return
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        self._trade(book, quantity if side == "BUY" else -quantity, quote)
        if not commission:
            return
        book.fees[commission_asset] = book.fees.get(commission_asset, _ZERO) + commission
        rules = self._rules.get(symbol)
        if rules is None:
            return
        if commission_asset == rules.quote_asset:
            book.fees_quote += commission
        elif commission_asset == rules.base_asset:
            value = commission * quote / quantity
            self._trade(book, -commission, value)
            book.fees_quote += value

    @staticmethod
    def _trade(book: _Book, signed: Decimal, quote: Decimal) -> None:
        position = book.quantity
        if position == 0 or (position > 0) == (signed > 0):
            size = abs(position) + abs(signed)
            book.average_price = (abs(position) * book.average_price + quote) / size
            book.quantity = position + signed
            return
        closing = min(abs(signed), abs(position))
        # The part of this fill's quote that closes the old position.
        closing_quote = quote if closing == abs(signed) else quote * closing / abs(signed)
        direction = 1 if position > 0 else -1
        book.realized_pnl += direction * (closing_quote - closing * book.average_price)
        book.quantity = position + signed
        if book.quantity == 0:
            book.average_price = _ZERO
        elif (book.quantity > 0) != (position > 0):  # flipped: the rest opens at this price
            book.average_price = quote / abs(signed)

    def position(self, symbol: str) -> PositionView:
        book = self._books.get(symbol) or _Book()
        return PositionView(
            symbol=symbol,
            quantity=book.quantity,
            average_price=book.average_price,
            realized_pnl=book.realized_pnl,
            fees_quote=book.fees_quote,
            fees=dict(book.fees),
        )

    def unrealized(self, symbol: str, mark_price: float) -> float:
        """PnL of the open position at ``mark_price`` (a market-data float)."""
        book = self._books.get(symbol)
        if book is None or not book.quantity:
            return 0.0
        return float(book.quantity) * (mark_price - float(book.average_price))

    def snapshot(self) -> dict[str, dict[str, str]]:
        """Every symbol's position as strings (exact decimals, ready for JSON)."""
        result: dict[str, dict[str, str]] = {}
        for symbol, book in self._books.items():
            row = {
                "quantity": str(book.quantity),
                "average_price": str(book.average_price),
                "realized_pnl": str(book.realized_pnl),
                "fees_quote": str(book.fees_quote),
            }
            for asset, amount in book.fees.items():
                row["fee." + asset] = str(amount)
            result[symbol] = row
        return result


# -------------------------------------------------------------------------- order manager

# Refused before reaching the matching engine: the order certainly does not exist.
_NOT_PLACED = (RateLimited, TimestampOutsideWindow, AuthenticationFailed, InvalidRequest)


def _command_payload(order: NewOrder) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side,
        "order_type": order.order_type,
        "quantity": str(order.quantity),
        "price": str(order.price),
        "time_in_force": order.time_in_force,
        "strategy": order.strategy,
    }


def _update_payload(update: OrderUpdate, tracked: TrackedOrder, outcome: str) -> dict[str, Any]:
    return {
        "client_order_id": update.client_order_id,
        "symbol": update.symbol,
        "order_id": update.order_id,
        "execution_type": update.execution_type,
        "status": update.status,
        "reject_reason": update.reject_reason,
        "last_quantity": str(update.last_quantity),
        "last_price": str(update.last_price),
        "filled_quantity": str(update.filled_quantity),
        "commission": str(update.commission),
        "commission_asset": update.commission_asset,
        "trade_id": update.trade_id,
        "ts_init": update.ts_init,
        "state": str(tracked.state),
        "outcome": outcome,
    }


class OrderManager:
    """Builds, submits, tracks and cancels orders; the order tier's consumer.

    Submit policy (``submit``):

    * The order is tracked as PENDING_NEW and audited before it is sent, so a report that
      races the REST response finds it. It is sent only once its ``order.new`` record has
      reached the journal file (``AuditSink.wait_written``; not necessarily fsynced): if the
      journal cannot take it within ``write_ahead_timeout``, the order is REJECTED and
      ``AuditUnavailable`` raised, since an unjournaled order could not be reconciled. A
      client order id is never sent twice: ``submit`` of a tracked id raises
      ``DuplicateOrder`` without calling the exchange. To retry, build a new order (it gets
      a new id).
    * ``OrderRejected`` (including ``DuplicateOrder``, ``InsufficientBalance``,
      ``FilterViolation``): the order is REJECTED with the exchange's message; ``submit``
      returns normally. A ``DuplicateOrder`` from the exchange means an id was reused across
      runs (check ``id_prefix``/``start_seq``); it is rejected here and reconciliation adopts
      the live order only if its id is unknown.
    * ``RateLimited``/``IpBanned``/``TimestampOutsideWindow`` (and ``AuthenticationFailed``,
      ``InvalidRequest``): refused before matching, so the order does not exist; it is
      REJECTED and the error re-raised so the caller backs off or resynchronises its clock.
    * ``ExchangeUnavailable`` (and any other ``ExchangeError``): the outcome is unknown. The
      order stays PENDING_NEW with ``unknown_outcome`` set, is audited, and the error is
      re-raised; a later report, a query or reconciliation settles it.

    ``id_family`` (default ``id_prefix``) is the prefix shared by every run of this service:
    reconciliation adopts open orders whose client id starts with it and ignores the rest.
    Terminal orders beyond ``max_terminal_orders`` are forgotten oldest first (counted); a
    late report for a forgotten order is counted as unknown.
    """

    def __init__(
        self,
        *,
        exchange: ExchangeClient,
        audit: AuditSink,
        rules: Mapping[str, SymbolRules],
        clock: Clock = SYSTEM_CLOCK,
        id_prefix: str,
        start_seq: int = 1,
        id_family: str | None = None,
        positions: Positions | None = None,
        max_terminal_orders: int = 10_000,
        write_ahead_timeout: float = 2.0,
        record_write_ahead: Callable[[int], None] | None = None,
    ) -> None:
        client_order_id(id_prefix, "strategy", start_seq)  # fail at start, not at first order
        self._exchange = exchange
        self._audit = audit
        self._write_ahead_timeout = write_ahead_timeout
        self._record_write_ahead = record_write_ahead
        """Gets each order's wait for its ``order.new`` record, in ns (the ``audit`` stage)."""
        self._rules = rules
        self._clock = clock
        self._prefix = id_prefix
        self._family = id_prefix if id_family is None else id_family
        if not id_prefix.startswith(self._family):
            raise ConfigError("id_family", f"{id_prefix!r} does not start with {self._family!r}")
        self._next_seq = start_seq
        self.positions = positions if positions is not None else Positions(rules=rules)
        self._orders: dict[str, TrackedOrder] = {}
        self._terminal: deque[str] = deque()
        self._max_terminal = max_terminal_orders
        self._stale_updates = 0
        self._duplicate_fills = 0
        self._held_fills = 0
        self._unknown_updates = 0
        self._unknown_outcome = 0
        self._evicted = 0
        self._rejects: dict[str, int] = {}
        self._fill_records: list[dict[str, Any]] = []  # audited by _apply after the update

    # ------------------------------------------------------------------ commands

    @property
    def next_seq(self) -> int:
        """The sequence number the next built order will use."""
        return self._next_seq

    def build(self, signal: Signal, *, last_price: float) -> NewOrder:
        """Quantize ``signal`` into an order with the next client id (raises FilterViolation).

        A sequence number is used only when an order is built, so rejected signals leave no
        gaps.
        """
        rules = self._rules.get(signal.symbol)
        if rules is None:
            raise InvalidRequest(-1121, "Invalid symbol.")
        order = quantize_order(
            signal,
            rules,
            client_order_id=client_order_id(self._prefix, signal.strategy, self._next_seq),
            last_price=last_price,
            ts_init=self._clock.time_ns(),
        )
        self._next_seq += 1
        return order

    async def submit(self, order: NewOrder) -> TrackedOrder:
        """Send ``order`` and apply the exchange's answer; see the class docstring's policy."""
        if order.client_order_id in self._orders:
            raise DuplicateOrder(-2010, "Duplicate order sent.")
        now = self._clock.time_ns()
        tracked = TrackedOrder(order=order, sent_ns=now, updated_ns=now)
        self._orders[order.client_order_id] = tracked
        self._audit.record(AUDIT_ORDER_NEW, _command_payload(order), critical=True, ts_event=now)
        # Write-ahead: the command is in the journal file before it leaves, so a crash
        # (kill -9) at any later moment leaves a record for reconciliation to settle.
        waiting = time.perf_counter_ns()
        written = await self._audit.wait_written(self._write_ahead_timeout)
        if self._record_write_ahead is not None:
            self._record_write_ahead(time.perf_counter_ns() - waiting)
        if not written:
            error = AuditUnavailable(
                0, f"audit journal did not take order.new within {self._write_ahead_timeout} s"
            )
            self._reject(tracked, error)
            raise error
        try:
            update = await self._exchange.new_order(order)
        except OrderRejected as error:
            self._reject(tracked, error)
            return tracked
        except _NOT_PLACED as error:
            self._reject(tracked, error)
            raise
        except ExchangeError as error:
            tracked.unknown_outcome = True
            self._unknown_outcome += 1
            log.warning(
                "order %s outcome unknown (%s); it stays PENDING_NEW until a report or a query",
                order.client_order_id,
                error,
            )
            self._audit.record(
                AUDIT_ORDER_UNKNOWN_OUTCOME,
                {
                    "client_order_id": order.client_order_id,
                    "error": type(error).__name__,
                    "code": error.code,
                    "message": error.msg,
                },
                critical=True,
                ts_event=self._clock.time_ns(),
            )
            raise
        self._apply(tracked, update, AUDIT_ORDER_RESPONSE)
        return tracked

    async def cancel(self, client_order_id: str, reason: str) -> None:
        """Cancel one order; a terminal order is left alone and nothing is sent.

        ``UnknownOrder`` from the exchange (the order is not open there) is audited and
        swallowed: the order's final report, or reconciliation, settles its state. Any other
        ``ExchangeError`` restores the state the order had and is re-raised.
        """
        tracked = self._orders.get(client_order_id)
        if tracked is None:
            raise UnknownOrder(-2013, "Order does not exist.")
        if tracked.terminal:
            return
        previous = tracked.state
        self._transition(tracked, OrderState.PENDING_CANCEL)
        now = self._clock.time_ns()
        self._audit.record(
            AUDIT_ORDER_CANCEL,
            {"client_order_id": client_order_id, "symbol": tracked.order.symbol, "reason": reason},
            critical=True,
            ts_event=now,
        )
        try:
            update = await self._exchange.cancel_order(tracked.order.symbol, client_order_id)
        except ExchangeError as error:
            self._audit.record(
                AUDIT_ORDER_CANCEL_FAILED,
                {
                    "client_order_id": client_order_id,
                    "error": type(error).__name__,
                    "code": error.code,
                    "message": error.msg,
                },
                critical=True,
                ts_event=self._clock.time_ns(),
            )
            if isinstance(error, UnknownOrder):
                log.warning("cancel of %s: not open on the exchange (%s)", client_order_id, error)
                return
            if tracked.state is OrderState.PENDING_CANCEL:
                self._transition(tracked, previous)
            raise
        self._apply(tracked, update, AUDIT_ORDER_RESPONSE)

    async def cancel_all(self, reason: str) -> list[str]:
        """Cancel every open order (for shutdown); the ids now CANCELED.

        Failures are logged and audited per order and do not stop the others.
        """
        canceled: list[str] = []
        for tracked in self.open_orders():
            try:
                await self.cancel(tracked.client_order_id, reason)
            except ExchangeError as error:
                log.error("cancel_all: %s not canceled: %s", tracked.client_order_id, error)
                continue
            if tracked.state is OrderState.CANCELED:
                canceled.append(tracked.client_order_id)
        return canceled

    # ------------------------------------------------------------------- reports

    def on_update(self, update: OrderUpdate) -> None:
        """Apply a user-data execution report."""
        tracked = self._orders.get(update.client_order_id)
        if tracked is None:
            self._unknown_updates += 1
            self._audit.record(
                AUDIT_ORDER_UNKNOWN,
                {
                    "client_order_id": update.client_order_id,
                    "symbol": update.symbol,
                    "execution_type": update.execution_type,
                    "status": update.status,
                    "filled_quantity": str(update.filled_quantity),
                },
                critical=True,
                ts_event=update.ts_event,
            )
            return
        self._apply(tracked, update, AUDIT_ORDER_UPDATE)

    async def reconcile(self, symbols: Sequence[str]) -> ReconcileReport:
        """Adopt our open orders on the exchange (start-up), so they are never sent again.

        Orders whose client id starts with ``id_family`` are tracked; an already tracked one
        takes the exchange's state. Fills made before adoption are not booked again into
        positions (those come from the account's balances); the adopted order's filled quote
        is estimated at its limit price. The sequence moves past any adopted id of this
        ``id_prefix``. Exchange errors propagate: trading must not start unreconciled.
        """
        open_count = already = foreign = 0
        adopted: list[str] = []
        for symbol in symbols:
            for update in await self._exchange.open_orders(symbol):
                open_count += 1
                client_id = update.client_order_id
                if not client_id.startswith(self._family):
                    foreign += 1
                    continue
                tracked = self._orders.get(client_id)
                if tracked is not None:
                    already += 1
                    self._apply(tracked, update, AUDIT_ORDER_UPDATE)
                    continue
                self._adopt(update)
                adopted.append(client_id)
        return ReconcileReport(
            open_on_exchange=open_count,
            adopted=tuple(adopted),
            already_tracked=already,
            foreign=foreign,
        )

    def restore(
        self,
        order: NewOrder,
        *,
        order_id: int,
        filled_quantity: Decimal,
        filled_quote: Decimal,
    ) -> TrackedOrder:
        """Track an order the audit journal of an earlier run sent and never saw settle.

        Nothing is audited or sent; the fills the journal already booked are counted as
        accounted, so ``recovered`` books only what the exchange reports beyond them.
        """
        now = self._clock.time_ns()
        tracked = TrackedOrder(
            order=order,
            order_id=order_id,
            filled_quantity=filled_quantity,
            filled_quote=filled_quote,
            updated_ns=now,
            adopted=True,
        )
        self._orders[order.client_order_id] = tracked
        return tracked

    def recovered(self, tracked: TrackedOrder, update: OrderUpdate) -> None:
        """Apply the exchange's current state of a restored order (audited, fills booked)."""
        self._apply(tracked, update, AUDIT_ORDER_RECOVERED)

    def not_placed(self, tracked: TrackedOrder, reason: str) -> None:
        """A restored order the exchange does not know: it was never placed."""
        tracked.reject_reason = reason
        self._transition(tracked, OrderState.REJECTED)
        self._audit.record(
            AUDIT_ORDER_NOT_PLACED,
            {
                "client_order_id": tracked.client_order_id,
                "symbol": tracked.order.symbol,
                "reason": reason,
            },
            critical=True,
            ts_event=self._clock.time_ns(),
        )

    def adopt(self, update: OrderUpdate) -> TrackedOrder:
        """Track an open order found on the exchange that this service did not send."""
        self._adopt(update)
        return self._orders[update.client_order_id]

    # ------------------------------------------------------------------- queries

    def rules_of(self, symbol: str) -> SymbolRules:
        return self._rules[symbol]

    def get(self, client_order_id: str) -> TrackedOrder | None:
        return self._orders.get(client_order_id)

    def open_orders(self) -> list[TrackedOrder]:
        """Orders not in a terminal state (including PENDING_NEW with an unknown outcome)."""
        return [o for o in self._orders.values() if o.state not in TERMINAL_STATES]

    def statistics(self) -> OrderStatistics:
        by_state: dict[str, int] = {}
        for tracked in self._orders.values():
            by_state[tracked.state.value] = by_state.get(tracked.state.value, 0) + 1
        return OrderStatistics(
            orders_by_state=by_state,
            stale_updates=self._stale_updates,
            duplicate_fills=self._duplicate_fills,
            held_fills=self._held_fills,
            unknown_updates=self._unknown_updates,
            unknown_outcome=self._unknown_outcome,
            rejects_by_reason=dict(self._rejects),
            evicted_orders=self._evicted,
        )

    # ------------------------------------------------------------------ internals

    def _transition(self, tracked: TrackedOrder, target: OrderState) -> bool:
        """The one place an order's state changes; False when the table forbids it."""
        if target not in TRANSITIONS[tracked.state]:
            return False
        tracked.state = target
        tracked.updated_ns = self._clock.time_ns()
        if target in TERMINAL_STATES:
            self._terminal.append(tracked.client_order_id)
            while len(self._terminal) > self._max_terminal:
                self._orders.pop(self._terminal.popleft(), None)
                self._evicted += 1
        return True

    def _reject(self, tracked: TrackedOrder, error: ExchangeError) -> None:
        reason = type(error).__name__
        tracked.reject_reason = error.msg
        if tracked.acked_ns == 0:
            tracked.acked_ns = self._clock.time_ns()
        self._transition(tracked, OrderState.REJECTED)
        self._rejects[reason] = self._rejects.get(reason, 0) + 1
        self._audit.record(
            AUDIT_ORDER_REJECTED,
            {
                "client_order_id": tracked.client_order_id,
                "symbol": tracked.order.symbol,
                "reason": reason,
                "code": error.code,
                "message": error.msg,
            },
            critical=True,
            ts_event=self._clock.time_ns(),
        )

    def _apply(self, tracked: TrackedOrder, update: OrderUpdate, kind: str) -> None:
        if tracked.acked_ns == 0:
            tracked.acked_ns = self._clock.time_ns()
        if update.order_id > 0 and tracked.order_id == 0:
            tracked.order_id = update.order_id
        target = _EXCHANGE_STATUS.get(update.status)
        changed = target is not None and self._transition(tracked, target)
        if changed and target is OrderState.REJECTED:
            tracked.reject_reason = update.reject_reason
            self._rejects[update.reject_reason] = self._rejects.get(update.reject_reason, 0) + 1
        outcome = "state" if changed else "stale"
        if update.execution_type == "TRADE" and update.filled_quantity > 0:
            fill = self._account_fill(tracked, update)
            if fill != "stale" or not changed:
                outcome = fill
        if outcome == "stale":
            self._stale_updates += 1
        elif outcome == "duplicate":
            self._duplicate_fills += 1
        elif outcome == "held":
            self._held_fills += 1
        self._audit.record(
            kind,
            _update_payload(update, tracked, outcome),
            critical=True,
            ts_event=update.ts_event,
        )
        # The fills this update booked, after the update itself (the cause comes first).
        for payload in self._fill_records:
            self._audit.record(AUDIT_ORDER_FILL, payload, critical=True, ts_event=update.ts_event)
        self._fill_records.clear()

    def _account_fill(self, tracked: TrackedOrder, update: OrderUpdate) -> str:
        """Account one trade report: ``fill``, ``stale``, ``duplicate`` or ``held``."""
        known = tracked.filled_quantity
        cumulative = update.filled_quantity
        seen = update.trade_id >= 0 and update.trade_id in tracked.trade_ids
        if cumulative <= known:
            if update.trade_id >= 0:
                tracked.trade_ids.add(update.trade_id)
            return "duplicate" if seen else "stale"
        start = cumulative - update.last_quantity
        if start <= 0:
            # Covers every fill from zero (the REST response's sum, or the first trade): the
            # new part is what it adds to what is already accounted.
            quote = update.last_price * cumulative - tracked.filled_quote
            fee = update.commission - tracked.fees.get(update.commission_asset, _ZERO)
            self._book_fill(tracked, update, cumulative - known, quote, max(fee, _ZERO))
        elif seen:
            return "duplicate"  # a held report delivered again
        elif start > known:
            tracked.held_trades[update.trade_id] = update
            if update.trade_id >= 0:
                tracked.trade_ids.add(update.trade_id)
            log.info(
                "order %s: trade %s starts at %s but %s is accounted; held",
                tracked.client_order_id,
                update.trade_id,
                start,
                known,
            )
            return "held"
        else:
            # Continues the accounted fills (start == known); start < known would be an
            # overlapping report, booked for the part that is new at this trade's price.
            delta = cumulative - known
            self._book_fill(tracked, update, delta, delta * update.last_price, update.commission)
        self._release_held(tracked)
        return "fill"

    def _release_held(self, tracked: TrackedOrder) -> None:
        progressed = True
        while tracked.held_trades and progressed:
            progressed = False
            for trade_id, held in list(tracked.held_trades.items()):
                if held.filled_quantity <= tracked.filled_quantity:
                    del tracked.held_trades[trade_id]  # covered meanwhile (e.g. by the REST sum)
                elif held.filled_quantity - held.last_quantity == tracked.filled_quantity:
                    del tracked.held_trades[trade_id]
                    quote = held.last_quantity * held.last_price
                    self._book_fill(tracked, held, held.last_quantity, quote, held.commission)
                    progressed = True

    def _book_fill(
        self,
        tracked: TrackedOrder,
        update: OrderUpdate,
        quantity: Decimal,
        quote: Decimal,
        fee: Decimal,
    ) -> None:
        tracked.filled_quantity += quantity
        tracked.filled_quote += quote
        if fee:
            asset = update.commission_asset
            tracked.fees[asset] = tracked.fees.get(asset, _ZERO) + fee
        if update.trade_id >= 0:
            tracked.trade_ids.add(update.trade_id)
        tracked.updated_ns = self._clock.time_ns()
        order = tracked.order
        self.positions.apply_fill(
            order.symbol,
            order.side,
            quantity,
            quote,
            commission=fee,
            commission_asset=update.commission_asset,
        )
        self._fill_records.append(
            {
                "client_order_id": order.client_order_id,
                "symbol": order.symbol,
                "side": order.side,
                "quantity": str(quantity),
                "quote": str(quote),
                "commission": str(fee),
                "commission_asset": update.commission_asset,
                "trade_id": update.trade_id,
                "filled_quantity": str(tracked.filled_quantity),
            }
        )

    def _adopt(self, update: OrderUpdate) -> None:
        client_id = update.client_order_id
        parts = client_id.split("-")
        order = NewOrder(
            client_order_id=client_id,
            symbol=update.symbol,
            side="BUY" if update.side == "BUY" else "SELL",
            order_type="MARKET" if update.order_type == "MARKET" else "LIMIT",
            quantity=update.quantity,
            price=update.price,
            time_in_force=update.time_in_force,
            strategy=parts[-2] if len(parts) >= 3 else "",
            ts_init=update.ts_init,
        )
        now = self._clock.time_ns()
        tracked = TrackedOrder(
            order=order,
            order_id=update.order_id,
            filled_quantity=update.filled_quantity,
            filled_quote=update.filled_quantity * update.price,
            sent_ns=0,
            acked_ns=now,
            updated_ns=now,
            adopted=True,
        )
        self._orders[client_id] = tracked
        target = _EXCHANGE_STATUS.get(update.status)
        if target is not None:
            self._transition(tracked, target)
        if client_id.startswith(self._prefix + "-") and parts[-1].isdigit():
            self._next_seq = max(self._next_seq, int(parts[-1]) + 1)
        self._audit.record(
            AUDIT_ORDER_ADOPTED,
            _update_payload(update, tracked, "adopted"),
            critical=True,
            ts_event=update.ts_event,
        )
