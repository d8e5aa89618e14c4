"""What telemetry costs the in-process hot path: raw Binance frame -> decision, three ways.

The pipeline is svc's own: ``MarketFeed._on_message`` (stamp ``ts_init``, decode with
``FrameDecoder``, count, check invariants and kline gaps, publish) -> the data tier of a
real ``EventBus`` (one queue hop to the tier's consumer task) -> the strategy step of
``Service._on_market`` (``EmaCrossover`` and ``TradeFlowMomentum`` built by
``default_strategies``, one pair per symbol) -> decision (signals go to the signal tier).
The modes differ only in telemetry:

* ``off``    no ``StageRecorder``, no tracer; the strategy step is ``Service._on_market``
             with its telemetry lines removed (``StrategyStep`` below). The data tier still
             times ``queue_wait`` into its own histogram: svc's bus always does.
* ``svc``    svc's defaults, through the real objects: a ``Service`` provides
             ``_on_market``, its ``StageRecorder`` (parse, feed lag, publish, queue_wait,
             strategy, tick outcome), a ``TickTracer`` at ratio 0.01 (slow ticks above
             ``telemetry.slow_tick_ms`` forced) whose ticks ``Telemetry.start_tick_spans``
             turns into spans on its thread, a ``BatchSpanProcessor`` around an exporter that
             encodes every batch to OTLP protobuf and drops the bytes, ``GcPauses`` installed
             and drained, ``LoopLag`` running, and a Prometheus collection
             (``Telemetry.prometheus_text``, every bridged histogram and observable) once a
             second on a background thread, as the health server's ``/metrics`` would.
* ``naive``  what users usually add: an OpenTelemetry SDK span per stage
             (``start_as_current_span``: receive around ``_on_message``, parse around the
             decoder, publish around the put, strategy in the consumer) sampled by the
             default ``parentbased_traceidratio`` at 0.01, and an SDK ``histogram.record``
             per stage with a ``stage`` attribute (parse, feed lag, publish, strategy, tick),
             through ``MarketFeed``'s own timing points; the same span exporter, and an
             in-memory metric reader collected once a second on a background thread.

Frames are real Binance data from ``../shared/data/binance`` (``SVC_BINANCE_DATA``
overrides): 1000 BTCUSDT 1h klines (REST) rebuilt as closed ``btcusdt@kline_1h``
combined-stream frames and 500 LTCUSDT aggregated trades as ``ltcusdt@aggTrade`` frames,
interleaved two klines to one trade, cycled to N messages with every cycle shifted forward in
time (so the feed's gap and duplicate checks pass each kline and the EMA sees new candles; the
last cycle ends where the recording starts, so event times stay in the past and the feed
lag is years rather than milliseconds, which costs the histograms the same).
Frames are ``str``: svc's python-binance socket hands over the frame text.

Each message is fed like a socket read: stamp ``perf_counter_ns``, ``await`` the feed's
handler, yield to the loop once (``asyncio.sleep(0)``, the await of the socket read); a
last handler on the data tier stamps the decision. So exactly one message is in flight
(checked: the data tier's high-water mark is 1 and nothing is dropped), the latency is
receive -> decision of that message, and throughput is N over the wall time of the run.
Runs are interleaved (off, svc, naive, off, ...) on a fresh uvloop per run; the table
reports the median over repetitions.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import statistics
import sys
import threading
import time
import timeit
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import uvloop
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from bench.decode import data_dir, write_json
from bench.machine import describe, save_figure
from svc import __version__, names
from svc.app import Service
from svc.bus import BackpressureTier, EventBus
from svc.config import Config, default_strategies
from svc.feed import FeedSettings, MarketFeed
from svc.latency import BufferedHistogram
from svc.model import Candle, Event, Quote, Signal, Trade
from svc.otel import setup_telemetry
from svc.strategy import Strategy, build_strategies
from svc.tracing import TickTracer

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("off", "svc", "naive")
SAMPLING_RATIO = 0.01
SCRAPE_INTERVAL_S = 1.0
TARGET_THROUGHPUT = 0.85
TARGET_P99 = 1.3
TARGET = (
    f"svc defaults keep >= {TARGET_THROUGHPUT:.0%} of off throughput and p99 <= {TARGET_P99}x off"
)
PAIRED = (
    "median over repetitions of svc's value divided by off's from the same repetition (the two "
    "run back to back, in alternating order), so that the host's drift between repetitions "
    "cancels; the medians of each mode are reported beside it"
)

KLINES = Path("klines") / "api_v3_klines_BTCUSDT_1h_20200501_1000.json"
AGG_TRADES = Path("rest") / "fapi_v1_aggTrades_LTCUSDT_500.json"
KLINE_SYMBOL = "BTCUSDT"
TRADE_SYMBOL = "LTCUSDT"
INTERVAL = "1h"
STREAMS = [f"{KLINE_SYMBOL.lower()}@kline_{INTERVAL}", f"{TRADE_SYMBOL.lower()}@aggTrade"]
CONFIG = Config(symbols=(KLINE_SYMBOL, TRADE_SYMBOL), intervals=(INTERVAL,))
MAX_TRACES_PER_SECOND = CONFIG.telemetry.max_traces_per_second  # svc's default trace cap


@dataclass(frozen=True, slots=True)
class Plan:
    messages: int
    repetitions: int
    warmup_messages: int


QUICK = Plan(messages=30_000, repetitions=3, warmup_messages=3_000)
FULL = Plan(messages=200_000, repetitions=5, warmup_messages=10_000)

# ---------------------------------------------------------------- frames


def load_frames(data: Path, count: int) -> list[str]:
    """``count`` combined-stream frames: recorded klines and trades, cycled forward in time."""
    klines = json.loads((data / KLINES).read_bytes())
    trades = json.loads((data / AGG_TRADES).read_bytes())
    kline_span_ms = klines[-1][0] - klines[0][0] + (klines[1][0] - klines[0][0])
    trade_span_ms = trades[-1]["T"] - trades[0]["T"] + 1
    trade_ids = trades[-1]["a"] - trades[0]["a"] + 1
    encode = msgspec.json.encode
    frames: list[str] = []
    # Cycles move forward in time but end where the recording starts, so that every event
    # time stays in the past (the feed-lag histograms take no negative values).
    cycles = -(-count // (len(klines) + len(trades)))
    cycle = -cycles
    while len(frames) < count:
        kline_frames = _kline_frames(klines, shift_ms=cycle * kline_span_ms)
        trade_frames = _trade_frames(trades, cycle * trade_span_ms, cycle * trade_ids)
        for index, trade in enumerate(trade_frames):  # two klines, one trade
            frames += (encode(kline_frames[2 * index]).decode(),)
            frames += (encode(kline_frames[2 * index + 1]).decode(),)
            frames += (encode(trade).decode(),)
        cycle += 1
    return frames[:count]


def _kline_frames(rows: list[list[Any]], *, shift_ms: int) -> list[dict[str, Any]]:
    frames = []
    first_trade = 0
    for row in rows:
        open_time, close_time, trades = row[0] + shift_ms, row[6] + shift_ms, row[8]
        kline = {
            "t": open_time,
            "T": close_time,
            "s": KLINE_SYMBOL,
            "i": INTERVAL,
            "f": first_trade,
            "L": first_trade + trades - 1,
            "o": row[1],
            "c": row[4],
            "h": row[2],
            "l": row[3],
            "v": row[5],
            "n": trades,
            "x": True,
            "q": row[7],
            "V": row[9],
            "Q": row[10],
            "B": "0",
        }
        first_trade += trades
        data = {"e": "kline", "E": close_time + 1, "s": KLINE_SYMBOL, "k": kline}
        frames.append({"stream": STREAMS[0], "data": data})
    return frames


def _trade_frames(rows: list[dict[str, Any]], shift_ms: int, shift_id: int) -> list[dict[str, Any]]:
    frames = []
    for row in rows:
        data = {
            "e": "aggTrade",
            "E": row["T"] + shift_ms,
            "a": row["a"] + shift_id,
            "s": TRADE_SYMBOL,
            "p": row["p"],
            "q": row["q"],
            "f": row["f"] + shift_id,
            "l": row["l"] + shift_id,
            "T": row["T"] + shift_ms,
            "m": row["m"],
        }
        frames.append({"stream": STREAMS[1], "data": data})
    return frames


# ---------------------------------------------------------------- shared pieces


def strategies_by_symbol() -> dict[str, list[Strategy]]:
    """Like ``Service._start``: ``default_strategies`` built and grouped by symbol."""
    grouped: dict[str, list[Strategy]] = {}
    for strategy in build_strategies(default_strategies(CONFIG)):
        grouped.setdefault(str(strategy.state().get("symbol", "")), []).append(strategy)
    return grouped


class OfflineExchange:
    """The feed asks for klines only to backfill gaps; the frames have none."""

    async def klines(self, *_args: Any, **_kwargs: Any) -> list[Candle]:
        return []


def _no_socket(_streams: list[str]) -> Any:
    raise RuntimeError("the benchmark drives MarketFeed._on_message directly")


def market_feed(*, publish: Callable[[Any], None], recorder: Any, tracer: Any) -> MarketFeed:
    return MarketFeed(
        streams=STREAMS,
        open_socket=_no_socket,
        exchange=OfflineExchange(),  # type: ignore[arg-type]
        publish=publish,
        settings=FeedSettings(warmup_klines=0),
        recorder=recorder,
        tracer=tracer,
    )


class DiscardingOtlpExporter(SpanExporter):
    """Encodes each batch to OTLP protobuf, as the OTLP exporters do, then drops the bytes."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.bytes += len(encode_spans(spans).SerializePartialToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Poller:
    """Calls ``collect`` every ``interval`` seconds on a daemon thread and times each call."""

    def __init__(self, collect: Callable[[], object], *, interval: float, name: str) -> None:
        self._collect = collect
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.durations_ns: list[int] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        # Half an interval before the first collection, so a run of d seconds sees ~d of them.
        delay = self._interval / 2
        while not self._stop.wait(delay):
            started = time.perf_counter_ns()
            self._collect()
            self.durations_ns.append(time.perf_counter_ns() - started)
            delay = self._interval

    def statistics(self) -> dict[str, float]:
        durations = self.durations_ns or [0]
        return {
            "collections": len(self.durations_ns),
            "mean_ms": statistics.fmean(durations) / 1e6,
            "max_ms": max(durations) / 1e6,
        }


# ---------------------------------------------------------------- the strategy step


class StrategyStep:
    """``Service._on_market`` with every telemetry line removed: the ``off`` mode."""

    def __init__(self, *, strategies: dict[str, list[Strategy]], signal: BackpressureTier):
        self._strategies = strategies
        self._signal = signal
        self._last_price: dict[str, float] = {}
        self.signals = 0

    async def on_market(self, event: Event) -> None:
        symbol = getattr(event, "symbol", "")
        if isinstance(event, Trade):
            self._last_price[symbol] = event.price
        elif isinstance(event, Candle):
            self._last_price.setdefault(symbol, event.close)
        elif isinstance(event, Quote):
            self._last_price[symbol] = (event.bid_price + event.ask_price) * 0.5
        strategies = self._strategies.get(symbol)
        if not strategies or not isinstance(event, Candle | Trade | Quote):
            return
        decisions: list[Signal] | None = None  # as in _on_market: no list for no signal
        for strategy in strategies:
            decision = strategy.on_event(event)
            if decision is not None:
                if decisions is None:
                    decisions = []
                decisions.append(decision)
        if not decisions:
            return
        self.signals += len(decisions)
        for decision in decisions:
            await self._signal.put(decision)


def decide(strategies: list[Strategy], event: Candle | Trade | Quote) -> list[Signal] | None:
    """The decisions of ``strategies`` on ``event``, ``None`` for none (the loop of
    ``_on_market``; ``StrategyStep`` keeps it inline, as ``_on_market`` does)."""
    decisions: list[Signal] | None = None
    for strategy in strategies:
        decision = strategy.on_event(event)
        if decision is not None:
            if decisions is None:
                decisions = []
            decisions.append(decision)
    return decisions


class NaiveStrategyStep(StrategyStep):
    """The ``off`` step plus what users usually add: a span and SDK histogram records."""

    def __init__(
        self,
        *,
        strategies: dict[str, list[Strategy]],
        signal: BackpressureTier,
        span: Callable[[str], Any],
        stage: Any,
        tick: Any,
    ):
        super().__init__(strategies=strategies, signal=signal)
        self._span = span
        self._stage = stage
        self._tick = tick

    async def on_market(self, event: Event) -> None:
        symbol = getattr(event, "symbol", "")
        if isinstance(event, Trade):
            self._last_price[symbol] = event.price
        elif isinstance(event, Candle):
            self._last_price.setdefault(symbol, event.close)
        elif isinstance(event, Quote):
            self._last_price[symbol] = (event.bid_price + event.ask_price) * 0.5
        strategies = self._strategies.get(symbol)
        if not strategies or not isinstance(event, Candle | Trade | Quote):
            return
        with self._span("strategy"):
            started = time.perf_counter_ns()
            decisions = decide(strategies, event)
            decided = time.perf_counter_ns()
        self._stage.record((decided - started) / 1e9, {names.ATTR_STAGE: "strategy"})
        outcome = "signal" if decisions else "no_signal"
        self._tick.record((time.time_ns() - event.ts_init) / 1e9, {names.ATTR_OUTCOME: outcome})
        if not decisions:
            return
        self.signals += len(decisions)
        for decision in decisions:
            await self._signal.put(decision)


class SdkTiming:
    """Stands in for one ``BufferedHistogram`` of ``MarketFeed``'s recorder: an SDK record."""

    __slots__ = ("_attributes", "_record")

    def __init__(self, histogram: Any, attributes: dict[str, str]) -> None:
        self._record = histogram.record
        self._attributes = attributes

    def record(self, ns: int) -> None:
        self._record(ns / 1e9, self._attributes)


class SpannedDecoder:
    """The feed's decoder inside a ``parse`` span, the way the decode call is usually wrapped."""

    def __init__(self, decoder: Any, span: Callable[[str], Any]) -> None:
        self._decoder = decoder
        self._span = span

    def decode(self, raw: bytes | str, ts_init: int) -> Event:
        with self._span("parse"):
            return self._decoder.decode(raw, ts_init)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the three rigs


@dataclass(slots=True)
class Rig:
    bus: EventBus
    on_message: Callable[[str], Awaitable[None]]
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    close: Callable[[], dict[str, Any]] = dict


def off_rig() -> Rig:
    bus = EventBus()
    feed = market_feed(publish=bus.data.put_nowait, recorder=None, tracer=None)
    step = StrategyStep(strategies=strategies_by_symbol(), signal=bus.signal)
    bus.subscribe("data", step.on_market)
    return Rig(bus=bus, on_message=feed._on_message)


def svc_rig() -> Rig:
    service = Service(CONFIG, status=io.StringIO())
    service.tracer = TickTracer(
        ratio=SAMPLING_RATIO,
        slow_threshold_ns=int(CONFIG.telemetry.slow_tick_ms * 1_000_000),
        max_per_second=MAX_TRACES_PER_SECOND,
    )
    # environ={}: no OTLP endpoint from the caller's shell; spans go to `processor` below.
    telemetry = setup_telemetry(
        service_version=__version__, sources=service._histograms, environ={}
    )
    service.telemetry = telemetry
    service._register_observables()
    exporter = DiscardingOtlpExporter()
    processor = BatchSpanProcessor(exporter)
    tick_spans = telemetry.start_tick_spans(service.tracer, processor=processor)
    bus = EventBus()
    service.bus = bus
    service._strategies = strategies_by_symbol()
    feed = market_feed(
        publish=bus.data.put_nowait, recorder=service.recorder, tracer=service.tracer
    )
    service.feed = feed
    bus.subscribe("data", service._on_market)
    service.gc_pauses.install()
    scraper = Poller(telemetry.prometheus_text, interval=SCRAPE_INTERVAL_S, name="prometheus")
    scraper.start()

    def close() -> dict[str, Any]:
        scraper.stop()
        service.gc_pauses.uninstall()
        telemetry.shutdown(5.0)  # stops the tick-span thread after a last export
        processor.shutdown()  # flushes what the tick-span thread handed over
        return {
            "stages": service.recorder.summary(),
            "tracer": service.tracer.statistics(),
            "spans_emitted": tick_spans.emitted if tick_spans is not None else 0,
            "spans_exported": exporter.spans,
            "otlp_bytes": exporter.bytes,
            "collection": scraper.statistics(),
            "loop_lag_p99_us": service.loop_lag.histogram.percentile(99) / 1e3,
            "loop_lag_max_us": service.loop_lag.max_ns / 1e3,
            "gc": {
                str(g): {"count": h.count, "max_ms": h.max / 1e6}
                for g, h in service.gc_pauses.histograms.items()
            },
        }

    return Rig(
        bus=bus,
        on_message=feed._on_message,
        background=[service.gc_pauses.run, service.loop_lag.run, service.fold_histograms],
        close=close,
    )


def naive_rig() -> Rig:
    exporter = DiscardingOtlpExporter()
    processor = BatchSpanProcessor(exporter)
    tracer_provider = TracerProvider(
        sampler=ParentBasedTraceIdRatio(SAMPLING_RATIO), shutdown_on_exit=False
    )
    tracer_provider.add_span_processor(processor)
    span = tracer_provider.get_tracer("bench.naive").start_as_current_span
    reader = InMemoryMetricReader()
    buckets = ExplicitBucketHistogramAggregation(boundaries=names.LATENCY_BUCKETS_SECONDS)
    meter_provider = MeterProvider(
        metric_readers=[reader],
        views=[View(instrument_name="*", aggregation=buckets)],
        shutdown_on_exit=False,
    )
    meter = meter_provider.get_meter("bench.naive")
    stage = meter.create_histogram(names.STAGE_DURATION, unit="s")
    tick = meter.create_histogram(names.TICK_DURATION, unit="s")
    feed_lag = meter.create_histogram(names.FEED_LAG, unit="s")
    bus = EventBus()
    put = bus.data.put_nowait

    def publish(item: Any) -> None:
        with span("publish"):
            put(item)

    recorder = SimpleNamespace(
        parse=SdkTiming(stage, {names.ATTR_STAGE: "parse"}),
        publish=SdkTiming(stage, {names.ATTR_STAGE: "publish"}),
        stream_lag=lambda stream: SdkTiming(feed_lag, {names.ATTR_STREAM: stream}),
    )
    feed = market_feed(publish=publish, recorder=recorder, tracer=None)
    feed._decoder = SpannedDecoder(feed._decoder, span)  # type: ignore[assignment]
    step = NaiveStrategyStep(
        strategies=strategies_by_symbol(), signal=bus.signal, span=span, stage=stage, tick=tick
    )
    bus.subscribe("data", step.on_market)
    handle = feed._on_message

    async def on_message(frame: str) -> None:
        with span("receive"):
            await handle(frame)

    scraper = Poller(reader.get_metrics_data, interval=SCRAPE_INTERVAL_S, name="metrics")
    scraper.start()

    def close() -> dict[str, Any]:
        scraper.stop()
        tracer_provider.shutdown()  # flushes the batch processor
        meter_provider.shutdown()
        return {
            "spans_exported": exporter.spans,
            "otlp_bytes": exporter.bytes,
            "collection": scraper.statistics(),
        }

    return Rig(bus=bus, on_message=on_message, close=close)


RIGS: dict[str, Callable[[], Rig]] = {"off": off_rig, "svc": svc_rig, "naive": naive_rig}

# ---------------------------------------------------------------- measurement


@dataclass(slots=True)
class Run:
    mode: str
    repetition: int
    latencies_ns: np.ndarray
    elapsed_s: float
    extra: dict[str, Any]

    @property
    def messages_per_s(self) -> float:
        return len(self.latencies_ns) / self.elapsed_s

    def summary(self) -> dict[str, Any]:
        p50, p99, p999 = np.percentile(self.latencies_ns, [50, 99, 99.9]) / 1e3
        return {
            "mode": self.mode,
            "repetition": self.repetition,
            "messages": len(self.latencies_ns),
            "elapsed_s": self.elapsed_s,
            "messages_per_s": self.messages_per_s,
            "p50_us": float(p50),
            "p99_us": float(p99),
            "p999_us": float(p999),
            "max_us": float(self.latencies_ns.max()) / 1e3,
            "mean_us": float(self.latencies_ns.mean()) / 1e3,
            **self.extra,
        }


async def drive(rig: Rig, frames: list[str], progress: Callable[[], None]) -> tuple[array, int]:
    """Feed every frame like a socket read; returns receive->decision ns and total ns."""
    clock = time.perf_counter_ns
    latencies = array("q")
    record = latencies.append
    received = [0]  # one message in flight: its receive time

    async def decided(_item: object) -> None:
        record(clock() - received[0])

    rig.bus.subscribe("data", decided)  # after the strategy step: the decision is made
    bus = asyncio.create_task(rig.bus.run(), name="bus")
    background = [asyncio.create_task(run()) for run in rig.background]
    await asyncio.sleep(0)
    step = max(1, len(frames) // 20)
    chunks = [frames[i : i + step] for i in range(0, len(frames), step)]
    on_message = rig.on_message
    sleep = asyncio.sleep
    started = clock()
    for chunk in chunks:
        for frame in chunk:
            received[0] = clock()
            await on_message(frame)
            await sleep(0)  # where the socket read would yield
        progress()
    drained = await rig.bus.drain(10.0)
    elapsed = clock() - started
    rig.bus.close()
    for task in background:
        task.cancel()
    await asyncio.gather(bus, *background, return_exceptions=True)
    data = rig.bus.data.statistics()
    if not drained or data.dropped or data.high_water > 1 or len(latencies) != len(frames):
        raise SystemExit(
            f"the pipeline lost track of messages: {len(latencies)} decisions for "
            f"{len(frames)} frames, data tier {data}"
        )
    return latencies, elapsed


def run_once(mode: str, repetition: int, frames: list[str], *, label: str) -> Run:
    gc.collect()
    rig = RIGS[mode]()
    sys.stderr.write(f"  {label:<10}{mode:<6} ")
    sys.stderr.flush()

    def progress() -> None:
        sys.stderr.write(".")
        sys.stderr.flush()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        latencies, elapsed_ns = runner.run(drive(rig, frames, progress))
    extra = rig.close()
    run = Run(
        mode=mode,
        repetition=repetition,
        latencies_ns=np.frombuffer(latencies, dtype=np.int64),
        elapsed_s=elapsed_ns / 1e9,
        extra=extra,
    )
    s = run.summary()
    sys.stderr.write(
        f" {s['messages_per_s']:>9,.0f} msg/s  p50 {s['p50_us']:7.1f}  p99 {s['p99_us']:7.1f}  "
        f"p99.9 {s['p999_us']:8.1f} µs  ({s['elapsed_s']:.1f} s)\n"
    )
    sys.stderr.flush()
    return run


def per_call_costs() -> dict[str, float]:
    """Microseconds per call of the per-stage primitives each mode uses (best of 5)."""
    histogram = BufferedHistogram()  # a record is its list's bound append
    tracer = TickTracer(ratio=SAMPLING_RATIO)
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(SAMPLING_RATIO))
    span = provider.get_tracer("bench").start_as_current_span
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    sdk_histogram = meter.create_histogram("bench.duration", unit="s")
    attributes = {names.ATTR_STAGE: "parse"}

    def empty() -> None:
        pass

    def one_span() -> None:
        with span("parse"):
            pass

    calls: dict[str, Callable[[], object]] = {
        "time.perf_counter_ns()": time.perf_counter_ns,
        "BufferedHistogram.record (svc)": lambda: histogram.record(12_345),
        "TickTracer.start, ratio 0.01 (svc)": lambda: tracer.start(1, 2),
        "SDK histogram.record, 1 attribute": lambda: sdk_histogram.record(1.2e-5, attributes),
        "SDK start_as_current_span, ratio 0.01": one_span,
    }
    number = 20_000
    floor = min(timeit.repeat(empty, number=number, repeat=5)) / number
    costs = {
        name: (min(timeit.repeat(call, number=number, repeat=5)) / number - floor) * 1e6
        for name, call in calls.items()
    }
    provider.shutdown()
    return costs


def run(plan: Plan) -> tuple[dict[str, Any], dict[str, list[Run]]]:
    frames = load_frames(data_dir(), plan.messages)
    warmup = frames[: plan.warmup_messages]
    sys.stderr.write(f"warm-up: {len(warmup)} messages per mode\n")
    for mode in MODES:
        run_once(mode, 0, warmup, label="warm-up")
    sys.stderr.write(
        f"measuring: {plan.repetitions} x {len(frames)} messages per mode, interleaved\n"
    )
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    for repetition in range(1, plan.repetitions + 1):
        # off and svc side by side, in alternating order, so drift of the host's speed within a
        # repetition favours neither; their ratio per repetition is the paired ratio.
        order = MODES if repetition % 2 else ("svc", "off", *MODES[2:])
        for mode in order:
            label = f"rep {repetition}/{plan.repetitions}"
            runs[mode].append(run_once(mode, repetition, frames, label=label))
    sys.stderr.write("per-call costs of the primitives...\n")
    report = {
        "benchmark": "pipeline",
        "unit": "receive -> decision, microseconds per message; messages per second",
        "plan": {
            "messages": plan.messages,
            "repetitions": plan.repetitions,
            "warmup_messages": plan.warmup_messages,
            "sampling_ratio": SAMPLING_RATIO,
            "scrape_interval_s": SCRAPE_INTERVAL_S,
            "frames": "BTCUSDT 1h klines and LTCUSDT aggTrades, 2:1, cycled forward in time",
        },
        "machine": describe("msgspec", "orjson", "uvloop", "opentelemetry-sdk"),
        **summarize(runs),
        "per_call_us": per_call_costs(),
        "cdf": {mode: cdf_points(runs[mode]) for mode in MODES},
    }
    return report, runs


def summarize(runs: dict[str, list[Run]]) -> dict[str, Any]:
    keys = ("messages_per_s", "p50_us", "p99_us", "p999_us", "max_us", "mean_us")
    modes = {}
    for mode, mine in runs.items():
        summaries = [r.summary() for r in mine]
        modes[mode] = {
            "median": {key: statistics.median(s[key] for s in summaries) for key in keys},
            "repetitions": summaries,
        }
    off = modes["off"]["median"]
    ratios = {
        mode: {
            "throughput": modes[mode]["median"]["messages_per_s"] / off["messages_per_s"],
            "p50": modes[mode]["median"]["p50_us"] / off["p50_us"],
            "p99": modes[mode]["median"]["p99_us"] / off["p99_us"],
            "p999": modes[mode]["median"]["p999_us"] / off["p999_us"],
        }
        for mode in MODES
        if mode != "off"
    }
    paired = {mode: paired_ratios(runs[mode], runs["off"]) for mode in MODES if mode != "off"}
    svc = paired["svc"]
    throughput, p99 = svc["throughput"]["median"], svc["p99"]["median"]
    return {
        "modes": modes,
        "ratios_vs_off": ratios,
        "paired_ratios_vs_off": paired,
        "target": {
            "description": TARGET,
            "method": PAIRED,
            "throughput_ratio": throughput,
            "p99_ratio": p99,
            "met": throughput >= TARGET_THROUGHPUT and p99 <= TARGET_P99,
        },
    }


def paired_ratios(mine: list[Run], off: list[Run]) -> dict[str, dict[str, float]]:
    """Per repetition, this mode's value over off's measured beside it; median, min, max."""
    keys = {"throughput": "messages_per_s", "p50": "p50_us", "p99": "p99_us", "p999": "p999_us"}
    result = {}
    for name, key in keys.items():
        values = [a.summary()[key] / b.summary()[key] for a, b in zip(mine, off, strict=True)]
        result[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
    return result


def cdf_points(runs: list[Run]) -> dict[str, list[float]]:
    """All repetitions pooled, as quantiles dense enough to draw the tail."""
    pooled = np.concatenate([r.latencies_ns for r in runs])
    body = np.linspace(0.0, 0.99, 200, endpoint=False)
    tail = 1.0 - np.logspace(-2, -5, 150)
    quantiles = np.concatenate([body, tail, [1.0]])
    values = np.quantile(pooled, quantiles) / 1e3
    return {"quantile": quantiles.tolist(), "latency_us": values.tolist()}


# ---------------------------------------------------------------- output


def table(report: dict[str, Any]) -> str:
    header = (
        f"{'mode':<7}{'msgs/s':>10}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>10}"
        f"{'tput/off':>10}{'p99/off':>9}"
    )
    lines = [header, "-" * len(header)]
    for mode in MODES:
        m = report["modes"][mode]["median"]
        ratio = report["ratios_vs_off"].get(mode)
        tput = f"{ratio['throughput']:.3f}" if ratio else "1"
        p99 = f"{ratio['p99']:.2f}" if ratio else "1"
        lines.append(
            f"{mode:<7}{m['messages_per_s']:>10,.0f}{m['p50_us']:>9.1f}{m['p99_us']:>9.1f}"
            f"{m['p999_us']:>9.1f}{m['max_us']:>10.0f}{tput:>10}{p99:>9}"
        )
    return "\n".join(lines)


def svc_details(report: dict[str, Any]) -> str:
    """What svc's own StageRecorder saw, and what its background work cost (median rep)."""
    reps = report["modes"]["svc"]["repetitions"]
    middle = sorted(reps, key=lambda r: r["messages_per_s"])[len(reps) // 2]
    lines = [f"svc's own histograms (repetition {middle['repetition']}), µs:"]
    lines.append(f"  {'stage':<18}{'count':>9}{'p50':>8}{'p99':>8}{'p99.9':>8}")
    for stage, s in middle["stages"].items():
        if s["count"]:
            lines.append(
                f"  {stage:<18}{s['count']:>9}{s['p50_us']:>8.1f}{s['p99_us']:>8.1f}"
                f"{s['p999_us']:>8.1f}"
            )
    tracer, collection = middle["tracer"], middle["collection"]
    lines.append(
        f"  ticks sampled {tracer['sampled']}, forced (slow) {tracer['forced']}, dropped "
        f"{tracer['dropped']}; spans emitted {middle['spans_emitted']}, exported "
        f"{middle['spans_exported']} ({middle['otlp_bytes'] / 1e3:.0f} kB OTLP)"
    )
    lines.append(
        f"  Prometheus collections {collection['collections']}: mean "
        f"{collection['mean_ms']:.1f} ms, max {collection['max_ms']:.1f} ms (background thread)"
    )
    gcs = ", ".join(
        f"gen{g} {v['count']} (max {v['max_ms']:.2f} ms)" for g, v in middle["gc"].items()
    )
    lines.append(
        f"  loop lag p99 {middle['loop_lag_p99_us']:.0f} µs, "
        f"max {middle['loop_lag_max_us']:.0f} µs; GC pauses {gcs}"
    )
    naive = report["modes"]["naive"]["repetitions"][0]["collection"]
    lines.append(
        f"naive: SDK metric collections {naive['collections']}: mean {naive['mean_ms']:.1f} ms"
    )
    return "\n".join(lines)


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (optional, heavy: only when a chart is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (cdf, bars) = plt.subplots(
        1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [2.2, 1]}
    )
    colours = {"off": "tab:grey", "svc": "tab:blue", "naive": "tab:red"}
    for mode in MODES:
        points = report["cdf"][mode]
        median = report["modes"][mode]["median"]
        cdf.plot(
            points["latency_us"],
            points["quantile"],
            color=colours[mode],
            label=f"{mode}: p50 {median['p50_us']:.1f}, p99 {median['p99_us']:.1f} µs",
        )
    cdf.set_xscale("log")
    cdf.set_yscale("logit", nonpositive="clip")
    cdf.set_ylim(0.01, 0.99999)
    cdf.set_yticks([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999])
    cdf.set_yticklabels(["1%", "10%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    cdf.set_xlabel("receive -> decision, µs (log)")
    cdf.set_ylabel("fraction of messages (all repetitions)")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(loc="lower right", fontsize=9)
    cdf.set_title("latency CDF per telemetry mode", fontsize=10)

    medians = [report["modes"][m]["median"]["messages_per_s"] for m in MODES]
    spreads = [[r["messages_per_s"] for r in report["modes"][m]["repetitions"]] for m in MODES]
    low = [m - min(s) for m, s in zip(medians, spreads, strict=True)]
    high = [max(s) - m for m, s in zip(medians, spreads, strict=True)]
    bars.bar(MODES, medians, yerr=[low, high], capsize=4, color=[colours[m] for m in MODES])
    off = medians[0]
    bars.axhline(off * TARGET_THROUGHPUT, color="grey", linestyle="--", linewidth=1)
    bars.text(
        2.45,
        off * TARGET_THROUGHPUT,
        f"{TARGET_THROUGHPUT:.0%} of off",
        ha="right",
        va="bottom",
        fontsize=8,
    )
    for index, (value, spread) in enumerate(zip(medians, spreads, strict=True)):
        bars.text(
            index,
            max(spread),
            f"{value:,.0f}\n{value / off:.2f}x",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    bars.set_ylim(top=max(max(s) for s in spreads) * 1.12)
    bars.set_ylabel("messages/s (median of repetitions, bar to min/max)")
    bars.set_title("throughput", fontsize=10)
    info = report["machine"]
    figure.suptitle(
        f"pipeline: raw Binance frame -> decision, {report['plan']['messages']:,} msgs x "
        f"{report['plan']['repetitions']} — {info['cpu']}, {info['cores']} cores, "
        f"Python {info['python']}",
        fontsize=10,
    )
    save_figure(figure, path)


def main(*, quick: bool = False, json_path: Path | None = None) -> int:
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    report, _runs = run(plan)
    info = report["machine"]
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"uvloop {info['uvloop']}, opentelemetry-sdk {info['opentelemetry-sdk']}"
    )
    print(
        f"plan: {plan.messages:,} messages x {plan.repetitions} repetitions per mode, "
        f"interleaved; median of repetitions; latency receive -> decision in µs\n"
    )
    print(table(report))
    ratios = report["ratios_vs_off"]
    for mode in ("svc", "naive"):
        r = ratios[mode]
        print(
            f"{mode}/off: throughput {r['throughput']:.3f}x, p50 {r['p50']:.2f}x, "
            f"p99 {r['p99']:.2f}x, p99.9 {r['p999']:.2f}x"
        )
    print()
    print(svc_details(report))
    print("\nper call (best of 5, µs):")
    for name, cost in report["per_call_us"].items():
        print(f"  {name:<40}{cost:>8.3f}")
    print("\npaired ratios (svc's value over off's in the same repetition):")
    for name, paired in report["paired_ratios_vs_off"]["svc"].items():
        print(
            f"  {name:<11} median {paired['median']:.3f}x  "
            f"(range {paired['min']:.3f}x .. {paired['max']:.3f}x)"
        )
    target = report["target"]
    verdict = "MET" if target["met"] else "NOT MET"
    print(
        f"\ntarget {target['description']}: {verdict} (paired medians: throughput "
        f"{target['throughput_ratio']:.1%} of off, p99 {target['p99_ratio']:.2f}x off)"
    )
    json_out = json_path or RESULTS / "pipeline.json"
    write_json(report, json_out)
    plot = json_out.with_suffix(".png")  # beside the JSON, like every benchmark
    write_chart(report, plot)
    print(f"wrote {json_out} and {plot} in {time.perf_counter() - started:.1f} s")
    return 0
