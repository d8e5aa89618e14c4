"""Pre-trade risk: each rejection reason, the sliding rate window, the kill switch, and
properties (accepted orders keep |position| within the limit and respect the rate limit in
every window) checked against a brute-force model.
"""

from __future__ import annotations

import math
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svc.errors import ConfigError
from svc.model import Signal
from svc.risk import (
    ACCEPTED,
    REJECTION_REASONS,
    RELATIVE_TOLERANCE,
    RiskDecision,
    RiskEngine,
    RiskLimits,
)

SECOND_NS = 1_000_000_000
T0 = 1_700_000_000_000_000_000
LIMITS = RiskLimits(max_position=1.0, max_order_notional=50_000.0, max_orders_per_window=3)


def signal(
    side: Literal["BUY", "SELL"] = "BUY", quantity: float = 0.1, limit_price: float = 0.0
) -> Signal:
    return Signal(
        strategy="test",
        symbol="BTCUSDT",
        side=side,
        quantity=quantity,
        limit_price=limit_price,
        reason="test",
        ts_event=T0,
        ts_init=T0,
    )


def engine(**overrides: object) -> RiskEngine:
    values: dict[str, object] = {
        "max_position": 1.0,
        "max_order_notional": 50_000.0,
        "max_orders_per_window": 3,
    }
    values.update(overrides)
    return RiskEngine(limits=RiskLimits(**values))  # type: ignore[arg-type]


def check(
    risk: RiskEngine, sig: Signal, *, position: float = 0.0, price: float = 30_000.0, at: int = 0
) -> RiskDecision:
    return risk.check(sig, position=position, price=price, now_ns=T0 + at)


def test_accepts_a_normal_order_and_counts_it() -> None:
    risk = engine()
    assert check(risk, signal()) == RiskDecision(accepted=True, reason="")
    assert risk.statistics() == {ACCEPTED: 1} | dict.fromkeys(REJECTION_REASONS, 0)


@pytest.mark.parametrize(
    ("sig", "position", "price", "reason"),
    [
        (signal(quantity=0.0), 0.0, 30_000.0, "invalid_quantity"),
        (signal(quantity=-0.1), 0.0, 30_000.0, "invalid_quantity"),
        (signal(quantity=math.nan), 0.0, 30_000.0, "invalid_quantity"),
        (signal(quantity=math.inf), 0.0, 30_000.0, "invalid_quantity"),
        (signal(), 0.0, 0.0, "no_price"),  # market order, no last price yet
        (signal(), 0.0, math.nan, "no_price"),
        (signal(limit_price=-1.0), 0.0, 30_000.0, "no_price"),
        (signal(limit_price=math.inf), 0.0, 30_000.0, "no_price"),
        (signal(quantity=2.0), 0.0, 30_000.0, "max_order_notional"),  # 60k > 50k
        (signal(quantity=1.0, limit_price=60_000.0), 0.0, 1.0, "max_order_notional"),
        (signal(quantity=0.2), 0.9, 100.0, "max_position"),  # 1.1 > 1
        (signal("SELL", 0.2), -0.9, 100.0, "max_position"),  # -1.1 < -1: symmetric
        (signal("SELL", 2.5), 1.0, 100.0, "max_position"),  # flips to -1.5
        (signal(), math.nan, 100.0, "max_position"),
    ],
)
def test_each_rejection_reason(sig: Signal, position: float, price: float, reason: str) -> None:
    risk = engine()
    decision = check(risk, sig, position=position, price=price)
    assert decision == RiskDecision(accepted=False, reason=reason)
    assert risk.statistics()[reason] == 1
    assert sum(risk.statistics().values()) == 1
    assert risk.orders_in_window(T0) == 0  # rejections do not use the rate budget


def test_limit_price_wins_over_last_price() -> None:
    risk = engine()
    # 1.0 at the 40k limit is within 50k even though the last price is 60k.
    assert check(risk, signal(quantity=1.0, limit_price=40_000.0), price=60_000.0).accepted
    # A limit order needs no last price.
    assert check(risk, signal(quantity=0.1, limit_price=40_000.0), price=0.0).accepted


def test_limits_are_inclusive_and_tolerate_float_sums() -> None:
    risk = engine(max_orders_per_window=100)
    position = 0.0
    for _ in range(10):  # ten buys of 0.1 sum to 0.9999999999999999, then the 11th breaks it
        assert check(risk, signal(quantity=0.1), position=position).accepted
        position += 0.1
    assert check(risk, signal(quantity=0.1), position=position).reason == "max_position"
    assert check(risk, signal(quantity=50_000 / 30_000), price=30_000.0).reason == "max_position"
    exact = engine(max_position=10.0)
    assert check(exact, signal(quantity=50_000 / 30_000), price=30_000.0).accepted


def test_reducing_orders_pass_even_over_the_position_limit() -> None:
    risk = engine(max_position=1.0)
    # Over the limit (limits lowered at runtime, say): unwinding is always allowed...
    assert check(risk, signal("SELL", 0.5), position=3.0, price=100.0).accepted
    assert check(risk, signal("BUY", 0.5), position=-3.0, price=100.0).accepted
    # ... adding is not, and neither is flipping to the other side beyond the limit.
    assert check(risk, signal("BUY", 0.5), position=3.0, price=100.0).reason == "max_position"
    assert check(risk, signal("SELL", 4.5), position=3.0, price=100.0).reason == "max_position"


def test_rate_limit_sliding_window_evicts_old_orders() -> None:
    risk = engine(max_orders_per_window=3, window_ns=10 * SECOND_NS, max_position=100.0)
    for at in (0, 1, 2):
        assert check(risk, signal(), at=at * SECOND_NS).accepted
    assert check(risk, signal(), at=9 * SECOND_NS).reason == "rate_limit"
    # The window is (now - 10s, now]: at exactly 10s the first order has left it.
    assert check(risk, signal(), at=10 * SECOND_NS).accepted
    assert check(risk, signal(), at=10 * SECOND_NS).reason == "rate_limit"
    assert check(risk, signal(), at=12 * SECOND_NS).accepted  # orders at 1s and 2s evicted
    assert risk.orders_in_window(T0 + 12 * SECOND_NS) == 2
    stats = risk.statistics()
    assert (stats[ACCEPTED], stats["rate_limit"]) == (5, 2)


def test_zero_orders_per_window_rejects_everything() -> None:
    risk = engine(max_orders_per_window=0)
    assert check(risk, signal()).reason == "rate_limit"


def test_kill_switch_trip_and_reset() -> None:
    risk = engine()
    assert not risk.kill_switch_active
    risk.trip("drawdown")
    assert (risk.kill_switch_active, risk.trip_reason) == (True, "drawdown")
    # Checked first: even an invalid order reports the kill switch.
    assert check(risk, signal(quantity=-1.0)).reason == "kill_switch"
    assert check(risk, signal("SELL")).reason == "kill_switch"
    risk.reset()
    assert (risk.kill_switch_active, risk.trip_reason) == (False, "")
    assert check(risk, signal()).accepted
    assert risk.statistics()["kill_switch"] == 2


def test_configured_kill_switch_survives_reset() -> None:
    risk = engine(kill_switch=True)
    risk.reset()
    assert risk.kill_switch_active
    assert check(risk, signal()).reason == "kill_switch"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_position": -1.0}, "risk.max_position"),
        ({"max_position": math.nan}, "risk.max_position"),
        ({"max_order_notional": math.inf}, "risk.max_order_notional"),
        ({"max_orders_per_window": 1.5}, "risk.max_orders_per_window"),
        ({"max_orders_per_window": True}, "risk.max_orders_per_window"),
        ({"window_ns": 0}, "risk.window_ns"),
        ({"kill_switch": "no"}, "risk.kill_switch"),
    ],
)
def test_limits_reject_bad_values(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        engine(**overrides)
    assert info.value.field == field


orders = st.lists(
    st.tuples(
        st.sampled_from(["BUY", "SELL"]),
        st.floats(min_value=0.0, max_value=1.5, allow_nan=False),  # quantity, 0 is invalid
        st.integers(min_value=0, max_value=4 * SECOND_NS),  # gap to the previous check
        st.booleans(),  # filled (the position moves only for accepted, filled orders)
    ),
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(
    orders=orders,
    max_position=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    max_orders=st.integers(min_value=0, max_value=5),
    window_s=st.integers(min_value=1, max_value=10),
    trip_at=st.integers(min_value=-1, max_value=150),
)
def test_accepted_orders_respect_position_and_rate_limits(
    orders: list[tuple[Literal["BUY", "SELL"], float, int, bool]],
    max_position: float,
    max_orders: int,
    window_s: int,
    trip_at: int,
) -> None:
    window_ns = window_s * SECOND_NS
    risk = RiskEngine(
        limits=RiskLimits(
            max_position=max_position,
            max_order_notional=1e12,
            max_orders_per_window=max_orders,
            window_ns=window_ns,
        )
    )
    position = 0.0
    now = T0
    accepted_at: list[int] = []
    for index, (side, quantity, gap, filled) in enumerate(orders):
        if index == trip_at:
            risk.trip("test")
        now += gap
        decision = risk.check(signal(side, quantity), position=position, price=100.0, now_ns=now)
        if index >= trip_at >= 0:
            assert decision.reason == "kill_switch"
        if not decision.accepted:
            continue
        assert quantity > 0
        accepted_at.append(now)
        if filled:
            position += quantity if side == "BUY" else -quantity
        assert abs(position) <= max_position * (1 + RELATIVE_TOLERANCE)
    # Brute force: no window (t - window_ns, t] ends at an accepted order with too many in it.
    for end in accepted_at:
        assert sum(1 for t in accepted_at if end - window_ns < t <= end) <= max_orders
    stats = risk.statistics()
    assert stats[ACCEPTED] == len(accepted_at)
    assert sum(stats.values()) == len(orders)


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.integers(min_value=0, max_value=3 * SECOND_NS), max_size=100))
def test_rate_limit_is_as_permissive_as_allowed(gaps: list[int]) -> None:
    """Reference model: accept exactly when fewer than the max were accepted in the window."""
    window_ns = 5 * SECOND_NS
    risk = engine(max_orders_per_window=2, window_ns=window_ns, max_position=1e9)
    accepted: list[int] = []
    now = T0
    for gap in gaps:
        now += gap
        expected = sum(1 for t in accepted if t > now - window_ns) < 2
        decision = risk.check(signal(quantity=0.001), position=0.0, price=1.0, now_ns=now)
        assert decision.accepted is expected
        if expected:
            accepted.append(now)
