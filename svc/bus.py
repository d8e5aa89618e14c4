"""The three-tier event bus: bounded queues between the hot-path stages, and their consumers.

======  =====  ==================================================================
tier    bound  when full
======  =====  ==================================================================
data    1000   ``put_nowait`` drops the OLDEST item and counts it (reason=overflow)
signal  100    ``await put()`` waits (back-pressure); waits and wait time counted
order   50     never drops: ``await put()`` waits; ``blocked`` feeds an alert
======  =====  ==================================================================

Each item is stored with its enqueue time (``Clock.monotonic_ns``); ``get`` records the time
it spent queued into the tier's ``queue_wait`` histogram. Waiting producers of a
back-pressure tier are served first come, first served: a freed slot is handed to the
longest-waiting producer, so items from concurrent producers keep their arrival order.

``EventBus.run`` starts one consumer per tier that dispatches each item to the tier's
handlers in subscription order: coroutine functions are awaited on the loop; plain functions
run on the bus's executor and are awaited, so a slow synchronous handler never blocks the
loop and the order within a tier is kept. A failing handler is counted and logged; the
consumer carries on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from svc.clock import SYSTEM_CLOCK, Clock
from svc.latency import LatencyHistogram

logger = logging.getLogger(__name__)

TierName = Literal["data", "signal", "order"]
TIER_NAMES: Final[tuple[TierName, ...]] = ("data", "signal", "order")

Handler = Callable[[Any], Awaitable[None]] | Callable[[Any], None]
"""A coroutine function (awaited on the loop) or a plain function (run on the executor)."""


@dataclass(frozen=True, slots=True)
class TierStatistics:
    """A tier's counters at one moment; ``wait_ns_total`` is producers' summed waiting time."""

    name: str
    capacity: int
    depth: int
    high_water: int
    put: int
    got: int
    dropped: int
    waits: int
    wait_ns_total: int
    blocked: int
    handler_errors: int


class Tier:
    """Storage, consumer side and statistics shared by both kinds of tier (not built directly)."""

    def __init__(self, name: str, *, capacity: int, clock: Clock) -> None:
        if capacity < 1:
            raise ValueError(f"tier {name!r} needs a capacity >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.queue_wait = LatencyHistogram()
        self.handler_errors = 0  # counted by EventBus's consumer
        self._now = clock.monotonic_ns
        self._items: deque[tuple[Any, int]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._high_water = 0
        self._put = 0
        self._got = 0
        self._dropped = 0
        self._waits = 0
        self._wait_ns_total = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def blocked(self) -> int:
        """Producers waiting for room right now (always 0 for a dropping tier)."""
        return 0

    def empty(self) -> bool:
        return not self._items and not self.blocked

    async def get(self) -> Any:
        """Remove and return the oldest item, waiting while the tier is empty."""
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._items:
                    self._wake_getter()  # it was woken for an item it will not take: pass it on
                raise
        return self._take()

    def get_nowait(self) -> Any:
        """Remove and return the oldest item; ``asyncio.QueueEmpty`` when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._take()

    def statistics(self) -> TierStatistics:
        return TierStatistics(
            name=self.name,
            capacity=self.capacity,
            depth=len(self._items),
            high_water=self._high_water,
            put=self._put,
            got=self._got,
            dropped=self._dropped,
            waits=self._waits,
            wait_ns_total=self._wait_ns_total,
            blocked=self.blocked,
            handler_errors=self.handler_errors,
        )

    def _take(self) -> Any:
        item, enqueued_ns = self._items.popleft()
        self.queue_wait.record(self._now() - enqueued_ns)
        self._got += 1
        self._on_taken()
        return item

    def _append(self, item: Any) -> None:
        items = self._items
        items.append((item, self._now()))
        self._put += 1
        if len(items) > self._high_water:  # noqa: PLR1730 - cheaper than a max() call per put
            self._high_water = len(items)
        if self._getters:
            self._wake_getter()

    def _wake_getter(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _on_taken(self) -> None:
        """Hook: a slot has just been freed."""


class DroppingTier(Tier):
    """Never blocks the producer: when full, the oldest item makes room and is counted."""

    def put_nowait(self, item: Any) -> None:
        if len(self._items) >= self.capacity:
            self._items.popleft()
            self._dropped += 1
        self._append(item)


class BackpressureTier(Tier):
    """Never drops: a producer that finds the tier full waits for room, first come first served."""

    def __init__(self, name: str, *, capacity: int, clock: Clock) -> None:
        super().__init__(name, capacity=capacity, clock=clock)
        self._putters: deque[tuple[asyncio.Future[None], Any]] = deque()

    @property
    def blocked(self) -> int:
        return len(self._putters)

    async def put(self, item: Any) -> None:
        """Enqueue ``item``, waiting while the tier is full (or others are already waiting).

        If the waiting producer is cancelled after its item was admitted, the item stays
        queued (it is never lost) and the cancellation still propagates.
        """
        if not self._putters and len(self._items) < self.capacity:
            self._append(item)
            return
        started_ns = self._now()
        self._waits += 1
        waiter = asyncio.get_running_loop().create_future()
        entry = (waiter, item)
        self._putters.append(entry)
        try:
            await waiter
        except BaseException:
            if entry in self._putters:
                self._putters.remove(entry)
            raise
        finally:
            self._wait_ns_total += self._now() - started_ns

    def put_nowait(self, item: Any) -> None:
        """Enqueue ``item`` or raise ``asyncio.QueueFull``; nothing is dropped or counted."""
        if self._putters or len(self._items) >= self.capacity:
            raise asyncio.QueueFull
        self._append(item)

    def _on_taken(self) -> None:
        # Hand the freed slot straight to the longest-waiting producer.
        putters = self._putters
        while putters:
            waiter, item = putters.popleft()
            if not waiter.done():
                self._append(item)
                waiter.set_result(None)
                return


_HandlerEntry = tuple[Handler, bool]  # (handler, is a coroutine function)


class EventBus:
    """The data, signal and order tiers and one consumer per tier.

    Lifecycle: ``subscribe`` handlers, run ``run()`` under the application's TaskGroup,
    ``await drain(timeout)`` on shutdown, then ``close()``; ``run()`` returns after ``close``.
    """

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        data_capacity: int = 1000,
        signal_capacity: int = 100,
        order_capacity: int = 50,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.data = DroppingTier("data", capacity=data_capacity, clock=clock)
        self.signal = BackpressureTier("signal", capacity=signal_capacity, clock=clock)
        self.order = BackpressureTier("order", capacity=order_capacity, clock=clock)
        self._tiers: dict[TierName, Tier] = {
            "data": self.data,
            "signal": self.signal,
            "order": self.order,
        }
        self._handlers: dict[TierName, list[_HandlerEntry]] = {name: [] for name in TIER_NAMES}
        self._owns_executor = executor is None
        # One worker per tier: a slow sync handler on one tier never delays another.
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=len(TIER_NAMES), thread_name_prefix="svc-bus"
        )
        self._dispatching: dict[str, bool] = dict.fromkeys(TIER_NAMES, False)
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._consumers: list[asyncio.Task[None]] = []
        self._state: Literal["new", "running", "closed"] = "new"

    @property
    def state(self) -> Literal["new", "running", "closed"]:
        return self._state

    def tier(self, name: TierName) -> Tier:
        return self._tiers[name]

    def subscribe(self, tier: TierName, handler: Handler) -> None:
        """Dispatch every item of ``tier`` to ``handler``, after the handlers already there."""
        if tier not in self._tiers:
            raise ValueError(f"unknown tier {tier!r}; expected one of {TIER_NAMES}")
        self._handlers[tier].append((handler, inspect.iscoroutinefunction(handler)))

    def statistics(self) -> dict[TierName, TierStatistics]:
        return {name: tier.statistics() for name, tier in self._tiers.items()}

    def idle(self) -> bool:
        """All tiers are empty, no producer is waiting and no handler is running."""
        return not any(self._dispatching.values()) and all(
            tier.empty() for tier in self._tiers.values()
        )

    async def run(self) -> None:
        """Consume every tier until ``close()``; meant to run under the app's TaskGroup."""
        if self._state != "new":
            raise RuntimeError(f"EventBus.run() called in state {self._state!r}")
        self._state = "running"
        async with asyncio.TaskGroup() as group:
            self._consumers = [
                group.create_task(self._consume(name, tier), name=f"bus.{name}")
                for name, tier in self._tiers.items()
            ]
        # close() cancels the consumers; a TaskGroup ignores cancelled children.

    # A timeout argument (not the caller's asyncio.timeout) because shutdown code wants a
    # yes/no answer within its grace budget rather than an exception to unwind.
    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until ``idle()``; False if ``timeout`` seconds pass first (needs ``run()``)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not self.idle():
                    waiter = loop.create_future()
                    self._drain_waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in self._drain_waiters:
                            self._drain_waiters.remove(waiter)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop the consumers (queued items are abandoned: ``drain`` first) and shut down the
        bus's own executor without waiting for a running handler. Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        for consumer in self._consumers:
            consumer.cancel()
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _consume(self, name: TierName, tier: Tier) -> None:
        loop = asyncio.get_running_loop()
        executor = self._executor
        handlers = self._handlers[name]  # the live list: later subscriptions take effect
        dispatching = self._dispatching
        while True:
            item = await tier.get()
            dispatching[name] = True
            try:
                for handler, is_coroutine in handlers:
                    try:
                        if is_coroutine:
                            await cast("Awaitable[None]", handler(item))
                        else:
                            await loop.run_in_executor(executor, handler, item)
                    except Exception:
                        tier.handler_errors += 1
                        logger.exception(
                            "bus handler %s failed on tier %s; item dropped for it",
                            getattr(handler, "__qualname__", handler),
                            name,
                        )
            finally:
                dispatching[name] = False
                if self._drain_waiters and self.idle():
                    self._wake_drainers()

    def _wake_drainers(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
