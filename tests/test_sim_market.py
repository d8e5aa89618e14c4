"""The simulator's market-data generators: synthetic GBM and replay of recorded klines."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svc.errors import InvalidRequest
from svc.sim.market import (
    INTERVALS_MS,
    KlineReplayMarket,
    MarketEvent,
    SimBook,
    SimKline,
    SimMarket,
    SimTrade,
    SyntheticMarket,
)
from tests.recorded import data_dir, recorded_rules

DATA = data_dir()
KLINES_1H = DATA / "klines" / "api_v3_klines_BTCUSDT_1h_20200501_1000.json"
D = Decimal
START_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z: not aligned to any interval


RULES = {"BTCUSDT": recorded_rules("BTCUSDT"), "ETHUSDT": recorded_rules("ETHUSDT")}
RECORDED = json.loads(KLINES_1H.read_text())


def synthetic(
    *, seed: int = 7, history_minutes: int = 120, intervals: Sequence[str] = ("1m", "5m", "1h")
) -> SyntheticMarket:
    return SyntheticMarket(
        symbols={"BTCUSDT": D("60000"), "ETHUSDT": D("3000")},
        rules=RULES,
        seed=seed,
        start_ms=START_MS,
        intervals=intervals,
        history_minutes=history_minutes,
    )


def run(market: SimMarket, times: Iterable[int]) -> list[MarketEvent]:
    events: list[MarketEvent] = []
    for t in times:
        events.extend(market.step(time_ms=t))
    return events


def closed(events: Iterable[MarketEvent], interval: str, symbol: str = "BTCUSDT") -> list[SimKline]:
    return [
        e
        for e in events
        if isinstance(e, SimKline) and e.closed and e.interval == interval and e.symbol == symbol
    ]


def assert_contiguous(klines: Sequence[SimKline]) -> None:
    for k in klines:
        assert k.close_time_ms == k.open_time_ms + INTERVALS_MS[k.interval] - 1
        assert k.open_time_ms % INTERVALS_MS[k.interval] == 0
        assert k.low <= min(k.open, k.close) <= max(k.open, k.close) <= k.high
    for before, after in itertools.pairwise(klines):
        assert after.open_time_ms == before.close_time_ms + 1, "a gap in closed klines"


def assert_aggregates(big: SimKline, small: Sequence[SimKline]) -> None:
    """``big`` is what the ``small`` klines inside it add up to (empty ones only carry over)."""
    inside = [k for k in small if big.open_time_ms <= k.open_time_ms <= big.close_time_ms]
    assert len(inside) == INTERVALS_MS[big.interval] // INTERVALS_MS[small[0].interval]
    traded = [k for k in inside if k.trades > 0]
    assert big.trades == sum(k.trades for k in inside)
    assert big.volume == sum((k.volume for k in inside), D(0))
    assert big.quote_volume == sum((k.quote_volume for k in inside), D(0))
    assert big.taker_buy_volume == sum((k.taker_buy_volume for k in inside), D(0))
    if traded:
        assert big.open == traded[0].open
        assert big.close == traded[-1].close
        assert big.high == max(k.high for k in traded)
        assert big.low == min(k.low for k in traded)
        assert big.first_trade_id == traded[0].first_trade_id
        assert big.last_trade_id == traded[-1].last_trade_id


def assert_klines_fold_trades(klines: Sequence[SimKline], trades: Sequence[SimTrade]) -> None:
    for k in klines:
        inside = [t for t in trades if k.open_time_ms <= t.time_ms <= k.close_time_ms]
        assert k.trades == len(inside)
        if inside:
            assert (k.open, k.close) == (inside[0].price, inside[-1].price)
            assert k.high == max(t.price for t in inside)
            assert k.low == min(t.price for t in inside)
            assert k.volume == sum((t.qty for t in inside), D(0))
            assert (k.first_trade_id, k.last_trade_id) == (inside[0].trade_id, inside[-1].trade_id)


# --------------------------------------------------------------------- synthetic


def test_intervals_table() -> None:
    assert INTERVALS_MS["1m"] == 60_000
    assert INTERVALS_MS["4h"] == 4 * INTERVALS_MS["1h"]
    assert INTERVALS_MS["1d"] == 86_400_000
    assert set(INTERVALS_MS) == {"1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "1d"}


def test_same_seed_same_market_and_different_seed_different_market() -> None:
    times = range(START_MS, START_MS + 300_000, 1_000)
    first, second, other = synthetic(seed=3), synthetic(seed=3), synthetic(seed=4)
    assert first.history(symbol="BTCUSDT", interval="1m") == second.history(
        symbol="BTCUSDT", interval="1m"
    )
    assert run(first, times) == run(second, times)
    assert run(other, times) != run(synthetic(seed=3), times)


def test_step_emits_trade_book_and_open_klines_per_symbol() -> None:
    market = synthetic()
    events = market.step(time_ms=START_MS)
    btc = [e for e in events if e.symbol == "BTCUSDT"]
    assert [type(e).__name__ for e in btc if not (isinstance(e, SimKline) and e.closed)] == [
        "SimTrade",
        "SimBook",
        "SimKline",
        "SimKline",
        "SimKline",
    ]
    trade = next(e for e in btc if isinstance(e, SimTrade))
    book = market.book("BTCUSDT")
    assert book.time_ms == START_MS
    assert book.bid < book.ask
    assert trade.price in (book.bid, book.ask)
    open_klines = [e for e in btc if isinstance(e, SimKline) and not e.closed]
    assert [k.interval for k in open_klines] == ["1m", "5m", "1h"]
    assert all(k.close == trade.price and k.last_trade_id == trade.trade_id for k in open_klines)


def test_prices_and_sizes_are_quantized_to_the_filters() -> None:
    market = synthetic()
    events = run(market, range(START_MS, START_MS + 120_000, 500))
    for e in events:
        rules = RULES[e.symbol]
        if isinstance(e, SimTrade):
            assert e.price % rules.tick_size == 0
            assert e.qty % rules.step_size == 0
            assert e.qty >= rules.min_quantity
        elif isinstance(e, SimBook):
            assert e.bid % rules.tick_size == 0
            assert e.ask % rules.tick_size == 0
            assert 0 < e.ask - e.bid <= 3 * rules.tick_size
            assert e.bid_qty > 0
            assert e.ask_qty > 0


def test_history_is_pregenerated_and_ends_at_the_start_price() -> None:
    market = synthetic(history_minutes=24 * 60)
    minutes = market.history(symbol="BTCUSDT", interval="1m", limit=1000)
    assert len(minutes) == 1000
    assert minutes[-1].closed is False  # the one still open is included
    assert all(k.closed for k in minutes[:-1])
    assert minutes[-1].open_time_ms == START_MS - START_MS % 60_000
    assert minutes[-1].close == D("60000.00")
    assert_contiguous(minutes[:-1])
    hours = market.history(symbol="BTCUSDT", interval="1h", end_ms=START_MS)
    assert len(hours) == 25  # 24 closed hours plus the open one
    assert market.book("ETHUSDT").ask in (D("3000.00"), D("3000.01"), D("3000.02"), D("3000.03"))


def test_klines_agree_across_intervals_and_with_trades() -> None:
    market = synthetic(history_minutes=0, intervals=("1m", "5m", "1h"))
    times = range(START_MS, START_MS + 2 * 3_600_000, 7_000)
    events = run(market, times)
    trades = [e for e in events if isinstance(e, SimTrade) and e.symbol == "BTCUSDT"]
    minutes, fives, hours = closed(events, "1m"), closed(events, "5m"), closed(events, "1h")
    for series in (minutes, fives, hours):
        assert_contiguous(series)
        assert_klines_fold_trades(series, trades)
    assert len(hours) == 2  # 22:13 -> 00:13 closes 22:00 (traded from 22:13 only) and 23:00
    for five in fives[1:]:
        assert_aggregates(five, minutes)
    assert_aggregates(hours[1], minutes)
    assert_aggregates(hours[1], fives)
    # The REST view agrees with the stream.
    rest = market.history(symbol="BTCUSDT", interval="5m", start_ms=fives[0].open_time_ms)
    assert rest[: len(fives)] == fives


def test_a_jump_in_time_emits_every_missing_closed_kline() -> None:
    market = synthetic(history_minutes=0, intervals=("1m", "5m"))
    market.step(time_ms=START_MS)
    last_close = market.history(symbol="BTCUSDT", interval="1m")[-1].close
    events = market.step(time_ms=START_MS + 10 * 60_000)
    minutes = closed(events, "1m")
    assert len(minutes) == 10
    assert_contiguous(minutes)
    assert minutes[0].trades == 1
    flat = minutes[1:]
    assert all(k.trades == 0 and k.volume == 0 for k in flat)
    assert all(k.open == k.high == k.low == k.close == last_close for k in flat)
    assert all((k.first_trade_id, k.last_trade_id) == (-1, -1) for k in flat)
    # Closed klines come before the new trade.
    first_trade = next(i for i, e in enumerate(events) if isinstance(e, SimTrade))
    assert all(
        i < first_trade
        for i, e in enumerate(events)
        if isinstance(e, SimKline) and e.closed and e.symbol == "BTCUSDT"
    )


def test_history_queries_follow_binance_semantics() -> None:
    market = synthetic(history_minutes=60)
    everything = market.history(symbol="BTCUSDT", interval="1m", limit=1000)
    assert len(everything) == 61
    start = everything[10].open_time_ms
    assert (
        market.history(symbol="BTCUSDT", interval="1m", start_ms=start, limit=5)
        == (everything[10:15])
    )
    end = everything[20].open_time_ms
    assert (
        market.history(symbol="BTCUSDT", interval="1m", end_ms=end, limit=3) == (everything[18:21])
    )
    assert (
        market.history(symbol="BTCUSDT", interval="1m", start_ms=start, end_ms=end)
        == (everything[10:21])
    )
    assert market.history(symbol="BTCUSDT", interval="1m", limit=2) == everything[-2:]


@pytest.mark.parametrize(
    ("symbol", "interval", "limit", "code"),
    [("NOPE", "1m", 10, -1121), ("BTCUSDT", "7m", 10, -1120), ("BTCUSDT", "1m", 0, -1130)],
)
def test_history_rejects_bad_queries(symbol: str, interval: str, limit: int, code: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        synthetic(history_minutes=0).history(symbol=symbol, interval=interval, limit=limit)
    assert caught.value.code == code


def test_history_is_bounded_and_counts_evictions() -> None:
    market = SyntheticMarket(
        symbols={"BTCUSDT": D("60000")},
        rules=RULES,
        seed=1,
        start_ms=START_MS,
        intervals=("1m",),
        history_minutes=30,
        max_klines=10,
    )
    klines = market.history(symbol="BTCUSDT", interval="1m", limit=1000)
    assert len(klines) == 11  # ten closed and the open one
    assert market.statistics()["BTCUSDT"]["klines_evicted_1m"] == 20
    market.step(time_ms=START_MS + 100 * 60_000)  # a jump longer than the bound
    klines = market.history(symbol="BTCUSDT", interval="1m", limit=1000)
    assert len(klines) == 11
    assert_contiguous(klines[:-1])
    assert klines[-1].open_time_ms == (START_MS + 100 * 60_000) // 60_000 * 60_000


def test_time_cannot_go_backwards() -> None:
    market = synthetic(history_minutes=0)
    market.step(time_ms=START_MS + 5_000)
    with pytest.raises(ValueError, match="backwards"):
        market.step(time_ms=START_MS)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    gaps=st.lists(st.integers(0, 20 * 60_000), min_size=1, max_size=60),
)
def test_synthetic_klines_are_gapless_and_consistent(seed: int, gaps: list[int]) -> None:
    market = synthetic(seed=seed, history_minutes=0, intervals=("1m", "5m", "15m"))
    times, t = [], START_MS
    for gap in gaps:
        t += gap
        times.append(t)
    events = run(market, times)
    trades = [e for e in events if isinstance(e, SimTrade) and e.symbol == "ETHUSDT"]
    minutes = closed(events, "1m", "ETHUSDT")
    fifteens = closed(events, "15m", "ETHUSDT")
    for series in (minutes, closed(events, "5m", "ETHUSDT"), fifteens):
        assert_contiguous(series)
        assert_klines_fold_trades(series, trades)
    for big in fifteens:
        if minutes and big.open_time_ms >= minutes[0].open_time_ms:  # all its minutes exist
            assert_aggregates(big, minutes)


# --------------------------------------------------------------------- replay


def replay(
    rows: Sequence[Sequence[object]] = RECORDED,
    *,
    intervals: Sequence[str] = ("1h", "4h"),
    warmup: int = 0,
    seed: int = 0,
) -> KlineReplayMarket:
    return KlineReplayMarket(
        rows=rows,
        symbol="BTCUSDT",
        rules=RULES,
        source_interval="1h",
        start_ms=START_MS,
        intervals=intervals,
        seed=seed,
        warmup_candles=warmup,
    )


def recorded_ohlcv(row: Sequence[object]) -> tuple[Decimal, ...]:
    return tuple(D(str(v)) for v in row[1:6])


def test_replay_reproduces_every_recorded_candle() -> None:
    market = replay()
    aligned = START_MS - START_MS % 3_600_000
    assert market.now_ms == aligned
    step = 10 * 60_000
    events = run(market, range(aligned, aligned + (len(RECORDED) + 1) * 3_600_000, step))
    hours = closed(events, "1h")
    assert market.finished
    assert len(hours) >= len(RECORDED)
    assert_contiguous(hours)
    for row, kline in zip(RECORDED, hours, strict=False):
        offset = int(str(row[0])) - int(str(RECORDED[0][0]))
        assert kline.open_time_ms == aligned + offset
        assert (kline.open, kline.high, kline.low, kline.close, kline.volume) == (
            recorded_ohlcv(row)
        )
    trades = [e for e in events if isinstance(e, SimTrade)]
    four_hours = closed(events, "4h")
    assert_klines_fold_trades(four_hours[:50], trades)
    for big in four_hours[1:50]:
        assert_aggregates(big, hours)


def test_replay_between_steps_stays_inside_the_candle_and_builds_smaller_klines() -> None:
    rows = RECORDED[:30]
    market = replay(rows, intervals=("1m", "15m", "1h"), seed=5)
    aligned = market.now_ms
    events = run(market, range(aligned, aligned + 31 * 3_600_000, 37_000))
    trades = [e for e in events if isinstance(e, SimTrade)]
    hours = closed(events, "1h")
    for row, kline in zip(rows, hours, strict=True):
        assert (kline.open, kline.high, kline.low, kline.close) == recorded_ohlcv(row)[:4]
        assert abs(kline.volume - recorded_ohlcv(row)[4]) < D("0.001")
    minutes, quarters = closed(events, "1m"), closed(events, "15m")
    assert_contiguous(minutes)
    assert_klines_fold_trades(quarters, trades)
    for hour in hours:
        assert_aggregates(hour, quarters)
    book = market.book("BTCUSDT")
    assert book.bid < book.ask


def test_replay_warmup_candles_are_history_before_start() -> None:
    market = replay(RECORDED[:48], warmup=24)
    hours = market.history(symbol="BTCUSDT", interval="1h", limit=1000)
    aligned = START_MS - START_MS % 3_600_000
    assert [k.open_time_ms for k in hours if k.closed][-1] == aligned - 3_600_000
    assert [recorded_ohlcv(r)[:4] for r in RECORDED[:24]] == [
        (k.open, k.high, k.low, k.close) for k in hours if k.closed
    ]
    events = market.step(time_ms=aligned)
    first = next(e for e in events if isinstance(e, SimTrade))
    assert first.price == recorded_ohlcv(RECORDED[24])[0]


def test_replay_is_deterministic() -> None:
    times = range(START_MS, START_MS + 10 * 3_600_000, 90_000)
    assert run(replay(RECORDED[:12], seed=9), times) == run(replay(RECORDED[:12], seed=9), times)


def test_replay_rejects_malformed_rows() -> None:
    broken = [list(RECORDED[0])]
    broken[0][2] = "1.00"  # high below open
    with pytest.raises(ValueError, match="OHLC"):
        replay(broken)
    with pytest.raises(ValueError, match="opens less than"):
        replay([RECORDED[1], RECORDED[0]])


@settings(max_examples=25, deadline=None)
@given(
    first=st.integers(0, 990),
    gaps=st.lists(st.integers(1, 4 * 3_600_000), min_size=1, max_size=40),
)
def test_replay_reproduces_ohlc_for_any_step_schedule(first: int, gaps: list[int]) -> None:
    rows = RECORDED[first : first + 8]
    market = replay(rows, intervals=("15m", "1h"))
    t = market.now_ms
    times = []
    for gap in gaps:
        t += gap
        times.append(t)
    times.append(t + 9 * 3_600_000)  # finish the replay
    hours = closed(run(market, times), "1h")
    assert_contiguous(hours)
    for row, kline in zip(rows, hours, strict=False):
        assert (kline.open, kline.high, kline.low, kline.close) == recorded_ohlcv(row)[:4]
