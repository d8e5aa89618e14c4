"""Order building, the order state machine, positions and PnL (``svc.orders``).

Rules come from the recorded spot exchangeInfo; the exchange is ``FakeExchange`` (or a
scripted one that delivers user-data reports while the REST call is in flight).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svc.audit import MemoryAuditSink
from svc.clock import FakeClock
from svc.errors import (
    ConfigError,
    DuplicateOrder,
    ExchangeError,
    ExchangeUnavailable,
    FilterViolation,
    InsufficientBalance,
    IpBanned,
    OrderRejected,
    RateLimited,
    TimestampOutsideWindow,
    UnknownOrder,
)
from svc.exchange import FakeExchange
from svc.model import NewOrder, OrderUpdate, Signal, SymbolRules
from svc.orders import (
    CLIENT_ORDER_ID_PATTERN,
    TERMINAL_STATES,
    TRANSITIONS,
    OrderManager,
    OrderState,
    Positions,
    can_transition,
    client_order_id,
    quantize_order,
    to_decimal,
)
from tests.recorded import recorded_rules

D = Decimal
S = OrderState


RecordingAudit = MemoryAuditSink  # the in-memory sink svc.audit ships beside the journal


def btc() -> SymbolRules:
    return recorded_rules("BTCUSDT")


def signal(
    quantity: float, limit_price: float = 0.0, side: str = "BUY", symbol: str = "BTCUSDT"
) -> Signal:
    return Signal(
        strategy="crossover",
        symbol=symbol,
        side="BUY" if side == "BUY" else "SELL",
        quantity=quantity,
        limit_price=limit_price,
        reason="test",
        ts_event=1,
        ts_init=2,
    )


def quantize(
    sig: Signal, last_price: float = 30_000.0, rules: SymbolRules | None = None
) -> NewOrder:
    return quantize_order(
        sig, rules or btc(), client_order_id="t-crossove-1", last_price=last_price, ts_init=7
    )


def make_manager(
    *,
    exchange: Any = None,
    prefix: str = "svcA",
    start_seq: int = 1,
    family: str | None = None,
    rules: Mapping[str, SymbolRules] | None = None,
) -> tuple[OrderManager, Any, RecordingAudit]:
    if rules is None:
        rules = {"BTCUSDT": btc(), "ETHUSDT": recorded_rules("ETHUSDT")}
    if exchange is None:
        exchange = FakeExchange(rules=rules, prices={"BTCUSDT": D("30000"), "ETHUSDT": D("2000")})
    audit = RecordingAudit()
    manager = OrderManager(
        exchange=exchange,
        audit=audit,
        rules=rules,
        clock=FakeClock(),
        id_prefix=prefix,
        start_seq=start_seq,
        id_family=family,
    )
    return manager, exchange, audit


def report(
    order: NewOrder,
    *,
    status: str,
    execution: str = "TRADE",
    last_quantity: str = "0",
    last_price: str = "0",
    cumulative: str = "0",
    trade_id: int = -1,
    commission: str = "0",
    asset: str = "USDT",
) -> OrderUpdate:
    return OrderUpdate(
        symbol=order.symbol,
        client_order_id=order.client_order_id,
        order_id=42,
        side=order.side,
        order_type=order.order_type,
        time_in_force=order.time_in_force,
        quantity=order.quantity,
        price=order.price,
        execution_type=execution,
        status=status,
        reject_reason="NONE",
        last_quantity=D(last_quantity),
        last_price=D(last_price),
        filled_quantity=D(cumulative),
        commission=D(commission),
        commission_asset=asset if D(commission) else "",
        trade_id=trade_id,
        is_maker=False,
        ts_event=1_700_000_000_000_000_000,
        ts_init=1_700_000_000_000_000_001,
    )


class ScriptedExchange(FakeExchange):
    """Answers ``new_order`` with ``response``, delivering ``before`` reports first.

    This is the race the order manager must survive: user-data reports processed while the
    REST call is still in flight.
    """

    def __init__(self, rules: Mapping[str, SymbolRules]) -> None:
        super().__init__(rules=rules, prices={})
        self.manager: OrderManager | None = None
        self.before: list[OrderUpdate] = []
        self.response: OrderUpdate | None = None

    async def new_order(self, order: NewOrder) -> OrderUpdate:
        self.calls.append(("new_order", order))
        assert self.manager is not None
        assert self.response is not None
        for update in self.before:
            self.manager.on_update(update)
        return self.response


class FailingCancelExchange(FakeExchange):
    def __init__(self, error: ExchangeError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cancel_error = error

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderUpdate:
        self.calls.append(("cancel_order", (symbol, client_order_id)))
        raise self.cancel_error


# ------------------------------------------------------------------------- quantization


def test_decimal_from_float_has_no_binary_artefacts() -> None:
    assert to_decimal(0.1) == D("0.1")
    assert to_decimal(0.1) != D(0.1)
    assert to_decimal(0.1 + 0.2) == D("0.30000000000000004")
    order = quantize(signal(0.1 + 0.2))
    assert order.quantity == D("0.3")
    assert str(order.quantity) == "0.30000000"  # the step's exponent, no float tail


def test_quantity_rounds_down_to_step_and_clamps_to_max() -> None:
    assert quantize(signal(0.123456789)).quantity == D("0.12345")
    assert quantize(signal(0.000019999), last_price=1e6).quantity == D("0.00001")
    assert quantize(signal(123456.0)).quantity == btc().max_quantity
    assert quantize(signal(0.7 - 0.4)).quantity == D("0.3")  # 0.29999999999999993
    assert quantize(signal(1.1 * 3)).quantity == D("3.3")  # 3.3000000000000003


def test_quantity_rounds_down_to_a_step_that_is_not_a_power_of_ten() -> None:
    rules = msgspec.structs.replace(btc(), step_size=D("0.5"), min_quantity=D("0.5"))
    assert quantize(signal(1.99), rules=rules).quantity == D("1.5")
    with pytest.raises(FilterViolation):
        quantize(signal(0.49), rules=rules)


def test_market_order_shape() -> None:
    order = quantize(signal(0.001))
    assert (order.order_type, order.price, order.time_in_force) == ("MARKET", D(0), "")
    assert order.client_order_id == "t-crossove-1"
    assert order.ts_init == 7


@pytest.mark.parametrize(
    ("side", "price", "expected"),
    [
        ("BUY", 30000.019, "30000.01"),  # down: never pay more than asked
        ("SELL", 30000.011, "30000.02"),  # up: never sell for less than asked
        ("BUY", 30000.01, "30000.01"),  # already on a tick: unchanged
        ("SELL", 30000.01, "30000.01"),
    ],
)
def test_limit_price_rounds_to_tick_by_side(side: str, price: float, expected: str) -> None:
    order = quantize(signal(0.001, limit_price=price, side=side))
    assert order.order_type == "LIMIT"
    assert order.time_in_force == "GTC"
    assert order.price == D(expected)


@pytest.mark.parametrize(
    ("side", "price", "expected"),
    [
        ("SELL", 1.1 * 3, "3.30"),  # 3.3000000000000003: on the tick, not one up
        ("BUY", 0.7 - 0.4, "0.30"),  # 0.29999999999999993: on the tick, not one down
        ("SELL", 3.3000001, "3.31"),  # really above the tick: up
        ("BUY", 0.2999999, "0.29"),  # really below the tick: down
    ],
)
def test_float_noise_does_not_move_a_price_by_a_tick(
    side: str, price: float, expected: str
) -> None:
    assert repr(1.1 * 3) == "3.3000000000000003"
    assert quantize(signal(20.0, limit_price=price, side=side)).price == D(expected)


@pytest.mark.parametrize(
    ("sig", "last_price", "message"),
    [
        (signal(0.000009), 30000.0, "Filter failure: LOT_SIZE"),  # rounds to 0
        (signal(-1.0), 30000.0, "Filter failure: LOT_SIZE"),
        (signal(float("nan")), 30000.0, "Filter failure: LOT_SIZE"),
        (signal(0.001, limit_price=0.004), 30000.0, "Filter failure: PRICE_FILTER"),  # -> 0.00
        (signal(0.001, limit_price=2_000_000.0), 30000.0, "Filter failure: PRICE_FILTER"),
        (signal(0.0001, limit_price=30000.0), 30000.0, "Filter failure: NOTIONAL"),  # 3 < 5
        (signal(0.0001), 30000.0, "Filter failure: NOTIONAL"),  # market, at last price
        (signal(0.0001), 0.0, "Filter failure: NOTIONAL"),  # market, no reference price
    ],
)
def test_filter_violations(sig: Signal, last_price: float, message: str) -> None:
    with pytest.raises(FilterViolation) as caught:
        quantize(sig, last_price=last_price)
    assert caught.value.code == -1013
    assert caught.value.msg == message


def test_min_notional_for_market_uses_last_price_only_when_the_symbol_says_so() -> None:
    assert quantize(signal(0.0001), last_price=60000.0).quantity == D("0.0001")  # 6 >= 5
    lenient = msgspec.structs.replace(btc(), apply_min_notional_to_market=False)
    assert quantize(signal(0.0001), last_price=30000.0, rules=lenient).quantity == D("0.0001")


async def test_filter_violation_is_raised_before_anything_is_sent() -> None:
    manager, exchange, audit = make_manager()
    with pytest.raises(FilterViolation):
        manager.build(signal(0.000001), last_price=30000.0)
    assert exchange.calls == []
    assert audit.records == []
    assert manager.next_seq == 1  # a failed build uses no sequence number


async def test_each_submit_reports_its_write_ahead_wait_and_a_build_reports_none() -> None:
    rules = {"BTCUSDT": btc()}
    exchange = FakeExchange(rules=rules, prices={"BTCUSDT": D("30000")})
    waits: list[int] = []
    manager = OrderManager(
        exchange=exchange,
        audit=MemoryAuditSink(),
        rules=rules,
        clock=FakeClock(),
        id_prefix="svcW",
        record_write_ahead=waits.append,
    )
    order = manager.build(signal(0.001), last_price=30000.0)
    assert waits == []
    await manager.submit(order)
    await manager.submit(manager.build(signal(0.001), last_price=30000.0))
    assert len(waits) == 2
    assert all(wait >= 0 for wait in waits)


# ------------------------------------------------------------------------ client order ids


def test_client_order_id_format_and_regex() -> None:
    assert client_order_id("svcA", "crossover", 12) == "svcA-crossove-12"
    assert CLIENT_ORDER_ID_PATTERN.match(client_order_id("r.1:x/y_z", "s", 0))
    with pytest.raises(ConfigError):
        client_order_id("has space", "s", 1)
    with pytest.raises(ConfigError):
        client_order_id("p" * 30, "strategy", 123456789)  # > 36 characters
    with pytest.raises(ConfigError):
        OrderManager(
            exchange=FakeExchange(rules={}, prices={}),
            audit=RecordingAudit(),
            rules={},
            id_prefix="bad prefix",
        )


def test_client_order_ids_are_deterministic_and_unique_across_restarts() -> None:
    first, _, _ = make_manager(start_seq=1)
    ids = [first.build(signal(0.001), last_price=30000.0).client_order_id for _ in range(5)]
    assert ids == [f"svcA-crossove-{n}" for n in range(1, 6)]
    again, _, _ = make_manager(start_seq=1)  # the same run replayed: the same ids
    assert again.build(signal(0.001), last_price=30000.0).client_order_id == ids[0]
    restarted, _, _ = make_manager(start_seq=first.next_seq)
    later = [restarted.build(signal(0.001), last_price=30000.0).client_order_id for _ in range(5)]
    assert not set(ids) & set(later)
    assert all(CLIENT_ORDER_ID_PATTERN.match(i) for i in ids + later)


# --------------------------------------------------------------------- the state machine

ALLOWED = {
    (S.PENDING_NEW, S.NEW),
    (S.PENDING_NEW, S.PARTIALLY_FILLED),
    (S.PENDING_NEW, S.FILLED),
    (S.PENDING_NEW, S.CANCELED),
    (S.PENDING_NEW, S.REJECTED),
    (S.PENDING_NEW, S.EXPIRED),
    (S.NEW, S.PARTIALLY_FILLED),
    (S.NEW, S.FILLED),
    (S.NEW, S.CANCELED),
    (S.NEW, S.EXPIRED),
    (S.NEW, S.PENDING_CANCEL),
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.CANCELED),
    (S.PARTIALLY_FILLED, S.EXPIRED),
    (S.PARTIALLY_FILLED, S.PENDING_CANCEL),
    (S.PENDING_CANCEL, S.NEW),
    (S.PENDING_CANCEL, S.PARTIALLY_FILLED),
    (S.PENDING_CANCEL, S.FILLED),
    (S.PENDING_CANCEL, S.CANCELED),
    (S.PENDING_CANCEL, S.EXPIRED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_transition_table(current: OrderState, target: OrderState) -> None:
    assert can_transition(current, target) == ((current, target) in ALLOWED)


def test_terminal_states_have_no_exits_and_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(S)
    assert {S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED} == TERMINAL_STATES
    assert all(not TRANSITIONS[s] for s in TERMINAL_STATES)


async def limit_order(manager: OrderManager, quantity: float = 0.003) -> NewOrder:
    order = manager.build(signal(quantity, limit_price=30000.0), last_price=30000.0)
    tracked = await manager.submit(order)
    assert tracked.state is S.NEW
    return order


async def test_terminal_state_never_changes_and_older_states_are_stale() -> None:
    manager, _, _ = make_manager()
    order = await limit_order(manager)
    fill = report(
        order,
        status="PARTIALLY_FILLED",
        last_quantity="0.001",
        last_price="30000",
        cumulative="0.001",
        trade_id=1,
    )
    manager.on_update(fill)
    manager.on_update(report(order, status="NEW", execution="NEW"))  # older: stale
    tracked = manager.get(order.client_order_id)
    assert tracked is not None
    assert tracked.state is S.PARTIALLY_FILLED
    manager.on_update(report(order, status="CANCELED", execution="CANCELED", cumulative="0.001"))
    assert tracked.state is S.CANCELED
    manager.on_update(report(order, status="NEW", execution="NEW"))
    manager.on_update(report(order, status="EXPIRED", execution="EXPIRED", cumulative="0.001"))
    assert tracked.state is S.CANCELED
    assert tracked.filled_quantity == D("0.001")
    assert manager.statistics().stale_updates == 3
    assert manager.open_orders() == []


async def test_cumulative_fill_never_decreases_and_late_trades_after_cancel_count() -> None:
    manager, _, _ = make_manager()
    order = await limit_order(manager)
    t1 = report(
        order,
        status="PARTIALLY_FILLED",
        last_quantity="0.001",
        last_price="30000",
        cumulative="0.001",
        trade_id=1,
        commission="0.03",
    )
    t2 = report(
        order,
        status="PARTIALLY_FILLED",
        last_quantity="0.001",
        last_price="29990",
        cumulative="0.002",
        trade_id=2,
        commission="0.03",
    )
    manager.on_update(report(order, status="CANCELED", execution="CANCELED", cumulative="0.002"))
    manager.on_update(t2)  # arrives before t1: held, not booked at the wrong price
    tracked = manager.get(order.client_order_id)
    assert tracked is not None
    assert tracked.filled_quantity == D(0)
    manager.on_update(t1)
    assert tracked.state is S.CANCELED  # terminal: unchanged, but the fills are real
    assert tracked.filled_quantity == D("0.002")
    assert tracked.average_price == D("29995")
    assert tracked.fees == {"USDT": D("0.06")}
    manager.on_update(t1)  # re-delivered
    assert tracked.filled_quantity == D("0.002")
    stats = manager.statistics()
    assert (stats.held_fills, stats.duplicate_fills) == (1, 1)
    assert manager.positions.position("BTCUSDT").quantity == D("0.002")


async def test_duplicate_trade_reports_are_ignored() -> None:
    manager, _, audit = make_manager()
    order = await limit_order(manager)
    t1 = report(
        order,
        status="PARTIALLY_FILLED",
        last_quantity="0.001",
        last_price="30000",
        cumulative="0.001",
        trade_id=7,
        commission="0.03",
    )
    for _ in range(3):
        manager.on_update(t1)
    assert manager.positions.position("BTCUSDT").quantity == D("0.001")
    assert manager.positions.position("BTCUSDT").fees_quote == D("0.03")
    assert manager.statistics().duplicate_fills == 2
    assert audit.kinds().count("order.fill") == 1


# --------------------------------------------------------- convergence under any ordering


def scenario(draw: st.DrawFn) -> tuple[str, list[tuple[str, str, str]], int, list[int]]:
    side = draw(st.sampled_from(["BUY", "SELL"]))
    n = draw(st.integers(1, 4))
    trades = [
        (
            str(D(draw(st.integers(100, 500))) * D("0.00001")),
            str(D(draw(st.integers(2_900_000, 3_100_000))) * D("0.01")),
            str(D(draw(st.integers(0, 500))) * D("0.0001")),
        )
        for _ in range(n)
    ]
    covered = draw(st.integers(0, n))  # how many fills the REST response already carries
    order = draw(st.permutations(list(range(n + 2))))  # 0: REST response, 1: NEW, 2..: trades
    return side, trades, covered, order


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, list[tuple[str, str, str]], int, list[int], bool]:
    side, trades, covered, order = scenario(draw)
    return side, trades, covered, order, draw(st.booleans())


def run_scenario(
    side: str,
    trades: list[tuple[str, str, str]],
    covered: int,
    arrival: list[int],
    *,
    redeliver: bool,
) -> tuple[Any, ...]:
    rules = {"BTCUSDT": btc()}
    exchange = ScriptedExchange(rules)
    audit = RecordingAudit()
    manager = OrderManager(
        exchange=exchange, audit=audit, rules=rules, clock=FakeClock(), id_prefix="p"
    )
    exchange.manager = manager
    manager.positions.apply_fill("BTCUSDT", "BUY", D("1"), D("30000"))  # something to sell
    total = sum(D(q) for q, _, _ in trades)
    order = manager.build(signal(float(total), limit_price=31000.0, side=side), last_price=0.0)
    assert order.quantity == total
    cumulative = D(0)
    reports: list[OrderUpdate] = []
    for number, (quantity, price, fee) in enumerate(trades, start=1):
        cumulative += D(quantity)
        reports.append(
            report(
                order,
                status="FILLED" if number == len(trades) else "PARTIALLY_FILLED",
                last_quantity=quantity,
                last_price=price,
                cumulative=str(cumulative),
                trade_id=100 + number,
                commission=fee,
            )
        )
    if covered:
        # What BinanceClient builds from a FULL response: the fills' sum and average.
        filled = sum(D(q) for q, _, _ in trades[:covered])
        quote = sum(D(q) * D(p) for q, p, _ in trades[:covered])
        response = report(
            order,
            status="FILLED" if covered == len(trades) else "PARTIALLY_FILLED",
            last_quantity=str(filled),
            last_price=str(quote / filled),
            cumulative=str(filled),
            trade_id=100 + covered,
            commission=str(sum(D(f) for _, _, f in trades[:covered])),
        )
    else:
        response = report(order, status="NEW", execution="NEW")
    events = [response, report(order, status="NEW", execution="NEW"), *reports]
    sequence = [events[i] for i in arrival]
    if redeliver:
        sequence += list(reversed(sequence))
    split = sequence.index(response)
    exchange.before = [e for e in sequence[:split] if e is not response]
    exchange.response = response
    tracked = asyncio.run(manager.submit(order))
    for update in sequence[split + 1 :]:
        manager.on_update(update)
    position = manager.positions.position("BTCUSDT")
    cents = D("1e-12")
    return (
        tracked.state,
        tracked.filled_quantity,
        tracked.filled_quote.quantize(cents),
        dict(tracked.fees),
        tracked.held_trades == {},
        position.quantity,
        position.average_price.quantize(cents),
        position.realized_pnl.quantize(cents),
        position.fees_quote,
        len(exchange.calls),
    )


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_any_arrival_order_converges_to_the_same_result(
    case: tuple[str, list[tuple[str, str, str]], int, list[int], bool],
) -> None:
    side, trades, covered, arrival, redeliver = case
    natural = run_scenario(side, trades, covered, list(range(len(trades) + 2)), redeliver=False)
    shuffled = run_scenario(side, trades, covered, arrival, redeliver=redeliver)
    assert shuffled == natural
    state, filled, *_ = natural
    assert state is S.FILLED
    assert filled == sum(D(q) for q, _, _ in trades)


# ------------------------------------------------------------------------ positions and PnL


def test_positions_hand_computed_example() -> None:
    positions = Positions(rules={"BTCUSDT": btc()})
    positions.apply_fill(
        "BTCUSDT", "BUY", D(1), D(100), commission=D("0.1"), commission_asset="USDT"
    )
    positions.apply_fill(
        "BTCUSDT", "BUY", D(1), D(110), commission=D("0.11"), commission_asset="USDT"
    )
    positions.apply_fill(
        "BTCUSDT", "SELL", D(1), D(120), commission=D("0.12"), commission_asset="USDT"
    )
    view = positions.position("BTCUSDT")
    assert view.quantity == D(1)
    assert view.average_price == D(105)
    assert view.realized_pnl == D(15)
    assert view.fees_quote == D("0.33")
    assert positions.unrealized("BTCUSDT", 130.0) == pytest.approx(25.0)
    assert positions.snapshot()["BTCUSDT"] == {
        "quantity": "1",
        "average_price": "105",
        "realized_pnl": "15",
        "fees_quote": "0.33",
        "fee.USDT": "0.33",
    }


def test_positions_short_and_flip_are_symmetric() -> None:
    positions = Positions(rules={"BTCUSDT": btc()})
    positions.apply_fill("BTCUSDT", "SELL", D(2), D(200))  # short 2 @ 100
    positions.apply_fill("BTCUSDT", "BUY", D(1), D(90))  # cover 1 @ 90: +10
    view = positions.position("BTCUSDT")
    assert (view.quantity, view.average_price, view.realized_pnl) == (D(-1), D(100), D(10))
    assert positions.unrealized("BTCUSDT", 95.0) == pytest.approx(5.0)
    positions.apply_fill("BTCUSDT", "BUY", D(3), D(330))  # cover 1 @ 110 (-10), long 2 @ 110
    view = positions.position("BTCUSDT")
    assert (view.quantity, view.average_price, view.realized_pnl) == (D(2), D(110), D(0))
    positions.apply_fill("BTCUSDT", "SELL", D(2), D(240))  # flat at 120: +20
    view = positions.position("BTCUSDT")
    assert (view.quantity, view.average_price, view.realized_pnl) == (D(0), D(0), D(20))
    assert positions.unrealized("BTCUSDT", 1.0) == 0.0


def test_base_asset_commission_reduces_the_quantity_received() -> None:
    positions = Positions(rules={"BTCUSDT": btc()})
    positions.apply_fill(
        "BTCUSDT", "BUY", D(2), D(200), commission=D("0.002"), commission_asset="BTC"
    )
    view = positions.position("BTCUSDT")
    assert view.quantity == D("1.998")
    assert view.average_price == D(100)
    assert view.fees_quote == D("0.2")
    # Sell 1 @ 120 paying 0.001 BTC: the fee coin leaves at 120 too, so its gain is realized.
    positions.apply_fill(
        "BTCUSDT", "SELL", D(1), D(120), commission=D("0.001"), commission_asset="BTC"
    )
    view = positions.position("BTCUSDT")
    assert view.quantity == D("0.997")
    assert view.realized_pnl == D("20.02")
    assert view.fees_quote == D("0.32")
    assert view.fees == {"BTC": D("0.003")}
    # Net PnL equals cash plus holdings at the mark: -200 + 120 + 0.997 * 120.
    net = float(view.realized_pnl) + positions.unrealized("BTCUSDT", 120.0) - float(view.fees_quote)
    assert net == pytest.approx(-200 + 120 + 0.997 * 120)


def test_fees_in_a_third_asset_are_kept_raw() -> None:
    positions = Positions(rules={"BTCUSDT": btc()})
    positions.apply_fill(
        "BTCUSDT", "BUY", D(1), D(100), commission=D("0.0002"), commission_asset="BNB"
    )
    view = positions.position("BTCUSDT")
    assert (view.quantity, view.fees_quote, view.fees) == (D(1), D(0), {"BNB": D("0.0002")})


async def test_market_orders_through_the_manager_move_the_position() -> None:
    # No minimum notional, so the example can use small, readable prices.
    rules = {"BTCUSDT": msgspec.structs.replace(btc(), min_notional=D(0))}
    manager, exchange, _ = make_manager(rules=rules)
    for side, price in (("BUY", "100"), ("BUY", "110"), ("SELL", "120")):
        exchange.prices["BTCUSDT"] = D(price)
        tracked = await manager.submit(manager.build(signal(1.0, side=side), last_price=0.0))
        assert tracked.state is S.FILLED
        assert tracked.average_price == D(price)
    view = manager.positions.position("BTCUSDT")
    assert (view.quantity, view.average_price, view.realized_pnl) == (D(1), D(105), D(15))


# ------------------------------------------------------------------- submit and rejects


async def test_submit_audits_command_response_and_fill_as_critical() -> None:
    manager, exchange, audit = make_manager()
    order = manager.build(signal(0.001), last_price=30000.0)
    tracked = await manager.submit(order)
    assert tracked.state is S.FILLED
    assert tracked.filled_quantity == D("0.001")
    assert tracked.order_id == 1
    assert tracked.acked_ns >= tracked.sent_ns > 0
    assert exchange.calls == [("new_order", order)]
    assert audit.kinds() == ["order.new", "order.response", "order.fill"]
    assert all(r.critical for r in audit.records)
    assert audit.records[0].payload["quantity"] == "0.00100000"
    assert audit.records[2].payload["quantity"] == "0.00100000"
    assert manager.statistics().orders_by_state == {"FILLED": 1}


async def test_the_same_client_id_is_never_sent_twice() -> None:
    manager, exchange, _ = make_manager()
    order = manager.build(signal(0.001, limit_price=30000.0), last_price=30000.0)
    await manager.submit(order)
    with pytest.raises(DuplicateOrder):
        await manager.submit(order)
    assert [c for c, _ in exchange.calls] == ["new_order"]


@pytest.mark.parametrize(
    "error",
    [
        OrderRejected(-2010, "Market is closed."),
        FilterViolation(-1013, "Filter failure: NOTIONAL"),
        InsufficientBalance(-2010, "Account has insufficient balance for requested action."),
        DuplicateOrder(-2010, "Duplicate order sent."),
    ],
)
async def test_exchange_rejects_become_rejected_orders(error: OrderRejected) -> None:
    manager, exchange, audit = make_manager()
    exchange.fail_next = error
    tracked = await manager.submit(manager.build(signal(0.001), last_price=30000.0))
    assert tracked.state is S.REJECTED
    assert tracked.reject_reason == error.msg
    assert manager.statistics().rejects_by_reason == {type(error).__name__: 1}
    assert manager.open_orders() == []
    rejected = [r for r in audit.records if r.kind == "order.rejected"]
    assert len(rejected) == 1
    assert rejected[0].critical
    assert rejected[0].payload["code"] == error.code
    assert manager.positions.position("BTCUSDT").quantity == D(0)


@pytest.mark.parametrize(
    "error",
    [
        RateLimited(-1003, "Too many requests.", retry_after=3.0),
        IpBanned(-1003, "Way too many requests.", http_status=418, retry_after=60.0),
        TimestampOutsideWindow(-1021, "Timestamp outside recvWindow."),
    ],
)
async def test_refused_requests_are_rejected_and_re_raised(error: ExchangeError) -> None:
    manager, exchange, _ = make_manager()
    exchange.fail_next = error
    order = manager.build(signal(0.001), last_price=30000.0)
    with pytest.raises(type(error)):
        await manager.submit(order)
    tracked = manager.get(order.client_order_id)
    assert tracked is not None
    assert tracked.state is S.REJECTED
    assert not tracked.unknown_outcome
    assert manager.open_orders() == []


async def test_unavailable_exchange_leaves_the_order_pending_with_unknown_outcome() -> None:
    manager, exchange, audit = make_manager()
    exchange.fail_next = ExchangeUnavailable(
        -1007, "Timeout waiting for response.", http_status=503
    )
    order = manager.build(signal(0.001, limit_price=30000.0), last_price=30000.0)
    with pytest.raises(ExchangeUnavailable):
        await manager.submit(order)
    tracked = manager.get(order.client_order_id)
    assert tracked is not None
    assert tracked.state is S.PENDING_NEW
    assert tracked.unknown_outcome
    assert manager.open_orders() == [tracked]
    assert manager.statistics().unknown_outcome == 1
    assert audit.kinds() == ["order.new", "order.unknown_outcome"]
    # The user-data stream later says it was placed after all.
    manager.on_update(report(order, status="NEW", execution="NEW"))
    assert tracked.state is S.NEW


async def test_reports_for_unknown_orders_are_counted_and_audited() -> None:
    manager, _, audit = make_manager()
    foreign = quantize(signal(0.001))
    manager.on_update(report(foreign, status="NEW", execution="NEW"))
    assert manager.statistics().unknown_updates == 1
    assert audit.records[-1].kind == "order.unknown"
    assert audit.records[-1].critical


# ------------------------------------------------------------------------------- cancel


async def test_cancel_and_cancel_all() -> None:
    manager, exchange, audit = make_manager()
    first = await limit_order(manager)
    second = await limit_order(manager)
    filled = await manager.submit(manager.build(signal(0.001), last_price=30000.0))
    await manager.cancel(first.client_order_id, "test")
    assert manager.get(first.client_order_id).state is S.CANCELED  # type: ignore[union-attr]
    assert [o.client_order_id for o in manager.open_orders()] == [second.client_order_id]
    assert await manager.cancel_all("shutdown") == [second.client_order_id]
    assert manager.open_orders() == []
    await manager.cancel(filled.client_order_id, "too late")  # terminal: nothing sent
    cancels = [args for call, args in exchange.calls if call == "cancel_order"]
    assert cancels == [("BTCUSDT", first.client_order_id), ("BTCUSDT", second.client_order_id)]
    cancel_records = [r for r in audit.records if r.kind == "order.cancel"]
    assert [r.payload["reason"] for r in cancel_records] == ["test", "shutdown"]
    assert all(r.critical for r in cancel_records)
    with pytest.raises(UnknownOrder):
        await manager.cancel("nope", "test")


async def test_failed_cancel_restores_the_state_and_raises() -> None:
    rules = {"BTCUSDT": btc()}
    exchange = FailingCancelExchange(
        RateLimited(-1003, "Too many requests."), rules=rules, prices={"BTCUSDT": D("30000")}
    )
    manager, _, audit = make_manager(exchange=exchange)
    order = await limit_order(manager)
    with pytest.raises(RateLimited):
        await manager.cancel(order.client_order_id, "test")
    assert manager.get(order.client_order_id).state is S.NEW  # type: ignore[union-attr]
    assert "order.cancel_failed" in audit.kinds()
    assert await manager.cancel_all("shutdown") == []  # logged, not raised


async def test_cancel_of_an_order_not_open_on_the_exchange_waits_for_its_report() -> None:
    rules = {"BTCUSDT": btc()}
    exchange = FailingCancelExchange(
        UnknownOrder(-2011, "Unknown order sent."), rules=rules, prices={"BTCUSDT": D("30000")}
    )
    manager, _, _ = make_manager(exchange=exchange)
    order = await limit_order(manager)
    await manager.cancel(order.client_order_id, "test")
    tracked = manager.get(order.client_order_id)
    assert tracked is not None
    assert tracked.state is S.PENDING_CANCEL
    manager.on_update(
        report(
            order,
            status="FILLED",
            last_quantity="0.003",
            last_price="30000",
            cumulative="0.003",
            trade_id=5,
        )
    )
    assert tracked.state is S.FILLED


# ---------------------------------------------------------------------------- reconcile


async def test_reconcile_adopts_own_open_orders_and_ignores_foreign_ones() -> None:
    rules = {"BTCUSDT": btc(), "ETHUSDT": recorded_rules("ETHUSDT")}
    exchange = FakeExchange(rules=rules, prices={"BTCUSDT": D("30000"), "ETHUSDT": D("2000")})
    before, _, _ = make_manager(exchange=exchange, prefix="svc.r1", family="svc.")
    mine = [await limit_order(before) for _ in range(3)]
    await before.submit(before.build(signal(0.001), last_price=30000.0))  # filled: not open
    eth = await before.submit(
        before.build(signal(0.01, limit_price=2000.0, symbol="ETHUSDT"), last_price=2000.0)
    )
    foreign = quantize_order(
        signal(0.001, limit_price=29000.0),
        btc(),
        client_order_id="web_abc",
        last_price=0.0,
        ts_init=0,
    )
    await exchange.new_order(foreign)
    calls_before = len([c for c, _ in exchange.calls if c == "new_order"])

    after, _, audit = make_manager(exchange=exchange, prefix="svc.r2", family="svc.")
    result = await after.reconcile(["BTCUSDT", "ETHUSDT"])
    adopted_ids = {o.client_order_id for o in mine} | {eth.client_order_id}
    assert set(result.adopted) == adopted_ids
    assert (result.open_on_exchange, result.already_tracked, result.foreign) == (5, 0, 1)
    assert {o.client_order_id for o in after.open_orders()} == adopted_ids
    assert all(o.adopted and o.state is S.NEW for o in after.open_orders())
    assert after.get("web_abc") is None
    assert audit.kinds() == ["order.adopted"] * 4
    assert all(r.critical for r in audit.records)
    # Adopted orders are never sent again; they can be canceled; foreign ones are left alone.
    assert len([c for c, _ in exchange.calls if c == "new_order"]) == calls_before
    assert set(await after.cancel_all("shutdown")) == adopted_ids
    assert [o.client_order_id for o in await exchange.open_orders("BTCUSDT")] == ["web_abc"]
    again = await after.reconcile(["BTCUSDT"])
    assert (again.adopted, again.foreign) == ((), 1)


async def test_reconcile_moves_the_sequence_past_adopted_ids_of_this_prefix() -> None:
    manager, exchange, _ = make_manager(prefix="svcA", start_seq=1)
    for _ in range(5):
        await limit_order(manager)
    restarted, _, _ = make_manager(exchange=exchange, prefix="svcA", start_seq=1)
    await restarted.reconcile(["BTCUSDT"])
    assert restarted.next_seq == 6
    order = restarted.build(signal(0.001, limit_price=30000.0), last_price=30000.0)
    assert order.client_order_id == "svcA-crossove-6"
    assert (await restarted.submit(order)).state is S.NEW
