"""The one clock seam: wall time, monotonic time and sleeping all go through a ``Clock``.

Components take a ``Clock`` as a keyword-only argument; tests pass a ``FakeClock`` and drive
time by hand. Wall time is integer nanoseconds since the Unix epoch (the unit of every
``ts_event``/``ts_init``); no ``datetime`` objects are built anywhere on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time_ns(self) -> int:
        """Wall-clock time, ns since the Unix epoch."""
        ...

    def monotonic_ns(self) -> int:
        """Monotonic time for measuring durations, ns."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.perf_counter_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to; ``sleep`` advances it instead of waiting."""

    def __init__(self, *, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._now = start_ns
        self._mono = 0
        self.sleeps: list[float] = []

    def time_ns(self) -> int:
        return self._now

    def monotonic_ns(self) -> int:
        return self._mono

    def advance(self, seconds: float) -> None:
        step = int(seconds * 1_000_000_000)
        self._now += step
        self._mono += step

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()
