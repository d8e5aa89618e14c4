"""The composition root of ``svc run``: builds every component, wires the hot path, runs it.

::

    feed (receive, parse) -> bus.data -> strategies -> bus.signal -> risk, build order
        -> bus.order -> submit (REST) -> ack -> order manager <- user-data feed (fills)
    every stage -> StageRecorder; every intent, command, response and fill -> audit journal

Only this module knows all the parts. It owns the run's lifecycle: start-up (embedded
simulator, exchange connection, symbol rules, audit journal, reconciliation of open orders),
the supervised tasks (one TaskGroup), the status line, the stop (duration, SIGTERM/SIGINT,
or a fatal error), and the final summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import msgspec
from opentelemetry.metrics import CallbackOptions, Observation

from svc import __version__, names
from svc.audit import AuditJournal
from svc.binance_client import BinanceClient
from svc.bus import EventBus
from svc.config import Config, Credentials, default_strategies, load_credentials
from svc.errors import ConfigError, ExchangeError, ExchangeUnavailable, FilterViolation
from svc.feed import FeedSettings, MarketFeed, UserDataFeed
from svc.health import HealthServer
from svc.latency import LatencyHistogram, StageRecorder
from svc.model import Candle, Event, NewOrder, OrderUpdate, Quote, Signal, SymbolRules, Trade
from svc.orders import OrderManager, OrderState, TrackedOrder
from svc.otel import BridgedHistogram, recorder_sources, setup_telemetry
from svc.recovery import JournalState, read_journal, reconcile
from svc.risk import RiskEngine, RiskLimits
from svc.runtime import GcPauses, LoopLag, freeze_after_warmup
from svc.sharding import shard_of, shard_symbols
from svc.shutdown import ShutdownPath, StepFailed
from svc.strategy import Strategy, build_strategies
from svc.tracing import CURRENT_TRACE, TickTrace, TickTracer, Traced, ratio_from_environment

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_SHUTDOWN_INCOMPLETE = 4
EXIT_INTERNAL = 70

_SHUTDOWN_CAPS = {
    "stop_new_orders": 5.0,
    "cancel_open_orders": 10.0,
    "flatten_positions": 10.0,
    "drain_order_tier": 3.0,
    "flush_audit": 5.0,
    "close_exchange": 3.0,
    "stop_health": 2.0,
    "flush_telemetry": 5.0,
    "stop_tasks": 5.0,
}
"""Each shutdown step's own cap (seconds); the whole path is bounded by the budget."""
_CLOSING_SHARE = 0.25
"""The share of the shutdown budget the trading steps (stop, cancel, flatten, drain) leave
for flushing the audit journal and telemetry, however long the exchange takes."""
_perf_counter_ns = time.perf_counter_ns  # the per-message path: one global load, not two
_time_ns = time.time_ns


@dataclass(slots=True)
class RunResult:
    exit_code: int
    exit_reason: str
    summary: dict[str, Any] = field(default_factory=dict)


def market_streams(config: Config) -> list[str]:
    streams = []
    for symbol in config.symbols:
        lower = symbol.lower()
        streams += [f"{lower}@kline_{interval}" for interval in config.intervals]
        streams += [f"{lower}@aggTrade", f"{lower}@bookTicker"]
    return streams


class Service:
    """One run of the trading pipeline (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        *,
        status: TextIO = sys.stderr,
        span_processor: Any = None,
        log_dropped: Callable[[], int] | None = None,
    ) -> None:
        self.shard = shard_of(
            shard_index=config.shard_index, shard_count=config.shard_count, environ=os.environ
        )
        if config.shard_count > 1:
            config = msgspec.structs.replace(
                config,
                symbols=shard_symbols(
                    config.symbols, shard_index=self.shard, shard_count=config.shard_count
                ),
                shard_index=self.shard,
            )
        self.config = config
        self._status_out = status
        self._span_processor = span_processor
        self._log_dropped = log_dropped
        self.recorder = StageRecorder()
        # The bound appends _on_market calls for every message (the recorder is never replaced).
        self._record_strategy = self.recorder.strategy.record
        self._record_no_signal = self.recorder.tick_no_signal.record
        self._roundtrips: dict[tuple[str, str], LatencyHistogram] = {}
        """``svc.order.roundtrip`` by (order type, outcome): submit to the exchange's answer."""
        self.gc_pauses = GcPauses()
        self.loop_lag = LoopLag(interval=config.telemetry.loop_lag_interval)
        self.health: HealthServer | None = None
        self._reconciled = False
        self.reconcile_failures = 0
        self._accepting = True
        """False from the first shutdown step: signals and queued orders are not sent."""
        self._discarded_orders = 0
        self._shutdown_path: ShutdownPath | None = None
        self._shutdown_durations = {
            outcome: LatencyHistogram() for outcome in ("complete", "incomplete")
        }
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.tracer = TickTracer(
            ratio=ratio_from_environment(os.environ),
            slow_threshold_ns=int(config.telemetry.slow_tick_ms * 1_000_000),
            max_per_second=config.telemetry.max_traces_per_second,
        )
        self._strategies: dict[str, list[Strategy]] = {}
        self._last_price: dict[str, float] = {}
        self._signals = 0
        self._risk_rejects: Counter[str] = Counter()
        self._filter_rejects: Counter[str] = Counter()
        self._fills = 0
        self._reported: dict[str, Decimal] = {}
        self._base_asset: dict[str, str] = {}
        self._stop = asyncio.Event()
        self._stop_reason = "duration"
        self._shut_down = False
        self._started = 0.0
        self.sim: Any = None
        self.telemetry: Any = None
        self.sim_closed_klines: list[int] = []
        """Open times (ms) of the first symbol's 1m klines the embedded simulator closed."""
        self.client: BinanceClient | None = None
        self.audit: AuditJournal | None = None
        self.orders: OrderManager | None = None
        self.feed: MarketFeed | None = None
        self.user_feed: UserDataFeed | None = None
        self.bus: EventBus | None = None
        self.risk: RiskEngine | None = None

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> RunResult:
        self._started = time.monotonic()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        fatal = False
        try:
            await self._start()
            await self._serve()
            code, reason = EXIT_OK, self._stop_reason
        except ConfigError:
            await self._shutdown(fatal=False)
            raise
        except ExchangeUnavailable as error:
            log.error("exchange unreachable: %s", error)
            code, reason = EXIT_UNREACHABLE, f"exchange unreachable: {error}"
        except ExchangeError as error:
            log.error("exchange error at start-up: %s", error)
            code, reason = EXIT_UNREACHABLE, f"exchange error: {error}"
        except Exception as error:
            log.exception("fatal internal error")
            code, reason = EXIT_INTERNAL, f"fatal error: {type(error).__name__}: {error}"
            fatal = True
        try:
            await self._shutdown(fatal=fatal)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)
        path = self._shutdown_path
        if path is not None and not path.complete and code == EXIT_OK:
            code = EXIT_SHUTDOWN_INCOMPLETE
            reason = f"{reason}; shutdown incomplete"
        summary = self.summary(reason)
        self._print_summary(summary)
        if self.config.summary_json:
            text = msgspec.json.format(msgspec.json.encode(summary), indent=2).decode() + "\n"
            await asyncio.to_thread(Path(self.config.summary_json).write_text, text)
        return RunResult(code, reason, summary)

    async def _start(self) -> None:
        config = self.config
        self.telemetry = setup_telemetry(service_version=__version__, sources=self._histograms)
        self._register_observables()
        self.telemetry.start_tick_spans(self.tracer, processor=self._span_processor)
        self.gc_pauses.install()
        if config.telemetry.health_port >= 0:
            self.health = HealthServer(
                host=config.telemetry.health_host,
                port=config.telemetry.health_port,
                live=lambda: not self._stop.is_set(),
                ready=self.readiness,
                metrics=self._metrics_text,
            )
            await self.health.start()
            log.info(
                "health endpoints on http://%s:%d/{livez,readyz,metrics}",
                config.telemetry.health_host,
                self.health.port,
            )
        credentials = await self._start_exchange()
        self.client = await self._connect(credentials)
        rules = await self.client.symbol_rules(list(config.symbols))
        self._base_asset = {symbol: r.base_asset for symbol, r in rules.items()}
        journal = await asyncio.to_thread(read_journal, Path(config.audit.path))
        self.audit = AuditJournal(path=Path(config.audit.path), fsync=config.audit.fsync)
        self.audit.start()
        self.audit.record(
            "run.start",
            {
                "version": __version__,
                "exchange": config.exchange,
                "symbols": list(config.symbols),
                "intervals": list(config.intervals),
                "shard": f"{self.shard}/{config.shard_count}",
            },
            critical=True,
        )
        run_id = _base36(time.time_ns() // 1_000_000)
        self.orders = OrderManager(
            exchange=self.client,
            audit=self.audit,
            rules=rules,
            id_prefix=f"svc{run_id}",
            id_family="svc",
            record_write_ahead=self.recorder.audit.record,
        )
        await self._reconcile(journal, rules, run_id)
        for strategy in build_strategies(default_strategies(config)):
            symbol = str(strategy.state().get("symbol", ""))
            self._strategies.setdefault(symbol, []).append(strategy)
        limits = config.risk
        self.risk = RiskEngine(
            limits=RiskLimits(
                max_position=limits.max_position,
                max_order_notional=limits.max_order_notional,
                max_orders_per_window=limits.max_orders_per_minute,
                window_ns=60_000_000_000,
                kill_switch=limits.kill_switch,
                max_signal_age_ns=int(limits.max_signal_age_seconds * 1e9),
            )
        )
        self.bus = EventBus()
        self.bus.subscribe("data", self._on_market)
        self.bus.subscribe("signal", self._on_signal)
        self.bus.subscribe("order", self._on_order)
        feed_settings = FeedSettings(
            watchdog_seconds=config.feed.watchdog_seconds,
            backoff_initial=config.feed.backoff_initial,
            backoff_max=config.feed.backoff_max,
            healthy_seconds=config.feed.healthy_seconds,
            connect_attempts=config.feed.connect_attempts,
            warmup_klines=config.feed.warmup_klines,
        )
        data_tier = self.bus.data
        self.feed = MarketFeed(
            streams=market_streams(config),
            open_socket=self.client.market_socket,
            exchange=self.client,
            publish=data_tier.put_nowait,
            settings=feed_settings,
            recorder=self.recorder,
            tracer=self.tracer,
        )
        self.user_feed = UserDataFeed(
            open_socket=self.client.user_socket,
            on_update=self._on_order_update,
            settings=feed_settings,
        )

    async def _reconcile(
        self, journal: JournalState, rules: dict[str, SymbolRules], run_id: str
    ) -> None:
        """Reconcile until it succeeds (the service does not trade meanwhile), a stop is
        requested, or ``duration`` runs out (then the last ``ExchangeError`` is raised)."""
        config = self.config
        assert self.client is not None
        assert self.audit is not None
        assert self.orders is not None
        while not self._stop.is_set():
            try:
                report = await reconcile(
                    orders=self.orders,
                    exchange=self.client,
                    audit=self.audit,
                    journal=journal,
                    symbols=list(config.symbols),
                    unknown_orders=config.reconcile.unknown_orders,
                )
            except ExchangeError as error:
                self.reconcile_failures += 1
                wait = config.reconcile.retry_seconds
                if config.duration > 0:
                    left = self._started + config.duration - time.monotonic()
                    if left <= 0:
                        log.error("reconciliation never succeeded within --duration: %s", error)
                        raise
                    wait = min(wait, left)
                log.error(
                    "reconciliation failed (attempt %d); not trading, retrying in %.1f s: %s",
                    self.reconcile_failures,
                    wait,
                    error,
                )
                # A retry starts from the journal again: drop what the failed attempt tracked.
                self.orders = OrderManager(
                    exchange=self.client,
                    audit=self.audit,
                    rules=rules,
                    id_prefix=f"svc{run_id}",
                    id_family="svc",
                    record_write_ahead=self.recorder.audit.record,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                continue
            log.info(
                "reconciled with the journal (%d records) and the exchange: recovered %d, "
                "not placed %d, open on the exchange %d, adopted %d, canceled %d, positions %s",
                report.journal_records,
                len(report.recovered),
                len(report.not_placed),
                report.open_on_exchange,
                len(report.adopted),
                len(report.canceled),
                report.positions,
            )
            self._reconciled = True
            break

    async def _start_exchange(self) -> Credentials:
        config = self.config
        if config.exchange != "sim":
            return load_credentials(config)
        if config.sim.url:
            log.info("external simulator at %s", config.sim.url)
            if "BINANCE_API_KEY" in os.environ or "BINANCE_API_KEY_FILE" in os.environ:
                return load_credentials(config)
            from svc.sim.server import (  # noqa: PLC0415
                DEFAULT_API_KEY,
                DEFAULT_API_SECRET,
            )

            return Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)
        from svc.sim.server import (  # noqa: PLC0415  (the simulator is only needed here)
            DEFAULT_API_KEY,
            DEFAULT_API_SECRET,
            SimConfig,
            SimExchange,
        )

        self.sim = SimExchange(
            SimConfig(
                port=0,
                symbols=config.symbols,
                intervals=tuple(dict.fromkeys((*config.intervals, "1m"))),
                market=config.sim.market,
                speed=config.sim.speed,
                rate=config.sim.rate,
                frames=Path(config.sim.frames) if config.sim.frames else None,
                seed=config.sim.seed,
            )
        )
        await self.sim.start()
        log.info("embedded simulator on %s", self.sim.http_url)
        return Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)

    async def _connect(self, credentials: Credentials) -> BinanceClient:
        venue = self.config.exchange
        attempts = self.config.feed.connect_attempts
        delay = self.config.feed.backoff_initial
        for attempt in range(1, attempts + 1):
            try:
                return await BinanceClient.connect(
                    venue=venue,
                    api_key=credentials.api_key,
                    api_secret=credentials.api_secret,
                    sim_url=self.sim.http_url if self.sim is not None else self.config.sim.url,
                    order_transport=self.config.order_transport,
                )
            except ExchangeUnavailable as error:
                if attempt == attempts:
                    raise
                log.warning(
                    "exchange not reachable (attempt %d of %d): %s", attempt, attempts, error
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.feed.backoff_max)
        raise ExchangeUnavailable(0, "no connection attempt was made")

    async def _serve(self) -> None:
        assert self.bus is not None
        assert self.feed is not None
        assert self.user_feed is not None
        if self._stop.is_set():
            return  # stopped while reconciling: nothing was started
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {
                    "bus": group.create_task(self.bus.run(), name="bus"),
                    "feed.market": group.create_task(self.feed.run(), name="feed.market"),
                    "feed.user": group.create_task(self.user_feed.run(), name="feed.user"),
                    "status": group.create_task(self._report_status(), name="status"),
                    "runtime.gc": group.create_task(self.gc_pauses.run(), name="runtime.gc"),
                    "runtime.loop_lag": group.create_task(
                        self.loop_lag.run(), name="runtime.loop_lag"
                    ),
                    "runtime.freeze": group.create_task(
                        self._freeze_after_warmup(), name="runtime.freeze"
                    ),
                    "runtime.fold": group.create_task(self.fold_histograms(), name="runtime.fold"),
                }
                self._tasks = tasks
                if self.config.duration > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.config.duration)
                else:
                    await self._stop.wait()
                # The trading half of the shutdown runs while the bus still consumes, so
                # an order being submitted finishes and the order tier can be drained.
                await self._shutdown_trading(fatal=False)
                await _cancel_and_wait(tasks, within=_SHUTDOWN_CAPS["stop_tasks"])
        except* ExchangeError as group_error:
            raise group_error.exceptions[0] from None
        finally:
            self._tasks = {}

    async def fold_histograms(self, interval: float = 0.25) -> None:
        """Bucket the hot path's pending records on the loop, so they stay a fraction of a
        second's worth (``svc.latency.BufferedHistogram``); collections fold as well."""
        while True:
            await asyncio.sleep(interval)
            self.recorder.fold()

    async def _freeze_after_warmup(self) -> None:
        assert self.feed is not None
        await self.feed.warmed_up.wait()
        if self.config.telemetry.gc_freeze:
            frozen = freeze_after_warmup()
            log.info("gc.freeze() after warm-up: %d objects moved out of the collector", frozen)

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        """Ready: the feed is connected, open orders are reconciled, the order tier moves."""
        checks = {
            "feed_connected": self.feed is not None and self.feed.statistics.connected,
            "reconciled": self._reconciled,
            "order_tier_flowing": self.bus is None or self.bus.order.statistics().blocked == 0,
        }
        return all(checks.values()), checks

    def _metrics_text(self) -> bytes:
        if self.telemetry is None:
            return b""
        text: bytes = self.telemetry.prometheus_text()
        return text

    # ----------------------------------------------------------------- shutdown

    def _path(self, *, fatal: bool) -> ShutdownPath:
        if self._shutdown_path is None:
            self._shutdown_path = ShutdownPath(
                reason=("fatal: " if fatal else "") + self._stop_reason,
                budget_seconds=self.config.emergency.shutdown_budget_seconds,
                record=self._audit_step,
            )
            log.warning(
                "shutting down (%s): budget %.0f s",
                self._shutdown_path.reason,
                self.config.emergency.shutdown_budget_seconds,
            )
        return self._shutdown_path

    def _audit_step(self, kind: str, payload: dict[str, Any]) -> None:
        if self.audit is not None and self.audit.state == "running":
            self.audit.record(kind, payload, critical=True)

    async def _shutdown_trading(self, *, fatal: bool) -> None:
        """Stop new orders, cancel open ones, optionally flatten, drain the order tier."""
        path = self._path(fatal=fatal)
        if any(r.step == "stop_new_orders" for r in path.results):
            return
        self._accepting = False
        reserve = self.config.emergency.shutdown_budget_seconds * _CLOSING_SHARE
        await path.step(
            "stop_new_orders",
            self._stop_new_orders,
            cap=_SHUTDOWN_CAPS["stop_new_orders"],
            reserve=reserve,
        )
        if self.orders is None:
            return
        await path.step(
            "cancel_open_orders",
            self._cancel_open_orders,
            cap=_SHUTDOWN_CAPS["cancel_open_orders"],
            reserve=reserve,
        )
        emergency = self.config.emergency
        if emergency.flatten_on_fatal if fatal else emergency.flatten:
            await path.step(
                "flatten_positions",
                self._flatten,
                cap=_SHUTDOWN_CAPS["flatten_positions"],
                reserve=reserve,
            )
        await path.step(
            "drain_order_tier",
            self._drain_order_tier,
            cap=_SHUTDOWN_CAPS["drain_order_tier"],
            reserve=reserve,
        )

    async def _stop_new_orders(self) -> str:
        for name in ("feed.market", "feed.user", "runtime.freeze"):
            task = self._tasks.get(name)
            if task is not None:
                task.cancel()
        if self.bus is None or self.bus.state != "running":
            return "no order tier running"
        if not await self.bus.drain(timeout=self._path(fatal=False).remaining()):
            raise StepFailed("an order submission did not finish")
        return f"{self._discarded_orders} queued orders discarded"

    async def _cancel_open_orders(self) -> str:
        assert self.orders is not None
        before = len(self.orders.open_orders())
        canceled = await self.orders.cancel_all("shutdown")
        left = [o.client_order_id for o in self.orders.open_orders()]
        if left:
            raise StepFailed(f"{len(left)} still open: {', '.join(left[:5])}")
        return f"{len(canceled)} of {before} canceled"

    async def _flatten(self) -> str:
        """Close every position with a market order; dust below the lot size stays."""
        assert self.orders is not None
        done: list[str] = []
        failures: list[str] = []
        for symbol in self.config.symbols:
            position = self.orders.positions.position(symbol)
            quantity = position.quantity
            if not quantity:
                continue
            now = time.time_ns()
            signal_ = Signal(
                strategy="flatten",
                symbol=symbol,
                side="SELL" if quantity > 0 else "BUY",
                quantity=float(abs(quantity)),
                limit_price=0.0,
                reason="emergency flatten",
                ts_event=now,
                ts_init=now,
            )
            try:
                # Before any market data (a stop right after start-up), the entry price
                # stands in for the last price in the minimum-notional check.
                last_price = self._last_price.get(symbol) or float(position.average_price)
                order = self.orders.build(signal_, last_price=last_price)
            except FilterViolation as error:
                done.append(f"{symbol} {quantity} is dust ({error.msg})")
                continue
            try:
                tracked = await self.orders.submit(order)
            except ExchangeError as error:
                failures.append(f"{symbol}: {error}")
                continue
            if tracked.state is not OrderState.FILLED:
                failures.append(f"{symbol}: {order.client_order_id} {tracked.state}")
                continue
            done.append(f"{symbol} {signal_.side} {order.quantity}")
        if failures:
            raise StepFailed("; ".join(failures))
        return ", ".join(done) or "already flat"

    async def _drain_order_tier(self) -> str:
        bus = self.bus
        if bus is None:
            return "no bus"
        try:
            if bus.state == "running" and not await bus.drain(
                timeout=self._path(fatal=False).remaining()
            ):
                raise StepFailed("the order tier did not drain")
            left = bus.order.statistics().depth
        finally:
            bus.close()
        if left:
            raise StepFailed(f"{left} orders abandoned in the order tier")
        return "empty"

    def request_stop(self, reason: str = "stop requested") -> None:
        if self._stop.is_set():
            log.warning(
                "%s while already stopping (%s); the shutdown goes on", reason, self._stop_reason
            )
            return
        self._stop_reason = reason
        self._stop.set()

    async def _shutdown(self, *, fatal: bool) -> None:
        """The ordered shutdown path (see ``svc.shutdown``); a failing step does not stop
        the rest, and the whole path ends within ``emergency.shutdown_budget_seconds``."""
        if self._shut_down:
            return
        self._shut_down = True
        self._stop.set()
        await self._shutdown_trading(fatal=fatal)
        path = self._path(fatal=fatal)
        audit, client, sim = self.audit, self.client, self.sim
        if audit is not None and audit.state == "running":

            async def flush_audit() -> str:
                audit.record(
                    "run.stop",
                    {"reason": self._stop_reason, "shutdown": path.summary()},
                    critical=True,
                )
                if not await asyncio.to_thread(audit.stop, path.remaining()):
                    raise StepFailed("the audit journal did not drain")
                return f"{audit.statistics().written} records written"

            await path.step("flush_audit", flush_audit, cap=_SHUTDOWN_CAPS["flush_audit"])

        async def close_exchange() -> None:
            if client is not None:
                await client.close()
            if sim is not None:
                self.sim_closed_klines = list(
                    sim.closed_klines.get((self.config.symbols[0], "1m"), ())
                )
                await sim.stop()

        await path.step(
            "close_exchange", close_exchange, cap=_SHUTDOWN_CAPS["close_exchange"], critical=False
        )
        self.gc_pauses.uninstall()
        health = self.health
        if health is not None:
            await path.step(
                "stop_health", health.stop, cap=_SHUTDOWN_CAPS["stop_health"], critical=False
            )
        telemetry = self.telemetry
        # Recorded before the final export so the last OTLP push carries it.
        outcome = "complete" if path.complete else "incomplete"
        self._shutdown_durations[outcome].record(int(path.elapsed() * 1e9))
        if telemetry is not None:

            async def flush_telemetry() -> None:
                # Bounded by the step's own cap too: the worker thread outlives a step that
                # times out, and the event loop's executor joins it before the process exits.
                timeout = min(_SHUTDOWN_CAPS["flush_telemetry"], path.remaining())
                if not await asyncio.to_thread(telemetry.shutdown, max(0.1, timeout)):
                    raise StepFailed("telemetry did not flush (is the collector down?)")

            await path.step(
                "flush_telemetry",
                flush_telemetry,
                cap=_SHUTDOWN_CAPS["flush_telemetry"],
                critical=False,
            )
        log.info(
            "shutdown %s in %.3f s", "complete" if path.complete else "INCOMPLETE", path.elapsed()
        )

    # ----------------------------------------------------------------- metrics

    def _histograms(self) -> Iterator[BridgedHistogram]:
        """svc's own histograms, read by the metric readers at collection time."""
        yield from recorder_sources(self.recorder)()
        for stream, lag in list(self.recorder.feed_lag_by_stream.items()):
            yield names.FEED_LAG, "s", {names.ATTR_STREAM: stream}, lag.snapshot()
        yield names.LOOP_LAG, "s", {}, self.loop_lag.histogram.snapshot()
        if self.audit is not None:
            yield names.AUDIT_WRITE_DURATION, "s", {}, self.audit.write_duration.snapshot()
        for (order_type, outcome), histogram in list(self._roundtrips.items()):
            yield (
                names.ORDER_ROUNDTRIP,
                "s",
                {names.ATTR_TYPE: order_type, names.ATTR_OUTCOME: outcome},
                histogram.snapshot(),
            )
        for outcome, histogram in self._shutdown_durations.items():
            if histogram.count:
                yield (
                    names.SHUTDOWN_DURATION,
                    "s",
                    {names.ATTR_OUTCOME: outcome},
                    histogram.snapshot(),
                )
        self.gc_pauses.drain()
        for generation, histogram in self.gc_pauses.histograms.items():
            yield (
                names.GC_PAUSE,
                "s",
                {names.ATTR_GENERATION: str(generation)},
                histogram.snapshot(),
            )
        if self.bus is not None:
            for tier in (self.bus.data, self.bus.signal, self.bus.order):
                yield (
                    names.QUEUE_WAIT,
                    "s",
                    {names.ATTR_TIER: tier.name},
                    tier.queue_wait.snapshot(),
                )

    def _register_observables(self) -> None:
        """Counters and gauges observed at collection time from the components' statistics."""
        assert self.telemetry is not None
        meter = self.telemetry.meter_provider.get_meter(names.METER_NAME, __version__)

        def observe(
            name: str,
            kind: str,
            unit: str,
            read: Callable[[], Iterable[tuple[float, dict[str, str]]]],
        ) -> None:
            def callback(_options: CallbackOptions) -> Iterable[Observation]:
                try:
                    return [Observation(value, attributes) for value, attributes in read()]
                except Exception:  # a metric must never break collection
                    log.exception("metric %s could not be read", name)
                    return []

            create = (
                meter.create_observable_gauge
                if kind == "gauge"
                else meter.create_observable_counter
            )
            create(name, callbacks=[callback], unit=unit)

        def tiers() -> list[Any]:
            return (
                [t.statistics() for t in (self.bus.data, self.bus.signal, self.bus.order)]
                if self.bus
                else []
            )

        observe(
            names.QUEUE_DEPTH,
            "gauge",
            "{item}",
            lambda: [(t.depth, {names.ATTR_TIER: t.name}) for t in tiers()],
        )
        observe(
            names.QUEUE_DROPPED,
            "counter",
            "{item}",
            lambda: [(t.dropped, {names.ATTR_TIER: t.name}) for t in tiers()],
        )
        observe(
            names.QUEUE_BLOCKED,
            "gauge",
            "{producer}",
            lambda: [(t.blocked, {names.ATTR_TIER: t.name}) for t in tiers()],
        )

        def feed_counts(field: str) -> list[tuple[float, dict[str, str]]]:
            if self.feed is None:
                return []
            counts = getattr(self.feed.statistics, field)
            return [(count, {names.ATTR_REASON: str(reason)}) for reason, count in counts.items()]

        def messages() -> list[tuple[float, dict[str, str]]]:
            if self.feed is None:
                return []
            return [
                (
                    count,
                    {
                        names.ATTR_TYPE: kind.__name__,
                        names.ATTR_STREAM: f"{symbol}@{interval}" if interval else symbol,
                    },
                )
                for (kind, symbol, interval), count in self.feed.statistics.messages.items()
            ]

        observe(names.FEED_MESSAGES, "counter", "{message}", messages)
        observe(names.FEED_MALFORMED, "counter", "{message}", lambda: feed_counts("malformed"))
        observe(names.FEED_RECONNECTS, "counter", "{reconnect}", lambda: feed_counts("reconnects"))
        observe(
            names.FEED_GAPS,
            "counter",
            "{gap}",
            lambda: [(self.feed.statistics.gaps, {})] if self.feed else [],
        )
        observe(
            names.ORDERS,
            "counter",
            "{order}",
            lambda: [
                (count, {names.ATTR_STATUS: str(state)})
                for state, count in (
                    self.orders.statistics().orders_by_state.items() if self.orders else ()
                )
            ],
        )
        observe(
            names.RATE_LIMIT_USED,
            "gauge",
            "{weight}",
            lambda: [(self.client.used_weight, {names.ATTR_WINDOW: "1m"})] if self.client else [],
        )
        observe(
            names.AUDIT_BACKLOG,
            "gauge",
            "{record}",
            lambda: [(self.audit.statistics().backlog, {})] if self.audit else [],
        )
        observe(
            names.AUDIT_DROPPED,
            "counter",
            "{record}",
            lambda: [(self.audit.statistics().dropped, {})] if self.audit else [],
        )
        observe(
            names.LOG_DROPPED,
            "counter",
            "{record}",
            lambda: [(self._log_dropped(), {})] if self._log_dropped else [],
        )

        def gate() -> Any:
            return self.client.gate if self.client is not None else None

        observe(
            names.EXCHANGE_THROTTLED,
            "counter",
            "{response}",
            lambda: [
                (count, {names.ATTR_STATUS: status})
                for status, count in (gate().throttled.items() if gate() else ())
            ],
        )
        observe(
            names.EXCHANGE_REFUSED,
            "counter",
            "{request}",
            lambda: [
                (count, {names.ATTR_REASON: reason})
                for reason, count in (gate().refused.items() if gate() else ())
            ],
        )
        observe(
            names.EXCHANGE_BACKOFF,
            "gauge",
            "s",
            lambda: [(gate().remaining(), {names.ATTR_REASON: gate().state})] if gate() else [],
        )
        observe(
            names.RECONCILE_FAILURES,
            "counter",
            "{attempt}",
            lambda: [(self.reconcile_failures, {})],
        )
        observe(
            names.POSITIONS_OPEN,
            "gauge",
            "{unit}",
            lambda: [
                (float(p["quantity"]), {names.ATTR_SYMBOL: symbol})
                for symbol, p in (self.orders.positions.snapshot().items() if self.orders else ())
            ],
        )

    @staticmethod
    async def _bounded(what: str, step: Awaitable[Any], seconds: float) -> None:
        """Run one shutdown step for at most ``seconds``; a stuck step must not hang the exit."""
        try:
            async with asyncio.timeout(seconds):
                await step
        except TimeoutError:
            log.error("shutdown: could not %s within %.0f s; going on", what, seconds)

    # ----------------------------------------------------------------- the hot path

    async def _on_market(self, item: Event | Traced) -> None:
        entered = _perf_counter_ns()
        if type(item) is Traced:
            trace: TickTrace | None = item.trace
            event = item.item
        else:
            trace, event = None, item
        symbol = getattr(event, "symbol", "")
        if isinstance(event, Trade):
            self._last_price[symbol] = event.price
        elif isinstance(event, Candle):
            self._last_price.setdefault(symbol, event.close)
        elif isinstance(event, Quote):
            self._last_price[symbol] = (event.bid_price + event.ask_price) * 0.5
        strategies = self._strategies.get(symbol)
        if not strategies or not isinstance(event, Candle | Trade | Quote):
            if trace is not None:
                self.tracer.finish(trace)
            return
        started = entered  # the strategy stage includes the bookkeeping above (~100 ns)
        decisions: list[Signal] | None = None  # no allocation for the usual no-signal tick
        for strategy in strategies:
            decision = strategy.on_event(event)
            if decision is not None:
                if decisions is None:
                    decisions = []
                decisions.append(decision)
        decided = _perf_counter_ns()
        self._record_strategy(decided - started)
        tick_ns = _time_ns() - event.ts_init
        if trace is not None:
            trace.stage("queue_wait", trace.stages[-1][2] - trace.wall(0), entered)
            trace.stage("strategy", started, decided)
        elif tick_ns > self.tracer.slow_threshold_ns > 0:
            self.tracer.record_slow(
                wall_anchor=event.ts_init,
                perf_anchor=decided - tick_ns,
                stages=[("strategy", started, decided)],
                attributes={names.ATTR_SYMBOL: symbol, names.ATTR_STREAM: type(event).__name__},
            )
        if not decisions:
            self._record_no_signal(tick_ns)
            if trace is not None:
                trace.attributes[names.ATTR_OUTCOME] = "no_signal"
                self.tracer.finish(trace, end_perf=decided)
            return
        self.recorder.tick_signal.record(tick_ns)
        self._signals += len(decisions)
        assert self.bus is not None
        if trace is not None:
            trace.attributes[names.ATTR_OUTCOME] = "signal"
        for decision in decisions:
            await self.bus.signal.put(decision if trace is None else Traced(decision, trace))

    async def _on_signal(self, item: Signal | Traced) -> None:
        assert self.risk is not None
        assert self.orders is not None
        assert self.audit is not None
        trace: TickTrace | None = None
        if type(item) is Traced:
            trace, signal_ = item.trace, item.item
        else:
            signal_ = item
        if not self._accepting:
            self._risk_rejects["shutting_down"] += 1
            if trace is not None:
                trace.attributes[names.ATTR_REASON] = "shutting_down"
                self.tracer.finish(trace)
            return
        started = time.perf_counter_ns()
        price = signal_.limit_price or self._last_price.get(signal_.symbol, 0.0)
        position = float(self.orders.positions.position(signal_.symbol).quantity)
        decision = self.risk.check(signal_, position=position, price=price, now_ns=time.time_ns())
        checked = time.perf_counter_ns()
        self.recorder.risk.record(checked - started)
        if trace is not None:
            trace.stage("risk", started, checked)
        payload = {
            "strategy": signal_.strategy,
            "symbol": signal_.symbol,
            "side": signal_.side,
            "quantity": signal_.quantity,
            "reason": signal_.reason,
        }
        trace_id = trace.trace_id_hex if trace is not None else ""
        if not decision.accepted:
            self._risk_rejects[decision.reason] += 1
            self.audit.record(
                "risk.rejected",
                {**payload, "risk": decision.reason},
                ts_event=signal_.ts_event,
                trace_id=trace_id,
            )
            if trace is not None:
                trace.attributes[names.ATTR_REASON] = decision.reason
                self.tracer.finish(trace, end_perf=checked)
            return
        try:
            order = self.orders.build(signal_, last_price=price)
        except FilterViolation as error:
            self._filter_rejects[error.msg] += 1
            self.audit.record(
                "order.filtered",
                {**payload, "error": error.msg},
                ts_event=signal_.ts_event,
                trace_id=trace_id,
            )
            if trace is not None:
                trace.error = error.msg
                self.tracer.finish(trace)
            return
        self.audit.record(
            "intent",
            {**payload, "client_order_id": order.client_order_id},
            ts_event=signal_.ts_event,
            critical=True,
            trace_id=trace_id,
        )
        assert self.bus is not None
        order = msgspec.structs.replace(order, ts_init=signal_.ts_init)
        await self.bus.order.put(order if trace is None else Traced(order, trace))

    async def _on_order(self, item: NewOrder | Traced) -> None:
        assert self.orders is not None
        trace: TickTrace | None = None
        if type(item) is Traced:
            trace, order = item.trace, item.item
        else:
            order = item
        if not self._accepting:
            self._discard(order, trace)
            return
        token = CURRENT_TRACE.set(trace)
        started = time.perf_counter_ns()
        try:
            tracked = await self.orders.submit(order)
        except ExchangeError as error:
            failed = time.perf_counter_ns()
            log.warning("order %s not placed: %s", order.client_order_id, error)
            self.recorder.submit.record(failed - started)
            self._roundtrip(order.order_type, "error").record(failed - started)
            if trace is not None:
                trace.stage("submit", started, failed)
                trace.error = f"{type(error).__name__}: {error.msg}"
                self.tracer.finish(trace, end_perf=failed)
            else:
                self.tracer.record_error(
                    wall_anchor=time.time_ns() - (failed - started),
                    perf_anchor=started,
                    stages=[("submit", started, failed)],
                    attributes={names.ATTR_CLIENT_ORDER_ID: order.client_order_id},
                    error=f"{type(error).__name__}: {error.msg}",
                )
            return
        finally:
            CURRENT_TRACE.reset(token)
        acked = time.perf_counter_ns()
        self.recorder.submit.record(acked - started)
        self._roundtrip(order.order_type, str(tracked.state).lower()).record(acked - started)
        self.recorder.tick_order.record(time.time_ns() - order.ts_init)
        self._note_fills(tracked)
        if trace is not None:
            done = time.perf_counter_ns()
            trace.stage("submit", started, acked)
            trace.stage("ack", acked, done)
            trace.attributes[names.ATTR_OUTCOME] = "order"
            trace.attributes[names.ATTR_CLIENT_ORDER_ID] = order.client_order_id
            trace.attributes[names.ATTR_STATUS] = str(tracked.state)
            self.tracer.finish(trace, end_perf=done)

    def _discard(self, order: NewOrder, trace: TickTrace | None) -> None:
        """An order still queued when the shutdown began: never sent, audited as such."""
        self._discarded_orders += 1
        log.warning("shutdown: order %s discarded before it was sent", order.client_order_id)
        if self.audit is not None and self.audit.state == "running":
            self.audit.record(
                "order.discarded",
                {
                    "client_order_id": order.client_order_id,
                    "symbol": order.symbol,
                    "reason": "shutdown",
                },
                critical=True,
                trace_id=trace.trace_id_hex if trace is not None else "",
            )
        if trace is not None:
            trace.attributes[names.ATTR_REASON] = "shutting_down"
            self.tracer.finish(trace)

    def _on_order_update(self, update: OrderUpdate) -> None:
        assert self.orders is not None
        started = time.perf_counter_ns()
        self.orders.on_update(update)
        self.recorder.fill.record(time.perf_counter_ns() - started)
        tracked = self.orders.get(update.client_order_id)
        if tracked is not None:
            self._note_fills(tracked)

    def _roundtrip(self, order_type: str, outcome: str) -> LatencyHistogram:
        histogram = self._roundtrips.get((order_type, outcome))
        if histogram is None:
            histogram = self._roundtrips[(order_type, outcome)] = LatencyHistogram()
        return histogram

    def _note_fills(self, tracked: TrackedOrder) -> None:
        """Tell the order's strategy about quantity it now holds and has not heard of yet.

        The amount is net of commission paid in the base asset (a BUY of 0.001 BTC with a
        0.1% BTC fee leaves 0.000999 BTC), so a strategy never tries to sell what it lacks.
        """
        key = tracked.client_order_id
        order = tracked.order
        net = tracked.filled_quantity
        if order.side == "BUY":
            net -= tracked.fees.get(self._base_asset.get(order.symbol, ""), Decimal(0))
        delta = net - self._reported.get(key, Decimal(0))
        if delta <= 0:
            return
        self._reported[key] = net
        if len(self._reported) > 100_000:  # bounded: forget the oldest orders
            del self._reported[next(iter(self._reported))]
        self._fills += 1
        for strategy in self._strategies.get(order.symbol, ()):
            if strategy.name == order.strategy:
                strategy.on_fill(order.symbol, order.side, float(delta))

    # ----------------------------------------------------------------- status and summary

    async def _report_status(self) -> None:
        assert self.feed is not None
        previous = 0
        while True:
            await asyncio.sleep(self.config.status_interval)
            total = sum(self.feed.statistics.messages.values())
            rate = (total - previous) / self.config.status_interval
            previous = total
            self._status_out.write(self.status_line(rate) + "\n")
            self._status_out.flush()

    def status_line(self, rate: float) -> str:
        assert self.bus is not None
        assert self.orders is not None
        parse, strategy, submit = self.recorder.parse, self.recorder.strategy, self.recorder.submit
        tiers = " ".join(
            f"{t.name}={t.statistics().depth}"
            for t in (self.bus.data, self.bus.signal, self.bus.order)
        )
        states = self.orders.statistics().orders_by_state
        positions = self.orders.positions.snapshot()
        held = (
            " ".join(
                f"{s}={float(p['quantity']):g}"
                for s, p in positions.items()
                if float(p["quantity"])
            )
            or "flat"
        )
        pnl = self._pnl()
        return (
            f"[{time.monotonic() - self._started:6.1f}s] {rate:7.0f} msg/s | "
            f"parse p50/p99 {parse.percentile(50) / 1e3:.1f}/{parse.percentile(99) / 1e3:.1f}us "
            f"strategy {strategy.percentile(50) / 1e3:.1f}/{strategy.percentile(99) / 1e3:.1f}us "
            f"submit {submit.percentile(50) / 1e6:.2f}/{submit.percentile(99) / 1e6:.2f}ms | "
            f"queues {tiers} | orders {sum(states.values()) if states else 0} "
            f"filled {states.get('FILLED', 0)} | {held} | pnl {pnl:+.2f}"
        )

    def _pnl(self) -> float:
        if self.orders is None:
            return 0.0
        total = 0.0
        for symbol in self.config.symbols:
            view = self.orders.positions.position(symbol)
            total += float(view.realized_pnl - view.fees_quote)
            price = self._last_price.get(symbol)
            if price is not None:
                total += self.orders.positions.unrealized(symbol, price)
        return total

    def summary(self, exit_reason: str) -> dict[str, Any]:
        tiers = {}
        if self.bus is not None:
            for tier in (self.bus.data, self.bus.signal, self.bus.order):
                stats = tier.statistics()
                tiers[stats.name] = {
                    "capacity": stats.capacity,
                    "high_water": stats.high_water,
                    "put": stats.put,
                    "dropped": stats.dropped,
                    "waits": stats.waits,
                }
        feed = self.feed.statistics.as_dict() if self.feed is not None else {}
        orders = dataclasses.asdict(self.orders.statistics()) if self.orders is not None else {}
        audit = self.audit.statistics() if self.audit is not None else None
        return {
            "version": __version__,
            "exchange": self.config.exchange,
            "symbols": list(self.config.symbols),
            "duration_seconds": round(time.monotonic() - self._started, 3),
            "exit_reason": exit_reason,
            "shard": {"index": self.shard, "count": self.config.shard_count},
            "reconcile": {"done": self._reconciled, "failures": self.reconcile_failures},
            "shutdown": self._shutdown_path.summary() if self._shutdown_path else {},
            "discarded_orders": self._discarded_orders,
            "feed": feed,
            "signals": self._signals,
            "risk_rejections": dict(self._risk_rejects),
            "filter_rejections": dict(self._filter_rejects),
            "orders": orders,
            "fills": self._fills,
            "positions": self.orders.positions.snapshot() if self.orders is not None else {},
            "pnl": round(self._pnl(), 8),
            "queues": tiers,
            "stages": self.recorder.summary(),
            "runtime": {
                "gc": self.gc_pauses.statistics(),
                "loop_lag_max_us": round(self.loop_lag.max_ns / 1000, 1),
                "loop_lag_p99_us": round(self.loop_lag.histogram.percentile(99) / 1000, 1),
            },
            "tracing": self.tracer.statistics(),
            "telemetry": {
                "exporting": bool(self.telemetry is not None and self.telemetry.exporting),
                "dropped_spans": self.telemetry.dropped_spans()
                if self.telemetry is not None
                else 0,
                "bridge_failures": self.telemetry.bridge_failures() if self.telemetry else 0,
            },
            "audit": {
                "path": self.config.audit.path,
                **(
                    {
                        k: getattr(audit, k)
                        for k in (
                            "recorded",
                            "written",
                            "dropped",
                            "critical_overflow",
                            "write_errors",
                        )
                    }
                    if audit is not None
                    else {}
                ),
            },
        }

    def _print_summary(self, summary: dict[str, Any]) -> None:
        out = self._status_out
        out.write(f"svc run finished: {summary['exit_reason']}\n")
        feed = summary.get("feed", {})
        for kind, by_stream in feed.get("messages", {}).items():
            out.write(f"  {kind:<12} {sum(by_stream.values()):>9} messages\n")
        out.write(f"  malformed    {sum(feed.get('malformed', {}).values()):>9}\n")
        out.write(f"  signals      {summary['signals']:>9}\n")
        out.write(f"  orders       {summary['orders']}\n")
        out.write(f"  fills        {summary['fills']:>9}   pnl {summary['pnl']:+.4f}\n")
        for name, stage in summary["stages"].items():
            if stage["count"]:
                out.write(
                    f"  {name:<16} n={stage['count']:<8} p50={stage['p50_us']:.1f}us "
                    f"p99={stage['p99_us']:.1f}us\n"
                )
        out.flush()


async def _cancel_and_wait(tasks: dict[str, asyncio.Task[Any]], *, within: float) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again every 0.5 s: on Python 3.11 an
    ``asyncio.wait_for`` inside a task (python-binance's ``recv``) can swallow one
    cancellation (cpython#86296). Tasks still running after ``within`` seconds are logged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = {task for task in tasks.values() if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _done, pending = await asyncio.wait(pending, timeout=min(0.5, left))
    if pending:
        log.error(
            "tasks still running %.0f s after their cancellation: %s",
            within,
            ", ".join(sorted(task.get_name() for task in pending)),
        )


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out or "0"
