"""Garbage-collection pauses under the pipeline load: default thresholds, ``gc.freeze()``,
threshold tuning, and both.

Two loads, both ``bench.pipeline`` rigs fed real Binance frames one at a time on uvloop, as
fast as they go:

* ``svc``    svc's own pipeline and telemetry (feed, data tier, strategies, ``StageRecorder``,
             ``TickTracer`` at 0.01, span thread, Prometheus collection once a second). It
             allocates almost no GC-tracked objects per message (msgspec structs of scalars
             are not tracked), so collections are rare;
* ``naive``  the same pipeline with what users usually add: an OpenTelemetry SDK span and an
             SDK histogram record per stage. Its per-message garbage (contexts, attribute
             dicts, span objects) keeps the young generation busy: the load where the GC
             settings show.

Beside each lives a heap of long-lived objects (``LiveCandle``: slotted, GC-tracked, like the
state a service holds for hours: candle history, order books, caches, exchange rules), since
the cost of an old-generation collection is proportional to what it has to traverse.
DESIGN.md's numbers are for ~1M live objects.

Configurations (one run each per load; same frames, same heap):

* ``default``           CPython's thresholds (700, 10, 10), nothing frozen;
* ``freeze``            ``gc.collect(); gc.freeze()`` after the heap and the rig are built, as
                        svc does after its warm-up (``svc.runtime.freeze_after_warmup``);
* ``threshold``         ``gc.set_threshold(50_000, 20, 20)``: young collections ~70x rarer;
* ``freeze+threshold``  both.

Every collection is timed through ``gc.callbacks`` (start -> stop, ``perf_counter_ns``; the
same hook ``svc.runtime.GcPauses`` uses) and kept exactly, per generation. Also per run:
throughput and receive -> decision p99/p99.9 of the pipeline, the share of wall time spent in
GC, and one explicit full collection (``gc.collect()``) timed at the end with the heap still
alive: the pause a generation-2 collection costs with and without ``gc.freeze()``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from bench.decode import data_dir, write_json
from bench.e2e import format_table
from bench.machine import describe, save_figure, summary_line
from bench.pipeline import Rig, load_frames, naive_rig, svc_rig

RESULTS = Path(__file__).resolve().parent / "results"
TUNED_THRESHOLD = (50_000, 20, 20)
SPARSE = 30
"""Generations with fewer pauses than this are plotted pause by pause, and kept in the JSON."""


@dataclass(frozen=True, slots=True)
class Setup:
    freeze: bool
    threshold: tuple[int, int, int] | None


SETUPS: dict[str, Setup] = {
    "default": Setup(freeze=False, threshold=None),
    "freeze": Setup(freeze=True, threshold=None),
    "threshold": Setup(freeze=False, threshold=TUNED_THRESHOLD),
    "freeze+threshold": Setup(freeze=True, threshold=TUNED_THRESHOLD),
}


@dataclass(frozen=True, slots=True)
class Plan:
    messages: dict[str, int]
    """Messages per run, by load (the naive load is ~10x slower)."""
    live_objects: int
    warmup_messages: int


QUICK = Plan(
    messages={"svc": 100_000, "naive": 25_000}, live_objects=300_000, warmup_messages=5_000
)
FULL = Plan(
    messages={"svc": 1_000_000, "naive": 200_000}, live_objects=1_000_000, warmup_messages=20_000
)
LOADS: dict[str, Callable[[], Any]] = {"svc": svc_rig, "naive": naive_rig}

COLUMNS = [
    "load",
    "configuration",
    "generation",
    "collections",
    "p50 µs",
    "p99 µs",
    "max µs",
    "total ms",
]


class LiveCandle:
    """A long-lived, GC-tracked object (slotted instances are always tracked)."""

    __slots__ = ("close", "high", "low", "open", "open_time", "volume")

    def __init__(self, open_time: int, price: float, volume: float) -> None:
        self.open_time = open_time
        self.open = self.high = self.low = self.close = price
        self.volume = volume


def live_heap(count: int) -> list[LiveCandle]:
    prices = [float(p) for p in range(100)]  # shared floats: the heap is objects, not bytes
    return [LiveCandle(i, prices[i % 100], prices[(i * 7) % 100]) for i in range(count)]


class PauseRecorder:
    """Every collection's generation and duration (ns), from ``gc.callbacks``, exactly."""

    def __init__(self) -> None:
        self.generations = array("b")
        self.durations_ns = array("q")
        self._started = -1
        self._callback: Callable[[str, dict[str, Any]], None] | None = None

    def install(self) -> None:
        clock = time.perf_counter_ns
        generations, durations = self.generations, self.durations_ns

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                self._started = clock()
            elif self._started >= 0:
                durations.append(clock() - self._started)
                generations.append(info["generation"])
                self._started = -1

        self._callback = on_gc
        gc.callbacks.append(on_gc)

    def uninstall(self) -> None:
        if self._callback is not None and self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        self._callback = None

    def by_generation(self) -> dict[int, np.ndarray]:
        generations = np.frombuffer(self.generations, dtype=np.int8)
        durations = np.frombuffer(self.durations_ns, dtype=np.int64)
        return {g: durations[generations == g] for g in (0, 1, 2)}


async def drive(
    rig: Rig, frames: tuple[str, ...], progress: Callable[[], None]
) -> tuple[array, int]:
    """``bench.pipeline.drive`` without its chunk lists: receive -> decision ns, total ns.

    The frames come as a tuple of strings, which the collector stops tracking at the first
    collection: a list of a million frames (or the 20 slices ``pipeline.drive`` makes) would
    be traversed by every collection that reaches it and show up as the benchmark's own pause.
    """
    clock = time.perf_counter_ns
    latencies = array("q")
    record = latencies.append
    received = [0]

    async def decided(_item: object) -> None:
        record(clock() - received[0])

    rig.bus.subscribe("data", decided)
    bus = asyncio.create_task(rig.bus.run(), name="bus")
    background = [asyncio.create_task(run()) for run in rig.background]
    await asyncio.sleep(0)
    on_message = rig.on_message
    sleep = asyncio.sleep
    step = max(1, len(frames) // 20)
    started = clock()
    for index, frame in enumerate(frames):
        received[0] = clock()
        await on_message(frame)
        await sleep(0)  # where the socket read would yield
        if index % step == step - 1:
            progress()
    drained = await rig.bus.drain(10.0)
    elapsed = clock() - started
    rig.bus.close()
    for task in background:
        task.cancel()
    await asyncio.gather(bus, *background, return_exceptions=True)
    if not drained or len(latencies) != len(frames):
        raise SystemExit(f"the pipeline lost messages: {len(latencies)} of {len(frames)}")
    return latencies, elapsed


def _progress() -> None:
    sys.stderr.write(".")
    sys.stderr.flush()


def run_setup(load: str, name: str, setup: Setup, frames: list[str], plan: Plan) -> dict[str, Any]:
    """One configuration: heap + rig, freeze/threshold, the timed pipeline, a full collection."""
    sys.stderr.write(f"  {load:<6}{name:<18}")
    sys.stderr.flush()
    original = gc.get_threshold()
    gc.collect()
    heap = live_heap(plan.live_objects)
    rig = LOADS[load]()
    gc.collect()
    frozen = 0
    if setup.freeze:
        gc.freeze()
        frozen = gc.get_freeze_count()
    if setup.threshold is not None:
        gc.set_threshold(*setup.threshold)
    recorder = PauseRecorder()
    recorder.install()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            latencies, elapsed_ns = runner.run(drive(rig, frames, _progress))
        recorder.uninstall()
        full_started = time.perf_counter_ns()
        gc.collect()
        full_ns = time.perf_counter_ns() - full_started
    finally:
        recorder.uninstall()
        rig.close()
        gc.set_threshold(*original)
        gc.unfreeze()
    del heap
    gc.collect()
    latency = np.frombuffer(latencies, dtype=np.int64)
    pauses = recorder.by_generation()
    elapsed_s = elapsed_ns / 1e9
    total_gc_ns = int(sum(int(p.sum()) for p in pauses.values()))
    result = {
        "load": load,
        "configuration": name,
        "freeze": setup.freeze,
        "threshold": list(setup.threshold or original),
        "frozen_objects": frozen,
        "messages": len(latency),
        "elapsed_s": elapsed_s,
        "messages_per_s": len(latency) / elapsed_s,
        "tick_p99_us": float(np.percentile(latency, 99)) / 1e3,
        "tick_p999_us": float(np.percentile(latency, 99.9)) / 1e3,
        "tick_max_us": float(latency.max()) / 1e3,
        "gc_time_percent": 100 * total_gc_ns / elapsed_ns,
        "full_collection_ms": full_ns / 1e6,
        "generations": {str(g): _pause_summary(p) for g, p in pauses.items()},
        "quantiles": {str(g): _quantiles(p) for g, p in pauses.items()},
        "pauses_us": {
            str(g): (p / 1e3).tolist() if len(p) < SPARSE else [] for g, p in pauses.items()
        },
    }
    counts = ", ".join(f"gen{g} {v['count']}" for g, v in result["generations"].items())
    sys.stderr.write(
        f" {result['messages_per_s']:>8,.0f} msg/s, {counts}, max "
        f"{max(v['max_us'] for v in result['generations'].values()) / 1e3:.2f} ms, "
        f"full collection {result['full_collection_ms']:.1f} ms\n"
    )
    return result


def _pause_summary(pauses: np.ndarray) -> dict[str, Any]:
    if len(pauses) == 0:
        return {"count": 0, "p50_us": None, "p99_us": None, "max_us": 0.0, "total_ms": 0.0}
    p50, p99 = np.percentile(pauses, [50, 99]) / 1e3
    return {
        "count": len(pauses),
        "p50_us": float(p50),
        "p99_us": float(p99),
        "max_us": float(pauses.max()) / 1e3,
        "total_ms": float(pauses.sum()) / 1e6,
    }


def _quantiles(pauses: np.ndarray) -> dict[str, list[float]]:
    if len(pauses) == 0:
        return {"quantile": [], "us": []}
    quantiles = np.concatenate([np.linspace(0, 0.99, 100), 1 - np.logspace(-2, -4, 40), [1.0]])
    return {
        "quantile": quantiles.tolist(),
        "us": (np.quantile(pauses, quantiles) / 1e3).tolist(),
    }


def run(plan: Plan) -> list[dict[str, Any]]:
    frames = tuple(load_frames(data_dir(), max(plan.messages.values())))
    sys.stderr.write(
        f"gc: {', '.join(f'{n:,} ({load})' for load, n in plan.messages.items())} messages "
        f"per configuration, {plan.live_objects:,} live objects beside the pipeline\n"
    )
    results = []
    for load, count in plan.messages.items():
        sys.stderr.write(f"  {load:<6}{'warm-up':<18}")
        rig = LOADS[load]()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(drive(rig, frames[: plan.warmup_messages], _progress))
        rig.close()
        sys.stderr.write("\n")
        results += [
            run_setup(load, name, setup, frames[:count], plan) for name, setup in SETUPS.items()
        ]
    return results


def rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    table = []
    for result in results:
        for generation, s in result["generations"].items():
            if s["count"] == 0 and generation != "0":
                continue  # keep the table short: a generation that never ran says nothing
            table.append(
                [
                    result["load"],
                    result["configuration"],
                    int(generation),
                    s["count"],
                    None if s["p50_us"] is None else round(s["p50_us"], 1),
                    None if s["p99_us"] is None else round(s["p99_us"], 1),
                    round(s["max_us"], 1),
                    round(s["total_ms"], 2),
                ]
            )
    return table


def configurations(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "load": r["load"],
            "configuration": r["configuration"],
            "threshold": "/".join(str(t) for t in r["threshold"]),
            "frozen objects": r["frozen_objects"],
            "msg/s": round(r["messages_per_s"]),
            "tick p99 µs": round(r["tick_p99_us"], 1),
            "tick p99.9 µs": round(r["tick_p999_us"], 1),
            "tick max µs": round(r["tick_max_us"]),
            "time in GC %": round(r["gc_time_percent"], 2),
            "full gc.collect() ms": round(r["full_collection_ms"], 1),
        }
        for r in results
    ]


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (optional, heavy: only when a chart is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = report["results"]
    loads = list(dict.fromkeys(r["load"] for r in results))
    figure, axes = plt.subplots(
        1, len(loads) + 1, figsize=(16, 5), gridspec_kw={"width_ratios": [2] * len(loads) + [1.3]}
    )
    colours = dict(zip(SETUPS, ("tab:grey", "tab:blue", "tab:orange", "tab:green"), strict=True))
    styles = {"0": "-", "1": "--", "2": ":"}

    def nines(quantiles: list[float]) -> np.ndarray:
        return -np.log10(np.maximum(1.0 - np.asarray(quantiles), 1e-4))

    for pauses, load in zip(axes, loads, strict=False):
        for result in (r for r in results if r["load"] == load):
            colour = colours[result["configuration"]]
            for generation, points in result["quantiles"].items():
                count = result["generations"][generation]["count"]
                if count == 0:
                    continue
                if count < SPARSE:  # too few to draw a curve: every pause, at its rank
                    values = sorted(result["pauses_us"][generation])
                    pauses.scatter(
                        nines([(i + 0.5) / count for i in range(count)]),
                        values,
                        color=colour,
                        marker="ox+"[int(generation)],
                        label=f"{result['configuration']} gen{generation} (n={count})",
                    )
                    continue
                pauses.step(
                    nines(points["quantile"]),
                    points["us"],
                    where="post",
                    linestyle=styles[generation],
                    color=colour,
                    label=f"{result['configuration']} gen{generation} (n={count})",
                )
        pauses.set_xticks(nines([0.5, 0.9, 0.99, 0.999]), ["p50", "p90", "p99", "p99.9"])
        pauses.set_xlim(0, nines([0.9999])[0])
        pauses.set_yscale("log")
        pauses.set_ylabel("pause, µs (log)")
        messages = report["plan"]["messages"][load]
        pauses.set_title(
            f"{load} load, {messages:,} messages: gen0 o/solid, gen1 x/dashed, gen2 +/dotted",
            fontsize=10,
        )
        pauses.grid(True, which="both", alpha=0.3)
        pauses.legend(fontsize=7, ncol=2)

    full = axes[-1]
    width = 0.8 / len(loads)
    for index, load in enumerate(loads):
        mine = [r for r in results if r["load"] == load]
        positions = [i + (index - (len(loads) - 1) / 2) * width for i in range(len(mine))]
        values = [r["full_collection_ms"] for r in mine]
        full.bar(
            positions,
            values,
            width,
            color=[colours[r["configuration"]] for r in mine],
            alpha=1.0 if index == 0 else 0.6,
            edgecolor="black",
            hatch="" if index == 0 else "//",
            label=f"{load} load",
        )
        for position, value in zip(positions, values, strict=True):
            full.text(position, value, f"{value:.1f}", ha="center", va="bottom", fontsize=7)
    full.set_xticks(range(len(SETUPS)), list(SETUPS), rotation=20, fontsize=8)
    full.set_ylabel("ms")
    full.set_title("one full gc.collect() with the heap alive", fontsize=10)
    full.legend(fontsize=8)
    plan = report["plan"]
    figure.suptitle(
        f"gc: pauses under the pipeline load with {plan['live_objects']:,} live objects — "
        f"{summary_line(report['machine'])}",
        fontsize=10,
    )
    save_figure(figure, path)


def main(*, quick: bool = False, json_path: Path | None = None) -> int:
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    info = describe("uvloop", "msgspec", "opentelemetry-sdk")
    results = run(plan)
    table = rows(results)
    configs = configurations(results)
    longest = max(
        (
            (r["load"], r["configuration"], g, s["max_us"])
            for r in results
            for g, s in r["generations"].items()
        ),
        key=lambda item: item[3],
    )
    json_out = json_path or RESULTS / "gc.json"
    plot = json_out.with_suffix(".png")
    report = {
        "name": "gc",
        "benchmark": "gc",
        "title": "GC pauses per generation under the pipeline load, freeze and thresholds",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": info,
        "plan": {
            "messages": dict(plan.messages),
            "live_objects": plan.live_objects,
            "warmup_messages": plan.warmup_messages,
            "tuned_threshold": list(TUNED_THRESHOLD),
        },
        "unit": "pause durations from gc.callbacks, exact (not bucketed)",
        "columns": COLUMNS,
        "rows": table,
        "configurations": configs,
        "notes": [
            (
                f"longest natural pause: {longest[3] / 1e3:.2f} ms "
                f"(gen{longest[2]}, {longest[0]} load, {longest[1]})"
            ),
            "full gc.collect() is timed once per configuration at the end of its run",
            "the frames are an untracked tuple: the harness adds nothing for the GC to walk",
            "msg/s and ticks (receive -> decision) move with the load of this shared host",
        ],
        "plot": plot.name,
        "results": results,
    }
    print(f"\nmachine: {summary_line(info)}")
    print(
        f"plan: {', '.join(f'{n:,} ({load})' for load, n in plan.messages.items())} messages "
        f"per configuration, {plan.live_objects:,} live objects; pauses in µs\n"
    )
    print(format_table(COLUMNS, table))
    print()
    print(format_table(list(configs[0]), [list(c.values()) for c in configs]))
    print(f"\n{report['notes'][0]}")
    write_json(report, json_out)
    write_chart(report, plot)
    print(f"wrote {json_out} and {plot} in {time.perf_counter() - started:.1f} s")
    return 0
