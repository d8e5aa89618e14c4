"""Market data for the simulator: a seeded synthetic market and a replay of recorded klines.

Both generators are pure and deterministic: no I/O, no clock (the caller passes market time
to ``step``), randomness only from their own ``random.Random(seed)``. Each owns, per symbol,
the trade and book-update ids, the current top of book and a bounded history of klines for
every configured interval, which answers ``/api/v3/klines``-style queries.

Klines follow Binance's conventions: open times are aligned to the interval from the Unix
epoch, ``close_time_ms = open_time_ms + interval_ms - 1``, a kline's open is its first
trade's price, and an interval without trades is a flat kline at the previous close with
``trades == 0`` and trade ids of -1. Every interval folds the same trades, so klines of
different intervals agree: the 1h high is the highest high of its 1m klines that traded.

A kline closes when market time reaches its end; if ``step`` jumps over several intervals,
each missing one is emitted closed, so the closed sequence has no gaps (a jump longer than
the history bound keeps only the newest ``max_klines`` of them and counts the rest).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from typing import Final, Protocol

from svc.errors import exchange_error
from svc.model import SymbolRules

INTERVALS_MS: Final[Mapping[str, int]] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
DEFAULT_INTERVALS: Final = ("1m", "5m", "15m", "1h")
MAX_KLINES_PER_SERIES: Final = 5000
"""Closed klines kept per symbol and interval; the oldest are evicted and counted."""
MAX_HISTORY_LIMIT: Final = 1000
"""Binance's cap on ``limit`` for ``/api/v3/klines``."""

_MS_PER_YEAR: Final = 365.25 * 86_400_000
_FALLBACK_QUANTUM: Final = Decimal("1E-8")  # when a symbol has no tick or step size
_ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class SimTrade:
    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    buyer_is_maker: bool
    time_ms: int


@dataclass(frozen=True, slots=True)
class SimBook:
    """Top of book (``bookTicker``)."""

    symbol: str
    update_id: int
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    time_ms: int


@dataclass(frozen=True, slots=True)
class SimKline:
    """One kline; ``closed`` is False while it is still forming. ``time_ms`` is event time."""

    symbol: str
    interval: str
    open_time_ms: int
    close_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    first_trade_id: int
    last_trade_id: int
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal
    closed: bool
    time_ms: int


MarketEvent = SimTrade | SimBook | SimKline


class SimMarket(Protocol):
    """What the simulated exchange needs from a market-data generator."""

    @property
    def symbols(self) -> tuple[str, ...]: ...

    def step(self, *, time_ms: int) -> list[MarketEvent]: ...

    def history(
        self,
        *,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[SimKline]: ...

    def book(self, symbol: str) -> SimBook: ...


# --------------------------------------------------------------------- klines


@dataclass(slots=True)
class _Bar:
    """The forming kline of one interval, mutated by each trade."""

    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = _ZERO
    quote_volume: Decimal = _ZERO
    trades: int = 0
    first_trade_id: int = -1
    last_trade_id: int = -1
    taker_buy_volume: Decimal = _ZERO
    taker_buy_quote_volume: Decimal = _ZERO

    def add(self, trade: SimTrade) -> None:
        price = trade.price
        if self.trades == 0:
            self.open = self.high = self.low = price
            self.first_trade_id = trade.trade_id
        else:
            self.high = max(self.high, price)
            self.low = min(self.low, price)
        self.close = price
        self.last_trade_id = trade.trade_id
        self.trades += 1
        quote = price * trade.qty
        self.volume += trade.qty
        self.quote_volume += quote
        if not trade.buyer_is_maker:  # the buyer took liquidity
            self.taker_buy_volume += trade.qty
            self.taker_buy_quote_volume += quote


class _KlineSeries:
    """The klines of one symbol and interval: a bounded deque of closed ones and the open one."""

    __slots__ = ("_current", "closed", "evicted", "interval", "interval_ms", "symbol")

    def __init__(self, *, symbol: str, interval: str, max_klines: int) -> None:
        self.symbol = symbol
        self.interval = interval
        self.interval_ms = INTERVALS_MS[interval]
        self.closed: deque[SimKline] = deque(maxlen=max_klines)
        self.evicted = 0
        self._current: _Bar | None = None

    def advance(self, time_ms: int, out: list[MarketEvent]) -> None:
        """Close the open kline, and flat ones after it, if ``time_ms`` is past their end."""
        bar = self._current
        if bar is None or time_ms < bar.open_time_ms + self.interval_ms:
            return
        self._close(bar, time_ms, out)
        missing = (time_ms - bar.open_time_ms) // self.interval_ms - 1  # flat ones to emit
        maxlen = self.closed.maxlen or 0
        skipped = max(0, missing - maxlen)
        self.evicted += skipped
        open_time = bar.open_time_ms + (1 + skipped) * self.interval_ms
        for _ in range(missing - skipped):
            self._close(_Bar(open_time, bar.close, bar.close, bar.close, bar.close), time_ms, out)
            open_time += self.interval_ms
        self._current = _Bar(open_time, bar.close, bar.close, bar.close, bar.close)

    def add(self, trade: SimTrade) -> None:
        """Fold a trade into the open kline; ``advance`` must have been called for its time."""
        if self._current is None:
            open_time = trade.time_ms - trade.time_ms % self.interval_ms
            self._current = _Bar(open_time, trade.price, trade.price, trade.price, trade.price)
        self._current.add(trade)

    def current(self, time_ms: int) -> SimKline | None:
        return (
            None
            if self._current is None
            else self._kline(self._current, closed=False, time_ms=time_ms)
        )

    def _close(self, bar: _Bar, time_ms: int, out: list[MarketEvent]) -> None:
        kline = self._kline(bar, closed=True, time_ms=time_ms)
        if len(self.closed) == self.closed.maxlen:
            self.evicted += 1
        self.closed.append(kline)
        out.append(kline)

    def _kline(self, bar: _Bar, *, closed: bool, time_ms: int) -> SimKline:
        return SimKline(
            symbol=self.symbol,
            interval=self.interval,
            open_time_ms=bar.open_time_ms,
            close_time_ms=bar.open_time_ms + self.interval_ms - 1,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            quote_volume=bar.quote_volume,
            trades=bar.trades,
            first_trade_id=bar.first_trade_id,
            last_trade_id=bar.last_trade_id,
            taker_buy_volume=bar.taker_buy_volume,
            taker_buy_quote_volume=bar.taker_buy_quote_volume,
            closed=closed,
            time_ms=time_ms,
        )


class _SymbolFeed:
    """One symbol's ids, top of book and kline series; the generators drive it."""

    def __init__(self, *, rules: SymbolRules, intervals: Sequence[str], max_klines: int) -> None:
        self.symbol = rules.symbol
        self.rules = rules
        self.tick = rules.tick_size if rules.tick_size > 0 else _FALLBACK_QUANTUM
        self.step = rules.step_size if rules.step_size > 0 else _FALLBACK_QUANTUM
        self.series = {
            interval: _KlineSeries(symbol=self.symbol, interval=interval, max_klines=max_klines)
            for interval in intervals
        }
        self.next_trade_id = 1
        self.next_update_id = 1
        self.last_book: SimBook | None = None
        self.last_time_ms = -1

    def advance(self, time_ms: int, out: list[MarketEvent]) -> None:
        for series in self.series.values():
            series.advance(time_ms, out)
        self.last_time_ms = max(self.last_time_ms, time_ms)

    def trade(
        self,
        *,
        price: Decimal,
        qty: Decimal,
        buyer_is_maker: bool,
        time_ms: int,
        out: list[MarketEvent],
    ) -> SimTrade:
        self.advance(time_ms, out)
        trade = SimTrade(self.symbol, self.next_trade_id, price, qty, buyer_is_maker, time_ms)
        self.next_trade_id += 1
        for series in self.series.values():
            series.add(trade)
        out.append(trade)
        return trade

    def quote(
        self,
        *,
        bid: Decimal,
        bid_qty: Decimal,
        ask: Decimal,
        ask_qty: Decimal,
        time_ms: int,
        out: list[MarketEvent],
    ) -> SimBook:
        book = SimBook(self.symbol, self.next_update_id, bid, bid_qty, ask, ask_qty, time_ms)
        self.next_update_id += 1
        self.last_book = book
        out.append(book)
        return book

    def quote_around(
        self,
        price: Decimal,
        *,
        buyer_is_maker: bool,
        rng: random.Random,
        time_ms: int,
        out: list[MarketEvent],
    ) -> SimBook:
        """A book one to three ticks wide whose touched side is the last trade's price."""
        spread = self.tick * rng.randint(1, 3)
        if buyer_is_maker:  # a seller hit the bid
            bid, ask = price, price + spread
        else:
            bid, ask = max(price - spread, self.tick), price
        return self.quote(
            bid=bid,
            bid_qty=self.random_qty(rng, price, mean_notional=2000.0),
            ask=ask,
            ask_qty=self.random_qty(rng, price, mean_notional=2000.0),
            time_ms=time_ms,
            out=out,
        )

    def open_klines(self, time_ms: int, out: list[MarketEvent]) -> None:
        for series in self.series.values():
            kline = series.current(time_ms)
            if kline is not None:
                out.append(kline)

    def price_to_tick(self, value: float | Decimal) -> Decimal:
        """Nearest tick, kept inside the price filter (and at least one tick)."""
        price = self.tick * max(1, round(float(value) / float(self.tick)))
        if self.rules.max_price > 0:
            price = min(price, self.rules.max_price)
        return max(price, self.rules.min_price)

    def qty_down(self, value: Decimal) -> Decimal:
        """``value`` rounded down to the step size; at least one step."""
        steps = (value / self.step).to_integral_value(rounding=ROUND_DOWN)
        return self.step * max(1, int(steps))

    def random_qty(self, rng: random.Random, price: Decimal, *, mean_notional: float) -> Decimal:
        qty = self.qty_down(Decimal(rng.expovariate(1.0) * mean_notional / float(price)))
        qty = max(qty, self.rules.min_quantity)
        return min(qty, self.rules.max_quantity) if self.rules.max_quantity > 0 else qty

    def history(
        self, *, interval: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[SimKline]:
        series = self.series.get(interval)
        if series is None:
            raise exchange_error(-1120, "Invalid interval.")
        if limit < 1:
            raise exchange_error(-1130, "Data sent for parameter 'limit' is not valid.")
        limit = min(limit, MAX_HISTORY_LIMIT)
        klines = list(series.closed)
        current = series.current(self.last_time_ms)
        if current is not None:
            klines.append(current)
        if start_ms is not None:
            klines = [k for k in klines if k.open_time_ms >= start_ms]
        if end_ms is not None:
            klines = [k for k in klines if k.open_time_ms <= end_ms]
        # From startTime Binance counts forwards; otherwise it returns the newest ``limit``.
        return klines[:limit] if start_ms is not None else klines[-limit:]

    def statistics(self) -> dict[str, int]:
        return {f"klines_evicted_{i}": s.evicted for i, s in self.series.items()}


class _MarketBase:
    """The query side shared by both generators."""

    _feeds: dict[str, _SymbolFeed]
    _now_ms: int

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._feeds)

    @property
    def now_ms(self) -> int:
        """Market time of the last ``step`` (or the end of the pre-generated history)."""
        return self._now_ms

    def book(self, symbol: str) -> SimBook:
        """The current top of book of ``symbol``."""
        book = self._feed(symbol).last_book
        if book is None:  # every generator quotes at construction
            raise RuntimeError(f"no book for {symbol} yet")
        return book

    def history(
        self,
        *,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[SimKline]:
        """Klines like ``GET /api/v3/klines``: open time in ``[start_ms, end_ms]``, oldest
        first, at most ``limit`` (capped at 1000); without ``start_ms`` the newest ones,
        including the one still open."""
        return self._feed(symbol).history(
            interval=interval, start_ms=start_ms, end_ms=end_ms, limit=limit
        )

    def statistics(self) -> dict[str, dict[str, int]]:
        """Klines evicted from the bounded history, per symbol and interval."""
        return {symbol: feed.statistics() for symbol, feed in self._feeds.items()}

    def _feed(self, symbol: str) -> _SymbolFeed:
        feed = self._feeds.get(symbol)
        if feed is None:
            raise exchange_error(-1121, "Invalid symbol.")
        return feed

    def _check_time(self, time_ms: int) -> None:
        if time_ms < self._now_ms:
            raise ValueError(f"market time went backwards: {time_ms} < {self._now_ms}")


def _checked_intervals(intervals: Sequence[str], *extra: str) -> tuple[str, ...]:
    unknown = [i for i in (*intervals, *extra) if i not in INTERVALS_MS]
    if unknown:
        raise ValueError(f"unknown intervals {unknown}; known: {list(INTERVALS_MS)}")
    return tuple(dict.fromkeys((*intervals, *extra)))  # de-duplicated, order kept


# --------------------------------------------------------------------- synthetic


class SyntheticMarket(_MarketBase):
    """Prices follow geometric Brownian motion; one trade and one book update per symbol per
    ``step``, plus the open kline of every interval (after any klines that just closed).

    At construction ``history_minutes`` of closed history is generated before ``start_ms``,
    one trade every ``HISTORY_STEP_MS``, on a path that ends at the given start price.
    """

    HISTORY_STEP_MS: Final = 15_000

    def __init__(
        self,
        *,
        symbols: Mapping[str, Decimal],
        rules: Mapping[str, SymbolRules],
        seed: int,
        start_ms: int,
        intervals: Sequence[str] = DEFAULT_INTERVALS,
        annual_volatility: float = 0.6,
        history_minutes: int = 24 * 60,
        max_klines: int = MAX_KLINES_PER_SERIES,
    ) -> None:
        if annual_volatility < 0 or history_minutes < 0 or max_klines < 1:
            raise ValueError("annual_volatility and history_minutes must be >= 0, max_klines >= 1")
        missing = [s for s in symbols if s not in rules]
        if missing:
            raise ValueError(f"no rules for {missing}")
        if any(price <= 0 for price in symbols.values()):
            raise ValueError("start prices must be positive")
        checked = _checked_intervals(intervals)
        self._rng = random.Random(seed)
        self._volatility = annual_volatility
        self._feeds = {
            s: _SymbolFeed(rules=rules[s], intervals=checked, max_klines=max_klines)
            for s in symbols
        }
        self._prices = {s: float(p) for s, p in symbols.items()}  # unrounded GBM state
        self._now_ms = start_ms
        self._generate_history(start_ms, history_minutes)

    def step(self, *, time_ms: int) -> list[MarketEvent]:
        """Advance every symbol to ``time_ms`` and return what happened, in order."""
        self._check_time(time_ms)
        elapsed = time_ms - self._now_ms
        out: list[MarketEvent] = []
        for symbol, feed in self._feeds.items():
            self._prices[symbol] *= self._growth(elapsed)
            self._tick(feed, self._prices[symbol], time_ms, out)
            feed.open_klines(time_ms, out)
        self._now_ms = time_ms
        return out

    def _growth(self, elapsed_ms: int) -> float:
        """One GBM factor over ``elapsed_ms`` (zero drift in the log-price's expectation)."""
        years = elapsed_ms / _MS_PER_YEAR
        sigma = self._volatility
        shock = self._rng.gauss(0.0, 1.0)
        return math.exp(-0.5 * sigma * sigma * years + sigma * math.sqrt(years) * shock)

    def _tick(
        self, feed: _SymbolFeed, price_f: float, time_ms: int, out: list[MarketEvent]
    ) -> None:
        price = feed.price_to_tick(price_f)
        qty = feed.random_qty(self._rng, price, mean_notional=500.0)
        buyer_is_maker = self._rng.random() < 0.5
        feed.trade(price=price, qty=qty, buyer_is_maker=buyer_is_maker, time_ms=time_ms, out=out)
        feed.quote_around(
            price, buyer_is_maker=buyer_is_maker, rng=self._rng, time_ms=time_ms, out=out
        )

    def _generate_history(self, start_ms: int, minutes: int) -> None:
        first = start_ms - start_ms % 60_000 - minutes * 60_000
        # The history runs from a whole minute up to just before start_ms.
        times = range(first, start_ms, self.HISTORY_STEP_MS) if minutes else range(0)
        scratch: list[MarketEvent] = []
        for symbol, feed in self._feeds.items():
            if not times:  # no history: only a book around the start price
                price = feed.price_to_tick(self._prices[symbol])
                feed.quote_around(
                    price, buyer_is_maker=False, rng=self._rng, time_ms=start_ms, out=scratch
                )
                continue
            # Walk backwards from the start price so that history ends where trading starts.
            path = [self._prices[symbol]]
            for _ in range(len(times) - 1):
                path.append(path[-1] / self._growth(self.HISTORY_STEP_MS))
            path.reverse()
            for time_ms, price_f in zip(times, path, strict=True):
                self._tick(feed, price_f, time_ms, scratch)
                scratch.clear()
        if times:
            self._now_ms = times[-1]


# --------------------------------------------------------------------- replay


@dataclass(frozen=True, slots=True)
class _Candle:
    open_time_ms: int  # re-based
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


def _parse_row(row: Sequence[object], index: int) -> _Candle:
    """One Binance REST kline array as a candle (open time not yet re-based)."""
    if len(row) < 6:
        raise ValueError(f"kline row {index} has {len(row)} fields, expected 12")
    open_time = row[0]
    if not isinstance(open_time, int):
        raise ValueError(f"kline row {index}: open time {open_time!r} is not an integer")
    try:
        values = tuple(Decimal(str(v)) for v in row[1:6])
    except ArithmeticError as exc:
        raise ValueError(f"kline row {index}: {exc}") from exc
    open_, high, low, close, volume = values
    if not low <= min(open_, close) <= max(open_, close) <= high:
        raise ValueError(f"kline row {index}: OHLC out of order {values[:4]}")
    return _Candle(open_time, open_, high, low, close, volume)


class KlineReplayMarket(_MarketBase):
    """Replays recorded klines of one symbol, re-based so that candle ``warmup_candles`` (0 by
    default: the first) opens at ``start_ms`` aligned down to ``source_interval``.

    Inside each recorded candle prices follow open -> low -> high -> close when the candle
    closed up (open -> high -> low -> close otherwise): those four are trades at 0, 1/3, 2/3
    of the candle and its last millisecond, so every kline of ``source_interval`` reproduces
    the recorded open, high, low and close exactly. Each ``step`` inside a candle adds one
    trade near the straight line between them (never outside the recorded range). Volume:
    the open and the two extremes carry 1/8 of the recorded volume each, the steps share at
    most half of it and the close carries the rest, so the volume is exact unless the steps'
    minimum lots exceed it. Trade counts and taker volumes are whatever the replay produced.

    The candles before ``start_ms`` (``warmup_candles``) are replayed at construction, so
    ``history`` has them. After the last candle, the market stays at the last close with no
    trades (flat klines); ``finished`` turns True. ``source_interval`` is always kept.
    """

    def __init__(
        self,
        *,
        rows: Sequence[Sequence[object]],
        symbol: str,
        rules: Mapping[str, SymbolRules],
        source_interval: str,
        start_ms: int,
        intervals: Sequence[str] = DEFAULT_INTERVALS,
        seed: int = 0,
        warmup_candles: int = 0,
        max_klines: int = MAX_KLINES_PER_SERIES,
    ) -> None:
        if symbol not in rules:
            raise ValueError(f"no rules for {symbol}")
        if not 0 <= warmup_candles < len(rows):
            raise ValueError(f"need more than warmup_candles={warmup_candles} rows")
        checked = _checked_intervals(intervals, source_interval)
        span = INTERVALS_MS[source_interval]
        parsed = [_parse_row(row, i) for i, row in enumerate(rows)]
        for i in range(1, len(parsed)):
            if parsed[i].open_time_ms - parsed[i - 1].open_time_ms < span:
                raise ValueError(
                    f"kline row {i} opens less than {source_interval} after row {i - 1}"
                )
        aligned_start = start_ms - start_ms % span
        shift = aligned_start - parsed[warmup_candles].open_time_ms
        self._candles = [replace(c, open_time_ms=c.open_time_ms + shift) for c in parsed]
        self._span = span
        self._rng = random.Random(seed)
        feed = _SymbolFeed(rules=rules[symbol], intervals=checked, max_klines=max_klines)
        self._feed_of_symbol = feed
        self._feeds = {symbol: feed}
        self._index = 0  # candle being replayed
        self._waypoint = 0  # next of its four waypoints
        self._volume_left = _ZERO
        self._last_price = self._candles[0].open
        self._buyer_is_maker = False
        self._now_ms = self._candles[0].open_time_ms
        scratch: list[MarketEvent] = []
        if warmup_candles:
            self._replay_until(aligned_start - 1, scratch)
            feed.advance(aligned_start, scratch)
            self._now_ms = aligned_start
        feed.quote_around(
            self._last_price,
            buyer_is_maker=self._buyer_is_maker,
            rng=self._rng,
            time_ms=self._now_ms,
            out=scratch,
        )

    @property
    def finished(self) -> bool:
        """True once the last recorded candle has been replayed."""
        return self._index >= len(self._candles)

    def step(self, *, time_ms: int) -> list[MarketEvent]:
        """Replay up to market time ``time_ms``; the caller maps wall time to market time."""
        self._check_time(time_ms)
        out: list[MarketEvent] = []
        feed = self._feed_of_symbol
        self._replay_until(time_ms, out)
        self._trade_between_waypoints(time_ms, out)
        feed.advance(time_ms, out)
        feed.quote_around(
            self._last_price,
            buyer_is_maker=self._buyer_is_maker,
            rng=self._rng,
            time_ms=time_ms,
            out=out,
        )
        feed.open_klines(time_ms, out)
        self._now_ms = time_ms
        return out

    def _waypoints(self, candle: _Candle) -> tuple[tuple[int, Decimal], ...]:
        t0, span = candle.open_time_ms, self._span
        first, second = (
            (candle.low, candle.high) if candle.close >= candle.open else (candle.high, candle.low)
        )
        return (
            (t0, candle.open),
            (t0 + span // 3, first),
            (t0 + 2 * span // 3, second),
            (t0 + span - 1, candle.close),
        )

    def _replay_until(self, time_ms: int, out: list[MarketEvent]) -> None:
        """Emit every waypoint trade at or before ``time_ms``, stamped with its own time."""
        while self._index < len(self._candles):
            candle = self._candles[self._index]
            at, price = self._waypoints(candle)[self._waypoint]
            if at > time_ms:
                return
            if self._waypoint == 0:
                self._volume_left = candle.volume
            if self._waypoint < 3:
                qty = self._feed_of_symbol.qty_down(candle.volume / 8)
            else:
                qty = self._volume_left if self._volume_left > 0 else self._feed_of_symbol.step
            self._emit(price, qty, at, out)
            self._waypoint += 1
            if self._waypoint == 4:
                self._index += 1
                self._waypoint = 0

    def _trade_between_waypoints(self, time_ms: int, out: list[MarketEvent]) -> None:
        feed = self._feed_of_symbol
        if self.finished or self._waypoint == 0 or time_ms <= feed.last_time_ms:
            return  # between candles, or a waypoint was just emitted at this very time
        candle = self._candles[self._index]
        waypoints = self._waypoints(candle)
        t_a, p_a = waypoints[self._waypoint - 1]
        t_b, p_b = waypoints[self._waypoint]
        line = p_a + (p_b - p_a) * Decimal(time_ms - t_a) / Decimal(t_b - t_a)
        noise = Decimal(self._rng.uniform(-0.1, 0.1)) * (candle.high - candle.low)
        price = min(max(feed.price_to_tick(line + noise), candle.low), candle.high)
        share = Decimal(time_ms - feed.last_time_ms) / Decimal(2 * self._span)
        self._emit(price, feed.qty_down(candle.volume * share), time_ms, out)

    def _emit(self, price: Decimal, qty: Decimal, time_ms: int, out: list[MarketEvent]) -> None:
        if price != self._last_price:
            self._buyer_is_maker = price < self._last_price  # a falling price: sellers take
        self._feed_of_symbol.trade(
            price=price, qty=qty, buyer_is_maker=self._buyer_is_maker, time_ms=time_ms, out=out
        )
        self._volume_left -= qty
        self._last_price = price
