"""The exchange boundary: the ``ExchangeClient`` protocol and an in-memory fake beside it.

The order manager, the feed's backfill and start-up reconciliation talk to the exchange only
through ``ExchangeClient``. Every method raises ``svc.errors.ExchangeError`` subclasses, never
a library's own exceptions. The real implementation over python-binance is
``svc.binance_client.BinanceClient``; ``FakeExchange`` records calls for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from svc.errors import DuplicateOrder, UnknownOrder
from svc.model import Balance, Candle, NewOrder, OrderUpdate, SymbolRules


class ExchangeClient(Protocol):
    async def symbol_rules(self, symbols: list[str]) -> dict[str, SymbolRules]:
        """The trading rules of ``symbols`` (exchangeInfo)."""
        ...

    async def new_order(self, order: NewOrder) -> OrderUpdate:
        """Place an order; the exchange's answer as an ``OrderUpdate`` (its state after placing).

        ``OrderUpdate.execution_type`` is ``NEW`` for a resting order and ``TRADE`` when the
        response already carries fills (their sum is in ``filled_quantity``, the average
        price in ``last_price``).
        """
        ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderUpdate: ...

    async def query_order(self, symbol: str, client_order_id: str) -> OrderUpdate:
        """The order's current state on the exchange; ``UnknownOrder`` if it was never placed
        (or is too old for the exchange to remember)."""
        ...

    async def open_orders(self, symbol: str) -> list[OrderUpdate]: ...

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Candle]:
        """Klines with open time in [start_ms, end_ms], oldest first; without a range the
        most recent ``limit``, the last of which is usually still forming."""
        ...

    async def balances(self) -> dict[str, Balance]: ...

    async def server_time_ms(self) -> int: ...


def _update(
    order: NewOrder,
    *,
    status: str,
    execution: str,
    filled: Decimal,
    price: Decimal,
    order_id: int,
    ts: int,
) -> OrderUpdate:
    return OrderUpdate(
        symbol=order.symbol,
        client_order_id=order.client_order_id,
        order_id=order_id,
        side=order.side,
        order_type=order.order_type,
        time_in_force=order.time_in_force,
        quantity=order.quantity,
        price=order.price,
        execution_type=execution,
        status=status,
        reject_reason="NONE",
        last_quantity=filled,
        last_price=price,
        filled_quantity=filled,
        commission=Decimal(0),
        commission_asset="",
        trade_id=order_id if filled else -1,
        is_maker=False,
        ts_event=ts,
        ts_init=ts,
    )


class FakeExchange:
    """An in-memory exchange that fills MARKET orders at ``prices[symbol]`` and rests LIMITs.

    It records every call in ``calls`` and raises the real svc errors for duplicate client
    order ids and unknown orders. Set ``fail_next`` to an exception to make the next
    ``new_order`` raise it.
    """

    def __init__(
        self,
        *,
        rules: Mapping[str, SymbolRules],
        prices: Mapping[str, Decimal],
        balances: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.rules = dict(rules)
        self.prices = dict(prices)
        self._balances = dict(balances or {})
        self.calls: list[tuple[str, object]] = []
        self.orders: dict[str, OrderUpdate] = {}
        self.candles: dict[tuple[str, str], list[Candle]] = {}
        self.fail_next: Exception | None = None
        self.now_ms = 1_700_000_000_000
        self._next_id = 1

    async def symbol_rules(self, symbols: list[str]) -> dict[str, SymbolRules]:
        self.calls.append(("symbol_rules", tuple(symbols)))
        return {s: self.rules[s] for s in symbols}

    async def new_order(self, order: NewOrder) -> OrderUpdate:
        self.calls.append(("new_order", order))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        known = self.orders.get(order.client_order_id)
        if known is not None and known.status in ("NEW", "PARTIALLY_FILLED"):
            raise DuplicateOrder(-2010, "Duplicate order sent.", http_status=400)
        order_id, self._next_id = self._next_id, self._next_id + 1
        ts = self.now_ms * 1_000_000
        if order.order_type == "MARKET":
            update = _update(
                order,
                status="FILLED",
                execution="TRADE",
                filled=order.quantity,
                price=self.prices[order.symbol],
                order_id=order_id,
                ts=ts,
            )
        else:
            update = _update(
                order,
                status="NEW",
                execution="NEW",
                filled=Decimal(0),
                price=Decimal(0),
                order_id=order_id,
                ts=ts,
            )
        self.orders[order.client_order_id] = update
        return update

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderUpdate:
        self.calls.append(("cancel_order", (symbol, client_order_id)))
        known = self.orders.get(client_order_id)
        if known is None or known.status not in ("NEW", "PARTIALLY_FILLED"):
            raise UnknownOrder(-2011, "Unknown order sent.", http_status=400)
        canceled = OrderUpdate(
            **{
                **{f: getattr(known, f) for f in known.__struct_fields__},
                "execution_type": "CANCELED",
                "status": "CANCELED",
                "last_quantity": Decimal(0),
            }
        )
        self.orders[client_order_id] = canceled
        return canceled

    async def query_order(self, symbol: str, client_order_id: str) -> OrderUpdate:
        self.calls.append(("query_order", (symbol, client_order_id)))
        known = self.orders.get(client_order_id)
        if known is None or known.symbol != symbol:
            raise UnknownOrder(-2013, "Order does not exist.", http_status=400)
        return known

    async def open_orders(self, symbol: str) -> list[OrderUpdate]:
        self.calls.append(("open_orders", symbol))
        return [
            o
            for o in self.orders.values()
            if o.symbol == symbol and o.status in ("NEW", "PARTIALLY_FILLED")
        ]

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Candle]:
        self.calls.append(("klines", (symbol, interval, start_ms, end_ms, limit)))
        rows = self.candles.get((symbol, interval), [])
        if start_ms is None and end_ms is None:
            return rows[-limit:]
        low = (start_ms or 0) * 1_000_000
        high = end_ms * 1_000_000 if end_ms is not None else 2**63
        return [c for c in rows if low <= c.open_time <= high][:limit]

    async def balances(self) -> dict[str, Balance]:
        self.calls.append(("balances", None))
        return {a: Balance(a, free, Decimal(0)) for a, free in self._balances.items()}

    async def server_time_ms(self) -> int:
        return self.now_ms
