"""EventBus tiers: dropping, back-pressure, statistics, dispatch, errors and draining."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from svc.bus import EventBus
from svc.clock import FakeClock

FAST = 2.0  # seconds a test may wait for something that should take microseconds


@pytest.fixture
async def running() -> AsyncIterator[EventBus]:
    """A bus whose consumers run in the background for the test."""
    bus = EventBus(clock=FakeClock(), data_capacity=4, signal_capacity=3, order_capacity=2)
    task = asyncio.create_task(bus.run(), name="bus")
    yield bus
    bus.close()
    await asyncio.wait_for(task, FAST)  # run() returns after close()
    assert bus.state == "closed"


async def test_data_tier_drops_oldest_and_counts() -> None:
    bus = EventBus(data_capacity=3)
    for item in range(5):
        bus.data.put_nowait(item)  # never blocks, never raises
    assert [bus.data.get_nowait() for _ in range(3)] == [2, 3, 4]
    stats = bus.data.statistics()
    assert (stats.put, stats.got, stats.dropped, stats.depth) == (5, 3, 2, 0)
    assert (stats.high_water, stats.capacity, stats.waits, stats.blocked) == (3, 3, 0, 0)
    bus.close()


async def test_order_tier_never_drops_under_a_burst() -> None:
    bus = EventBus(order_capacity=2)
    received: list[tuple[int, int]] = []
    producers_started = 0

    async def produce(producer: int) -> None:
        nonlocal producers_started
        producers_started += 1
        for sequence in range(10):
            await bus.order.put((producer, sequence))

    producers = [asyncio.create_task(produce(p)) for p in range(3)]
    for _ in range(100):  # let the producers run until each is stuck waiting
        if producers_started == 3 and bus.order.blocked == 3:
            break
        await asyncio.sleep(0)
    # Full, and every producer waits: an alert would fire on blocked > 0.
    assert len(bus.order) == 2
    assert bus.order.blocked == 3
    while len(received) < 30:
        received.append(await bus.order.get())
    await asyncio.gather(*producers)

    for producer in range(3):  # every item arrived, each producer's in order
        assert [s for p, s in received if p == producer] == list(range(10))
    stats = bus.order.statistics()
    assert (stats.put, stats.got, stats.dropped, stats.depth, stats.blocked) == (30, 30, 0, 0, 0)
    assert stats.high_water == 2
    assert stats.waits >= 3
    bus.close()


async def test_waiting_producers_are_served_first_come_first_served() -> None:
    bus = EventBus(order_capacity=1)
    await bus.order.put("first")
    waiting = asyncio.create_task(bus.order.put("second"))
    await asyncio.sleep(0)
    assert bus.order.blocked == 1
    with pytest.raises(asyncio.QueueFull):
        bus.order.put_nowait("queue-jumper")  # a waiting producer owns the next slot
    assert await bus.order.get() == "first"
    late = asyncio.create_task(bus.order.put("third"))  # arrives after the slot was handed on
    assert await bus.order.get() == "second"
    assert await bus.order.get() == "third"
    await asyncio.gather(waiting, late)
    bus.close()


async def test_signal_back_pressure_counts_waits_and_wait_time() -> None:
    clock = FakeClock()
    bus = EventBus(clock=clock, signal_capacity=1)
    await bus.signal.put("a")  # room: no wait
    blocked = asyncio.create_task(bus.signal.put("b"))
    await asyncio.sleep(0)
    assert not blocked.done()
    clock.advance(0.25)
    assert await bus.signal.get() == "a"
    await blocked
    stats = bus.signal.statistics()
    assert (stats.waits, stats.wait_ns_total, stats.dropped) == (1, 250_000_000, 0)
    assert await bus.signal.get() == "b"
    bus.close()


async def test_cancelled_producer_leaves_no_trace() -> None:
    bus = EventBus(signal_capacity=1)
    await bus.signal.put("kept")
    waiting = asyncio.create_task(bus.signal.put("abandoned"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert bus.signal.blocked == 0
    assert bus.signal.get_nowait() == "kept"
    assert len(bus.signal) == 0
    bus.close()


async def test_high_water_mark_and_queue_wait_from_fake_clock() -> None:
    clock = FakeClock()
    bus = EventBus(clock=clock, data_capacity=10)
    bus.data.put_nowait("x")
    clock.advance(0.001)
    bus.data.put_nowait("y")
    bus.data.put_nowait("z")
    clock.advance(0.002)
    assert bus.data.get_nowait() == "x"  # queued 3 ms
    assert bus.data.get_nowait() == "y"  # queued 2 ms
    bus.data.put_nowait("w")
    stats = bus.data.statistics()
    assert (stats.high_water, stats.depth) == (3, 2)
    wait = bus.data.queue_wait.snapshot()
    assert (wait.count, wait.sum, wait.min, wait.max) == (2, 5_000_000, 2_000_000, 3_000_000)
    bus.close()


async def test_get_waits_for_an_item() -> None:
    bus = EventBus()
    getter = asyncio.create_task(bus.data.get())
    await asyncio.sleep(0)
    assert not getter.done()
    bus.data.put_nowait("late")
    assert await asyncio.wait_for(getter, FAST) == "late"
    bus.close()


async def test_sync_handlers_run_off_the_loop_and_async_ones_on_it(running: EventBus) -> None:
    loop_thread = threading.get_ident()
    seen: list[tuple[str, str, int]] = []

    def sync_handler(item: str) -> None:
        seen.append(("sync", item, threading.get_ident()))

    async def async_handler(item: str) -> None:
        seen.append(("async", item, threading.get_ident()))

    running.subscribe("signal", sync_handler)
    running.subscribe("signal", async_handler)
    for item in ("a", "b", "c"):
        await running.signal.put(item)
    assert await running.drain(FAST)

    # Per item, handlers run in subscription order; items in arrival order.
    assert [(kind, item) for kind, item, _ in seen] == [
        (kind, item) for item in "abc" for kind in ("sync", "async")
    ]
    assert all(ident != loop_thread for kind, _, ident in seen if kind == "sync")
    assert all(ident == loop_thread for kind, _, ident in seen if kind == "async")


async def test_raising_handler_is_counted_and_consumer_continues(
    running: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[int] = []

    async def fragile(item: int) -> None:
        if item % 2:
            raise RuntimeError("boom")
        delivered.append(item)

    def fragile_sync(item: int) -> None:
        if item == 2:
            raise ValueError("sync boom")

    running.subscribe("order", fragile)
    running.subscribe("order", fragile_sync)
    with caplog.at_level(logging.ERROR, logger="svc.bus"):
        for item in range(5):
            await running.order.put(item)
        assert await running.drain(FAST)

    assert delivered == [0, 2, 4]
    stats = running.order.statistics()
    assert (stats.handler_errors, stats.got) == (3, 5)  # items 1, 3 (async) and 2 (sync)
    assert running.data.statistics().handler_errors == 0
    failures = [r for r in caplog.records if r.name == "svc.bus"]
    assert len(failures) == 3
    assert all(r.exc_info is not None and "order" in r.getMessage() for r in failures)


async def test_drain_waits_for_slow_handlers(running: EventBus) -> None:
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(item: str) -> None:
        await release.wait()
        finished.append(item)

    running.subscribe("data", slow)
    running.data.put_nowait("one")
    # The consumer takes the item at once; the tier is empty but the handler is busy.
    assert not await running.drain(0.05)
    assert len(running.data) == 0
    assert not running.idle()
    running.data.put_nowait("two")
    release.set()
    assert await running.drain(FAST)
    assert finished == ["one", "two"]
    assert running.idle()


async def test_drain_without_consumers_times_out() -> None:
    bus = EventBus()
    assert await bus.drain(0.01)  # empty: drained at once
    bus.data.put_nowait("stuck")
    assert not await bus.drain(0.01)
    bus.close()


async def test_lifecycle_and_injected_executor_is_not_shut_down() -> None:
    with ThreadPoolExecutor(max_workers=1) as executor:
        bus = EventBus(executor=executor)
        names: list[str] = []
        bus.subscribe("data", lambda _item: names.append(threading.current_thread().name))
        assert bus.state == "new"
        task = asyncio.create_task(bus.run())
        bus.data.put_nowait(1)
        assert await bus.drain(FAST)
        assert bus.state == "running"
        with pytest.raises(ValueError, match="unknown tier"):
            bus.subscribe("bogus", print)  # type: ignore[arg-type]
        bus.close()
        bus.close()  # idempotent
        await asyncio.wait_for(task, FAST)
        assert executor.submit(int, "7").result() == 7  # still usable: the bus did not own it
        assert names[0].startswith("ThreadPoolExecutor")
        with pytest.raises(RuntimeError, match="closed"):
            await bus.run()
