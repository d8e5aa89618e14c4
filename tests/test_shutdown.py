"""The shutdown path (``svc.shutdown.ShutdownPath``): ordered steps within one budget, a
failing step never stopping the ones after it, and every step recorded.

Time is a ``FakeClock`` that the steps advance, so "the budget is spent" needs no waiting;
the only real waits are steps that never finish and are cut at a fraction of a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from svc.clock import FakeClock
from svc.shutdown import ShutdownPath, StepFailed


class Recorder:
    """The ``record`` callback: keeps every (kind, payload) it is given."""

    def __init__(self, *, fail: bool = False) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.records.append((kind, dict(payload)))
        if self.fail:
            raise OSError("disk full")

    def steps(self) -> list[tuple[str, str]]:
        return [(p["step"], p["outcome"]) for _, p in self.records]


def path_with(
    budget: float, *, record: Recorder | None = None, reason: str = "SIGTERM"
) -> tuple[ShutdownPath, FakeClock]:
    clock = FakeClock()
    path = ShutdownPath(
        reason=reason,
        budget_seconds=budget,
        record=record,
        monotonic=lambda: clock.monotonic_ns() / 1e9,
    )
    return path, clock


def taking(clock: FakeClock, seconds: float, detail: str | None = None) -> Any:
    """A step that "takes" ``seconds`` of the fake clock and returns ``detail``."""

    async def action() -> str | None:
        clock.advance(seconds)
        return detail

    return action


async def never() -> str:
    await asyncio.Event().wait()
    return "unreachable"


async def test_steps_run_in_order_and_each_is_recorded_with_its_outcome_and_duration() -> None:
    record = Recorder()
    path, clock = path_with(20, record=record)
    order: list[str] = []

    def step(name: str, seconds: float) -> Any:
        async def action() -> str:
            order.append(name)
            clock.advance(seconds)
            return f"{name} done"

        return action

    for name, seconds in (("stop_new_orders", 0.5), ("cancel_open_orders", 1.5), ("drain", 0)):
        await path.step(name, step(name, seconds), cap=5)
    assert order == ["stop_new_orders", "cancel_open_orders", "drain"]
    assert [kind for kind, _ in record.records] == ["shutdown.step"] * 3
    assert record.records[1][1] == {
        "step": "cancel_open_orders",
        "outcome": "ok",
        "seconds": 1.5,
        "detail": "cancel_open_orders done",
        "critical": True,
        "reason": "SIGTERM",
    }
    assert path.complete
    assert [r.seconds for r in path.results] == [0.5, 1.5, 0]
    assert path.elapsed() == 2.0
    assert path.remaining() == 18.0


async def test_a_failing_step_does_not_stop_the_later_ones_and_makes_the_path_incomplete() -> None:
    record = Recorder()
    path, clock = path_with(20, record=record)

    async def cancel() -> str:
        raise StepFailed("2 still open: a, b")

    async def flatten() -> str:
        raise RuntimeError("boom")

    await path.step("cancel_open_orders", cancel, cap=5)
    await path.step("flatten_positions", flatten, cap=5)
    drained = await path.step("drain_order_tier", taking(clock, 0.1, "empty"), cap=5)
    assert drained.outcome == "ok"
    assert record.steps() == [
        ("cancel_open_orders", "failed"),
        ("flatten_positions", "failed"),
        ("drain_order_tier", "ok"),
    ]
    assert path.results[0].detail == "StepFailed: 2 still open: a, b"
    assert path.results[1].detail == "RuntimeError: boom"
    assert not path.complete


async def test_a_step_that_does_not_finish_within_its_cap_is_a_timeout() -> None:
    path, clock = path_with(20)
    result = await path.step("cancel_open_orders", never, cap=0.05)
    assert result.outcome == "timeout"
    assert result.detail == "not done within 0.1 s"  # the allowed time, as logged
    after = await path.step("drain_order_tier", taking(clock, 0, "empty"), cap=5)
    assert after.outcome == "ok"
    assert not path.complete


async def test_the_budget_caps_the_steps_after_it_is_spent() -> None:
    record = Recorder()
    path, clock = path_with(3, record=record)
    await path.step("cancel_open_orders", taking(clock, 2.5), cap=10)
    assert path.remaining() == pytest.approx(0.5)

    allowed: list[float] = []

    async def flush() -> str:
        allowed.append(path.remaining())
        clock.advance(1.0)  # takes longer than what was left
        await asyncio.sleep(0)
        return "flushed"

    await path.step("flatten_positions", flush, cap=10)
    assert path.remaining() == 0
    late = await path.step("flush_audit", never, cap=10)  # nothing left: cut at once
    assert allowed == [pytest.approx(0.5)]
    assert late.outcome == "timeout"
    assert late.detail == "not done within 0.0 s"
    assert record.steps()[-1] == ("flush_audit", "timeout")
    assert not path.complete


async def test_a_step_is_allowed_the_smaller_of_its_cap_and_what_is_left() -> None:
    path, _ = path_with(0.05)
    result = await path.step("cancel_open_orders", never, cap=60)
    assert result.outcome == "timeout"
    assert result.detail == "not done within 0.1 s"  # 0.05 s, not the 60 s cap


async def test_a_failing_record_callback_does_not_break_the_path() -> None:
    record = Recorder(fail=True)
    path, clock = path_with(5, record=record)
    first = await path.step("stop_new_orders", taking(clock, 0), cap=1)
    second = await path.step("cancel_open_orders", taking(clock, 0), cap=1)
    assert (first.outcome, second.outcome) == ("ok", "ok")
    assert len(record.records) == 2
    assert path.complete


async def test_an_empty_path_is_complete_and_the_summary_lists_every_step() -> None:
    path, clock = path_with(10, reason="fatal: boom")
    assert path.complete
    await path.step("stop_new_orders", taking(clock, 1, "0 queued orders discarded"), cap=5)

    async def cancel() -> str:
        raise StepFailed("1 still open")

    await path.step("cancel_open_orders", cancel, cap=5)
    summary = path.summary()
    assert summary["reason"] == "fatal: boom"
    assert summary["complete"] is False
    assert summary["seconds"] == 1.0
    assert [(s["step"], s["outcome"]) for s in summary["steps"]] == [
        ("stop_new_orders", "ok"),
        ("cancel_open_orders", "failed"),
    ]
    assert summary["steps"][0]["detail"] == "0 queued orders discarded"


async def test_a_cancelled_shutdown_is_not_swallowed() -> None:
    # Cancellation of the task running the path is not a step failure: it propagates.
    path, _ = path_with(10)
    task = asyncio.create_task(path.step("cancel_open_orders", never, cap=5))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert path.results == []


async def test_a_reserve_keeps_budget_for_the_steps_after_a_stuck_one() -> None:
    path, _ = path_with(4)
    stuck = await path.step("cancel_open_orders", never, cap=10, reserve=3.9)
    assert stuck.outcome == "timeout"
    assert stuck.detail == "not done within 0.1 s"  # 4 - 3.9, not the 4 s left
    seen: list[float] = []

    async def flush() -> str:
        seen.append(path.remaining())
        return "flushed"

    flushed = await path.step("flush_audit", flush, cap=5)
    assert flushed.outcome == "ok"
    assert seen == [pytest.approx(4, abs=0.001)]  # the fake clock did not move
    everything = await path.step("flush_telemetry", never, cap=10, reserve=10)
    assert everything.detail == "not done within 0.0 s"  # a reserve beyond the budget


async def test_a_failed_housekeeping_step_is_recorded_but_leaves_the_shutdown_complete() -> None:
    record = Recorder()
    path, clock = path_with(10, record=record)
    await path.step("cancel_open_orders", taking(clock, 0.1, "3 of 3 canceled"), cap=5)

    async def flush_telemetry() -> None:
        raise StepFailed("telemetry did not flush (is the collector down?)")

    result = await path.step("flush_telemetry", flush_telemetry, cap=5, critical=False)
    assert (result.outcome, result.critical) == ("failed", False)
    assert record.records[-1][1]["critical"] is False
    assert path.complete  # nothing was left unattended
    await path.step("close_exchange", never, cap=0.05, critical=False)
    assert path.complete
    summary = path.summary()
    assert [(s["step"], s["critical"]) for s in summary["steps"]] == [
        ("cancel_open_orders", True),
        ("flush_telemetry", False),
        ("close_exchange", False),
    ]

    async def flush_audit() -> None:
        raise StepFailed("the audit journal did not drain")

    await path.step("flush_audit", flush_audit, cap=5)  # critical by default
    assert not path.complete
