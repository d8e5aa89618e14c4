"""The simulator's matching engine, against the real BTCUSDT filters from exchangeInfo."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svc.errors import (
    DuplicateOrder,
    ExchangeError,
    FilterViolation,
    InsufficientBalance,
    InvalidRequest,
    OrderRejected,
    UnknownOrder,
)
from svc.model import SymbolRules
from svc.sim.engine import MatchingEngine, OrderEvent, SimOrder
from tests.recorded import data_dir, recorded_rules

DATA = data_dir()

D = Decimal


BTCUSDT = recorded_rules("BTCUSDT")


def make_engine(
    btc: str = "1", usdt: str = "100000", rules: SymbolRules = BTCUSDT
) -> MatchingEngine:
    return MatchingEngine(
        rules={"BTCUSDT": rules}, balances={"BTC": D(btc), "USDT": D(usdt)}, fee_rate=D("0.001")
    )


def book(
    engine: MatchingEngine, bid: str, bid_qty: str, ask: str, ask_qty: str, *, t: int = 1
) -> list[OrderEvent]:
    return engine.set_book(
        "BTCUSDT", bid=D(bid), bid_qty=D(bid_qty), ask=D(ask), ask_qty=D(ask_qty), time_ms=t
    )


def limit(
    engine: MatchingEngine,
    side: str,
    price: str,
    qty: str,
    *,
    tif: str | None = None,
    order_type: str = "LIMIT",
    cid: str | None = None,
) -> tuple[SimOrder, list[OrderEvent]]:
    return engine.place(
        symbol="BTCUSDT",
        side=side,
        order_type=order_type,
        quantity=D(qty),
        price=D(price),
        time_in_force=tif,
        client_order_id=cid,
        time_ms=2,
    )


def market(engine: MatchingEngine, side: str, qty: str) -> tuple[SimOrder, list[OrderEvent]]:
    return engine.place(
        symbol="BTCUSDT", side=side, order_type="MARKET", quantity=D(qty), time_ms=2
    )


def test_rules_come_from_the_recorded_exchange_info() -> None:
    assert BTCUSDT.tick_size == D("0.01")
    assert BTCUSDT.step_size == D("0.00001")
    assert BTCUSDT.min_notional == D("5")
    assert BTCUSDT.apply_min_notional_to_market is True


def test_resting_limit_buy_locks_quote_and_reports_new() -> None:
    engine = make_engine()
    book(engine, "50000.00", "1", "50001.00", "1")
    order, events = limit(engine, "BUY", "49000.00", "0.1", cid="a1")
    assert [e.execution_type for e in events] == ["NEW"]
    assert order.status == "NEW"
    assert order.time_in_force == "GTC"
    assert engine.balances()["USDT"] == (D("95100"), D("4900"))
    assert [o.client_order_id for o in engine.open_orders("BTCUSDT")] == ["a1"]


def test_crossing_limit_buy_takes_at_the_ask_and_rests_the_remainder() -> None:
    engine = make_engine()
    book(engine, "50000.00", "1", "50001.00", "0.3")
    order, events = limit(engine, "BUY", "50010.00", "0.5")
    assert [e.execution_type for e in events] == ["NEW", "TRADE"]
    fill = events[1].fill
    assert fill is not None
    assert (fill.price, fill.qty, fill.is_maker) == (D("50001.00"), D("0.3"), False)
    assert (fill.commission, fill.commission_asset) == (D("0.0003"), "BTC")
    assert order.status == "PARTIALLY_FILLED"
    assert order.executed_qty == D("0.3")
    assert order.cummulative_quote_qty == D("15000.3")
    # Paid 15000.3 for 0.3; 0.2 x 50010 stays locked; the price improvement came back.
    assert engine.balances()["USDT"] == (D("100000") - D("15000.3") - D("10002"), D("10002"))
    assert engine.balances()["BTC"] == (D("1.2997"), D("0"))


def test_resting_order_fills_as_maker_at_its_own_price_across_book_updates() -> None:
    engine = make_engine()
    book(engine, "50000.00", "1", "50001.00", "1")
    order, _ = limit(engine, "SELL", "50005.00", "0.5")
    assert book(engine, "50004.00", "1", "50006.00", "1", t=3) == []
    events = book(engine, "50010.00", "0.2", "50011.00", "1", t=4)
    assert len(events) == 1
    fill = events[0].fill
    assert fill is not None
    assert (fill.price, fill.qty, fill.is_maker) == (D("50005.00"), D("0.2"), True)
    assert events[0].order.status == "PARTIALLY_FILLED"
    events = book(engine, "50010.00", "5", "50011.00", "1", t=5)
    assert [e.order.status for e in events] == ["FILLED"]
    final = engine.get_order(symbol="BTCUSDT", order_id=order.order_id)
    assert final.executed_qty == D("0.5")
    assert final.update_time_ms == 5
    assert engine.open_orders() == []
    proceeds = D("50005") * D("0.5")
    assert engine.balances()["USDT"] == (D("100000") + proceeds - proceeds * D("0.001"), D("0"))
    assert engine.balances()["BTC"] == (D("0.5"), D("0"))


def test_resting_orders_share_displayed_liquidity_best_price_first() -> None:
    engine = make_engine()
    book(engine, "49000.00", "1", "51000.00", "1")
    low, _ = limit(engine, "BUY", "50000.00", "0.1")
    high, _ = limit(engine, "BUY", "50100.00", "0.1")
    events = book(engine, "49000.00", "1", "49900.00", "0.15", t=3)
    assert [(e.order.order_id, e.fill.qty if e.fill else None) for e in events] == [
        (high.order_id, D("0.1")),
        (low.order_id, D("0.05")),
    ]


def test_ioc_remainder_expires_and_unlocks() -> None:
    engine = make_engine()
    book(engine, "50000.00", "1", "50001.00", "0.1")
    order, events = limit(engine, "BUY", "50001.00", "0.3", tif="IOC")
    assert [e.execution_type for e in events] == ["NEW", "TRADE", "EXPIRED"]
    assert order.status == "EXPIRED"
    assert order.executed_qty == D("0.1")
    assert engine.balances()["USDT"] == (D("100000") - D("5000.1"), D("0"))
    assert engine.open_orders() == []


def test_fok_expires_untouched_unless_it_fills_completely() -> None:
    engine = make_engine()
    book(engine, "50000.00", "0.2", "50001.00", "1")
    order, events = limit(engine, "SELL", "49999.00", "0.3", tif="FOK")
    assert [e.execution_type for e in events] == ["NEW", "EXPIRED"]
    assert order.executed_qty == 0
    assert engine.balances()["BTC"] == (D("1"), D("0"))
    order, events = limit(engine, "SELL", "49999.00", "0.2", tif="FOK")
    assert [e.execution_type for e in events] == ["NEW", "TRADE"]
    assert order.status == "FILLED"
    assert events[1].fill is not None
    assert events[1].fill.price == D("50000.00")


def test_taker_fills_consume_displayed_liquidity_until_the_next_book() -> None:
    engine = make_engine()
    book(engine, "50000.00", "1", "50001.00", "0.1")
    first, _ = limit(engine, "BUY", "50001.00", "0.1", tif="IOC")
    second, _ = limit(engine, "BUY", "50001.00", "0.1", tif="IOC")
    assert (first.status, second.status) == ("FILLED", "EXPIRED")


def test_market_orders_fill_completely_at_the_touch() -> None:
    engine = make_engine()
    book(engine, "50000.00", "0.01", "50001.00", "0.01")
    order, events = market(engine, "BUY", "0.5")
    assert order.status == "FILLED"
    assert (order.price, order.time_in_force) == (D("0"), "")
    assert [e.execution_type for e in events] == ["NEW", "TRADE"]
    assert events[1].fill is not None
    assert events[1].fill.price == D("50001.00")
    assert order.cummulative_quote_qty == D("25000.5")
    order, events = market(engine, "SELL", "1")
    assert order.status == "FILLED"
    assert events[1].fill is not None
    assert events[1].fill.price == D("50000.00")
    assert events[1].fill.commission_asset == "USDT"


def test_market_order_without_a_book_is_rejected() -> None:
    engine = make_engine()
    with pytest.raises(OrderRejected) as caught:
        market(engine, "BUY", "0.1")
    assert caught.value.code == -2010
    assert engine.balances()["USDT"] == (D("100000"), D("0"))


def test_limit_maker_that_would_take_is_rejected() -> None:
    engine = make_engine()
    book(engine, "50000.00", "1", "50001.00", "1")
    with pytest.raises(OrderRejected) as caught:
        limit(engine, "BUY", "50001.00", "0.1", order_type="LIMIT_MAKER")
    assert (caught.value.code, caught.value.msg) == (
        -2010,
        "Order would immediately match and take.",
    )
    order, events = limit(engine, "BUY", "50000.00", "0.1", order_type="LIMIT_MAKER")
    assert [e.execution_type for e in events] == ["NEW"]
    assert (order.type, order.time_in_force) == ("LIMIT_MAKER", "GTC")


@pytest.mark.parametrize(
    ("price", "qty", "message"),
    [
        ("50000.005", "0.1", "Filter failure: PRICE_FILTER"),
        ("0.001", "10000", "Filter failure: PRICE_FILTER"),
        ("1000000.01", "0.001", "Filter failure: PRICE_FILTER"),
        ("50000.00", "0.000015", "Filter failure: LOT_SIZE"),
        ("50000.00", "0.000001", "Filter failure: LOT_SIZE"),
        ("0.01", "9000.00001", "Filter failure: LOT_SIZE"),
        ("50000.00", "0.00009", "Filter failure: NOTIONAL"),
        ("1000000.00", "9.1", "Filter failure: NOTIONAL"),
    ],
)
def test_filter_failures_use_binance_messages(price: str, qty: str, message: str) -> None:
    engine = make_engine(btc="10000", usdt="100000000")
    with pytest.raises(FilterViolation) as caught:
        limit(engine, "SELL", price, qty)
    assert (caught.value.code, caught.value.msg) == (-1013, message)


def test_market_order_below_min_notional_is_rejected() -> None:
    engine = make_engine()
    book(engine, "50000.00", "1", "50001.00", "1")
    with pytest.raises(FilterViolation, match="NOTIONAL"):
        market(engine, "BUY", "0.00009")


@pytest.mark.parametrize(("side", "qty"), [("BUY", "2.1"), ("SELL", "1.00001")])
def test_insufficient_balance(side: str, qty: str) -> None:
    engine = make_engine()
    with pytest.raises(InsufficientBalance) as caught:
        limit(engine, side, "50000.00", qty)
    assert caught.value.msg == "Account has insufficient balance for requested action."
    assert engine.balances() == {"BTC": (D("1"), D("0")), "USDT": (D("100000"), D("0"))}


def test_duplicate_client_order_id_is_rejected_only_while_open() -> None:
    engine = make_engine()
    first, _ = limit(engine, "BUY", "40000.00", "0.01", cid="same")
    with pytest.raises(DuplicateOrder) as caught:
        limit(engine, "BUY", "40000.00", "0.01", cid="same")
    assert (caught.value.code, caught.value.msg) == (-2010, "Duplicate order sent.")
    engine.cancel(symbol="BTCUSDT", client_order_id="same", time_ms=3)
    second, _ = limit(engine, "BUY", "40000.00", "0.01", cid="same")
    assert second.order_id == first.order_id + 1
    assert engine.get_order(symbol="BTCUSDT", client_order_id="same").order_id == second.order_id
    assert engine.get_order(symbol="BTCUSDT", order_id=first.order_id).status == "CANCELED"


def test_cancel_unlocks_and_reports_canceled() -> None:
    engine = make_engine()
    order, _ = limit(engine, "BUY", "40000.00", "0.5")
    event = engine.cancel(symbol="BTCUSDT", order_id=order.order_id, time_ms=7)
    assert (event.execution_type, event.order.status, event.time_ms) == ("CANCELED", "CANCELED", 7)
    assert engine.balances()["USDT"] == (D("100000"), D("0"))
    with pytest.raises(UnknownOrder) as caught:
        engine.cancel(symbol="BTCUSDT", order_id=order.order_id, time_ms=8)
    assert (caught.value.code, caught.value.msg) == (-2011, "Unknown order sent.")


def test_cancel_all_cancels_only_that_symbols_open_orders() -> None:
    engine = make_engine()
    limit(engine, "BUY", "40000.00", "0.1")
    limit(engine, "SELL", "60000.00", "0.1")
    events = engine.cancel_all(symbol="BTCUSDT", time_ms=9)
    assert [e.execution_type for e in events] == ["CANCELED", "CANCELED"]
    assert engine.open_orders() == []
    assert engine.balances() == {"BTC": (D("1"), D("0")), "USDT": (D("100000"), D("0"))}
    assert engine.cancel_all(symbol="BTCUSDT", time_ms=10) == []


def test_unknown_orders_and_symbols() -> None:
    engine = make_engine()
    with pytest.raises(UnknownOrder) as caught:
        engine.get_order(symbol="BTCUSDT", order_id=42)
    assert (caught.value.code, caught.value.msg) == (-2013, "Order does not exist.")
    with pytest.raises(UnknownOrder, match="Unknown order sent"):
        engine.cancel(symbol="BTCUSDT", client_order_id="nope", time_ms=1)
    with pytest.raises(InvalidRequest) as invalid:
        engine.get_order(symbol="BTCUSDT")
    assert invalid.value.code == -1102
    with pytest.raises(InvalidRequest) as bad_symbol:
        engine.place(symbol="NOPEUSDT", side="BUY", order_type="MARKET", quantity=D("1"), time_ms=1)
    assert (bad_symbol.value.code, bad_symbol.value.msg) == (-1121, "Invalid symbol.")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"side": "HOLD"}, -1117),
        ({"order_type": "STOP_LOSS"}, -1116),
        ({"time_in_force": "GTX"}, -1115),
        ({"price": None}, -1102),
        ({"quantity": None}, -1102),
        ({"quantity": D("0")}, -1102),
        ({"order_type": "MARKET"}, -1106),
        ({"order_type": "LIMIT_MAKER", "time_in_force": "GTC"}, -1106),
    ],
)
def test_malformed_requests(overrides: dict[str, object], code: int) -> None:
    engine = make_engine()
    request: dict[str, object] = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "quantity": D("0.1"),
        "price": D("40000"),
        "time_in_force": "GTC",
        "time_ms": 1,
    }
    request.update(overrides)
    with pytest.raises(ExchangeError) as caught:
        engine.place(**request)  # type: ignore[arg-type]
    assert caught.value.code == code


def test_closed_symbol_rejects_orders() -> None:
    halted = msgspec.structs.replace(BTCUSDT, status="BREAK")
    engine = make_engine(rules=halted)
    with pytest.raises(OrderRejected, match="Market is closed"):
        limit(engine, "BUY", "40000.00", "0.1")


def test_events_hold_snapshots() -> None:
    engine = make_engine()
    book(engine, "50000.00", "1", "50001.00", "0.1")
    _, events = limit(engine, "BUY", "50001.00", "0.3")
    assert events[0].order.status == "NEW"
    assert events[0].order.executed_qty == 0
    book(engine, "50000.00", "1", "50001.00", "1", t=5)
    assert events[1].order.status == "PARTIALLY_FILLED"
    assert engine.get_order(symbol="BTCUSDT", order_id=events[0].order.order_id).status == "FILLED"


def test_closed_orders_are_remembered_within_a_bound() -> None:
    engine = MatchingEngine(
        rules={"BTCUSDT": BTCUSDT}, balances={"USDT": D("100000")}, max_closed_orders=2
    )
    ids = []
    for _ in range(3):
        order, _ = limit(engine, "BUY", "40000.00", "0.01")
        engine.cancel(symbol="BTCUSDT", order_id=order.order_id, time_ms=3)
        ids.append(order.order_id)
    with pytest.raises(UnknownOrder):
        engine.get_order(symbol="BTCUSDT", order_id=ids[0])
    assert engine.get_order(symbol="BTCUSDT", order_id=ids[2]).status == "CANCELED"
    assert engine.statistics()["closed_orders_forgotten"] == 1


# ----------------------------------------------------------------------------- properties

TICK, STEP = BTCUSDT.tick_size, BTCUSDT.step_size
START_BTC, START_USDT = D("2"), D("20000")


@dataclass(frozen=True)
class SetBook:
    bid_ticks: int
    spread_ticks: int
    bid_steps: int
    ask_steps: int


@dataclass(frozen=True)
class Place:
    side: str
    order_type: str
    time_in_force: str
    price_ticks: int
    qty_steps: int


@dataclass(frozen=True)
class Cancel:
    pick: int


operations = st.one_of(
    st.builds(
        SetBook,
        st.integers(9_000, 11_000),  # bid 90.00 .. 110.00
        st.integers(1, 50),
        st.integers(0, 100_000),  # displayed qty up to 1 BTC
        st.integers(0, 100_000),
    ),
    st.builds(
        Place,
        st.sampled_from(["BUY", "SELL"]),
        st.sampled_from(["LIMIT", "LIMIT", "MARKET", "LIMIT_MAKER"]),
        st.sampled_from(["GTC", "IOC", "FOK"]),
        st.integers(8_500, 11_500),
        st.integers(1, 200_000),  # up to 2 BTC: sometimes more than the account holds
    ),
    st.builds(Cancel, st.integers(0, 30)),
)


@dataclass
class Ledger:
    """What the events say happened; the engine's state must agree with it."""

    bought: Decimal = field(default_factory=Decimal)
    sold: Decimal = field(default_factory=Decimal)
    spent: Decimal = field(default_factory=Decimal)
    received: Decimal = field(default_factory=Decimal)
    fee_base: Decimal = field(default_factory=Decimal)
    fee_quote: Decimal = field(default_factory=Decimal)
    fills: dict[int, list[tuple[Decimal, Decimal]]] = field(default_factory=dict)
    orders: dict[int, SimOrder] = field(default_factory=dict)

    def record(self, events: list[OrderEvent]) -> None:
        for event in events:
            order = event.order
            self.orders[order.order_id] = order
            fill = event.fill
            if fill is None:
                continue
            self.fills.setdefault(order.order_id, []).append((fill.price, fill.qty))
            if order.side == "BUY":
                self.bought += fill.qty
                self.spent += fill.price * fill.qty
                assert fill.commission_asset == "BTC"
                self.fee_base += fill.commission
                if order.type != "MARKET":
                    assert fill.price <= order.price, "a BUY filled above its limit"
            else:
                self.sold += fill.qty
                self.received += fill.price * fill.qty
                assert fill.commission_asset == "USDT"
                self.fee_quote += fill.commission
                if order.type != "MARKET":
                    assert fill.price >= order.price, "a SELL filled below its limit"


def check_invariants(engine: MatchingEngine, ledger: Ledger) -> None:
    balances = engine.balances()
    for free, locked in balances.values():
        assert free >= 0
        assert locked >= 0
    btc = sum(balances["BTC"], D(0))
    usdt = sum(balances["USDT"], D(0))
    assert btc - START_BTC == ledger.bought - ledger.sold - ledger.fee_base
    assert usdt - START_USDT == ledger.received - ledger.spent - ledger.fee_quote
    open_orders = engine.open_orders()
    assert balances["USDT"][1] == sum(
        (o.price * o.remaining_qty for o in open_orders if o.side == "BUY"), D(0)
    )
    assert balances["BTC"][1] == sum(
        (o.remaining_qty for o in open_orders if o.side == "SELL"), D(0)
    )
    for order_id in ledger.orders:
        order = engine.get_order(symbol="BTCUSDT", order_id=order_id)
        fills = ledger.fills.get(order_id, [])
        assert order.executed_qty <= order.orig_qty
        assert sum((q for _, q in fills), D(0)) == order.executed_qty
        assert sum((p * q for p, q in fills), D(0)) == order.cummulative_quote_qty
        assert (order.status == "FILLED") == (order.executed_qty == order.orig_qty)
        if order.type == "MARKET":
            assert order.status == "FILLED"


def apply(engine: MatchingEngine, ledger: Ledger, op: SetBook | Place | Cancel, t: int) -> None:
    if isinstance(op, SetBook):
        bid, ask = TICK * op.bid_ticks, TICK * (op.bid_ticks + op.spread_ticks)
        events = engine.set_book(
            "BTCUSDT",
            bid=bid,
            bid_qty=STEP * op.bid_steps,
            ask=ask,
            ask_qty=STEP * op.ask_steps,
            time_ms=t,
        )
        ledger.record(events)
        # Liveness: a crossed resting order survives only if the displayed size ran out.
        used = {"BUY": D(0), "SELL": D(0)}
        for event in events:
            assert event.fill is not None
            assert event.fill.is_maker
            used[event.order.side] += event.fill.qty
        for order in engine.open_orders():
            if order.side == "BUY" and order.price >= ask:
                assert used["BUY"] == STEP * op.ask_steps
            if order.side == "SELL" and order.price <= bid:
                assert used["SELL"] == STEP * op.bid_steps
    elif isinstance(op, Place):
        before = (engine.balances(), engine.open_orders())
        try:
            order, events = engine.place(
                symbol="BTCUSDT",
                side=op.side,
                order_type=op.order_type,
                quantity=STEP * op.qty_steps,
                price=None if op.order_type == "MARKET" else TICK * op.price_ticks,
                time_in_force=op.time_in_force if op.order_type == "LIMIT" else None,
                time_ms=t,
            )
        except ExchangeError:
            assert (engine.balances(), engine.open_orders()) == before, "a reject changed state"
            return
        assert events[0].execution_type == "NEW"
        assert all(e.execution_type == "TRADE" for e in events[1:-1])
        assert events[-1].order == order
        ledger.record(events)
    else:
        open_orders = engine.open_orders()
        if open_orders:
            target = open_orders[op.pick % len(open_orders)]
            ledger.record([engine.cancel(symbol="BTCUSDT", order_id=target.order_id, time_ms=t)])


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, min_size=1, max_size=40))
def test_engine_invariants_hold_for_any_sequence(ops: list[SetBook | Place | Cancel]) -> None:
    engine = MatchingEngine(
        rules={"BTCUSDT": BTCUSDT}, balances={"BTC": START_BTC, "USDT": START_USDT}
    )
    ledger = Ledger()
    for t, op in enumerate(ops, start=1):
        apply(engine, ledger, op, t)
        check_invariants(engine, ledger)
