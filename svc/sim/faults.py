"""Fault injection state of the simulated exchange, set from the CLI or ``POST /_sim/faults``.

Each fault is a plain field; the server reads them on every request or frame. Rate limiting
follows Binance: while limited, requests get HTTP 429 with ``Retry-After``; a client that
sends ``ban_after`` more requests while limited is banned with HTTP 418 for ``ban_seconds``.
``extra_weight`` limits the other way Binance does: by used request weight (6000 a minute).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from svc.errors import ConfigError


@dataclass(slots=True)
class Faults:
    disconnect_every: float = 0.0
    """Close every market-data and user-data websocket every N seconds (0: never)."""
    silent: bool = False
    """Keep websockets open but send no market data."""
    latency_ms: float = 0.0
    """Delay added before every REST response and every market-data frame."""
    order_latency_ms: float = 0.0
    """Delay added before answering each new order only (a slow matching engine while market
    data and the other endpoints stay fast)."""
    rate_limit_seconds: float = 0.0
    """Answer REST requests with 429 (-1003) for this long from the moment it is set."""
    ban_after: int = 3
    """Requests sent while rate-limited before the IP is banned (418)."""
    ban_seconds: float = 10.0
    extra_weight: int = 0
    """Request weight other clients on the same IP use every minute (Binance counts weight per
    IP): added to the minute's used weight; at 6000 or more every request gets 429."""
    clock_skew_ms: int = 0
    """Added to the exchange's clock: a skew beyond recvWindow makes signed requests fail -1021."""
    reject_next: int = 0
    """Reject the next N new orders with -2010."""

    def update(self, changes: dict[str, Any]) -> None:
        """Apply changes by field name; an unknown name or a wrong type names the field."""
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ConfigError(f"faults.{name}", f"unknown fault; known: {sorted(known)}")
            current = getattr(self, name)
            kind = type(current)
            if kind is bool:
                if not isinstance(value, bool):
                    raise ConfigError(f"faults.{name}", "expected true or false")
            elif (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or (value < 0 and name != "clock_skew_ms")
            ):
                raise ConfigError(f"faults.{name}", "expected a non-negative number")
            setattr(self, name, kind(value))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
