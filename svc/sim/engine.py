"""The simulator's spot matching engine: one account's orders, fills and balances.

The engine owns the account's free and locked balances, its orders (open ones and a bounded
window of closed ones) and the matching of those orders against an exogenous top of book
that the market generator feeds in with ``set_book``. The counterparty of every fill is the
outside market: there is no second account, so no self-trade. The module is pure: no I/O,
no clock (every call is given ``time_ms``), no asyncio.

Validation mirrors Binance spot: the same codes and messages (``docs/errors.catalog.json``),
raised as ``svc.errors`` exceptions built by ``exchange_error``.

Simplifications, on purpose:

- Liquidity is the displayed top of book only. Each ``set_book`` refreshes it; fills, taker
  or maker, consume it until the next update, so partial fills happen naturally.
- A taker fill happens at the book price (never worse than the limit); a resting order that
  the book crosses later fills at its own limit price, as a maker.
- MARKET orders fill completely in one fill at the best opposite price, even beyond the
  displayed quantity (no walking down the book). With no opposite side they are rejected with
  -2010 "Order book liquidity is less than symbol minimum quantity." rather than EXPIRED, so
  the caller learns of it from the response and no order is created.
- Commission is charged in the received asset at ``fee_rate`` for makers and takers alike,
  rounded half-up to 8 decimals (Binance's commission precision).
- For MARKET orders only the minimum notional is checked, and only when
  ``apply_min_notional_to_market``: ``SymbolRules`` has no ``applyMaxToMarket`` (it is false on
  every Binance spot symbol seen).
- A LIMIT order without ``time_in_force`` defaults to GTC (Binance would answer -1102; the
  REST layer may enforce that). STOP_* order types are not simulated (-1116).
- Arithmetic is exact ``Decimal`` in the default 28-digit context, which holds for prices and
  quantities with at most 8 decimals and notionals below 10**10.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

from svc.errors import exchange_error
from svc.model import SymbolRules

OrderSide = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET", "LIMIT_MAKER"]
TimeInForce = Literal["GTC", "IOC", "FOK", ""]
OrderStatus = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"]
ExecutionType = Literal["NEW", "TRADE", "CANCELED", "EXPIRED", "REJECTED"]

_SIDES: Final[dict[str, OrderSide]] = {"BUY": "BUY", "SELL": "SELL"}
_ORDER_TYPES: Final[dict[str, OrderType]] = {
    "LIMIT": "LIMIT",
    "MARKET": "MARKET",
    "LIMIT_MAKER": "LIMIT_MAKER",
}
_TIMES_IN_FORCE: Final[dict[str, TimeInForce]] = {"GTC": "GTC", "IOC": "IOC", "FOK": "FOK"}
_ZERO: Final = Decimal(0)
COMMISSION_QUANTUM: Final = Decimal("1E-8")
"""Commissions are rounded to this (Binance's ``baseCommissionPrecision`` of 8)."""

# Messages quoted from Binance's errors.md (docs/errors.catalog.json).
MSG_INVALID_SYMBOL: Final = "Invalid symbol."
MSG_INVALID_SIDE: Final = "Invalid side."
MSG_INVALID_ORDER_TYPE: Final = "Invalid orderType."
MSG_INVALID_TIME_IN_FORCE: Final = "Invalid timeInForce."
MSG_INSUFFICIENT_BALANCE: Final = "Account has insufficient balance for requested action."
MSG_DUPLICATE_ORDER: Final = "Duplicate order sent."
MSG_WOULD_TAKE: Final = "Order would immediately match and take."
MSG_MARKET_CLOSED: Final = "Market is closed."
MSG_MARKET_NOT_SUPPORTED: Final = "Market orders are not supported for this symbol."
MSG_UNSUPPORTED_COMBINATION: Final = "Unsupported order combination"
MSG_NO_LIQUIDITY: Final = "Order book liquidity is less than symbol minimum quantity."
MSG_UNKNOWN_ORDER: Final = "Unknown order sent."
MSG_ORDER_DOES_NOT_EXIST: Final = "Order does not exist."
MSG_PRICE_FILTER: Final = "Filter failure: PRICE_FILTER"
MSG_LOT_SIZE: Final = "Filter failure: LOT_SIZE"
MSG_NOTIONAL: Final = "Filter failure: NOTIONAL"
MSG_ORDER_ID_OR_CLIENT_ID: Final = (
    "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!"
)


def _mandatory(param: str) -> str:
    return f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."


def _not_required(param: str) -> str:
    return f"Parameter '{param}' sent when not required."


@dataclass(slots=True)
class SimOrder:
    """One order as the exchange sees it; field names follow Binance's order response."""

    symbol: str
    order_id: int
    client_order_id: str
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    price: Decimal  # 0 for MARKET
    orig_qty: Decimal
    executed_qty: Decimal
    cummulative_quote_qty: Decimal  # Binance's spelling
    status: OrderStatus
    time_ms: int
    update_time_ms: int
    working_time_ms: int

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def remaining_qty(self) -> Decimal:
        return self.orig_qty - self.executed_qty


@dataclass(frozen=True, slots=True)
class SimFill:
    """One execution of an order against the outside market."""

    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int
    is_maker: bool


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """What happened to an order (an ``executionReport``); ``order`` is a snapshot copy."""

    order: SimOrder
    execution_type: ExecutionType
    fill: SimFill | None
    time_ms: int


@dataclass(slots=True)
class _Book:
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    time_ms: int
    bid_left: Decimal  # displayed liquidity not yet consumed by our fills
    ask_left: Decimal


class MatchingEngine:
    """Spot matching and balances of one simulated account (see the module docstring)."""

    def __init__(
        self,
        *,
        rules: Mapping[str, SymbolRules],
        balances: Mapping[str, Decimal],
        fee_rate: Decimal = Decimal("0.001"),
        max_closed_orders: int = 10_000,
    ) -> None:
        if not _ZERO <= fee_rate < Decimal("0.5"):
            raise ValueError(f"fee_rate must be in [0, 0.5), got {fee_rate}")
        if max_closed_orders < 0:
            raise ValueError("max_closed_orders must be >= 0")
        self._rules = dict(rules)
        self._fee_rate = fee_rate
        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        for asset, amount in balances.items():
            if amount < 0:
                raise ValueError(f"balance of {asset} is negative: {amount}")
            self._free[asset] = amount
            self._locked[asset] = _ZERO
        for symbol_rules in self._rules.values():
            for asset in (symbol_rules.base_asset, symbol_rules.quote_asset):
                self._free.setdefault(asset, _ZERO)
                self._locked.setdefault(asset, _ZERO)
        self._books: dict[str, _Book] = {}
        self._orders: dict[int, SimOrder] = {}  # open and remembered closed orders
        self._open: dict[str, dict[int, SimOrder]] = {symbol: {} for symbol in self._rules}
        self._by_client_id: dict[tuple[str, str], int] = {}  # latest order with that id
        self._closed_ids: deque[int] = deque()
        self._max_closed_orders = max_closed_orders
        self._forgotten_orders = 0
        self._next_order_id = 1
        self._next_trade_id = 1

    # ----------------------------------------------------------------- market data

    def set_book(
        self,
        symbol: str,
        *,
        bid: Decimal,
        bid_qty: Decimal,
        ask: Decimal,
        ask_qty: Decimal,
        time_ms: int,
    ) -> list[OrderEvent]:
        """Record the top of book and fill the resting orders it crosses, as makers.

        A zero price means that side is empty. Crossed orders fill at their own limit price,
        best price first then oldest first, until the displayed quantity is used up.
        """
        self._rules_for(symbol)
        book = _Book(bid, bid_qty, ask, ask_qty, time_ms, bid_left=bid_qty, ask_left=ask_qty)
        self._books[symbol] = book
        open_orders = self._open[symbol].values()
        events: list[OrderEvent] = []
        if ask > 0:
            buys = [o for o in open_orders if o.side == "BUY" and o.price >= ask]
            buys.sort(key=lambda o: (-o.price, o.order_id))
            book.ask_left = self._fill_resting(buys, book.ask_left, time_ms, events)
        if bid > 0:
            sells = [o for o in open_orders if o.side == "SELL" and o.price <= bid]
            sells.sort(key=lambda o: (o.price, o.order_id))
            book.bid_left = self._fill_resting(sells, book.bid_left, time_ms, events)
        return events

    def _fill_resting(
        self, orders: Iterable[SimOrder], available: Decimal, time_ms: int, out: list[OrderEvent]
    ) -> Decimal:
        for order in orders:
            if available <= 0:
                break
            qty = min(order.remaining_qty, available)
            available -= qty
            out.append(
                self._fill(
                    order,
                    price=order.price,
                    qty=qty,
                    lock_price=order.price,
                    is_maker=True,
                    time_ms=time_ms,
                )
            )
            if order.status == "FILLED":
                self._close(order)
        return available

    # ----------------------------------------------------------------- orders

    def place(
        self,
        *,
        symbol: str,
        side: str,
        order_type: str,
        quantity: Decimal | None,
        price: Decimal | None = None,
        time_in_force: str | None = None,
        client_order_id: str | None = None,
        time_ms: int,
    ) -> tuple[SimOrder, list[OrderEvent]]:
        """Validate and place an order; return it (a copy) and its events: NEW, then TRADEs.

        IOC remainders and unfillable FOK orders end with an EXPIRED event. Raises the
        ``svc.errors`` exception Binance's code maps to; a rejected order changes nothing.
        """
        rules = self._rules_for(symbol)
        side_, type_, quantity = _parse_order(rules, side, order_type, quantity)
        tif, limit_price = _check_price_and_time_in_force(type_, price, time_in_force)
        order_id = self._next_order_id
        client_id = client_order_id or f"sim{order_id}"
        previous = self._find(symbol, None, client_id)
        if previous is not None and previous.is_open:
            raise exchange_error(-2010, MSG_DUPLICATE_ORDER)
        if type_ != "MARKET":
            _check_price_filter(rules, limit_price)
        _check_lot_size(rules, quantity)

        book = self._books.get(symbol)
        touch = _opposite_price(book, side_)  # best price we would take from, 0 if none
        if type_ == "MARKET":
            if touch <= 0:
                raise exchange_error(-2010, MSG_NO_LIQUIDITY)
            if rules.apply_min_notional_to_market and touch * quantity < rules.min_notional:
                raise exchange_error(-1013, MSG_NOTIONAL)
            lock_price = touch
        else:
            _check_notional(rules, limit_price * quantity)
            lock_price = limit_price
        crosses = touch > 0 and (
            type_ == "MARKET" or (limit_price >= touch if side_ == "BUY" else limit_price <= touch)
        )
        self._check_balance(rules, side_, lock_price * quantity, quantity)
        if type_ == "LIMIT_MAKER" and crosses:
            raise exchange_error(-2010, MSG_WOULD_TAKE)

        order = SimOrder(
            symbol=symbol,
            order_id=order_id,
            client_order_id=client_id,
            side=side_,
            type=type_,
            time_in_force=tif,
            price=limit_price,
            orig_qty=quantity,
            executed_qty=_ZERO,
            cummulative_quote_qty=_ZERO,
            status="NEW",
            time_ms=time_ms,
            update_time_ms=time_ms,
            working_time_ms=time_ms,
        )
        self._next_order_id += 1
        self._orders[order_id] = order
        self._by_client_id[(symbol, client_id)] = order_id
        self._open[symbol][order_id] = order
        self._lock(rules, side_, lock_price * quantity, quantity)
        events = [OrderEvent(replace(order), "NEW", None, time_ms)]
        if crosses:
            assert book is not None  # crosses implies a book
            self._take(order, book, lock_price=lock_price, time_ms=time_ms, out=events)
        if order.is_open and tif in ("IOC", "FOK"):
            events.append(self._end(order, "EXPIRED", time_ms))
        return replace(order), events

    def _take(
        self,
        order: SimOrder,
        book: _Book,
        *,
        lock_price: Decimal,
        time_ms: int,
        out: list[OrderEvent],
    ) -> None:
        """Fill a newly placed order that crosses the book, as taker, at the book price."""
        buying = order.side == "BUY"
        price = book.ask if buying else book.bid
        available = book.ask_left if buying else book.bid_left
        if order.type == "MARKET":
            qty = order.orig_qty  # beyond the displayed size too: see the module docstring
        elif order.time_in_force == "FOK" and available < order.orig_qty:
            return  # expires untouched
        else:
            qty = min(order.orig_qty, available)
        if qty <= 0:
            return
        left = max(_ZERO, available - qty)
        if buying:
            book.ask_left = left
        else:
            book.bid_left = left
        out.append(
            self._fill(
                order, price=price, qty=qty, lock_price=lock_price, is_maker=False, time_ms=time_ms
            )
        )
        if order.status == "FILLED":
            self._close(order)

    def cancel(
        self,
        *,
        symbol: str,
        order_id: int | None = None,
        client_order_id: str | None = None,
        time_ms: int,
    ) -> OrderEvent:
        """Cancel an open order and unlock what it still holds; -2011 if it is not open."""
        self._rules_for(symbol)
        order = self._find(symbol, order_id, client_order_id)
        if order is None or not order.is_open:
            raise exchange_error(-2011, MSG_UNKNOWN_ORDER)
        return self._end(order, "CANCELED", time_ms)

    def cancel_all(self, *, symbol: str, time_ms: int) -> list[OrderEvent]:
        """Cancel every open order of ``symbol``, oldest first.

        Returns an empty list when nothing is open; Binance answers -2011 in that case and
        the REST layer should do the same.
        """
        self._rules_for(symbol)
        return [
            self._end(order, "CANCELED", time_ms) for order in list(self._open[symbol].values())
        ]

    def get_order(
        self, *, symbol: str, order_id: int | None = None, client_order_id: str | None = None
    ) -> SimOrder:
        """A copy of an open or remembered closed order; -2013 if unknown."""
        self._rules_for(symbol)
        order = self._find(symbol, order_id, client_order_id)
        if order is None:
            raise exchange_error(-2013, MSG_ORDER_DOES_NOT_EXIST)
        return replace(order)

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        """Copies of the open orders (of one symbol, or all), oldest first."""
        if symbol is not None:
            self._rules_for(symbol)
            books = [self._open[symbol]]
        else:
            books = list(self._open.values())
        orders = [replace(order) for book in books for order in book.values()]
        orders.sort(key=lambda o: o.order_id)
        return orders

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Every asset's ``(free, locked)``."""
        return {asset: (free, self._locked[asset]) for asset, free in self._free.items()}

    def statistics(self) -> dict[str, int]:
        """Counts for telemetry: open orders, closed orders remembered and forgotten."""
        return {
            "open_orders": sum(len(book) for book in self._open.values()),
            "closed_orders_remembered": len(self._closed_ids),
            "closed_orders_forgotten": self._forgotten_orders,
        }

    # ----------------------------------------------------------------- internals

    def _rules_for(self, symbol: str) -> SymbolRules:
        rules = self._rules.get(symbol)
        if rules is None:
            raise exchange_error(-1121, MSG_INVALID_SYMBOL)
        return rules

    def _find(
        self, symbol: str, order_id: int | None, client_order_id: str | None
    ) -> SimOrder | None:
        if order_id is None and not client_order_id:
            raise exchange_error(-1102, MSG_ORDER_ID_OR_CLIENT_ID)
        if order_id is None:
            found = self._by_client_id.get((symbol, client_order_id or ""))
            return None if found is None else self._orders.get(found)
        order = self._orders.get(order_id)
        if order is None or order.symbol != symbol:
            return None
        if client_order_id and order.client_order_id != client_order_id:
            return None
        return order

    def _check_balance(
        self, rules: SymbolRules, side: OrderSide, cost: Decimal, quantity: Decimal
    ) -> None:
        if side == "BUY":
            enough = self._free[rules.quote_asset] >= cost
        else:
            enough = self._free[rules.base_asset] >= quantity
        if not enough:
            raise exchange_error(-2010, MSG_INSUFFICIENT_BALANCE)

    def _lock(self, rules: SymbolRules, side: OrderSide, cost: Decimal, quantity: Decimal) -> None:
        """Move what an order may spend from free to locked: quote for BUY, base for SELL."""
        asset, amount = (rules.quote_asset, cost) if side == "BUY" else (rules.base_asset, quantity)
        self._free[asset] -= amount
        self._locked[asset] += amount

    def _unlock(
        self, rules: SymbolRules, side: OrderSide, cost: Decimal, quantity: Decimal
    ) -> None:
        self._lock(rules, side, -cost, -quantity)

    def _fill(
        self,
        order: SimOrder,
        *,
        price: Decimal,
        qty: Decimal,
        lock_price: Decimal,
        is_maker: bool,
        time_ms: int,
    ) -> OrderEvent:
        """Move funds for one fill and update the order. ``lock_price`` is what was locked
        per unit of a BUY (its limit, or the ask a MARKET BUY was accepted at)."""
        rules = self._rules[order.symbol]
        base, quote = rules.base_asset, rules.quote_asset
        notional = price * qty
        if order.side == "BUY":
            self._locked[quote] -= lock_price * qty
            self._free[quote] += lock_price * qty - notional  # price improvement comes back
            commission = _commission(qty * self._fee_rate)
            commission_asset = base
            self._free[base] += qty - commission
        else:
            self._locked[base] -= qty
            commission = _commission(notional * self._fee_rate)
            commission_asset = quote
            self._free[quote] += notional - commission
        order.executed_qty += qty
        order.cummulative_quote_qty += notional
        order.status = "FILLED" if order.executed_qty == order.orig_qty else "PARTIALLY_FILLED"
        order.update_time_ms = time_ms
        fill = SimFill(price, qty, commission, commission_asset, self._next_trade_id, is_maker)
        self._next_trade_id += 1
        return OrderEvent(replace(order), "TRADE", fill, time_ms)

    def _end(
        self, order: SimOrder, outcome: Literal["CANCELED", "EXPIRED"], time_ms: int
    ) -> OrderEvent:
        """Cancel or expire an open order: unlock its remainder and forget it as open."""
        rules = self._rules[order.symbol]
        remaining = order.remaining_qty
        # Only limit-priced orders can still be open here (MARKET fills completely), so what
        # a BUY still holds locked is its limit price times its remaining quantity.
        self._unlock(rules, order.side, order.price * remaining, remaining)
        order.status = outcome
        order.update_time_ms = time_ms
        self._close(order)
        return OrderEvent(replace(order), outcome, None, time_ms)

    def _close(self, order: SimOrder) -> None:
        self._open[order.symbol].pop(order.order_id, None)
        self._closed_ids.append(order.order_id)
        while len(self._closed_ids) > self._max_closed_orders:
            forgotten = self._orders.pop(self._closed_ids.popleft())
            key = (forgotten.symbol, forgotten.client_order_id)
            if self._by_client_id.get(key) == forgotten.order_id:
                del self._by_client_id[key]
            self._forgotten_orders += 1


def _parse_order(
    rules: SymbolRules, side: str, order_type: str, quantity: Decimal | None
) -> tuple[OrderSide, OrderType, Decimal]:
    """The request's side, type and quantity, or the Binance error for the first bad one."""
    side_ = _SIDES.get(side)
    if side_ is None:
        raise exchange_error(-1117, MSG_INVALID_SIDE)
    type_ = _ORDER_TYPES.get(order_type)
    if type_ is None:
        raise exchange_error(-1116, MSG_INVALID_ORDER_TYPE)
    if rules.order_types and type_ not in rules.order_types:
        message = MSG_MARKET_NOT_SUPPORTED if type_ == "MARKET" else MSG_UNSUPPORTED_COMBINATION
        raise exchange_error(-2010, message)
    if quantity is None or quantity <= 0:
        raise exchange_error(-1102, _mandatory("quantity"))
    if rules.status != "TRADING":
        raise exchange_error(-2010, MSG_MARKET_CLOSED)
    return side_, type_, quantity


def _check_price_and_time_in_force(
    order_type: OrderType, price: Decimal | None, time_in_force: str | None
) -> tuple[TimeInForce, Decimal]:
    """The order's stored time in force and limit price, or -1102/-1106/-1115."""
    if order_type == "MARKET":
        if price is not None:
            raise exchange_error(-1106, _not_required("price"))
        if time_in_force:
            raise exchange_error(-1106, _not_required("timeInForce"))
        return "", _ZERO
    if price is None:
        raise exchange_error(-1102, _mandatory("price"))
    if order_type == "LIMIT_MAKER":
        if time_in_force:
            raise exchange_error(-1106, _not_required("timeInForce"))
        return "GTC", price  # Binance reports LIMIT_MAKER orders as GTC
    if not time_in_force:
        return "GTC", price
    tif = _TIMES_IN_FORCE.get(time_in_force)
    if tif is None:
        raise exchange_error(-1115, MSG_INVALID_TIME_IN_FORCE)
    return tif, price


def _check_price_filter(rules: SymbolRules, price: Decimal) -> None:
    if (
        price <= 0
        or price < rules.min_price
        or (rules.max_price > 0 and price > rules.max_price)
        or (rules.tick_size > 0 and (price - rules.min_price) % rules.tick_size != 0)
    ):
        raise exchange_error(-1013, MSG_PRICE_FILTER)


def _check_lot_size(rules: SymbolRules, quantity: Decimal) -> None:
    if (
        quantity < rules.min_quantity
        or (rules.max_quantity > 0 and quantity > rules.max_quantity)
        or (rules.step_size > 0 and (quantity - rules.min_quantity) % rules.step_size != 0)
    ):
        raise exchange_error(-1013, MSG_LOT_SIZE)


def _check_notional(rules: SymbolRules, notional: Decimal) -> None:
    if notional < rules.min_notional or (rules.max_notional > 0 and notional > rules.max_notional):
        raise exchange_error(-1013, MSG_NOTIONAL)


def _opposite_price(book: _Book | None, side: OrderSide) -> Decimal:
    if book is None:
        return _ZERO
    return book.ask if side == "BUY" else book.bid


def _commission(amount: Decimal) -> Decimal:
    return amount.quantize(COMMISSION_QUANTUM, rounding=ROUND_HALF_UP)
