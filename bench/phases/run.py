"""Measure one roadmap phase in this process: ``python -m bench.phases.run --phase N ...``.

``bench.roadmap`` starts one interpreter per phase and repetition, so that no phase inherits
another's heap, GC state (``gc.freeze``, thresholds), logging handlers or event loop. The
result is one JSON object on stdout; progress goes to stderr.

What one run does, in order:

1. import python-binance (the bot's client library: its modules are heap the collector
   walks in the real bot), apply the phase's GC threshold, start its event loop, build the
   phase and start its consumers;
2. prefill the strategy's candle history with ``live_candles`` candles parsed by the phase's
   own parser (the history a bot loads at start-up), then a warm-up pass of the pipeline;
   phase 3 then calls ``svc.runtime.freeze_after_warmup``;
3. **paced run**: a reader thread (the websocket library's thread) offers ``paced_messages``
   frames at ``rate`` per second on an absolute schedule and calls the phase's handler with
   each. ``receive`` is when the reader reads the frame: on time if it was free, else the
   frame's due time (it waited in the socket buffer while the reader was blocked, and that
   wait counts). The strategy stage stamps the decision. GC pauses are timed exactly through
   ``gc.callbacks`` (during this run and the next) and loop lag by ``svc.runtime.LoopLag``;
4. **throughput run**: the same reader without pacing, ``throughput_messages`` frames;
   throughput is decided messages over first read -> last decision;
5. time one explicit ``gc.collect()`` in the trading heap: the cost of the worst pause the
   collector can impose on this phase (a full collection). A steady pipeline with bounded
   buffers and no reference cycles frees what it allocates, and CPython 3.11 counts
   allocations *minus* deallocations, so the collector may not run at all at a steady
   rate; it runs when the heap grows (start-up, backlogs);
6. stop the phase, read what it really ran (``facts``), and measure bytes per live candle
   with ``tracemalloc`` (``memory_candles`` candles from the phase's parser).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import threading
import time
import warnings
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.phases import PHASES, VARIANTS
from bench.phases.common import (
    BuildContext,
    Phase,
    Pipeline,
    Tape,
    bytes_per_live_object,
    object_bytes,
)
from svc.runtime import LoopLag, freeze_after_warmup

LOOP_LAG_INTERVAL_S = 0.005
DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class RunPlan:
    rate: float
    paced_messages: int
    throughput_messages: int
    warmup_messages: int
    live_candles: int
    memory_candles: int


class GcRecorder:
    """Every collection's exact duration and generation, from ``gc.callbacks``.

    The callback reads a clock and appends to two ``array`` buffers (nothing the collector
    tracks, no locks, no metrics call). The duration is wall time: if the process is
    preempted during a collection, that counts, as it would for the loop.
    """

    def __init__(self) -> None:
        self.pauses_ns = array("q")
        self.generations = array("b")
        self._start = 0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        elif self._start:
            self.pauses_ns.append(time.perf_counter_ns() - self._start)
            self.generations.append(info["generation"])
            self._start = 0

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


def _progress(label: str) -> None:
    sys.stderr.write(label)
    sys.stderr.flush()


class Reader:
    """The websocket library's thread: reads each frame, paced or not, and hands it over."""

    def __init__(
        self,
        frames: list[str],
        handle: Callable[[str, int], None],
        *,
        rate: float | None,
        on_done: Callable[[], None],
    ) -> None:
        self._frames = frames
        self._handle = handle
        self._period_ns = round(1e9 / rate) if rate else 0
        self._on_done = on_done
        self.first_read_ns = 0
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="websocket-reader", daemon=True)

    def _run(self) -> None:
        clock = time.perf_counter_ns
        handle = self._handle
        period_ns = self._period_ns
        tick = max(1, len(self._frames) // 10)
        try:
            start = clock() + 1_000_000
            self.first_read_ns = start if period_ns else clock()
            for index, frame in enumerate(self._frames):
                if period_ns:
                    due = start + index * period_ns
                    now = clock()
                    if now < due:
                        time.sleep((due - now) / 1e9)
                        received = clock()
                    else:
                        received = due  # the reader was busy: the frame waited for it
                else:
                    received = clock()
                handle(frame, received)
                if index % tick == tick - 1:
                    _progress(".")
        except BaseException as error:  # noqa: BLE001 - reported by the loop side
            self.failure = error
        finally:
            self._on_done()


async def wait_decided(pipeline: Pipeline, expected: int, dropped_before: int) -> None:
    """Until every frame is decided or dropped (phase 1-2 puts may still be pending)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while len(pipeline.tape) + pipeline.dropped() - dropped_before < expected:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{len(pipeline.tape)} decisions for {expected} frames after "
                f"{DRAIN_TIMEOUT_S:.0f} s"
            )
        await asyncio.sleep(0.001)


async def drive(
    pipeline: Pipeline, frames: list[str], *, rate: float | None, label: str
) -> dict[str, Any]:
    """Feed ``frames`` from a reader thread; returns what the run measured."""
    loop = asyncio.get_running_loop()
    tape = pipeline.tape
    tape.reset()
    dropped_before = pipeline.dropped()
    done = asyncio.Event()
    reader = Reader(
        frames, pipeline.handle, rate=rate, on_done=lambda: loop.call_soon_threadsafe(done.set)
    )
    lag = LoopLag(interval=LOOP_LAG_INTERVAL_S)
    lag_task = asyncio.create_task(lag.run(), name="loop_lag")
    recorder = GcRecorder()
    tracked = len(gc.get_objects())
    _progress(f"  {label:<11}")
    recorder.install()
    reader.thread.start()
    try:
        await done.wait()
        if reader.failure is not None:
            raise reader.failure
        await wait_decided(pipeline, len(frames), dropped_before)
    finally:
        recorder.uninstall()
        lag_task.cancel()
        await asyncio.gather(lag_task, return_exceptions=True)
        reader.thread.join(5.0)
    decided = len(tape)
    elapsed_ns = max(tape.last_ns - reader.first_read_ns, 1)
    _progress(f" {decided * 1e9 / elapsed_ns:>9,.0f} msg/s\n")
    return {
        "messages": len(frames),
        "decided": decided,
        "dropped": pipeline.dropped() - dropped_before,
        "orders": tape.orders,
        "elapsed_s": elapsed_ns / 1e9,
        "messages_per_s": decided * 1e9 / elapsed_ns,
        "latencies_ns": tape.latencies.tolist(),
        "gc_pauses_ns": recorder.pauses_ns.tolist(),
        "gc_generations": recorder.generations.tolist(),
        "gc_tracked_objects": tracked,
        "loop_lag_p50_ns": lag.histogram.percentile(50),
        "loop_lag_p99_ns": lag.histogram.percentile(99),
        "loop_lag_max_ns": lag.max_ns,
        "loop_lag_samples": lag.histogram.count,
    }


def kline_frames(frames: list[str]) -> list[str]:
    klines = [frame for frame in frames if '"e":"kline"' in frame]
    if not klines:
        raise SystemExit("the frame file holds no kline frames")
    return klines


async def measure(phase: Phase, frames: list[str], plan: RunPlan, workdir: Path) -> dict[str, Any]:
    tape = Tape()
    pipeline = phase.build(BuildContext(workdir=workdir, tape=tape, history=plan.live_candles))
    await pipeline.start()
    klines = kline_frames(frames)
    history = pipeline.strategy.candles
    for index in range(plan.live_candles):
        history.append(pipeline.parse_candle(klines[index % len(klines)]))
    await drive(pipeline, frames[: plan.warmup_messages], rate=None, label="warm-up")
    frozen = freeze_after_warmup() if phase.freeze_after_warmup else gc.get_freeze_count()
    paced = await drive(
        pipeline, frames[: plan.paced_messages], rate=plan.rate, label=f"{plan.rate:g}/s"
    )
    saturated = await drive(
        pipeline, frames[: plan.throughput_messages], rate=None, label="saturated"
    )
    # What the worst natural pause (a full collection) costs in this heap, right now.
    started = time.perf_counter_ns()
    gc.collect()
    full_collection_ns = time.perf_counter_ns() - started
    tracked = len(gc.get_objects())
    await pipeline.stop()
    loop = asyncio.get_running_loop()
    parse = pipeline.parse_candle
    sample = parse(klines[0])
    return {
        "phase": phase.number,
        "paced": paced,
        "saturated": saturated,
        "facts": {
            **pipeline.facts(),
            "loop": f"{type(loop).__module__}.{type(loop).__name__}",
            "gc_threshold": list(gc.get_threshold()),
            "gc_frozen_objects": frozen,
            "live_candles": len(history),
            "gc_tracked_objects": tracked,
            "candle_type": f"{type(sample).__module__}.{type(sample).__qualname__}",
            "candle_has_dict": hasattr(sample, "__dict__"),
        },
        "service_metrics": pipeline.service_metrics(),
        "full_collection_ns": full_collection_ns,
        "bytes_per_live_candle": bytes_per_live_object(
            lambda index: parse(klines[index % len(klines)]), plan.memory_candles
        ),
        "candle_object_bytes": object_bytes(sample, plan.memory_candles),
    }


def run_phase(phase: Phase, frames: list[str], plan: RunPlan) -> dict[str, Any]:
    with warnings.catch_warnings():
        # python-binance imports names websockets deprecated; theirs, not ours.
        warnings.simplefilter("ignore", DeprecationWarning)
        import binance  # noqa: F401, PLC0415 - the bot's client library, for a realistic heap
    if phase.gc_threshold is not None:
        gc.set_threshold(*phase.gc_threshold)
    with (
        tempfile.TemporaryDirectory(prefix=f"roadmap-phase{phase.number}-") as workdir,
        asyncio.Runner(loop_factory=phase.loop_factory) as runner,
    ):
        return runner.run(measure(phase, frames, plan, Path(workdir)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phases.run", description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--phase", type=int, choices=range(len(PHASES)))
    which.add_argument("--variant", choices=sorted(VARIANTS), help="a phase with a step off")
    parser.add_argument("--frames", type=Path, required=True, help="JSON list of raw frames")
    parser.add_argument("--plan", required=True, help="RunPlan fields as a JSON object")
    args = parser.parse_args(argv)
    plan = RunPlan(**json.loads(args.plan))
    frames: list[str] = json.loads(args.frames.read_text())
    phase = VARIANTS[args.variant] if args.variant else PHASES[args.phase]
    result = run_phase(phase, frames, plan)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
