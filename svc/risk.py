"""Pre-trade risk checks: a pure gate between the signal tier and the order tier.

``RiskEngine.check`` accepts or rejects one signal given the current position, the last
price and the time (all passed in: the engine reads no clock and does no I/O). A rejection
carries one stable reason code, counted in ``statistics()`` for the dashboard:

=====================  ===========================================================
``kill_switch``        trading is halted (configured, or ``trip()``-ed at runtime)
``stale_signal``       the event behind the signal is older than ``max_signal_age_ns``
                       (warm-up and backfilled history must not trade)
``invalid_quantity``   quantity is not a positive finite number
``no_price``           no usable price: a non-positive/non-finite limit price, or a
                       market order with no positive last price
``max_order_notional`` quantity * price is above the per-order notional limit
``max_position``       the resulting position would exceed +/- max_position (or the
                       position passed in is not finite)
``rate_limit``         max_orders_per_window accepted orders already in the window
=====================  ===========================================================

Checks run in that order; the first failure is the reason. An order that only reduces the
exposure (same side of zero, smaller magnitude) is never rejected for ``max_position``, so a
position left over a lowered limit can still be unwound.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from svc.errors import ConfigError
from svc.model import Signal

REASON_KILL_SWITCH = "kill_switch"
REASON_INVALID_QUANTITY = "invalid_quantity"
REASON_NO_PRICE = "no_price"
REASON_MAX_ORDER_NOTIONAL = "max_order_notional"
REASON_MAX_POSITION = "max_position"
REASON_RATE_LIMIT = "rate_limit"
REASON_STALE_SIGNAL = "stale_signal"
REJECTION_REASONS = (
    REASON_KILL_SWITCH,
    REASON_INVALID_QUANTITY,
    REASON_NO_PRICE,
    REASON_MAX_ORDER_NOTIONAL,
    REASON_MAX_POSITION,
    REASON_RATE_LIMIT,
    REASON_STALE_SIGNAL,
)
ACCEPTED = "accepted"

# Quantities are floats summed across fills (3 * 0.001 is 0.0030000000000000005); a limit is
# breached only beyond this relative slack, far below any exchange step size.
RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Per-engine limits. Positions are base units per symbol; notional is quote units."""

    max_position: float
    max_order_notional: float
    max_orders_per_window: int
    window_ns: int = 60_000_000_000
    kill_switch: bool = False
    max_signal_age_ns: int = 0
    """Reject a signal whose triggering event (``ts_event``) is older than this at ``now_ns``:
    warm-up and backfilled history update strategies but must not trade. 0 disables it
    (replays of recorded data)."""

    def __post_init__(self) -> None:
        for field, value in (
            ("max_position", self.max_position),
            ("max_order_notional", self.max_order_notional),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"risk.{field}", f"must be a finite number >= 0, got {value!r}")
        if (
            isinstance(self.max_orders_per_window, bool)
            or not isinstance(self.max_orders_per_window, int)
            or self.max_orders_per_window < 0
        ):
            raise ConfigError(
                "risk.max_orders_per_window",
                f"must be an int >= 0, got {self.max_orders_per_window!r}",
            )
        if (
            isinstance(self.window_ns, bool)
            or not isinstance(self.window_ns, int)
            or self.window_ns <= 0
        ):
            raise ConfigError(
                "risk.window_ns", f"must be a positive int (nanoseconds), got {self.window_ns!r}"
            )
        if not isinstance(self.kill_switch, bool):
            raise ConfigError(
                "risk.kill_switch", f"must be true or false, got {self.kill_switch!r}"
            )
        if not isinstance(self.max_signal_age_ns, int) or self.max_signal_age_ns < 0:
            raise ConfigError(
                "risk.max_signal_age_seconds", f"must be >= 0, got {self.max_signal_age_ns!r}"
            )


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """The verdict on one signal: ``reason`` is "" when accepted, else a stable code."""

    accepted: bool
    reason: str


# Decisions are immutable values: build each once, not once per check.
_ACCEPT = RiskDecision(accepted=True, reason="")
_REJECT = {reason: RiskDecision(accepted=False, reason=reason) for reason in REJECTION_REASONS}


class RiskEngine:
    """Stateful only in its rate window, its runtime kill switch and its counters.

    The rate limit counts accepted orders across all symbols in the sliding window
    ``(now_ns - window_ns, now_ns]``. ``now_ns`` should not go backwards (pass the same clock
    every time); if it does, the window only counts more, never less.
    """

    __slots__ = ("_accepted_at", "_counts", "_tripped", "limits")

    def __init__(self, *, limits: RiskLimits) -> None:
        self.limits = limits
        # Only accepted orders enter, and only while fewer than the maximum are inside the
        # window, so the deque never holds more than max_orders_per_window timestamps.
        self._accepted_at: deque[int] = deque()
        self._tripped = ""
        self._counts = dict.fromkeys((ACCEPTED, *REJECTION_REASONS), 0)

    @property
    def kill_switch_active(self) -> bool:
        return self.limits.kill_switch or bool(self._tripped)

    @property
    def trip_reason(self) -> str:
        """Why ``trip()`` halted trading ("" when it has not, or after ``reset()``)."""
        return self._tripped

    def trip(self, reason: str) -> None:
        """Halt trading: every check is rejected with ``kill_switch`` until ``reset()``."""
        self._tripped = reason or "tripped"

    def reset(self) -> None:
        """Clear a runtime trip. A kill switch set in ``RiskLimits`` stays on."""
        self._tripped = ""

    def check(self, signal: Signal, *, position: float, price: float, now_ns: int) -> RiskDecision:
        """Accept or reject ``signal``; an accepted one is counted against the rate limit.

        ``position`` is the current signed position in ``signal.symbol`` (base units);
        ``price`` is the last price, used when the signal is a market order (limit 0).
        """
        decision = self._decide(signal, position, price, now_ns)
        self._counts[decision.reason or ACCEPTED] += 1
        return decision

    def _decide(self, signal: Signal, position: float, price: float, now_ns: int) -> RiskDecision:
        limits = self.limits
        if limits.kill_switch or self._tripped:
            return _REJECT[REASON_KILL_SWITCH]
        if limits.max_signal_age_ns and now_ns - signal.ts_event > limits.max_signal_age_ns:
            return _REJECT[REASON_STALE_SIGNAL]
        quantity = signal.quantity
        if not (quantity > 0.0 and math.isfinite(quantity)):  # also rejects NaN
            return _REJECT[REASON_INVALID_QUANTITY]
        if signal.limit_price != 0.0:
            price = signal.limit_price
        if not (price > 0.0 and math.isfinite(price)):
            return _REJECT[REASON_NO_PRICE]
        if quantity * price > limits.max_order_notional * (1.0 + RELATIVE_TOLERANCE):
            return _REJECT[REASON_MAX_ORDER_NOTIONAL]
        resulting = position + quantity if signal.side == "BUY" else position - quantity
        reduces = abs(resulting) < abs(position) and resulting * position >= 0.0
        if not math.isfinite(resulting) or (
            abs(resulting) > limits.max_position * (1.0 + RELATIVE_TOLERANCE) and not reduces
        ):
            return _REJECT[REASON_MAX_POSITION]
        accepted_at = self._accepted_at
        horizon = now_ns - limits.window_ns
        while accepted_at and accepted_at[0] <= horizon:
            accepted_at.popleft()
        if len(accepted_at) >= limits.max_orders_per_window:
            return _REJECT[REASON_RATE_LIMIT]
        accepted_at.append(now_ns)
        return _ACCEPT

    def orders_in_window(self, now_ns: int) -> int:
        """Accepted orders still inside the rate window at ``now_ns`` (does not evict)."""
        horizon = now_ns - self.limits.window_ns
        return sum(1 for stamp in self._accepted_at if stamp > horizon)

    def statistics(self) -> dict[str, int]:
        """Checks by outcome: ``accepted`` and one count per rejection reason (all present)."""
        return dict(self._counts)
