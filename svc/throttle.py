"""When svc may send REST requests again after Binance said 429 (rate limited) or 418 (banned).

Binance answers HTTP 429 with ``Retry-After`` when a client exceeds its request weight, and
bans the IP (HTTP 418, also with ``Retry-After``) when the client keeps sending while
limited. ``RequestGate`` is the one place that remembers this: ``BinanceClient`` asks
``check()`` before every REST request and reports every 429/418 to ``on_limited``.

* After a 429, nothing is sent for ``Retry-After`` seconds (or, without the header, an
  exponential back-off from ``min_backoff`` doubling per consecutive 429 up to
  ``max_backoff``). Requests during the back-off fail locally with ``RateLimited`` and are
  never sent, so the service cannot earn itself a ban; an order refused this way is
  REJECTED (it certainly does not exist on the exchange).
* After a 418 the service halts REST requests until the ban ends (``IpBanned`` locally).
* Each change of state is logged once (warning for a back-off, error for a ban, info when
  requests are allowed again); counters and the remaining wait are in ``statistics()``
  and exported as ``svc.exchange.throttled``, ``svc.exchange.refused`` and
  ``svc.exchange.backoff``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from svc.errors import IpBanned, RateLimited

log = logging.getLogger(__name__)

State = Literal["open", "backing_off", "banned"]


class RequestGate:
    """See the module docstring. Not thread-safe: used from the event loop only."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        min_backoff: float = 1.0,
        max_backoff: float = 300.0,
    ) -> None:
        self._monotonic = monotonic
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._until = 0.0
        self._banned = False
        self._consecutive = 0
        self._limited_seen = False
        self.throttled: dict[str, int] = {"429": 0, "418": 0}
        """Responses received with each status."""
        self.refused: dict[str, int] = {"backing_off": 0, "banned": 0}
        """Requests not sent because of the gate, by the state that refused them."""

    @property
    def state(self) -> State:
        if self._monotonic() >= self._until:
            return "open"
        return "banned" if self._banned else "backing_off"

    def remaining(self) -> float:
        """Seconds until requests are allowed again (0 when they are)."""
        return max(0.0, self._until - self._monotonic())

    def check(self) -> None:
        """Raise ``RateLimited``/``IpBanned`` (nothing is sent) while the gate is closed."""
        remaining = self._until - self._monotonic()
        if remaining <= 0:
            return
        if self._banned:
            self.refused["banned"] += 1
            raise IpBanned(
                -1003,
                f"not sent: the IP is banned (HTTP 418) for another {remaining:.1f} s",
                http_status=418,
                retry_after=remaining,
            )
        self.refused["backing_off"] += 1
        raise RateLimited(
            -1003,
            f"not sent: backing off after HTTP 429 for another {remaining:.1f} s",
            retry_after=remaining,
        )

    def on_limited(self, error: RateLimited) -> None:
        """Record a 429/418 the exchange sent and close the gate accordingly."""
        now = self._monotonic()
        banned = isinstance(error, IpBanned)
        self.throttled["418" if banned else "429"] += 1
        self._consecutive += 1
        wait = error.retry_after
        if wait <= 0:
            wait = min(self._max_backoff, self._min_backoff * 2 ** (self._consecutive - 1))
        was_banned = self._banned and now < self._until
        until = max(self._until, now + wait)
        if banned and not was_banned:
            log.error(
                "exchange banned this IP (HTTP 418, %s); halting REST requests and order "
                "submission for %.0f s",
                error.msg,
                until - now,
            )
        elif not banned and now >= self._until:
            log.warning(
                "exchange rate limit (HTTP 429, %s); backing off REST requests for %.1f s",
                error.msg,
                until - now,
            )
        self._banned = banned or was_banned
        self._until = until
        self._limited_seen = True

    def on_success(self) -> None:
        """A request went through: the back-off sequence starts over."""
        self._consecutive = 0
        if self._limited_seen:
            self._limited_seen = False
            self._banned = False
            log.info("exchange requests allowed again after the rate limit")
