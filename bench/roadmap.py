"""The seed review's migration roadmap, measured: ``python -m bench roadmap [--quick]``.

The review (``seed/000_2a5b072b05bfec20.txt``) diagnoses a bot and proposes three phases
with numeric promises. ``bench.phases`` rebuilds the bot as found (phase 0) and applies the
review's phases cumulatively (1, 2, 3); its docstring maps every phase to the review's
steps. Each phase runs in a fresh interpreter (``bench.phases.run``) and drives the same
frames - real Binance data from ``../shared/data/binance``, 1000 BTCUSDT 1h klines rebuilt
as closed ``kline`` frames and 500 LTCUSDT aggregated trades, two klines to one trade
(``bench.pipeline.load_frames``) - from a websocket-like reader thread into an asyncio loop:

* **tick latency** receive -> decision (the strategy has decided), at a steady offered rate
  (``Plan.rate``, well below every phase's capacity), p50 and p99;
* **throughput** decided messages per second with the reader unpaced (phase 3's data tier
  drops the oldest events when full; they are counted, not decided);
* **bytes per live candle** ``tracemalloc`` over candles built by the phase's own parser;
* **GC pauses** every collection during both runs, timed exactly through ``gc.callbacks``,
  and the cost of one full collection in the trading heap (the worst pause possible);
* **loop lag** ``svc.runtime.LoopLag`` (5 ms timer) during the paced run.

The table reports the median over repetitions (interleaved 0, 1, 2, 3, 0, ...). Then every
numeric claim of the review is printed with the number measured here and a verdict:
"~X%" claims are REPRODUCED when the measured effect is at least X minus
``TOLERANCE_POINTS`` percentage points, thresholds ("< 10 ms") when the measured value is
under them, "~N us" when the measured value is within a factor ``TOLERANCE_FACTOR`` of N.
Absolute times depend on the machine (printed, with the load average at the start and the
end: the host is shared); ratios travel better.

Writes ``bench/results/roadmap.json`` (or ``--json PATH``) and the plot beside it
(``roadmap.png``): latency CDFs, p50/p99 and throughput bars, GC pauses, loop lag, memory.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.decode import data_dir, write_json
from bench.machine import describe, save_figure, summary_line
from bench.phases import PHASES, VARIANTS, Phase
from bench.phases.common import bytes_per_live_object, object_bytes, sync_file_logging
from bench.phases.legacy import SlottedCandle, parse_candle, parse_candle_frame
from bench.phases.run import kline_frames
from bench.pipeline import load_frames
from svc.binance.streams import FrameDecoder

NAME = "roadmap"
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
TOLERANCE_POINTS = 10.0
TOLERANCE_FACTOR = 2.0
GC_PAUSE_LIMIT_MS = 10.0
TICK_LIMIT_US = 1000.0
CHILD_TIMEOUT_S = 900.0
COLUMNS = [
    "phase",
    "p50 tick (µs)",
    "p99 tick (µs)",
    "throughput (msg/s)",
    "bytes per live candle",
    "GC pause p99 (ms)",
    "GC pause max (ms)",
    "GC pauses",
    "full GC (ms)",
    "loop lag p99 (ms)",
]


@dataclass(frozen=True, slots=True)
class Plan:
    repetitions: int
    rate: float
    paced_messages: int
    throughput_messages: int
    warmup_messages: int
    live_candles: int
    """The strategy's candle history (e.g. 25 symbols x 4 intervals x 500 candles)."""
    memory_candles: int
    debug_calls: int

    def child_plan(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["repetitions"], fields["debug_calls"]
        return fields


QUICK = Plan(
    repetitions=1,
    rate=1000.0,
    paced_messages=3000,
    throughput_messages=8000,
    warmup_messages=1500,
    live_candles=50_000,
    memory_candles=5000,
    debug_calls=2000,
)
FULL = Plan(
    repetitions=3,
    rate=1000.0,
    paced_messages=15_000,
    throughput_messages=50_000,
    warmup_messages=5000,
    live_candles=50_000,
    memory_candles=20_000,
    debug_calls=20_000,
)


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    claim: str
    quote: str
    where: str


CLAIMS = (
    Claim(
        "phase1_latency",
        "Phase 1 cuts tick latency by ~80% (~3 ms -> ~0.5 ms)",
        "목표: Hot Path 지연 80% 감소 / 틱 처리 지연: 현재 ~3ms → ~0.5ms (83% 감소)",
        "4. 권장 조치 사항, Phase 1 (목표, 예상 효과); 7. 실행 계획 요약 ('지연 80% ↓')",
    ),
    Claim(
        "slots_memory",
        "__slots__ cuts memory per instance by ~40%",
        "# 권장 (메모리 40% 절감) @dataclass(slots=True) / 메모리 사용량: 인스턴스당 40% 감소",
        "2.1 추가 발견; Issue #4 ('인스턴스당 메모리 40% 증가'); Phase 2 예상 효과",
    ),
    Claim(
        "gc_pause",
        "GC pauses stay under 10 ms",
        "측정 가능한 메트릭 (틱 처리 지연 < 1ms, GC Pause < 10ms 등)",
        "1. 가이드라인 적절성 평가, item 3 (성능 검증 기준 제시)",
    ),
    Claim(
        "tick_latency",
        "A tick is handled in under 1 ms",
        "측정 가능한 메트릭 (틱 처리 지연 < 1ms, GC Pause < 10ms 등)",
        "1. 가이드라인 적절성 평가, item 3 (성능 검증 기준 제시)",
    ),
    Claim(
        "debug_call",
        "An unguarded hot-path debug log call costs ~500 µs",
        "지연: 호출당 ~500μs / 영향: 매 호출마다 ~500μs 지연",
        "Issue #1; 2.2 (Critical Issue: 동기 로깅이 Hot Path에 위치)",
    ),
    Claim(
        "sync_log_blocking",
        "A synchronous file log call blocks 5-20 ms (disk I/O)",
        "로그 호출마다 5-20ms 블로킹 (디스크 I/O)",
        "Issue #2",
    ),
)

# ---------------------------------------------------------------- running the phases


def run_child(selector: list[str], frames_path: Path, plan: Plan) -> dict[str, Any]:
    """One phase (``["--phase", "0"]``) or variant in a fresh interpreter.

    Its progress lines pass through to our stderr; its result is the JSON on its stdout.
    """
    command = [
        sys.executable,
        "-m",
        "bench.phases.run",
        *selector,
        "--frames",
        str(frames_path),
        "--plan",
        json.dumps(plan.child_plan()),
    ]
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        command, cwd=ROOT, stdout=subprocess.PIPE, check=False, text=True, timeout=CHILD_TIMEOUT_S
    )
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(selector)} failed with exit code {completed.returncode}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def summarize_run(result: dict[str, Any]) -> dict[str, Any]:
    paced, saturated = result["paced"], result["saturated"]
    latencies = np.asarray(paced["latencies_ns"], dtype=np.int64) / 1e3
    pauses = np.asarray(paced["gc_pauses_ns"] + saturated["gc_pauses_ns"], dtype=np.int64) / 1e6
    generations = paced["gc_generations"] + saturated["gc_generations"]
    p50, p99, p999 = np.percentile(latencies, [50, 99, 99.9])
    return {
        "p50_us": float(p50),
        "p99_us": float(p99),
        "p999_us": float(p999),
        "max_us": float(latencies.max()),
        "messages_per_s": saturated["messages_per_s"],
        "saturated_dropped": saturated["dropped"],
        "orders": paced["orders"],
        "bytes_per_live_candle": result["bytes_per_live_candle"],
        "candle_object_bytes": result["candle_object_bytes"],
        "gc_pause_p99_ms": float(np.percentile(pauses, 99)) if pauses.size else 0.0,
        "gc_pause_max_ms": float(pauses.max()) if pauses.size else 0.0,
        "gc_pauses": int(pauses.size),
        "gc_pauses_paced": len(paced["gc_pauses_ns"]),
        "gc_pauses_by_generation": {str(g): generations.count(g) for g in (0, 1, 2)},
        "full_collection_ms": result["full_collection_ns"] / 1e6,
        "loop_lag_p99_ms": paced["loop_lag_p99_ns"] / 1e6,
        "loop_lag_max_ms": paced["loop_lag_max_ns"] / 1e6,
    }


def median_of(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: statistics.median(s[key] for s in summaries)
        for key, value in summaries[0].items()
        if isinstance(value, int | float)
    }


def cdf_points(results: list[dict[str, Any]]) -> dict[str, list[float]]:
    pooled = np.concatenate([np.asarray(r["paced"]["latencies_ns"]) for r in results]) / 1e3
    quantiles = np.concatenate(
        [np.linspace(0.0, 0.99, 100, endpoint=False), 1.0 - np.logspace(-2, -4, 60), [1.0]]
    )
    return {
        "quantile": quantiles.tolist(),
        "latency_us": np.quantile(pooled, quantiles).tolist(),
    }


# ---------------------------------------------------------------- claim-specific probes


def candle_memory(klines: list[str], count: int) -> dict[str, Any]:
    """Bytes per live candle: as found, the seed's ``slots=True`` fix alone, and svc's."""
    decode = FrameDecoder().decode
    builders: dict[str, Callable[[int], object]] = {
        "dataclass": lambda i: parse_candle_frame(klines[i % len(klines)]),
        "dataclass(slots=True)": lambda i: parse_candle(
            json.loads(klines[i % len(klines)])["data"], SlottedCandle
        ),
        "svc msgspec Struct": lambda i: decode(klines[i % len(klines)], time.time_ns()),
    }
    return {
        name: {
            "bytes_per_live_candle": bytes_per_live_object(build, count),
            "object_bytes": object_bytes(build(0), count),
        }
        for name, build in builders.items()
    }


def debug_call_costs(kline: str, calls: int) -> dict[str, dict[str, float]]:
    """Per-call time of the seed's debug line through a synchronous ``FileHandler``.

    ``as found``: DEBUG on, unguarded, written on the calling thread (phase 0);
    ``guarded``: the phase-1 form, ``isEnabledFor`` with the level at INFO.
    """
    candle = parse_candle_frame(kline)
    costs = {}
    with tempfile.TemporaryDirectory(prefix="roadmap-debug-") as workdir:
        for name, level in (("as found", logging.DEBUG), ("guarded", logging.INFO)):
            logs = sync_file_logging(Path(workdir) / f"{level}.log", level=level)
            logger = logs.child("data_collector")
            timings = array("q")
            clock = time.perf_counter_ns
            for _ in range(calls):
                started = clock()
                if name == "as found" or logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        f"Parsed candle: {candle.symbol} {candle.interval} "  # noqa: G004 - as quoted
                        f"@ {candle.close_time.isoformat()} "
                        f"(close={candle.close}, closed={candle.is_closed})"
                    )
                timings.append(clock() - started)
            logs.close()
            values = np.asarray(timings) / 1e3
            costs[name] = {
                "p50_us": float(np.percentile(values, 50)),
                "p99_us": float(np.percentile(values, 99)),
                "max_us": float(values.max()),
            }
    return costs


# ---------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class Finding:
    measured: str
    value: float
    reproduced: bool


def _percent_cut(before: float, after: float) -> float:
    return 100 * (1 - after / before)


def _p99_range(phase: dict[str, Any]) -> str:
    """The p99 of each repetition, low to high: how much the host moved the tail."""
    values = sorted(r["p99_us"] for r in phase.get("repetitions", ()))
    return f"{values[0]:,.0f}-{values[-1]:,.0f}" if len(values) > 1 else "one repetition"


def phase1_latency(phases: dict[int, dict[str, Any]]) -> Finding:
    found, quick = phases[0]["median"], phases[1]["median"]
    cut = _percent_cut(found["p99_us"], quick["p99_us"])
    cut50 = _percent_cut(found["p50_us"], quick["p50_us"])
    measured = (
        f"p99 {found['p99_us']:,.0f} -> {quick['p99_us']:,.0f} µs ({-cut:+.0f}%; per repetition "
        f"{_p99_range(phases[0])} -> {_p99_range(phases[1])} µs); "
        f"p50 {found['p50_us']:,.0f} -> {quick['p50_us']:,.0f} µs ({-cut50:+.0f}%); "
        f"reproduced if the median p99 cut >= {80 - TOLERANCE_POINTS:.0f}%"
    )
    return Finding(measured, cut, cut >= 80 - TOLERANCE_POINTS)


def slots_memory(phases: dict[int, dict[str, Any]], memory: dict[str, Any]) -> Finding:
    plain, slotted = memory["dataclass"], memory["dataclass(slots=True)"]
    saving = _percent_cut(plain["bytes_per_live_candle"], slotted["bytes_per_live_candle"])
    instance = _percent_cut(plain["object_bytes"], slotted["object_bytes"])
    phase0, phase2 = (phases[n]["median"]["bytes_per_live_candle"] for n in (0, 2))
    measured = (
        f"the same 13-field candle with its values: {plain['bytes_per_live_candle']:.0f} -> "
        f"{slotted['bytes_per_live_candle']:.0f} bytes ({-saving:+.0f}%); the instance alone "
        f"{plain['object_bytes']:.0f} -> {slotted['object_bytes']:.0f} bytes ({-instance:+.0f}%);"
        f" phase 2's svc Struct with int-ns times: {phase2:.0f} bytes per live candle "
        f"({-_percent_cut(phase0, phase2):+.0f}% vs phase 0); reproduced if the cut with values "
        f">= {40 - TOLERANCE_POINTS:.0f}%"
    )
    return Finding(measured, saving, saving >= 40 - TOLERANCE_POINTS)


def gc_pause(phases: dict[int, dict[str, Any]]) -> Finding:
    final = phases[3]["median"]
    worst = max(final["gc_pause_p99_ms"], final["full_collection_ms"])
    per_phase = ", ".join(
        f"{n}: {m['gc_pause_p99_ms']:.1f}/{m['gc_pause_max_ms']:.1f}/{m['full_collection_ms']:.1f}"
        for n, m in ((n, p["median"]) for n, p in sorted(phases.items()))
    )
    measured = (
        f"phase 3: observed p99 {final['gc_pause_p99_ms']:.2f} ms (max "
        f"{final['gc_pause_max_ms']:.2f}) over {final['gc_pauses']:.0f} collections, one full "
        f"collection {final['full_collection_ms']:.2f} ms (observed p99 / max / full collection"
        f" per phase: {per_phase} ms); reproduced if the p99 and the full collection < "
        f"{GC_PAUSE_LIMIT_MS:.0f} ms"
    )
    return Finding(measured, worst, worst < GC_PAUSE_LIMIT_MS)


def tick_latency(phases: dict[int, dict[str, Any]]) -> Finding:
    final = phases[3]["median"]
    per_phase = ", ".join(f"{n}: {p['median']['p99_us']:,.0f}" for n, p in sorted(phases.items()))
    measured = (
        f"phase 3 p99 {final['p99_us']:,.0f} µs (per repetition {_p99_range(phases[3])}; p50 "
        f"{final['p50_us']:,.0f}) at {phases[3]['rate']:g} msg/s; p99 per phase: {per_phase} µs"
    )
    return Finding(measured, final["p99_us"], final["p99_us"] < TICK_LIMIT_US)


def debug_call(debug: dict[str, Any]) -> Finding:
    found, guarded = debug["as found"], debug["guarded"]
    measured = (
        f"the seed's debug line through a FileHandler at DEBUG: p50 {found['p50_us']:.1f} µs, "
        f"p99 {found['p99_us']:.1f} µs; guarded with DEBUG off: p50 {guarded['p50_us']:.2f} µs;"
        f" reproduced if the p50 is within {TOLERANCE_FACTOR:g}x of 500 µs"
    )
    ok = 500 / TOLERANCE_FACTOR <= found["p50_us"] <= 500 * TOLERANCE_FACTOR
    return Finding(measured, found["p50_us"], ok)


def sync_log_blocking(debug: dict[str, Any]) -> Finding:
    found = debug["as found"]
    measured = (
        f"the same calls: p99 {found['p99_us'] / 1e3:.3f} ms, max {found['max_us'] / 1e3:.2f} ms;"
        " reproduced if the p99 call blocks >= 5 ms"
    )
    return Finding(measured, found["p99_us"] / 1e3, found["p99_us"] >= 5000)


def evaluate(
    phases: dict[int, dict[str, Any]], memory: dict[str, Any], debug: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every claim of ``CLAIMS`` against the measurements, in ``CLAIMS`` order."""
    findings = {
        "phase1_latency": phase1_latency(phases),
        "slots_memory": slots_memory(phases, memory),
        "gc_pause": gc_pause(phases),
        "tick_latency": tick_latency(phases),
        "debug_call": debug_call(debug),
        "sync_log_blocking": sync_log_blocking(debug),
    }
    return [
        {
            "claim": claim.claim,
            "verdict": "REPRODUCED" if findings[claim.key].reproduced else "REFUTED",
            "measured": findings[claim.key].measured,
            "seed": claim.quote,
            "where": claim.where,
            "value": round(findings[claim.key].value, 3),
            "key": claim.key,
        }
        for claim in CLAIMS
    ]


# ---------------------------------------------------------------- the run


def _aggregate(phase: Phase, results: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    summaries = [summarize_run(r) for r in results]
    return {
        "name": phase.name,
        "seed_steps": list(phase.seed_steps),
        "rate": plan.rate,
        "median": median_of(summaries),
        "repetitions": summaries,
        "facts": results[-1]["facts"],
        "service_metrics": results[-1]["service_metrics"],
    }


def _row(label: str, median: dict[str, Any]) -> list[Any]:
    return [
        label,
        round(median["p50_us"], 1),
        round(median["p99_us"], 1),
        round(median["messages_per_s"]),
        round(median["bytes_per_live_candle"]),
        round(median["gc_pause_p99_ms"], 2),
        round(median["gc_pause_max_ms"], 1),
        round(median["gc_pauses"]),
        round(median["full_collection_ms"], 1),
        round(median["loop_lag_p99_ms"], 2),
    ]


def run(plan: Plan) -> dict[str, Any]:
    started = time.perf_counter()
    machine = describe("msgspec", "uvloop", "python-binance")
    count = max(plan.paced_messages, plan.throughput_messages, plan.warmup_messages)
    frames = load_frames(data_dir(), count)
    klines = kline_frames(frames)
    selectors = {str(p.number): ["--phase", str(p.number)] for p in PHASES}
    selectors.update({name: ["--variant", name] for name in VARIANTS})
    results: dict[str, list[dict[str, Any]]] = {key: [] for key in selectors}
    with tempfile.TemporaryDirectory(prefix="roadmap-") as workdir:
        frames_path = Path(workdir) / "frames.json"
        frames_path.write_text(json.dumps(frames))
        for repetition in range(1, plan.repetitions + 1):
            for key, selector in selectors.items():
                phase = VARIANTS[key] if key in VARIANTS else PHASES[int(key)]
                label = f"variant {key}" if key in VARIANTS else f"phase {key}"
                sys.stderr.write(
                    f"{label} ({phase.name}), repetition {repetition}/{plan.repetitions}\n"
                )
                sys.stderr.flush()
                results[key].append(run_child(selector, frames_path, plan))
    sys.stderr.write("claim probes: candle memory, debug log calls...\n")
    memory = candle_memory(klines, plan.memory_candles)
    debug = debug_call_costs(klines[0], plan.debug_calls)
    phases = {p.number: _aggregate(p, results[str(p.number)], plan) for p in PHASES}
    variants = {name: _aggregate(p, results[name], plan) for name, p in VARIANTS.items()}
    rows = [_row(f"{n} {p['name']}", p["median"]) for n, p in phases.items()]
    machine["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    final_loop = f"uvloop {machine['uvloop']}" if PHASES[3].loop_factory else "asyncio"
    machine["loops"] = f"asyncio (phases 0-2), {final_loop} (phase 3)"
    return {
        "name": NAME,
        "title": "the seed review's roadmap applied phase by phase: tick latency, throughput, "
        "memory, GC pauses and loop lag, and each of its numeric claims checked",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": plan is QUICK,
        "machine": machine,
        "columns": COLUMNS,
        "rows": rows,
        "claims": evaluate(phases, memory, debug),
        "notes": notes(plan, phases, variants),
        "plot": f"{NAME}.png",
        "unit": "tick = receive -> decision at a paced rate; medians over repetitions",
        "plan": asdict(plan),
        "phases": {str(n): p for n, p in phases.items()},
        "variants": variants,
        "variant_rows": [
            _row(f"{VARIANTS[key].number} {v['name']}", v["median"]) for key, v in variants.items()
        ],
        "candle_memory": memory,
        "debug_call_us": debug,
        "cdf": {key: cdf_points(results[key]) for key in results},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def notes(
    plan: Plan, phases: dict[int, dict[str, Any]], variants: dict[str, dict[str, Any]]
) -> list[str]:
    dropped = phases[3]["median"]["saturated_dropped"]
    paced_pauses = {n: round(p["median"]["gc_pauses_paced"]) for n, p in phases.items()}
    tick = (
        f"Tick latency: receive -> decision over {plan.paced_messages:,} frames offered at "
        f"{plan.rate:g} msg/s by a reader thread; a frame the reader could not read on time "
        "(it was blocked in the phase-0 callback) counts from its due time."
    )
    throughput = (
        f"Throughput: the reader unpaced over {plan.throughput_messages:,} frames; phase 3's "
        f"data tier drops the oldest events when full ({dropped:,.0f} dropped, median), and "
        "dropped events are not counted as decided."
    )
    collections = (
        "GC pauses: every collection in both runs (gc.callbacks). At a steady rate the "
        "collector hardly runs (CPython counts allocations minus deallocations; collections "
        f"in the paced run per phase: {paced_pauses}); it runs when the heap grows, e.g. the "
        "backlog of pending puts that the phase 1-2 hand-off builds under overload. "
        "'full GC' is one gc.collect() in the trading heap: the worst pause possible."
    )
    heap = (
        f"Live candles: {plan.live_candles:,} in the strategy's history; python-binance is "
        "imported in every phase for a realistic heap. Loop lag comes from svc's LoopLag "
        "(5 ms timer); an idle loop on this VM already shows several hundred µs."
    )
    inline, phase2 = variants["2-inline-handlers"]["median"], phases[2]["median"]
    variant = (
        "Variant '2-inline-handlers' is phase 2 with the seed's step 2.2 (asyncio.to_thread for "
        "every synchronous handler) switched off: after step 2.3 the order handlers only "
        f"enqueue, and without the thread hop phase 2 decides {inline['messages_per_s']:,.0f} "
        f"instead of {phase2['messages_per_s']:,.0f} msg/s (p50 {inline['p50_us']:,.0f} vs "
        f"{phase2['p50_us']:,.0f} µs, p99 {inline['p99_us']:,.0f} vs {phase2['p99_us']:,.0f} µs)."
    )
    return [
        tick,
        throughput,
        variant,
        collections,
        heap,
        "Median over repetitions; this is a shared 2-core VM, so read ratios over absolutes.",
    ]


# ---------------------------------------------------------------- output


def table(report: dict[str, Any]) -> str:
    headers = [
        ("phase", ""),
        ("p50 tick", "µs"),
        ("p99 tick", "µs"),
        ("throughput", "msg/s"),
        ("bytes per", "candle"),
        ("GC pause", "p99 ms"),
        ("GC pause", "max ms"),
        ("GC", "pauses"),
        ("full GC", "ms"),
        ("loop lag", "p99 ms"),
    ]
    formats = [
        "{}",
        "{:,.1f}",
        "{:,.1f}",
        "{:,}",
        "{:,}",
        "{:.2f}",
        "{:,.1f}",
        "{}",
        "{:.1f}",
        "{:.2f}",
    ]
    rows = [*report["rows"], *report.get("variant_rows", [])]
    cells = [[f.format(v) for f, v in zip(formats, row, strict=True)] for row in rows]
    widths = [
        max(len(headers[i][0]), len(headers[i][1]), *(len(c[i]) for c in cells)) + 2
        for i in range(len(headers))
    ]
    lines = [
        headers[0][line].ljust(widths[0])
        + "".join(h[line].rjust(w) for h, w in zip(headers[1:], widths[1:], strict=True))
        for line in (0, 1)
    ]
    lines.append("-" * sum(widths))
    for index, c in enumerate(cells):
        if index == len(report["rows"]):
            lines.append("variant (one step switched off):")
        lines.append(
            c[0].ljust(widths[0])
            + "".join(v.rjust(w) for v, w in zip(c[1:], widths[1:], strict=True))
        )
    return "\n".join(lines)


def claims_text(report: dict[str, Any]) -> str:
    lines = []
    for claim in report["claims"]:
        lines.append(f"{claim['verdict']:<11} {claim['claim']}")
        lines.append(f'{"":<12}seed: "{claim["seed"]}" ({claim["where"]})')
        lines.append(f"{'':<12}measured: {claim['measured']}")
    return "\n".join(lines)


PHASE_COLOURS = ("tab:red", "tab:orange", "tab:blue", "tab:green")


def _cdf_panel(axis: Any, report: dict[str, Any]) -> None:
    phases = report["phases"]
    for n, colour in zip(sorted(phases, key=int), PHASE_COLOURS, strict=True):
        points, m = report["cdf"][n], phases[n]["median"]
        axis.plot(
            points["latency_us"],
            points["quantile"],
            color=colour,
            label=f"{n} {phases[n]['name']}: p50 {m['p50_us']:.0f}, p99 {m['p99_us']:.0f} µs",
        )
    axis.axvline(TICK_LIMIT_US, color="grey", linestyle="--", linewidth=1)
    axis.set_xscale("log")
    axis.set_yscale("logit", nonpositive="clip")
    axis.set_ylim(0.01, 0.9999)
    axis.set_yticks([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
    axis.set_yticklabels(["1%", "10%", "50%", "90%", "99%", "99.9%", "99.99%"])
    axis.set_xlabel("receive -> decision, µs (log)")
    axis.set_title(f"tick latency CDF at {report['plan']['rate']:g} msg/s", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)


def _pair_panel(
    axis: Any,
    medians: list[dict[str, Any]],
    keys: tuple[str, str],
    legend: tuple[str, str],
    limit: tuple[float, str],
    *,
    log: bool = False,
) -> None:
    """Two bars per phase (coloured, grey) and the seed's limit as a dashed line."""
    positions = np.arange(len(medians))
    first = [m[keys[0]] for m in medians]
    second = [m[keys[1]] for m in medians]
    axis.bar(positions - 0.2, first, 0.4, color=PHASE_COLOURS, label=legend[0])
    axis.bar(positions + 0.2, second, 0.4, color="lightgrey", edgecolor="black", label=legend[1])
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        axis.text(index - 0.2, a, f"{a:,.1f}", ha="center", va="bottom", fontsize=7)
        axis.text(index + 0.2, b, f"{b:,.1f}", ha="center", va="bottom", fontsize=7)
    axis.axhline(limit[0], color="grey", linestyle="--", linewidth=1)
    axis.text(-0.55, limit[0], limit[1], ha="left", va="bottom", fontsize=8)
    top = max(*first, *second, limit[0])
    if log:
        axis.set_yscale("log")
        axis.set_ylim(top=top * 4)
    else:
        axis.set_ylim(top=top * 1.3)
    axis.legend(fontsize=8, loc="upper right", ncols=2)


def _memory_panel(axis: Any, memory: dict[str, Any]) -> None:
    kinds = list(memory)
    positions = np.arange(len(kinds))
    axis.bar(
        positions,
        [memory[k]["bytes_per_live_candle"] for k in kinds],
        color=["tab:red", "tab:purple", "tab:blue"],
        label="with its values",
    )
    axis.bar(
        positions,
        [memory[k]["object_bytes"] for k in kinds],
        color="none",
        edgecolor="black",
        hatch="//",
        label="the instance alone",
    )
    for index, kind in enumerate(kinds):
        value = memory[kind]["bytes_per_live_candle"]
        axis.text(index, value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    axis.set_xticks(positions, kinds, fontsize=8)
    axis.set_ylabel("bytes per live candle (tracemalloc)")
    axis.set_title("candle memory: as found, the seed's slots fix alone, svc", fontsize=10)
    axis.legend(fontsize=8, loc="lower right")


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (optional, heavy: only when a chart is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    phases = report["phases"]
    numbers = sorted(phases, key=int)
    labels = [f"{n}\n{phases[n]['name']}" for n in numbers]
    medians = [phases[n]["median"] for n in numbers]
    positions = np.arange(len(numbers))
    figure, ((cdf, ticks, throughput), (gcs, lag, memory)) = plt.subplots(2, 3, figsize=(16, 9))

    _cdf_panel(cdf, report)
    _pair_panel(
        ticks,
        medians,
        ("p99_us", "p50_us"),
        ("p99", "p50"),
        (TICK_LIMIT_US, "seed: < 1 ms"),
        log=True,
    )
    ticks.set_ylabel("µs (log)")
    ticks.set_title("tick latency p99 / p50", fontsize=10)
    _pair_panel(
        gcs,
        medians,
        ("gc_pause_p99_ms", "full_collection_ms"),
        ("observed pause p99", "one full collection"),
        (GC_PAUSE_LIMIT_MS, "seed: < 10 ms"),
    )
    worst = [m["gc_pause_max_ms"] for m in medians]
    seen = [(index - 0.2, value) for index, value in enumerate(worst) if value > 0]
    if seen:
        x, y = zip(*seen, strict=True)
        gcs.scatter(x, y, marker="v", color="black", zorder=3, label="observed max")
    for where, value in seen:
        gcs.text(where - 0.12, value, f"{value:,.0f}", ha="right", va="center", fontsize=7)
    gcs.set_yscale("symlog", linthresh=1.0)
    gcs.set_ylim(0, max(*worst, GC_PAUSE_LIMIT_MS) * 8)
    gcs.set_ylabel("ms (linear below 1, log above)")
    gcs.legend(fontsize=8, loc="upper right", ncols=3)
    gcs.set_title("GC pauses (gc.callbacks, both runs) and a full collection", fontsize=10)

    values = [m["messages_per_s"] for m in medians]
    throughput.bar(positions, values, 0.6, color=PHASE_COLOURS)
    for name, variant in report.get("variants", {}).items():
        # The variant's bar sits beside the phase it varies, hatched.
        value = variant["median"]["messages_per_s"]
        where = int(name.partition("-")[0]) + 0.47
        throughput.bar(where, value, 0.28, color="white", edgecolor="tab:blue", hatch="//")
        throughput.text(where, value, f"{value:,.0f}\n{variant['name'].partition(', ')[2]}",
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
    for index, value in enumerate(values):
        throughput.text(index, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    throughput.set_ylabel("decided messages/s, reader unpaced")
    throughput.set_title("throughput", fontsize=10)

    lag.bar(positions, [m["loop_lag_p99_ms"] for m in medians], color=PHASE_COLOURS)
    lag.set_ylabel("ms")
    lag.set_title("event-loop lag p99 (5 ms timer), paced run", fontsize=10)
    for axis in (ticks, gcs, throughput, lag):
        axis.set_xticks(positions, labels, fontsize=8)
    _memory_panel(memory, report["candle_memory"])

    figure.suptitle(
        f"the seed's roadmap, phases applied cumulatively — {summary_line(report['machine'])}",
        fontsize=10,
    )
    save_figure(figure, path, dpi=100)


def main(*, quick: bool = False, json_path: Path | None = None) -> int:
    plan = QUICK if quick else FULL
    report = run(plan)
    print(f"\nmachine: {summary_line(report['machine'])}; {report['machine']['loops']}")
    print(
        f"plan: {plan.repetitions} repetition(s) per phase, each in a fresh interpreter; tick "
        f"latency over {plan.paced_messages:,} frames at {plan.rate:g} msg/s, throughput over "
        f"{plan.throughput_messages:,} unpaced frames; {plan.live_candles:,} live candles\n"
    )
    print(table(report))
    print()
    for n, phase in report["phases"].items():
        print(f"phase {n} ({phase['name']}): " + "; ".join(phase["seed_steps"]))
    print()
    print(claims_text(report))
    print()
    for note in report["notes"]:
        print(f"note: {note}")
    json_out = json_path or RESULTS / f"{NAME}.json"
    chart = json_out.with_suffix(".png")
    write_json(report, json_out)
    write_chart(report, chart)
    print(f"\nwrote {json_out} and {chart} in {report['elapsed_s']:.0f} s")
    return 0
