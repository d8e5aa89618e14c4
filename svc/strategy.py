"""Trading strategies: pure, deterministic functions of market events.

A strategy sees events one at a time and answers with a ``Signal`` or ``None``. It never
reads a clock (a signal's ``ts_event``/``ts_init`` are those of the event that triggered it),
never does I/O and never logs, so the same event sequence always yields the same signals and
a recorded session replays exactly. A strategy does not assume its signals were filled: the
execution side reports fills through ``on_fill`` and the strategy trades on that position.

Spot semantics: a strategy never sells more than it believes it holds.

``build_strategies`` turns configuration mappings into strategies and raises
``ConfigError`` naming the offending field (``strategies[1].fast``) and the expected form.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from svc.drill import DRILL_KINDS
from svc.errors import ConfigError
from svc.model import Candle, Quote, Side, Signal, Trade

# A position within this fraction of the order quantity of zero is flat. Float sums leave
# noise (0.1 + 0.1 + 0.1 - 0.3 is 5.5e-17), and real fills leave dust: a BUY pays its fee in
# the base asset and a SELL is rounded down to the lot size, so a round trip of 0.001 BTC
# leaves ~0.00001 BTC that cannot be sold (below the minimum notional) and must not block
# the next BUY.
_DUST_FRACTION = 0.02

BINANCE_INTERVALS = frozenset(
    {"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w"}
    | {"1M"}
)


class Strategy(Protocol):
    """What the strategy stage drives: events in, at most one signal out per event."""

    name: str

    def on_event(self, event: Candle | Trade | Quote) -> Signal | None:
        """Update on one market event; return a signal when the strategy wants to trade."""
        ...

    def on_fill(self, symbol: str, side: str, quantity: float) -> None:
        """Learn that ``quantity`` of ``symbol`` was actually bought (BUY) or sold (SELL)."""
        ...

    def state(self) -> dict[str, object]:
        """A snapshot for the status endpoint and the run summary (plain values only)."""
        ...


class _Position:
    """The position a strategy believes it holds in one symbol, from fills only."""

    __slots__ = ("_dust", "symbol", "value")

    def __init__(self, symbol: str, quantity: float) -> None:
        self.symbol = symbol
        self.value = 0.0
        self._dust = quantity * _DUST_FRACTION

    def apply(self, symbol: str, side: str, quantity: float) -> None:
        if symbol != self.symbol:
            return
        if side == "BUY":
            value = self.value + quantity
        elif side == "SELL":
            value = self.value - quantity
        else:
            raise ValueError("fill side must be BUY or SELL, got " + repr(side))
        self.value = 0.0 if abs(value) <= self._dust else value


class EmaCrossover:
    """Trade the crossing of a fast and a slow EMA of closed candle closes.

    EMAs use ``alpha = 2 / (n + 1)`` and are seeded with the simple average of the first ``n``
    closes. A cross is a change of the sign of ``fast - slow`` from the last non-zero sign
    (touching without crossing is not a cross; the first defined sign is not a cross either).
    Cross up with a position <= 0: BUY ``quantity``. Cross down with a position > 0: SELL
    ``min(quantity, position)``. Market orders only.

    Only closed candles of ``symbol``/``interval`` count. A candle whose ``open_time`` is not
    newer than the last one used (a replayed duplicate, a backfill overlap, an out-of-order
    older candle) is ignored, so feeding the same history twice changes nothing.
    """

    __slots__ = (
        "_candles",
        "_down_reason",
        "_fast_alpha",
        "_fast_ema",
        "_fast_sum",
        "_ignored",
        "_last_open_time",
        "_last_sign",
        "_position",
        "_seen",
        "_signals",
        "_slow_alpha",
        "_slow_ema",
        "_slow_sum",
        "_up_reason",
        "fast",
        "interval",
        "name",
        "quantity",
        "slow",
        "symbol",
    )

    def __init__(
        self,
        *,
        symbol: str,
        interval: str,
        fast: int = 5,
        slow: int = 13,
        quantity: float,
        history: int = 500,
        name: str = "",
    ) -> None:
        params = _ema_params(
            "EmaCrossover",
            {
                "symbol": symbol,
                "interval": interval,
                "fast": fast,
                "slow": slow,
                "quantity": quantity,
                "history": history,
                "name": name,
            },
        )
        self.name = params.name or f"ema_crossover:{symbol}:{interval}:{fast}/{slow}"
        self.symbol = symbol
        self.interval = interval
        self.fast = fast
        self.slow = slow
        self.quantity = float(quantity)
        self._fast_alpha = 2.0 / (fast + 1)
        self._slow_alpha = 2.0 / (slow + 1)
        self._candles: deque[Candle] = deque(maxlen=history)
        self._seen = 0  # closed candles used, including those the deque has forgotten
        self._fast_sum = 0.0  # sums of the first n closes, for the SMA seeds
        self._slow_sum = 0.0
        self._fast_ema: float | None = None
        self._slow_ema: float | None = None
        self._last_sign = 0  # sign of fast - slow at the last candle where it was non-zero
        self._last_open_time = -1
        self._position = _Position(symbol, self.quantity)
        self._signals = 0
        self._ignored = {"unclosed": 0, "stale": 0}
        self._up_reason = f"ema {fast}/{slow} cross up"
        self._down_reason = f"ema {fast}/{slow} cross down"

    def on_event(self, event: Candle | Trade | Quote) -> Signal | None:
        if (
            type(event) is not Candle
            or event.symbol != self.symbol
            or event.interval != self.interval
        ):
            return None
        if not event.closed:
            self._ignored["unclosed"] += 1
            return None
        if event.open_time <= self._last_open_time:
            self._ignored["stale"] += 1
            return None
        self._last_open_time = event.open_time
        self._candles.append(event)
        close = event.close
        self._seen += 1
        seen = self._seen

        fast_ema = self._fast_ema
        if fast_ema is None:
            self._fast_sum += close
            if seen == self.fast:
                fast_ema = self._fast_sum / self.fast
        else:
            fast_ema += self._fast_alpha * (close - fast_ema)
        self._fast_ema = fast_ema
        slow_ema = self._slow_ema
        if slow_ema is None:
            self._slow_sum += close
            if seen == self.slow:
                slow_ema = self._slow_sum / self.slow
        else:
            slow_ema += self._slow_alpha * (close - slow_ema)
        self._slow_ema = slow_ema
        # fast < slow: once the slow EMA is seeded, so is the fast one.
        if fast_ema is None or slow_ema is None:
            return None
        return self._decide(event, fast_ema - slow_ema)

    def _decide(self, event: Candle, difference: float) -> Signal | None:
        if difference == 0.0:
            return None
        sign = 1 if difference > 0.0 else -1
        previous = self._last_sign
        self._last_sign = sign
        if previous in (0, sign):
            return None
        position = self._position.value
        if sign > 0 and position <= 0.0:
            self._signals += 1
            return Signal(
                strategy=self.name,
                symbol=self.symbol,
                side="BUY",
                quantity=self.quantity,
                limit_price=0.0,
                reason=self._up_reason,
                ts_event=event.ts_event,
                ts_init=event.ts_init,
            )
        if sign < 0 and position > 0.0:
            self._signals += 1
            return Signal(
                strategy=self.name,
                symbol=self.symbol,
                side="SELL",
                quantity=min(self.quantity, position),
                limit_price=0.0,
                reason=self._down_reason,
                ts_event=event.ts_event,
                ts_init=event.ts_init,
            )
        return None

    def on_fill(self, symbol: str, side: str, quantity: float) -> None:
        self._position.apply(symbol, side, quantity)

    def state(self) -> dict[str, object]:
        last = self._candles[-1] if self._candles else None
        return {
            "kind": "ema_crossover",
            "symbol": self.symbol,
            "interval": self.interval,
            "fast": self.fast,
            "slow": self.slow,
            "position": self._position.value,
            "fast_ema": self._fast_ema,
            "slow_ema": self._slow_ema,
            "candles": self._seen,
            "last_close": None if last is None else last.close,
            "last_open_time": None if last is None else last.open_time,
            "signals": self._signals,
            "ignored": dict(self._ignored),
        }


class TradeFlowMomentum:
    """Trade the imbalance of aggressive buying and selling over the last ``window`` trades.

    Each trade of ``symbol`` adds its signed quote volume (``+price*quantity`` when the buyer
    was the taker, i.e. ``buyer_is_maker`` is False; negative otherwise). ``imbalance`` is the
    signed sum over the absolute sum, in [-1, 1]. Once the window is full: imbalance >=
    ``threshold`` with a position <= 0 buys ``quantity``; imbalance <= ``-threshold`` with a
    position > 0 sells ``min(quantity, position)``. After a signal, none for ``cooldown_ns`` of
    event time.

    Sums are kept incrementally (O(1) per trade) and recomputed from the window once every
    ``window`` trades, so floating-point drift from adding and removing cannot build up.
    """

    __slots__ = (
        "_absolute_sum",
        "_flows",
        "_last_signal_ns",
        "_position",
        "_signals",
        "_signed_sum",
        "_since_resync",
        "_suppressed",
        "_trades",
        "cooldown_ns",
        "limit_offset",
        "name",
        "quantity",
        "symbol",
        "threshold",
        "window",
    )

    def __init__(
        self,
        *,
        symbol: str,
        window: int = 200,
        threshold: float = 0.6,
        quantity: float,
        cooldown_ns: int = 5_000_000_000,
        limit_offset: float = 0.0,
        name: str = "",
    ) -> None:
        params = _flow_params(
            "TradeFlowMomentum",
            {
                "symbol": symbol,
                "window": window,
                "threshold": threshold,
                "quantity": quantity,
                "cooldown_ns": cooldown_ns,
                "limit_offset": limit_offset,
                "name": name,
            },
        )
        self.name = params.name or f"trade_flow:{symbol}:{window}"
        self.symbol = symbol
        self.window = window
        self.threshold = float(threshold)
        self.quantity = float(quantity)
        self.cooldown_ns = cooldown_ns
        # 0: market orders; else limit orders this fraction away from the trade price (below
        # for a buy, above for a sell), which rest on the book.
        self.limit_offset = float(limit_offset)
        self._flows: deque[float] = deque(maxlen=window)
        self._signed_sum = 0.0
        self._absolute_sum = 0.0
        self._since_resync = 0
        self._last_signal_ns: int | None = None
        self._position = _Position(symbol, self.quantity)
        self._trades = 0
        self._signals = 0
        self._suppressed = 0  # signals the cooldown held back

    def imbalance(self) -> float:
        """Signed over absolute quote volume in the window; 0 for an empty or zero window."""
        absolute = self._absolute_sum
        if absolute <= 0.0:
            return 0.0
        return max(-1.0, min(1.0, self._signed_sum / absolute))

    def on_event(self, event: Candle | Trade | Quote) -> Signal | None:
        if type(event) is not Trade or event.symbol != self.symbol:
            return None
        self._trades += 1
        notional = event.price * event.quantity
        flow = -notional if event.buyer_is_maker else notional
        flows = self._flows
        if len(flows) == self.window:
            evicted = flows[0]  # append() below drops it
            self._signed_sum -= evicted
            self._absolute_sum -= abs(evicted)
        flows.append(flow)
        self._since_resync += 1
        if self._since_resync >= self.window:
            self._since_resync = 0
            self._signed_sum = math.fsum(flows)
            self._absolute_sum = math.fsum(abs(value) for value in flows)
        else:
            self._signed_sum += flow
            self._absolute_sum += abs(flow)
        if len(flows) < self.window:
            return None

        imbalance = self.imbalance()
        position = self._position.value
        side: Side
        if imbalance >= self.threshold and position <= 0.0:
            side = "BUY"
            quantity = self.quantity
        elif imbalance <= -self.threshold and position > 0.0:
            side = "SELL"
            quantity = min(self.quantity, position)
        else:
            return None
        last = self._last_signal_ns
        if last is not None and event.ts_event - last < self.cooldown_ns:
            self._suppressed += 1
            return None
        self._last_signal_ns = event.ts_event
        self._signals += 1
        # The reason is formatted only when a signal is emitted, which the cooldown keeps rare.
        return Signal(
            strategy=self.name,
            symbol=self.symbol,
            side=side,
            quantity=quantity,
            limit_price=(
                event.price
                * (1.0 - self.limit_offset if side == "BUY" else 1.0 + self.limit_offset)
                if self.limit_offset
                else 0.0
            ),
            reason=f"trade flow imbalance {imbalance:+.3f} over {self.window} trades",
            ts_event=event.ts_event,
            ts_init=event.ts_init,
        )

    def on_fill(self, symbol: str, side: str, quantity: float) -> None:
        self._position.apply(symbol, side, quantity)

    def state(self) -> dict[str, object]:
        return {
            "kind": "trade_flow",
            "symbol": self.symbol,
            "window": self.window,
            "threshold": self.threshold,
            "position": self._position.value,
            "imbalance": self.imbalance(),
            "window_filled": len(self._flows),
            "trades": self._trades,
            "signals": self._signals,
            "suppressed_by_cooldown": self._suppressed,
            "last_signal_ns": self._last_signal_ns,
        }


# ------------------------------------------------------------------ configuration


class _EmaParams(NamedTuple):
    symbol: str
    interval: str
    fast: int
    slow: int
    quantity: float
    history: int
    name: str


class _FlowParams(NamedTuple):
    symbol: str
    window: int
    threshold: float
    quantity: float
    cooldown_ns: int
    limit_offset: float
    name: str


_EMA_DEFAULTS: dict[str, object] = {"fast": 5, "slow": 13, "history": 500, "name": ""}
_FLOW_DEFAULTS: dict[str, object] = {
    "window": 200,
    "threshold": 0.6,
    "cooldown_ns": 5_000_000_000,
    "limit_offset": 0.0,
    "name": "",
}


def _int(where: str, key: str, value: object, *, minimum: int, form: str) -> int:
    # bool is an int subclass; `fast: true` in a config file is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{key}", f"must be {form}, got {value!r}")
    return value


def _float(where: str, key: str, value: object, *, form: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key}", f"must be {form}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{where}.{key}", f"must be {form}, got {value!r}")
    return number


def _str(where: str, key: str, value: object, *, form: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty) or value != value.strip():
        raise ConfigError(f"{where}.{key}", f"must be {form}, got {value!r}")
    return value


def _symbol(where: str, value: object) -> str:
    symbol = _str(where, "symbol", value, form="a non-empty symbol like 'BTCUSDT'")
    if not symbol.isalnum() or symbol != symbol.upper():
        raise ConfigError(
            f"{where}.symbol", f"must be an upper-case symbol like 'BTCUSDT', got {value!r}"
        )
    return symbol


def _quantity(where: str, value: object) -> float:
    quantity = _float(where, "quantity", value, form="a positive finite number (base units)")
    if quantity <= 0.0:
        raise ConfigError(
            f"{where}.quantity", f"must be a positive finite number (base units), got {value!r}"
        )
    return quantity


def _name(where: str, value: object) -> str:
    return _str(where, "name", value, form="a string naming the strategy", allow_empty=True)


def _ema_params(where: str, values: Mapping[str, object]) -> _EmaParams:
    slow = _int(where, "slow", values["slow"], minimum=2, form="an int >= 2 (candles)")
    fast = values["fast"]
    if isinstance(fast, bool) or not isinstance(fast, int) or not 0 < fast < slow:
        raise ConfigError(f"{where}.fast", f"must be a positive int < slow ({slow}), got {fast!r}")
    interval = values["interval"]
    if interval not in BINANCE_INTERVALS:
        raise ConfigError(
            f"{where}.interval",
            f"must be a Binance kline interval ({', '.join(sorted(BINANCE_INTERVALS))}), "
            f"got {interval!r}",
        )
    return _EmaParams(
        symbol=_symbol(where, values["symbol"]),
        interval=str(interval),
        fast=fast,
        slow=slow,
        quantity=_quantity(where, values["quantity"]),
        history=_int(where, "history", values["history"], minimum=1, form="a positive int"),
        name=_name(where, values["name"]),
    )


def _flow_params(where: str, values: Mapping[str, object]) -> _FlowParams:
    threshold = _float(where, "threshold", values["threshold"], form="a number in (0, 1]")
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(
            f"{where}.threshold", f"must be a number in (0, 1], got {values['threshold']!r}"
        )
    return _FlowParams(
        symbol=_symbol(where, values["symbol"]),
        window=_int(where, "window", values["window"], minimum=1, form="a positive int (trades)"),
        threshold=threshold,
        quantity=_quantity(where, values["quantity"]),
        cooldown_ns=_int(
            where,
            "cooldown_ns",
            values["cooldown_ns"],
            minimum=0,
            form="a non-negative int (nanoseconds)",
        ),
        limit_offset=_limit_offset(where, values["limit_offset"]),
        name=_name(where, values["name"]),
    )


def _limit_offset(where: str, value: object) -> float:
    offset = _float(where, "limit_offset", value, form="a fraction in [0, 0.5)")
    if not 0.0 <= offset < 0.5:
        raise ConfigError(f"{where}.limit_offset", f"must be a fraction in [0, 0.5), got {value!r}")
    return offset


def _build_ema(where: str, values: Mapping[str, object]) -> Strategy:
    params = _ema_params(where, values)
    return EmaCrossover(**params._asdict())


def _build_flow(where: str, values: Mapping[str, object]) -> Strategy:
    params = _flow_params(where, values)
    return TradeFlowMomentum(**params._asdict())


class _Kind(NamedTuple):
    build: Callable[[str, Mapping[str, object]], Strategy]
    required: frozenset[str]
    defaults: Mapping[str, object]


STRATEGY_KINDS: Mapping[str, _Kind] = {
    "ema_crossover": _Kind(
        _build_ema, frozenset({"symbol", "interval", "quantity"}), _EMA_DEFAULTS
    ),
    "trade_flow": _Kind(_build_flow, frozenset({"symbol", "quantity"}), _FLOW_DEFAULTS),
    # Fault injectors for the incident drills (docs/drills.md); never in a default config.
    **{name: _Kind(*kind) for name, kind in DRILL_KINDS.items()},
}


def build_strategies(specs: Sequence[Mapping[str, Any]]) -> list[Strategy]:
    """Build strategies from config specs like ``{"kind": "ema_crossover", "symbol": ...}``.

    Unknown kinds, unknown or missing fields, wrong types and duplicate names raise
    ``ConfigError`` with the field path (``strategies[0].kind``) and the expected form.
    """
    strategies: list[Strategy] = []
    names: set[str] = set()
    for index, spec in enumerate(specs):
        where = f"strategies[{index}]"
        if not isinstance(spec, Mapping):
            raise ConfigError(where, f"must be a mapping with a 'kind', got {spec!r}")
        kinds = ", ".join(sorted(STRATEGY_KINDS))
        kind_name = spec.get("kind")
        kind = STRATEGY_KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            raise ConfigError(f"{where}.kind", f"must be one of {kinds}, got {kind_name!r}")
        allowed = kind.required | kind.defaults.keys() | {"kind"}
        for key in spec:
            if key not in allowed:
                raise ConfigError(
                    f"{where}.{key}",
                    f"unknown field for {kind_name}; expected one of {', '.join(sorted(allowed))}",
                )
        for key in sorted(kind.required):
            if key not in spec:
                raise ConfigError(f"{where}.{key}", f"is required for {kind_name}")
        values = {**kind.defaults, **spec}
        strategy = kind.build(where, values)
        if strategy.name in names:
            raise ConfigError(
                f"{where}.name",
                f"must be unique; {strategy.name!r} is already used (set 'name' to tell apart)",
            )
        names.add(strategy.name)
        strategies.append(strategy)
    return strategies
