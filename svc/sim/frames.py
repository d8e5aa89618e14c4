"""Simulator records -> Binance wire structs: the one place the simulator speaks Binance.

Market records (``svc.sim.market``) become stream events, engine events (``svc.sim.engine``)
become ``executionReport``s and REST order payloads. Decimals are written the way Binance
writes them: fixed-point strings with eight decimals.
"""

from __future__ import annotations

from decimal import Decimal

from svc.binance.rest import CancelResponse, OrderFill, OrderResponse, OrderState
from svc.binance.streams import (
    AccountPositionEvent,
    AggTradeEvent,
    BalanceEntry,
    BookTickerEvent,
    ExecutionReportEvent,
    KlineBar,
    KlineEvent,
    TradeEvent,
)
from svc.sim.engine import OrderEvent, SimFill, SimOrder
from svc.sim.market import SimBook, SimKline, SimTrade


def fixed(value: Decimal) -> str:
    """Binance's decimal format: ``Decimal('1.5')`` -> ``'1.50000000'``."""
    return f"{value:.8f}"


def kline_event(kline: SimKline, *, event_time_ms: int) -> KlineEvent[str]:
    return KlineEvent(
        event_time=event_time_ms,
        symbol=kline.symbol,
        kline=KlineBar(
            open_time=kline.open_time_ms,
            close_time=kline.close_time_ms,
            symbol=kline.symbol,
            interval=kline.interval,
            first_trade_id=kline.first_trade_id,
            last_trade_id=kline.last_trade_id,
            open=fixed(kline.open),
            close=fixed(kline.close),
            high=fixed(kline.high),
            low=fixed(kline.low),
            volume=fixed(kline.volume),
            trades=kline.trades,
            closed=kline.closed,
            quote_volume=fixed(kline.quote_volume),
            taker_buy_volume=fixed(kline.taker_buy_volume),
            taker_buy_quote_volume=fixed(kline.taker_buy_quote_volume),
            ignore="0",
        ),
    )


def agg_trade_event(trade: SimTrade, *, event_time_ms: int) -> AggTradeEvent[str]:
    return AggTradeEvent(
        event_time=event_time_ms,
        symbol=trade.symbol,
        agg_trade_id=trade.trade_id,
        price=fixed(trade.price),
        quantity=fixed(trade.qty),
        first_trade_id=trade.trade_id,
        last_trade_id=trade.trade_id,
        trade_time=trade.time_ms,
        buyer_is_maker=trade.buyer_is_maker,
        ignore=True,
    )


def trade_event(trade: SimTrade, *, event_time_ms: int) -> TradeEvent[str]:
    return TradeEvent(
        event_time=event_time_ms,
        symbol=trade.symbol,
        trade_id=trade.trade_id,
        price=fixed(trade.price),
        quantity=fixed(trade.qty),
        trade_time=trade.time_ms,
        buyer_is_maker=trade.buyer_is_maker,
        ignore=True,
    )


def book_ticker_event(book: SimBook) -> BookTickerEvent[str]:
    """Spot bookTicker: no ``e``, no ``E`` (as Binance spot sends it)."""
    return BookTickerEvent(
        update_id=book.update_id,
        symbol=book.symbol,
        bid_price=fixed(book.bid),
        bid_size=fixed(book.bid_qty),
        ask_price=fixed(book.ask),
        ask_size=fixed(book.ask_qty),
    )


def execution_report(
    event: OrderEvent, *, cancel_client_order_id: str = ""
) -> ExecutionReportEvent[str]:
    order = event.order
    fill = event.fill
    canceled = event.execution_type == "CANCELED"
    return ExecutionReportEvent(
        event_time=event.time_ms,
        symbol=order.symbol,
        client_order_id=(cancel_client_order_id or order.client_order_id)
        if canceled
        else order.client_order_id,
        side=order.side,
        order_type=order.type,
        time_in_force=order.time_in_force or "GTC",
        quantity=fixed(order.orig_qty),
        price=fixed(order.price),
        original_client_order_id=order.client_order_id if canceled else "",
        execution_type=event.execution_type,
        status=order.status,
        reject_reason="NONE",
        order_id=order.order_id,
        last_quantity=fixed(fill.qty if fill else Decimal(0)),
        filled_quantity=fixed(order.executed_qty),
        last_price=fixed(fill.price if fill else Decimal(0)),
        commission=fixed(fill.commission if fill else Decimal(0)),
        commission_asset=fill.commission_asset if fill else None,
        transaction_time=event.time_ms,
        trade_id=fill.trade_id if fill else -1,
        ignore_i=order.order_id * 2 + 1,
        is_working=order.is_open,
        is_maker=fill.is_maker if fill else False,
        ignore_m=False,
        created_time=order.time_ms,
        cumulative_quote=fixed(order.cummulative_quote_qty),
        last_quote=fixed(fill.price * fill.qty if fill else Decimal(0)),
        quote_order_quantity=fixed(Decimal(0)),
        working_time=order.working_time_ms,
        self_trade_prevention="NONE",
    )


def account_position(
    balances: dict[str, tuple[Decimal, Decimal]], *, assets: set[str], time_ms: int
) -> AccountPositionEvent[str]:
    """``outboundAccountPosition`` for the assets that changed."""
    return AccountPositionEvent(
        event_time=time_ms,
        last_update_time=time_ms,
        balances=[
            BalanceEntry(asset=a, free=fixed(balances[a][0]), locked=fixed(balances[a][1]))
            for a in sorted(assets)
            if a in balances
        ],
    )


def _fill(fill: SimFill) -> OrderFill:
    return OrderFill(
        price=fixed(fill.price),
        qty=fixed(fill.qty),
        commission=fixed(fill.commission),
        commission_asset=fill.commission_asset,
        trade_id=fill.trade_id,
    )


def order_response(
    order: SimOrder, events: list[OrderEvent], *, response_type: str, transact_time_ms: int
) -> OrderResponse:
    """The answer to ``POST /api/v3/order`` in the requested ``newOrderRespType``."""
    ack = OrderResponse(
        symbol=order.symbol,
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        transact_time=transact_time_ms,
    )
    if response_type == "ACK":
        return ack
    ack.price = fixed(order.price)
    ack.orig_qty = fixed(order.orig_qty)
    ack.executed_qty = fixed(order.executed_qty)
    ack.orig_quote_order_qty = fixed(Decimal(0))
    ack.cummulative_quote_qty = fixed(order.cummulative_quote_qty)
    ack.status = order.status
    ack.time_in_force = order.time_in_force or "GTC"
    ack.type = order.type
    ack.side = order.side
    ack.working_time = order.working_time_ms
    ack.self_trade_prevention_mode = "NONE"
    if response_type == "FULL":
        ack.fills = [_fill(e.fill) for e in events if e.fill is not None]
    return ack


def cancel_response(
    event: OrderEvent, *, cancel_client_order_id: str, transact_time_ms: int
) -> CancelResponse:
    order = event.order
    return CancelResponse(
        symbol=order.symbol,
        orig_client_order_id=order.client_order_id,
        order_id=order.order_id,
        client_order_id=cancel_client_order_id,
        transact_time=transact_time_ms,
        price=fixed(order.price),
        orig_qty=fixed(order.orig_qty),
        executed_qty=fixed(order.executed_qty),
        cummulative_quote_qty=fixed(order.cummulative_quote_qty),
        status=order.status,
        time_in_force=order.time_in_force or "GTC",
        type=order.type,
        side=order.side,
    )


def order_state(order: SimOrder) -> OrderState:
    return OrderState(
        symbol=order.symbol,
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        price=fixed(order.price),
        orig_qty=fixed(order.orig_qty),
        executed_qty=fixed(order.executed_qty),
        cummulative_quote_qty=fixed(order.cummulative_quote_qty),
        status=order.status,
        time_in_force=order.time_in_force or "GTC",
        type=order.type,
        side=order.side,
        time=order.time_ms,
        update_time=order.update_time_ms,
        is_working=order.is_open,
        working_time=order.working_time_ms,
    )
