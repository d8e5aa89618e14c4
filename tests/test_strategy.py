"""Strategies: EMA values against a reference, crossovers at the right candles, idempotence
under duplicates, spot position safety, trade-flow threshold and cooldown, determinism on
recorded Binance data, and configuration errors that name the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svc.binance.rest import decode_klines, klines_to_candles
from svc.errors import ConfigError
from svc.model import Candle, Quote, Signal, Trade
from svc.strategy import EmaCrossover, Strategy, TradeFlowMomentum, build_strategies
from tests.recorded import data_dir

MINUTE_NS = 60_000_000_000
SECOND_NS = 1_000_000_000
T0 = 1_700_000_000_000_000_000
LAG_NS = 1_234_567  # ts_init - ts_event, distinct so tests can tell the two apart


def candle(
    index: int,
    close: float,
    *,
    symbol: str = "BTCUSDT",
    interval: str = "1m",
    closed: bool = True,
) -> Candle:
    """The ``index``-th one-minute candle; only ``close`` matters to the strategies."""
    open_time = T0 + index * MINUTE_NS
    close_time = open_time + MINUTE_NS - 1
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=close_time,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        quote_volume=close,
        trades=1,
        closed=closed,
        ts_event=close_time,
        ts_init=close_time + LAG_NS,
    )


def trade(
    index: int,
    *,
    buy: bool,
    price: float = 100.0,
    quantity: float = 1.0,
    ts_event: int | None = None,
    symbol: str = "BTCUSDT",
) -> Trade:
    """Trade ``index``; ``buy`` means an aggressive buyer (buyer_is_maker False)."""
    event_time = T0 + index * SECOND_NS if ts_event is None else ts_event
    return Trade(
        symbol=symbol,
        trade_id=index,
        price=price,
        quantity=quantity,
        buyer_is_maker=not buy,
        aggregated=True,
        ts_event=event_time,
        ts_init=event_time + LAG_NS,
    )


def run(
    strategy: Strategy, events: Iterable[Candle | Trade | Quote], *, fill: float = 1.0
) -> list[Signal]:
    """Feed ``events``; each signal is filled at ``fill`` times its quantity (0: never)."""
    signals = []
    for event in events:
        signal = strategy.on_event(event)
        if signal is not None:
            signals.append(signal)
            if fill:
                strategy.on_fill(signal.symbol, signal.side, signal.quantity * fill)
    return signals


# ------------------------------------------------------------------ reference model


def reference_ema(closes: Sequence[float], n: int) -> list[float | None]:
    """Textbook EMA: None for the first n-1 closes, the SMA at close n, then recursive.

    Written as ``ema + alpha * (close - ema)``, the rounding the strategy uses, so that signal
    lists compare exactly even when the two EMAs tie (``alpha*c + (1-alpha)*ema`` can differ
    in the last bit and turn a tie into a cross); the textbook form is checked with approx.
    """
    values: list[float | None] = [None] * min(n - 1, len(closes))
    if len(closes) < n:
        return values
    ema = sum(closes[:n]) / n
    values.append(ema)
    alpha = 2 / (n + 1)
    for close in closes[n:]:
        ema += alpha * (close - ema)
        values.append(ema)
    return values


def reference_crossovers(
    closes: Sequence[float], *, fast: int, slow: int, quantity: float
) -> list[tuple[int, str, float]]:
    """(candle index, side, quantity) the crossover should emit when every signal fills."""
    fast_values = reference_ema(closes, fast)
    slow_values = reference_ema(closes, slow)
    out: list[tuple[int, str, float]] = []
    position = 0.0
    last_sign = 0
    for index, (fast_value, slow_value) in enumerate(zip(fast_values, slow_values, strict=True)):
        if fast_value is None or slow_value is None or fast_value == slow_value:
            continue
        sign = 1 if fast_value > slow_value else -1
        crossed = last_sign not in (0, sign)
        last_sign = sign
        if crossed and sign > 0 and position <= 0:
            out.append((index, "BUY", quantity))
            position += quantity
        elif crossed and sign < 0 and position > 0:
            sold = min(quantity, position)
            out.append((index, "SELL", sold))
            position -= sold
    return out


@pytest.fixture(scope="module")
def recorded_candles() -> list[Candle]:
    """1000 real BTCUSDT 1h klines from May 2020, all closed."""
    path = data_dir() / "klines" / "api_v3_klines_BTCUSDT_1h_20200501_1000.json"
    rows = decode_klines(path.read_bytes())
    last_close_ms = rows[-1].close_time
    return klines_to_candles(
        rows, symbol="BTCUSDT", interval="1h", ts_init=T0, now_ms=last_close_ms + 1
    )


@pytest.fixture(scope="module")
def recorded_trades() -> list[Trade]:
    """500 real LTCUSDT aggregated trades (USD-M REST aggTrades, October 2020)."""
    raw = json.loads((data_dir() / "rest" / "fapi_v1_aggTrades_LTCUSDT_500.json").read_bytes())
    return [
        Trade(
            symbol="LTCUSDT",
            trade_id=row["a"],
            price=float(row["p"]),
            quantity=float(row["q"]),
            buyer_is_maker=row["m"],
            aggregated=True,
            ts_event=row["T"] * 1_000_000,
            ts_init=row["T"] * 1_000_000 + LAG_NS,
        )
        for row in raw
    ]


# ------------------------------------------------------------------ EmaCrossover


def test_ema_crossover_worked_example() -> None:
    # fast=2 (alpha 2/3), slow=3 (alpha 1/2); values worked out by hand:
    #   close  10    8     6     4     10      12       4
    #   fast   -     9     7     5     8.333   10.778   6.259
    #   slow   -     -     8     6     8       10       7
    #   sign               -     -     +(up)   +        -(down)
    strategy = EmaCrossover(symbol="BTCUSDT", interval="1m", fast=2, slow=3, quantity=0.5)
    closes = [10.0, 8.0, 6.0, 4.0, 10.0, 12.0, 4.0]
    results = [strategy.on_event(candle(i, close)) for i, close in enumerate(closes[:5])]
    assert results[:4] == [None, None, None, None]
    buy = results[4]
    assert buy == Signal(
        strategy=strategy.name,
        symbol="BTCUSDT",
        side="BUY",
        quantity=0.5,
        limit_price=0.0,
        reason="ema 2/3 cross up",
        ts_event=candle(4, 10.0).ts_event,
        ts_init=candle(4, 10.0).ts_init,
    )
    state = strategy.state()
    assert state["fast_ema"] == pytest.approx(25 / 3)
    assert state["slow_ema"] == pytest.approx(8.0)
    assert strategy.on_event(candle(5, 12.0)) is None

    strategy.on_fill("BTCUSDT", "BUY", 0.3)  # partially filled: it holds 0.3, not 0.5
    sell = strategy.on_event(candle(6, 4.0))
    assert sell is not None
    assert (sell.side, sell.quantity, sell.reason) == ("SELL", 0.3, "ema 2/3 cross down")


def test_ema_crossover_does_not_assume_fills() -> None:
    strategy = EmaCrossover(symbol="BTCUSDT", interval="1m", fast=2, slow=3, quantity=0.5)
    closes = [10.0, 8.0, 6.0, 4.0, 10.0, 12.0, 4.0, 10.0]
    signals = run(strategy, (candle(i, c) for i, c in enumerate(closes)), fill=0)
    # Never filled: the cross down at 6 has nothing to sell, the cross up at 7 buys again.
    assert [(s.side, s.ts_event) for s in signals] == [
        ("BUY", candle(4, 0).ts_event),
        ("BUY", candle(7, 0).ts_event),
    ]
    assert strategy.state()["position"] == 0.0


def test_ema_crossover_first_defined_sign_is_not_a_cross_but_is_remembered() -> None:
    # Slow EMA seeded at index 2 with fast below it; a cross up at index 3 must be caught.
    strategy = EmaCrossover(symbol="BTCUSDT", interval="1m", fast=2, slow=3, quantity=1.0)
    signals = run(strategy, (candle(i, c) for i, c in enumerate([10.0, 8.0, 6.0, 20.0])))
    assert [(s.side, s.ts_event) for s in signals] == [("BUY", candle(3, 0).ts_event)]


def test_ema_crossover_ignores_other_streams_unclosed_duplicates_and_older() -> None:
    closes = [10.0, 8.0, 6.0, 4.0, 10.0, 12.0, 4.0]
    clean = EmaCrossover(symbol="BTCUSDT", interval="1m", fast=2, slow=3, quantity=1.0)
    expected = run(clean, (candle(i, c) for i, c in enumerate(closes)))
    assert [s.side for s in expected] == ["BUY", "SELL"]

    noisy_events: list[Candle | Trade | Quote] = []
    for i, close in enumerate(closes):
        noisy_events += [
            candle(i, close * 3, closed=False),  # forming updates never count
            candle(i, 1000.0, symbol="ETHUSDT"),
            candle(i, 1000.0, interval="5m"),
            trade(i, buy=True),
            candle(i, close),
            candle(i, close),  # replayed duplicate
            candle(i, 999.0),  # same open_time, different close: still a duplicate
            candle(i - 1, 1.0),  # an older candle arriving late
        ]
    noisy = EmaCrossover(symbol="BTCUSDT", interval="1m", fast=2, slow=3, quantity=1.0)
    assert run(noisy, noisy_events) == expected
    assert noisy.state()["fast_ema"] == clean.state()["fast_ema"]
    assert noisy.state()["ignored"] == {"unclosed": 7, "stale": 21}


def test_ema_crossover_ignores_fills_of_other_symbols() -> None:
    strategy = EmaCrossover(symbol="BTCUSDT", interval="1m", quantity=1.0)
    strategy.on_fill("ETHUSDT", "BUY", 5.0)
    assert strategy.state()["position"] == 0.0
    with pytest.raises(ValueError, match="BUY or SELL"):
        strategy.on_fill("BTCUSDT", "buy", 1.0)


def test_position_float_dust_counts_as_flat() -> None:
    strategy = EmaCrossover(symbol="BTCUSDT", interval="1m", quantity=0.1)
    for _ in range(3):
        strategy.on_fill("BTCUSDT", "BUY", 0.1)
    strategy.on_fill("BTCUSDT", "SELL", 0.3)  # 0.1+0.1+0.1-0.3 is 5.5e-17 in floats
    assert strategy.state()["position"] == 0.0


def test_ema_values_and_signals_match_reference_on_recorded_klines(
    recorded_candles: list[Candle],
) -> None:
    closes = [c.close for c in recorded_candles]
    strategy = EmaCrossover(symbol="BTCUSDT", interval="1h", fast=5, slow=13, quantity=0.01)
    fast_reference = reference_ema(closes, 5)
    slow_reference = reference_ema(closes, 13)
    signals: list[tuple[int, str, float]] = []
    for index, event in enumerate(recorded_candles):
        signal = strategy.on_event(event)
        state = strategy.state()
        assert state["fast_ema"] == fast_reference[index]
        assert state["slow_ema"] == slow_reference[index]
        if signal is not None:
            assert (signal.ts_event, signal.ts_init) == (event.ts_event, event.ts_init)
            signals.append((index, signal.side, signal.quantity))
            strategy.on_fill(signal.symbol, signal.side, signal.quantity)
    # The textbook form of the recursion agrees to rounding.
    alpha = 2 / 14
    textbook = sum(closes[:13]) / 13
    for close in closes[13:]:
        textbook = alpha * close + (1 - alpha) * textbook
    assert strategy.state()["slow_ema"] == pytest.approx(textbook, rel=1e-12)
    expected = reference_crossovers(closes, fast=5, slow=13, quantity=0.01)
    assert signals == expected
    assert len(signals) > 20  # the recorded month has plenty of crosses both ways
    assert {side for _, side, _ in signals} == {"BUY", "SELL"}


def test_ema_crossover_is_deterministic_on_recorded_klines(
    recorded_candles: list[Candle],
) -> None:
    def once() -> list[Signal]:
        strategy = EmaCrossover(symbol="BTCUSDT", interval="1h", quantity=0.01)
        # Replay with the usual noise: each candle twice (backfill overlap).
        return run(strategy, (c for event in recorded_candles for c in (event, event)))

    first = once()
    assert first
    assert once() == first


closes_strategy = st.lists(
    st.floats(min_value=1.0, max_value=1000.0, allow_nan=False, allow_infinity=False),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(
    closes=closes_strategy,
    fast=st.integers(min_value=1, max_value=6),
    extra=st.integers(min_value=1, max_value=6),
)
def test_crossover_signals_match_reference(closes: list[float], fast: int, extra: int) -> None:
    slow = fast + extra
    strategy = EmaCrossover(symbol="BTCUSDT", interval="1m", fast=fast, slow=slow, quantity=1.0)
    signals = []
    for index, close in enumerate(closes):
        signal = strategy.on_event(candle(index, close))
        if signal is not None:
            signals.append((index, signal.side, signal.quantity))
            strategy.on_fill(signal.symbol, signal.side, signal.quantity)
    assert signals == reference_crossovers(closes, fast=fast, slow=slow, quantity=1.0)


@settings(max_examples=150, deadline=None)
@given(
    closes=closes_strategy,
    quantity=st.floats(min_value=0.001, max_value=10.0),
    fills=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=10),
)
def test_spot_never_sells_more_than_held(
    closes: list[float], quantity: float, fills: list[float]
) -> None:
    """Fills fed back (partial, none, or whole): the believed position never goes negative."""
    strategy = EmaCrossover(symbol="BTCUSDT", interval="1m", fast=2, slow=5, quantity=quantity)
    position = 0.0
    signal_count = 0
    for index, close in enumerate(closes):
        signal = strategy.on_event(candle(index, close))
        if signal is None:
            continue
        if signal.side == "SELL":
            assert 0 < signal.quantity <= position
        filled = signal.quantity * fills[signal_count % len(fills)]
        signal_count += 1
        strategy.on_fill(signal.symbol, signal.side, filled)
        position = strategy.state()["position"]  # type: ignore[assignment]
        assert position >= 0.0


# ------------------------------------------------------------------ TradeFlowMomentum


def test_trade_flow_waits_for_a_full_window_then_buys_over_threshold() -> None:
    strategy = TradeFlowMomentum(symbol="BTCUSDT", window=4, threshold=0.5, quantity=2.0)
    assert [strategy.on_event(trade(i, buy=True)) for i in range(3)] == [None] * 3
    signal = strategy.on_event(trade(3, buy=True))
    assert signal is not None
    assert (signal.side, signal.quantity, signal.limit_price) == ("BUY", 2.0, 0.0)
    assert (signal.ts_event, signal.ts_init) == (
        trade(3, buy=True).ts_event,
        trade(3, buy=True).ts_init,
    )
    assert strategy.state()["imbalance"] == 1.0


def test_trade_flow_threshold_is_inclusive_and_weighs_quote_volume() -> None:
    # Window of 4: three buys of 100 quote and one sell of 100 -> imbalance (300-100)/400 = 0.5.
    events = [trade(i, buy=True) for i in range(3)] + [trade(3, buy=False)]
    at = TradeFlowMomentum(symbol="BTCUSDT", window=4, threshold=0.5, quantity=1.0)
    assert run(at, events, fill=0)[0].side == "BUY"
    above = TradeFlowMomentum(symbol="BTCUSDT", window=4, threshold=0.51, quantity=1.0)
    assert run(above, events, fill=0) == []
    # One big aggressive sell outweighs three small buys: (3*100 - 1000)/1300 < 0.
    heavy = [trade(i, buy=True) for i in range(3)] + [trade(3, buy=False, quantity=10.0)]
    strategy = TradeFlowMomentum(symbol="BTCUSDT", window=4, threshold=0.5, quantity=1.0)
    run(strategy, heavy)
    assert strategy.state()["imbalance"] == pytest.approx(-700 / 1300)


def test_trade_flow_sells_only_what_it_holds() -> None:
    sells = [trade(i, buy=False) for i in range(10)]
    flat = TradeFlowMomentum(symbol="BTCUSDT", window=4, threshold=0.6, quantity=1.0)
    assert run(flat, sells) == []
    holding = TradeFlowMomentum(symbol="BTCUSDT", window=4, threshold=0.6, quantity=1.0)
    holding.on_fill("BTCUSDT", "BUY", 0.25)
    signals = run(holding, sells)
    assert [(s.side, s.quantity) for s in signals] == [("SELL", 0.25)]
    assert holding.state()["position"] == 0.0


def test_trade_flow_cooldown_by_event_time() -> None:
    strategy = TradeFlowMomentum(
        symbol="BTCUSDT", window=2, threshold=0.6, quantity=1.0, cooldown_ns=10 * SECOND_NS
    )
    # One buy per second, never filled: it wants to buy on every trade from the 2nd on.
    signals = run(strategy, (trade(i, buy=True) for i in range(25)), fill=0)
    assert [s.ts_event for s in signals] == [
        T0 + 1 * SECOND_NS,
        T0 + 11 * SECOND_NS,
        T0 + 21 * SECOND_NS,
    ]
    assert strategy.state()["suppressed_by_cooldown"] == 24 - 3


def test_trade_flow_ignores_other_symbols_and_candles() -> None:
    strategy = TradeFlowMomentum(symbol="BTCUSDT", window=2, threshold=0.6, quantity=1.0)
    events = [trade(i, buy=True, symbol="ETHUSDT") for i in range(5)] + [candle(0, 1.0)]
    assert run(strategy, events) == []
    assert strategy.state()["trades"] == 0


def reference_flow_signals(
    trades: Sequence[Trade], *, window: int, threshold: float, quantity: float, cooldown_ns: int
) -> list[tuple[int, str, float]]:
    """Recompute the window from scratch on every trade; fills fed back in full."""
    out: list[tuple[int, str, float]] = []
    position = 0.0
    last: int | None = None
    for index in range(len(trades)):
        if index + 1 < window:
            continue
        flows = [
            (-1 if t.buyer_is_maker else 1) * t.price * t.quantity
            for t in trades[index + 1 - window : index + 1]
        ]
        total = sum(abs(f) for f in flows)
        imbalance = sum(flows) / total if total else 0.0
        if imbalance >= threshold and position <= 0:
            side, amount = "BUY", quantity
        elif imbalance <= -threshold and position > 0:
            side, amount = "SELL", min(quantity, position)
        else:
            continue
        ts = trades[index].ts_event
        if last is not None and ts - last < cooldown_ns:
            continue
        last = ts
        out.append((index, side, amount))
        position += amount if side == "BUY" else -amount
    return out


trade_rows = st.lists(
    st.tuples(
        st.booleans(),  # aggressive buy
        st.integers(min_value=1, max_value=1000),  # price (integers keep the sums exact)
        st.integers(min_value=0, max_value=100),  # quantity
        st.integers(min_value=0, max_value=3 * SECOND_NS),  # gap to the previous trade
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(
    rows=trade_rows,
    window=st.integers(min_value=1, max_value=12),
    threshold=st.sampled_from([0.2, 0.5, 0.6, 1.0]),
    cooldown_s=st.integers(min_value=0, max_value=5),
)
def test_trade_flow_matches_reference(
    rows: list[tuple[bool, int, int, int]], window: int, threshold: float, cooldown_s: int
) -> None:
    trades = []
    now = T0
    for index, (buy, price, quantity, gap) in enumerate(rows):
        now += gap
        trades.append(trade(index, buy=buy, price=price, quantity=quantity, ts_event=now))
    strategy = TradeFlowMomentum(
        symbol="BTCUSDT",
        window=window,
        threshold=threshold,
        quantity=1.5,
        cooldown_ns=cooldown_s * SECOND_NS,
    )
    got = []
    for index, event in enumerate(trades):
        signal = strategy.on_event(event)
        if signal is not None:
            got.append((index, signal.side, signal.quantity))
            strategy.on_fill(signal.symbol, signal.side, signal.quantity)
    expected = reference_flow_signals(
        trades, window=window, threshold=threshold, quantity=1.5, cooldown_ns=cooldown_s * SECOND_NS
    )
    assert got == expected


def test_trade_flow_running_sums_do_not_drift(recorded_trades: list[Trade]) -> None:
    # 40 passes over 500 real trades with prices spanning magnitudes: the running imbalance
    # stays equal to the one recomputed from the window.
    strategy = TradeFlowMomentum(symbol="LTCUSDT", window=37, threshold=1.0, quantity=1.0)
    for index in range(20_000):
        event = recorded_trades[index % len(recorded_trades)]
        strategy.on_event(event)
    window = [recorded_trades[i % len(recorded_trades)] for i in range(20_000 - 37, 20_000)]
    flows = [(-1 if t.buyer_is_maker else 1) * t.price * t.quantity for t in window]
    assert strategy.imbalance() == pytest.approx(sum(flows) / sum(map(abs, flows)), abs=1e-9)


def test_trade_flow_is_deterministic_on_recorded_trades(recorded_trades: list[Trade]) -> None:
    def once() -> list[Signal]:
        strategy = TradeFlowMomentum(
            symbol="LTCUSDT", window=20, threshold=0.5, quantity=0.1, cooldown_ns=SECOND_NS
        )
        return run(strategy, recorded_trades)

    first = once()
    assert len({s.side for s in first}) == 2  # the real flow swings both ways
    assert once() == first


def any_event(draw: Any, index: int) -> Candle | Trade | Quote:
    kind = draw(st.sampled_from(["candle", "unclosed", "duplicate", "trade", "quote"]))
    close = draw(st.floats(min_value=1.0, max_value=100.0))
    if kind == "candle":
        return candle(index, close)
    if kind == "unclosed":
        return candle(index, close, closed=False)
    if kind == "duplicate":
        return candle(max(index - 1, 0), close)
    if kind == "trade":
        return trade(index, buy=draw(st.booleans()), price=close)
    return Quote(
        symbol="BTCUSDT",
        update_id=index,
        bid_price=close,
        bid_size=1.0,
        ask_price=close + 1,
        ask_size=1.0,
        ts_event=T0 + index,
        ts_init=T0 + index,
    )


@st.composite
def event_sequences(draw: Any) -> list[Candle | Trade | Quote]:
    size = draw(st.integers(min_value=0, max_value=120))
    return [any_event(draw, index) for index in range(size)]


@settings(max_examples=100, deadline=None)
@given(events=event_sequences(), fill=st.sampled_from([0.0, 0.5, 1.0]))
def test_same_events_same_signals(events: list[Candle | Trade | Quote], fill: float) -> None:
    def once() -> list[Signal]:
        strategies = build_strategies(
            [
                {"kind": "ema_crossover", "symbol": "BTCUSDT", "interval": "1m", "fast": 2,
                 "slow": 4, "quantity": 1.0},
                {"kind": "trade_flow", "symbol": "BTCUSDT", "window": 3, "threshold": 0.3,
                 "quantity": 1.0, "cooldown_ns": 2 * SECOND_NS},
            ]
        )  # fmt: skip
        return [signal for strategy in strategies for signal in run(strategy, events, fill=fill)]

    assert once() == once()


# ------------------------------------------------------------------ configuration


def test_build_strategies_from_specs() -> None:
    strategies = build_strategies(
        [
            {"kind": "ema_crossover", "symbol": "BTCUSDT", "interval": "1m", "fast": 5,
             "slow": 13, "quantity": 0.001},
            {"kind": "trade_flow", "symbol": "ETHUSDT", "quantity": 1},
            {"kind": "ema_crossover", "symbol": "BTCUSDT", "interval": "1m", "quantity": 0.002,
             "name": "ema-second"},
        ]
    )  # fmt: skip
    assert [type(s) for s in strategies] == [EmaCrossover, TradeFlowMomentum, EmaCrossover]
    assert len({s.name for s in strategies}) == 3
    flow = strategies[1]
    assert isinstance(flow, TradeFlowMomentum)
    assert (flow.window, flow.threshold, flow.quantity, flow.cooldown_ns) == (
        200,
        0.6,
        1.0,
        5_000_000_000,
    )
    assert strategies[2].name == "ema-second"
    assert build_strategies([]) == []


EMA = {"kind": "ema_crossover", "symbol": "BTCUSDT", "interval": "1m", "quantity": 0.001}
FLOW = {"kind": "trade_flow", "symbol": "BTCUSDT", "quantity": 0.001}


@pytest.mark.parametrize(
    ("spec", "field", "expected"),
    [
        ({"kind": "rsi"}, "strategies[1].kind", "ema_crossover, trade_flow, got 'rsi'"),
        ({"symbol": "BTCUSDT"}, "strategies[1].kind", "must be one of"),
        ({**EMA, "fast": 13, "slow": 13}, "strategies[1].fast", "positive int < slow (13)"),
        ({**EMA, "fast": 0}, "strategies[1].fast", "positive int < slow"),
        ({**EMA, "fast": True}, "strategies[1].fast", "positive int < slow"),
        ({**EMA, "fast": 2.0}, "strategies[1].fast", "positive int < slow"),
        ({**EMA, "slow": 1, "fast": 1}, "strategies[1].slow", "an int >= 2"),
        ({**EMA, "interval": "7m"}, "strategies[1].interval", "Binance kline interval"),
        ({**EMA, "history": 0}, "strategies[1].history", "positive int"),
        ({**EMA, "quantity": -1}, "strategies[1].quantity", "positive finite number"),
        ({**EMA, "quantity": float("nan")}, "strategies[1].quantity", "positive finite"),
        ({**EMA, "quantity": "0.1"}, "strategies[1].quantity", "positive finite"),
        ({**EMA, "symbol": "btcusdt"}, "strategies[1].symbol", "upper-case symbol"),
        ({**EMA, "window": 5}, "strategies[1].window", "unknown field for ema_crossover"),
        ({"kind": "ema_crossover", "symbol": "BTCUSDT", "quantity": 1}, "strategies[1].interval",
         "is required"),
        ({**FLOW, "threshold": 0}, "strategies[1].threshold", "in (0, 1]"),
        ({**FLOW, "threshold": 1.5}, "strategies[1].threshold", "in (0, 1]"),
        ({**FLOW, "window": 0}, "strategies[1].window", "positive int"),
        ({**FLOW, "cooldown_ns": -1}, "strategies[1].cooldown_ns", "non-negative int"),
        ({**FLOW, "cooldown_ns": 1.5}, "strategies[1].cooldown_ns", "non-negative int"),
        ({**FLOW, "name": "ema_crossover:BTCUSDT:1m:5/13"}, "strategies[1].name", "unique"),
        ("ema", "strategies[1]", "must be a mapping"),
    ],
)  # fmt: skip
def test_build_strategies_names_the_bad_field(spec: Any, field: str, expected: str) -> None:
    with pytest.raises(
        ConfigError, match="^" + field.replace("[", r"\[").replace("]", r"\]")
    ) as info:
        build_strategies([EMA, spec])
    assert info.value.field == field
    assert expected in str(info.value)


def test_constructors_validate_too() -> None:
    with pytest.raises(ConfigError, match="fast"):
        EmaCrossover(symbol="BTCUSDT", interval="1m", fast=20, slow=10, quantity=1.0)
    with pytest.raises(ConfigError, match="threshold"):
        TradeFlowMomentum(symbol="BTCUSDT", threshold=0.0, quantity=1.0)
