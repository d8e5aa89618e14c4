"""Faults from inside the process, for the incident drills (``docs/drills.md``).

Three strategy kinds that misbehave on purpose, each the in-process half of a drill whose
other half is a real Prometheus evaluating the shipped alert rules:

=================  =========================================================  ==================
kind               what it does to the service                                expected alert
=================  =========================================================  ==================
``drill-slow``     a synchronous ``time.sleep`` on the loop every ``every``-th  SvcEventLoopLag,
                   event of ``symbol`` (a blocking call in a handler)          tick latency burn
``drill-gc``       keeps a ring of ``retain`` small reference cycles and       SvcGcPause
                   replaces ``allocate`` of them per event: the evicted ones
                   are cyclic garbage that only full (gen-2) collections free,
                   and every full collection walks the whole ring
``drill-signal``   a signal on every ``every``-th trade of ``symbol``,          order-tier back-
                   alternating BUY and SELL (a runaway strategy)               pressure, rate limit
=================  =========================================================  ==================

They satisfy ``svc.strategy.Strategy`` structurally and are registered through
``DRILL_KINDS`` (same shape as ``svc.strategy``'s kinds: build, required fields, defaults).
Unlike real strategies they are not pure: blocking and allocating is the point. They exist
for drills against the simulator; nothing stops a configuration from naming them, so the
kinds all start with ``drill-`` to be unmistakable in a review of ``svc.toml``.

This module imports only the model and the error tree (the layering rule for strategies),
never ``svc.strategy``, so ``svc.strategy`` can import it to register the kinds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import NamedTuple

from svc.errors import ConfigError
from svc.model import Candle, Quote, Side, Signal, Trade

MarketEvent = Candle | Trade | Quote


class SlowHandler:
    """Blocks the event loop for ``block_ms`` on every ``every``-th event of ``symbol``."""

    __slots__ = ("_blocked", "_events", "block_seconds", "every", "name", "symbol")

    def __init__(
        self, *, symbol: str, block_ms: float = 100.0, every: int = 1, name: str = ""
    ) -> None:
        self.name = name or f"drill-slow:{symbol}"
        self.symbol = symbol
        self.block_seconds = block_ms / 1000.0
        self.every = every
        self._events = 0
        self._blocked = 0

    def on_event(self, event: MarketEvent) -> Signal | None:
        if event.symbol != self.symbol:
            return None
        self._events += 1
        if self._events % self.every == 0:
            self._blocked += 1
            time.sleep(self.block_seconds)  # the fault: a synchronous call on the loop
        return None

    def on_fill(self, symbol: str, side: str, quantity: float) -> None:
        """Never signals, so never filled."""

    def state(self) -> dict[str, object]:
        return {
            "kind": "drill-slow",
            "symbol": self.symbol,
            "block_ms": self.block_seconds * 1000.0,
            "every": self.every,
            "events": self._events,
            "blocked": self._blocked,
        }


class GcStorm:
    """Churns a ring of ``retain`` reference cycles, ``allocate`` new ones per event.

    Each cycle is two one-element lists pointing at each other: two container objects the
    collector tracks. A cycle survives young collections (the ring holds it) and is
    promoted to the oldest generation; when the ring evicts it, it is garbage that only a
    full collection can free. The churn promotes objects quickly enough that CPython's
    "25% new long-lived objects" rule starts a full collection every second or two, and each
    one walks the whole ring: ``2 * retain`` objects. With the defaults and svc's trading
    symbols at the simulator's 20 ticks/s, the drill measured full-collection pauses of
    0.2-0.5 s, about 0.5% of all collections and 6-7% of wall time.
    """

    __slots__ = ("_events", "_ring", "allocate", "name", "retain", "symbol")

    def __init__(
        self, *, symbol: str, retain: int = 300_000, allocate: int = 500, name: str = ""
    ) -> None:
        self.name = name or f"drill-gc:{symbol}"
        self.symbol = symbol
        self.retain = retain
        self.allocate = allocate
        self._ring: deque[list[object]] = deque(maxlen=retain)
        self._events = 0

    def on_event(self, event: MarketEvent) -> Signal | None:
        if event.symbol != self.symbol:
            return None
        self._events += 1
        append = self._ring.append
        for _ in range(self.allocate):
            first: list[object] = [None]
            first[0] = [first]
            append(first)
        return None

    def on_fill(self, symbol: str, side: str, quantity: float) -> None:
        """Never signals, so never filled."""

    def state(self) -> dict[str, object]:
        return {
            "kind": "drill-gc",
            "symbol": self.symbol,
            "retain": self.retain,
            "allocate": self.allocate,
            "events": self._events,
            "live_cycles": len(self._ring),
        }


class SignalEveryTick:
    """A market-order signal on every ``every``-th trade of ``symbol``, BUY and SELL in turn.

    Alternating keeps the position near flat whatever gets filled, so risk's position limit
    does not stop the flood; ``risk.max_orders_per_minute`` does unless the drill raises it.
    """

    __slots__ = ("_next_side", "_signals", "_trades", "every", "name", "quantity", "symbol")

    def __init__(self, *, symbol: str, quantity: float, every: int = 1, name: str = "") -> None:
        self.name = name or f"drill-signal:{symbol}"
        self.symbol = symbol
        self.quantity = quantity
        self.every = every
        self._next_side: Side = "BUY"
        self._trades = 0
        self._signals = 0

    def on_event(self, event: MarketEvent) -> Signal | None:
        if type(event) is not Trade or event.symbol != self.symbol:
            return None
        self._trades += 1
        if self._trades % self.every:
            return None
        side = self._next_side
        self._next_side = "SELL" if side == "BUY" else "BUY"
        self._signals += 1
        return Signal(
            strategy=self.name,
            symbol=self.symbol,
            side=side,
            quantity=self.quantity,
            limit_price=0.0,
            reason="drill: signal every trade",
            ts_event=event.ts_event,
            ts_init=event.ts_init,
        )

    def on_fill(self, symbol: str, side: str, quantity: float) -> None:
        """The position does not matter: sides alternate regardless."""

    def state(self) -> dict[str, object]:
        return {
            "kind": "drill-signal",
            "symbol": self.symbol,
            "every": self.every,
            "trades": self._trades,
            "signals": self._signals,
        }


DrillStrategy = SlowHandler | GcStorm | SignalEveryTick


# ------------------------------------------------------------------ configuration


def _int(where: str, values: Mapping[str, object], key: str, *, minimum: int) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{key}", f"must be an int >= {minimum}, got {value!r}")
    return value


def _positive(where: str, values: Mapping[str, object], key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key}", f"must be a positive number, got {value!r}")
    number = float(value)
    if not (number > 0.0 and math.isfinite(number)):
        raise ConfigError(f"{where}.{key}", f"must be a positive number, got {value!r}")
    return number


def _str(where: str, values: Mapping[str, object], key: str) -> str:
    value = values[key]
    if not isinstance(value, str) or (key == "symbol" and not value):
        raise ConfigError(f"{where}.{key}", f"must be a string, got {value!r}")
    return value


def _build_slow(where: str, values: Mapping[str, object]) -> SlowHandler:
    return SlowHandler(
        symbol=_str(where, values, "symbol"),
        block_ms=_positive(where, values, "block_ms"),
        every=_int(where, values, "every", minimum=1),
        name=_str(where, values, "name"),
    )


def _build_gc(where: str, values: Mapping[str, object]) -> GcStorm:
    return GcStorm(
        symbol=_str(where, values, "symbol"),
        retain=_int(where, values, "retain", minimum=1),
        allocate=_int(where, values, "allocate", minimum=1),
        name=_str(where, values, "name"),
    )


def _build_signal(where: str, values: Mapping[str, object]) -> SignalEveryTick:
    return SignalEveryTick(
        symbol=_str(where, values, "symbol"),
        quantity=_positive(where, values, "quantity"),
        every=_int(where, values, "every", minimum=1),
        name=_str(where, values, "name"),
    )


class DrillKind(NamedTuple):
    """The shape of ``svc.strategy``'s registry entries: build, required fields, defaults."""

    build: Callable[[str, Mapping[str, object]], DrillStrategy]
    required: frozenset[str]
    defaults: Mapping[str, object]


DRILL_KINDS: Mapping[str, DrillKind] = {
    "drill-slow": DrillKind(
        _build_slow, frozenset({"symbol"}), {"block_ms": 100.0, "every": 1, "name": ""}
    ),
    "drill-gc": DrillKind(
        _build_gc, frozenset({"symbol"}), {"retain": 300_000, "allocate": 500, "name": ""}
    ),
    "drill-signal": DrillKind(
        _build_signal, frozenset({"symbol", "quantity"}), {"every": 1, "name": ""}
    ),
}
"""Strategy kinds for the drills; ``svc.strategy`` merges them into ``STRATEGY_KINDS``."""
