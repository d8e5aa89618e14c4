"""Per-frame decode cost of real Binance websocket frames.

Contenders, each turning one raw combined-stream frame (bytes) into one object:

* ``svc``            ``svc.binance.FrameDecoder.decode``: validated, typed, one pass in C;
* ``orjson+dataclass`` ``orjson.loads`` then a plain ``@dataclass`` built by hand
  (prices ``float()``, order quantities ``Decimal()``, like svc's events), no validation;
* ``json+dataclass``  the same with the standard library's ``json.loads``;
* ``msgspec-untyped`` ``msgspec.json.decode`` to dicts only: parsing, no objects, a floor.

Frames come from the recorded captures in ``../shared/data/binance`` (override with
``SVC_BINANCE_DATA``). Each measurement is a batch of ``frames_per_batch`` decodes of one
frame timed with ``time.perf_counter_ns``; the table reports the best, median and p99 batch
in microseconds per frame. Absolute numbers depend on the machine, which is printed too.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import orjson

from bench.machine import describe, save_figure
from svc.binance.streams import FrameDecoder
from svc.model import UnknownEvent

DATA_ENV_VAR = "SVC_BINANCE_DATA"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binance"
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_US = 2.0
"""The goal: svc decodes a kline frame in at most this many microseconds (median batch)."""

# ---------------------------------------------------------------- frames


def data_dir() -> Path:
    override = os.environ.get(DATA_ENV_VAR)
    path = Path(override) if override else DEFAULT_DATA
    if not path.is_dir():
        raise SystemExit(f"recorded Binance data not found at {path}; set {DATA_ENV_VAR}")
    return path


def load_frames(data: Path) -> dict[str, bytes]:
    """One real combined-stream frame per event type, as bytes off the socket."""
    unicorn = [
        json.loads(line)["raw"]
        for line in (data / "ws" / "unittest_unicorn_fy.messages.jsonl").read_text().splitlines()
    ]
    gocryptotrader = (data / "ws" / "wsHandleData.json").read_text().splitlines()
    frames = {
        "kline": unicorn[7],  # spot btcusdt@kline_1m, 2020
        "aggTrade": unicorn[2],  # spot btcusdt@aggTrade
        "trade": unicorn[3],  # spot btcusdt@trade
        "bookTicker": unicorn[13],  # USD-M galausdt@bookTicker
        "depthUpdate": unicorn[26],  # USD-M btcusdt@depth
        "executionReport": gocryptotrader[6],  # spot user-data stream, 2021
    }
    for kind, frame in frames.items():
        if json.loads(frame)["data"]["e"] != kind:
            raise SystemExit(f"the recorded {kind} frame moved; fix load_frames")
    return {kind: frame.encode() for kind, frame in frames.items()}


# ---------------------------------------------------------------- the naive baseline


@dataclass
class NaiveCandle:
    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool
    ts_event: int


@dataclass
class NaiveTrade:
    symbol: str
    trade_id: int
    price: float
    quantity: float
    buyer_is_maker: bool
    ts_event: int


@dataclass
class NaiveQuote:
    symbol: str
    bid_price: float
    bid_size: float
    ask_price: float
    ask_size: float
    ts_event: int


@dataclass
class NaiveDelta:
    symbol: str
    first_update_id: int
    final_update_id: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    ts_event: int


@dataclass
class NaiveOrder:
    symbol: str
    client_order_id: str
    order_id: int
    side: str
    quantity: Decimal
    price: Decimal
    status: str
    filled_quantity: Decimal
    ts_event: int


def naive_event(d: dict[str, Any]) -> object:
    """Build the event by hand from parsed dicts, the way a first version would."""
    e = d["e"]
    if e == "kline":
        k = d["k"]
        return NaiveCandle(
            d["s"],
            k["i"],
            k["t"],
            k["T"],
            float(k["o"]),
            float(k["h"]),
            float(k["l"]),
            float(k["c"]),
            float(k["v"]),
            k["x"],
            d["E"] * 1_000_000,
        )
    if e in ("aggTrade", "trade"):
        trade_id = d["a"] if e == "aggTrade" else d["t"]
        return NaiveTrade(
            d["s"], trade_id, float(d["p"]), float(d["q"]), d["m"], d["E"] * 1_000_000
        )
    if e == "bookTicker":
        return NaiveQuote(
            d["s"],
            float(d["b"]),
            float(d["B"]),
            float(d["a"]),
            float(d["A"]),
            d.get("E", 0) * 1_000_000,
        )
    if e == "depthUpdate":
        return NaiveDelta(
            d["s"],
            d["U"],
            d["u"],
            [(float(p), float(q)) for p, q in d["b"]],
            [(float(p), float(q)) for p, q in d["a"]],
            d["E"] * 1_000_000,
        )
    if e == "executionReport":
        return NaiveOrder(
            d["s"],
            d["C"] or d["c"],
            d["i"],
            d["S"],
            Decimal(d["q"]),
            Decimal(d["p"]),
            d["X"],
            Decimal(d["z"]),
            d["E"] * 1_000_000,
        )
    raise ValueError(e)


# ---------------------------------------------------------------- contenders

Decode = Callable[[bytes], object]


def contenders() -> dict[str, Decode]:
    decoder = FrameDecoder()
    orjson_loads = orjson.loads
    json_loads = json.loads
    msgspec_decode = msgspec.json.decode

    def svc(raw: bytes) -> object:
        return decoder.decode(raw, 0)

    def orjson_dataclass(raw: bytes) -> object:
        return naive_event(orjson_loads(raw)["data"])

    def json_dataclass(raw: bytes) -> object:
        return naive_event(json_loads(raw)["data"])

    def msgspec_untyped(raw: bytes) -> object:
        return msgspec_decode(raw)

    return {
        "svc": svc,
        "orjson+dataclass": orjson_dataclass,
        "json+dataclass": json_dataclass,
        "msgspec-untyped": msgspec_untyped,
    }


# ---------------------------------------------------------------- measurement


@dataclass(frozen=True, slots=True)
class Plan:
    frames_per_batch: int
    batches: int
    warmup_batches: int


QUICK = Plan(frames_per_batch=200, batches=60, warmup_batches=5)
FULL = Plan(frames_per_batch=1000, batches=300, warmup_batches=20)


def per_frame_us(decode: Decode, raw: bytes, plan: Plan) -> list[float]:
    """Per-batch cost in microseconds per frame, one value per timed batch."""
    frames = [raw] * plan.frames_per_batch  # distinct list slots, as frames arrive one by one
    clock = time.perf_counter_ns
    results = []
    for batch in range(plan.warmup_batches + plan.batches):
        start = clock()
        for frame in frames:
            decode(frame)
        elapsed = clock() - start
        if batch >= plan.warmup_batches:
            results.append(elapsed / plan.frames_per_batch / 1000)
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


def machine() -> dict[str, Any]:
    return describe("msgspec", "orjson")


def check(frames: dict[str, bytes], decoders: dict[str, Decode]) -> None:
    """Every contender decodes every frame; svc yields a real event, not UnknownEvent."""
    for kind, raw in frames.items():
        for name, decode in decoders.items():
            result = decode(raw)
            if name == "svc" and isinstance(result, UnknownEvent):
                raise SystemExit(f"svc did not recognise the {kind} frame")


def run(plan: Plan) -> dict[str, Any]:
    frames = load_frames(data_dir())
    decoders = contenders()
    check(frames, decoders)
    rows = []
    for kind, raw in frames.items():
        for name, decode in decoders.items():
            gc.collect()
            samples = per_frame_us(decode, raw, plan)
            rows.append(
                {
                    "frame": kind,
                    "decoder": name,
                    "bytes": len(raw),
                    "best_us": min(samples),
                    "median_us": statistics.median(samples),
                    "p99_us": percentile(samples, 0.99),
                }
            )
    svc_kline = next(r for r in rows if r["frame"] == "kline" and r["decoder"] == "svc")
    return {
        "benchmark": "decode",
        "unit": "microseconds per frame (per-batch)",
        "plan": {
            "frames_per_batch": plan.frames_per_batch,
            "batches": plan.batches,
            "warmup_batches": plan.warmup_batches,
        },
        "machine": machine(),
        "target": {
            "description": f"svc kline decode <= {TARGET_US} us per frame (median batch)",
            "limit_us": TARGET_US,
            "measured_us": svc_kline["median_us"],
            "met": svc_kline["median_us"] <= TARGET_US,
        },
        "results": rows,
    }


# ---------------------------------------------------------------- output


def table(report: dict[str, Any]) -> str:
    header = f"{'frame':<16}{'bytes':>6}  {'decoder':<18}{'best':>8}{'median':>9}{'p99':>9}"
    lines = [header, "-" * len(header)]
    previous = None
    for row in report["results"]:
        frame = row["frame"] if row["frame"] != previous else ""
        size = str(row["bytes"]) if frame else ""
        previous = row["frame"]
        lines.append(
            f"{frame:<16}{size:>6}  {row['decoder']:<18}"
            f"{row['best_us']:>8.2f}{row['median_us']:>9.2f}{row['p99_us']:>9.2f}"
        )
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    temporary.replace(path)


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (optional, heavy: only when a chart is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = report["results"]
    frames = list(dict.fromkeys(r["frame"] for r in rows))
    decoders = list(dict.fromkeys(r["decoder"] for r in rows))
    width = 0.8 / len(decoders)
    figure, axes = plt.subplots(figsize=(11, 5))
    for offset, name in enumerate(decoders):
        mine = {r["frame"]: r for r in rows if r["decoder"] == name}
        medians = [mine[f]["median_us"] for f in frames]
        spread = [mine[f]["p99_us"] - mine[f]["median_us"] for f in frames]
        positions = [i + (offset - (len(decoders) - 1) / 2) * width for i in range(len(frames))]
        axes.bar(positions, medians, width, yerr=[[0] * len(frames), spread], label=name, capsize=2)
    axes.axhline(TARGET_US, color="grey", linestyle="--", linewidth=1, label="svc kline target")
    axes.set_xticks(range(len(frames)), frames)
    axes.set_ylabel("µs per frame (median batch, bar to p99)")
    info = report["machine"]
    axes.set_title(f"Binance frame decode — {info['cpu']}, Python {info['python']}", fontsize=10)
    axes.legend()
    save_figure(figure, path)


def main(*, quick: bool = False, json_path: Path | None = None) -> int:
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    report = run(plan)
    info = report["machine"]
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print(
        f"plan: {plan.batches} batches of {plan.frames_per_batch} frames "
        f"(+{plan.warmup_batches} warm-up), µs per frame\n"
    )
    print(table(report))
    target = report["target"]
    verdict = "MET" if target["met"] else "NOT MET"
    print(f"\ntarget {target['description']}: {verdict} ({target['measured_us']:.2f} us)")
    json_out = json_path or RESULTS / "decode.json"
    write_json(report, json_out)
    plot = json_out.with_suffix(".png")  # beside the JSON, like every benchmark
    write_chart(report, plot)
    print(f"wrote {json_out} and {plot} in {time.perf_counter() - started:.1f} s")
    return 0
