"""GC pauses through ``gc.callbacks`` and event-loop lag: the sources behind ``svc.gc.pause``
and ``svc.loop.lag``."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import svc.runtime
from svc.runtime import GENERATIONS, GcPauses, LoopLag, freeze_after_warmup

PATIENCE = 5.0  # seconds a test waits for something that should take milliseconds


@pytest.fixture
def installed() -> Iterator[Callable[..., GcPauses]]:
    """Build and install ``GcPauses``; every one is uninstalled after the test."""
    made: list[GcPauses] = []

    def make(
        *, capacity: int = 4096, clock_ns: Callable[[], int] = time.perf_counter_ns
    ) -> GcPauses:
        pauses = GcPauses(capacity=capacity, clock_ns=clock_ns)
        pauses.install()
        made.append(pauses)
        return pauses

    yield make
    for pauses in made:
        pauses.uninstall()


async def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_forced_collections_are_timed_per_generation(
    installed: Callable[..., GcPauses],
) -> None:
    pauses = installed()
    for _ in range(3):
        for generation in GENERATIONS:
            gc.collect(generation)
    # The callback only buffers: nothing reaches a histogram until someone drains.
    assert all(h.count == 0 for h in pauses.histograms.values())
    assert pauses.statistics()["pending"] >= 9

    moved = pauses.drain()

    assert moved >= 9
    stats = pauses.statistics()
    assert stats["pending"] == 0
    for generation in GENERATIONS:
        assert stats["collections"][generation] >= 3
        assert pauses.histograms[generation].count >= 3
    # A full collection walks every object: it takes measurable time.
    assert pauses.histograms[2].max > 0
    assert stats["max_pause_ns"] >= pauses.histograms[2].max
    assert stats["dropped"] == 0
    assert pauses.drain() >= 0  # draining again is harmless


def test_pause_is_stop_minus_start(installed: Callable[..., GcPauses]) -> None:
    # Each clock read is 1000 ns after the previous one, so every start/stop pair is exactly
    # 1000 ns apart; a swapped pair would give -1000, recorded as 0.
    pauses = installed(clock_ns=itertools.count(0, 1000).__next__)
    for generation in GENERATIONS:
        gc.collect(generation)
    pauses.drain()
    for generation in GENERATIONS:
        histogram = pauses.histograms[generation]
        assert histogram.count >= 1
        assert histogram.min == histogram.max == 1000
        assert histogram.sum == 1000 * histogram.count


def test_callback_touches_only_the_buffer(installed: Callable[..., GcPauses]) -> None:
    before = list(gc.callbacks)
    installed()
    (callback,) = [c for c in gc.callbacks if c not in before]
    code = callback.__code__
    # No module globals (no logger, no metrics SDK, no lock): only len() and the deque's
    # append, plus the drop counter; everything else is a closure cell.
    assert set(code.co_names) <= {"len", "append", "dropped"}
    assert set(code.co_freevars) <= {"events", "clock_ns", "capacity", "start_ns", "self"}


def test_overflow_is_counted_and_the_newest_pauses_are_kept(
    installed: Callable[..., GcPauses],
) -> None:
    pauses = installed(capacity=2)
    for _ in range(5):
        gc.collect(0)
    assert pauses.dropped >= 3
    assert pauses.statistics()["dropped"] == pauses.dropped
    assert pauses.statistics()["capacity"] == 2
    assert pauses.drain() == 2


def test_install_is_idempotent_and_uninstall_removes_the_callback() -> None:
    pauses = GcPauses()
    before = len(gc.callbacks)
    try:
        pauses.install()
        pauses.install()
        assert len(gc.callbacks) == before + 1
        assert pauses.installed
    finally:
        pauses.uninstall()
    assert len(gc.callbacks) == before
    assert not pauses.installed
    pauses.uninstall()  # idempotent
    assert len(gc.callbacks) == before

    gc.collect()
    assert pauses.drain() == 0
    assert pauses.statistics()["pending"] == 0


def test_rejects_an_empty_buffer() -> None:
    with pytest.raises(ValueError, match="capacity"):
        GcPauses(capacity=0)


async def test_run_drains_in_the_background(installed: Callable[..., GcPauses]) -> None:
    pauses = installed()
    task = asyncio.create_task(pauses.run(interval=0.01), name="gc-pauses")
    try:
        gc.collect(2)
        await wait_until(lambda: pauses.histograms[2].count >= 1)
        gc.collect(1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Cancellation drains once more: nothing recorded before it is left behind.
    assert pauses.histograms[1].count >= 1
    assert pauses.statistics()["pending"] == 0


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_freeze_after_warmup_moves_objects_out_of_the_collected_generations(
    unfreeze: None,
) -> None:
    frozen = freeze_after_warmup()
    assert frozen > 0
    assert gc.get_freeze_count() == frozen


def stepping_clock(step_ns: int) -> Callable[[], int]:
    return itertools.count(0, step_ns).__next__


async def test_loop_lag_is_zero_when_timers_fire_on_time() -> None:
    interval = 0.001
    lag = LoopLag(interval=interval, clock_ns=stepping_clock(1_000_000))
    task = asyncio.create_task(lag.run(), name="loop-lag")
    try:
        await wait_until(lambda: lag.histogram.count >= 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert lag.max_ns == lag.last_ns == lag.histogram.max == 0
    assert lag.statistics()["count"] == lag.histogram.count


async def test_loop_lag_is_elapsed_minus_interval_and_never_negative() -> None:
    late = LoopLag(interval=0.001, clock_ns=stepping_clock(1_000_000 + 5_000))
    early = LoopLag(interval=0.001, clock_ns=stepping_clock(900_000))
    tasks = [asyncio.create_task(m.run()) for m in (late, early)]
    try:
        await wait_until(lambda: late.histogram.count >= 3 and early.histogram.count >= 3)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert late.last_ns == late.max_ns == late.histogram.min == 5_000
    assert early.max_ns == early.histogram.max == 0


async def test_a_blocked_loop_shows_up_as_lag() -> None:
    lag = LoopLag(interval=0.01)
    task = asyncio.create_task(lag.run(), name="loop-lag")

    async def block_the_loop() -> None:
        time.sleep(0.2)  # noqa: ASYNC251 - blocking the loop is what this test measures

    try:
        await wait_until(lambda: lag.histogram.count >= 2)
        count_before = lag.histogram.count
        await block_the_loop()
        await wait_until(lambda: lag.histogram.count > count_before)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert lag.max_ns >= 150_000_000
    assert lag.histogram.max == lag.max_ns
    assert lag.statistics()["max_ns"] == lag.max_ns


def test_loop_lag_rejects_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        LoopLag(interval=0)


def imported_roots(module_file: str) -> set[str]:
    tree = ast.parse(Path(module_file).read_text(encoding="utf-8"))
    roots = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    roots |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    return roots


def test_sources_import_no_metrics_sdk() -> None:
    # A bridge publishes these histograms; the sources stay instrument-agnostic.
    assert not imported_roots(svc.runtime.__file__) & {"opentelemetry", "prometheus_client"}
