"""The feeds: market data and user data from websockets into the service, supervised.

``MarketFeed`` owns the market-data connection: it reads python-binance's socket inside the
event loop, stamps ``ts_init``, decodes each raw frame once (``FrameDecoder``), counts
malformed frames by reason and skips them, detects missed closed klines and backfills them
over REST *before* passing on the kline that revealed the gap, and hands every event to
``publish`` (the data tier of the bus). ``UserDataFeed`` does the same for execution reports.

Reconnect logic lives in one place, ``Backoff`` and ``_supervise``: exponential backoff with
full jitter, reset after a connection stayed healthy for ``healthy_seconds``; a watchdog
reconnects a stream that is silent for ``watchdog_seconds``; python-binance's own give-up
(``BinanceWebsocketUnableToConnect`` after 5 tries) and its queue overflow
(``BinanceWebsocketQueueOverflow``, 100 messages) are counted and answered with a fresh
connection, never a crash. ``connect_attempts`` consecutive failures to connect raise
``ExchangeUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from svc.binance import FrameDecoder
from svc.clock import SYSTEM_CLOCK, Clock
from svc.errors import DecodeError, ExchangeError, ExchangeUnavailable
from svc.exchange import ExchangeClient
from svc.latency import StageRecorder
from svc.model import Candle, Event, OrderUpdate, Quote, Trade, UnknownEvent
from svc.tracing import TickTracer, Traced

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
_INTERVAL_SECONDS = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "1d": 86400,
}
INTERVAL_NS = {name: seconds * 1_000_000_000 for name, seconds in _INTERVAL_SECONDS.items()}


class Socket(Protocol):
    async def recv(self) -> Any: ...


SocketFactory = Callable[[], AbstractAsyncContextManager[Socket]]


@dataclass(frozen=True, slots=True)
class FeedSettings:
    watchdog_seconds: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_seconds: float = 30.0
    connect_attempts: int = 8
    warmup_klines: int = 100


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(max, initial * 2**n))``."""

    def __init__(self, *, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._maximum, self._initial * 2**self.attempt)
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


MAX_STATISTICS_KEYS = 256
"""Distinct malformed reasons and unknown event types a feed counts, and distinct streams
beyond the subscribed ones. The keys come from the frames: garbage must not grow memory, the
summary or metric cardinality without bound. Later keys are counted under ``OTHER``."""
OTHER = "(other)"
_perf_counter_ns = time.perf_counter_ns  # one global load on the hot path, not two


def _count(counter: Counter[str], key: str) -> None:
    if key in counter or len(counter) < MAX_STATISTICS_KEYS:
        counter[key] += 1
    else:
        counter[OTHER] += 1


@dataclass(slots=True)
class FeedStatistics:
    messages: Counter[tuple[type, str, str]] = field(default_factory=Counter)
    """(event type, symbol, interval) -> count; formatted only by ``as_dict``."""
    malformed: Counter[str] = field(default_factory=Counter)
    """``field: reason`` -> count."""
    unknown: Counter[str] = field(default_factory=Counter)
    reconnects: Counter[str] = field(default_factory=Counter)
    """reason -> count: silent, closed, unable_to_connect, queue_overflow, error."""
    gaps: int = 0
    backfilled: int = 0
    unfilled: int = 0
    duplicates: int = 0
    connected: bool = False
    last_message_ns: int = 0

    def as_dict(self) -> dict[str, Any]:
        by_type: dict[str, dict[str, int]] = {}
        for (kind, symbol, interval), count in self.messages.items():
            where = f"{symbol}@{interval}" if interval else symbol
            by_type.setdefault(kind.__name__, {})[where] = count
        return {
            "messages": by_type,
            "malformed": dict(self.malformed.most_common()),
            "unknown_event_types": dict(self.unknown.most_common()),
            "reconnects": dict(self.reconnects),
            "kline_gaps": self.gaps,
            "klines_backfilled": self.backfilled,
            "klines_unfilled": self.unfilled,
            "duplicate_klines": self.duplicates,
        }


# python-binance reports trouble as a message {"e": "error", "type": ..., "m": ...}.
_PYTHON_BINANCE_REASONS = {
    "BinanceWebsocketUnableToConnect": "unable_to_connect",
    "BinanceWebsocketQueueOverflow": "queue_overflow",
    "BinanceWebsocketClosed": "closed",
    "ConnectionClosedError": "closed",
    "ConnectionClosedOK": "closed",
    "IncompleteReadError": "closed",
}
_FATAL_TO_SOCKET = frozenset({"unable_to_connect", "queue_overflow", "error"})


async def _supervise(
    name: str,
    *,
    open_socket: SocketFactory,
    on_connect: Callable[[], Any],
    on_message: Callable[[Any], Any],
    settings: FeedSettings,
    statistics: FeedStatistics,
    clock: Clock,
    backoff: Backoff,
) -> None:
    """Keep one websocket alive and feed its messages to ``on_message``, forever.

    Only failures of the connection itself (opening it, reading from it) lead to a new
    connection; an exception from ``on_connect`` or ``on_message`` is a bug or an exchange
    error and propagates to the caller's supervisor.
    """
    failures = 0
    this = asyncio.current_task()
    while True:
        _raise_if_cancelling(this)
        started = clock.monotonic_ns()
        context = open_socket()
        try:
            socket = await context.__aenter__()
        except Exception as error:
            # websockets, aiohttp and python-binance raise a zoo of types when a connection
            # cannot be opened; all of them mean "try again", and the count and log say which.
            failures += 1
            statistics.reconnects["connect_failed"] += 1
            log.warning(
                "%s: connection failed (%d in a row): %s: %s",
                name,
                failures,
                type(error).__name__,
                error,
            )
            if failures >= settings.connect_attempts:
                raise ExchangeUnavailable(
                    0, f"{name}: {failures} connection attempts failed; last: {error}"
                ) from error
            await clock.sleep(backoff.next_delay())
            continue
        failures = 0
        statistics.connected = True
        log.info("%s connected", name)
        try:
            await on_connect()
            reason = await _read(name, socket, on_message, settings, statistics)
        finally:
            statistics.connected = False
            with contextlib.suppress(Exception):
                await context.__aexit__(None, None, None)
        statistics.reconnects[reason] += 1
        log.warning("%s reconnecting: %s", name, reason)
        if clock.monotonic_ns() - started >= settings.healthy_seconds * 1e9:
            backoff.reset()
        await clock.sleep(backoff.next_delay())


async def _read(
    name: str,
    socket: Socket,
    on_message: Callable[[Any], Any],
    settings: FeedSettings,
    statistics: FeedStatistics,
) -> str:
    """Read until the connection should be replaced; returns why.

    python-binance's ``recv()`` wraps every read in ``asyncio.wait_for`` (a task per
    message), and so would the watchdog. While messages are waiting in the socket's
    internal queue they are taken directly, which keeps the consumer ahead of bursts (the
    queue holds only 100 messages); ``recv()`` and the watchdog run only when it is empty.
    """
    backlog: asyncio.Queue[Any] | None = getattr(socket, "_queue", None)
    this = asyncio.current_task()
    while True:
        if backlog is not None and not backlog.empty():
            message = backlog.get_nowait()
        else:
            # Only here: the swallowed cancellation comes from recv()'s own wait_for.
            _raise_if_cancelling(this)
            try:
                async with asyncio.timeout(settings.watchdog_seconds):
                    message = await socket.recv()
                _raise_if_cancelling(this)
            except TimeoutError:
                return "silent"
            except Exception as error:  # noqa: BLE001  (python-binance's ReadLoopClosed and kin)
                log.warning("%s: read failed: %s: %s", name, type(error).__name__, error)
                return "read_failed"
        if isinstance(message, dict) and message.get("e") == "error":
            reason = _PYTHON_BINANCE_REASONS.get(str(message.get("type")), "error")
            log.warning("%s: %s (%s)", name, message.get("type"), message.get("m"))
            if reason in _FATAL_TO_SOCKET:
                return reason
            statistics.reconnects[reason] += 1
            continue  # python-binance reconnects by itself; missed klines are backfilled
        await on_message(message)


def stream_label(kind: type, symbol: str, interval: str) -> str:
    """The ``stream`` attribute of ``svc.feed.lag``: ``btcusdt@1m``, ``ltcusdt@trade``."""
    return f"{symbol.lower()}@{interval or kind.__name__.lower()}"


def _raise_if_cancelling(task: asyncio.Task[Any] | None) -> None:
    """Honour a pending cancellation that an ``asyncio.wait_for`` swallowed.

    On Python 3.11 ``wait_for`` loses a cancellation that arrives as its inner awaitable
    completes (cpython#86296, fixed in 3.12); python-binance's ``recv()`` uses it, so a
    stop could leave the feed reading forever. ``Task.cancelling()`` still records the
    request, and the read loops check it on every pass.
    """
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class MarketFeed:
    """Market data: connect, read, decode, detect gaps, backfill, publish (module docstring)."""

    def __init__(
        self,
        *,
        streams: list[str],
        open_socket: Callable[[list[str]], AbstractAsyncContextManager[Socket]],
        exchange: ExchangeClient,
        publish: Callable[[Event | Traced], None],
        settings: FeedSettings = FeedSettings(),
        clock: Clock = SYSTEM_CLOCK,
        recorder: StageRecorder | None = None,
        tracer: TickTracer | None = None,
    ) -> None:
        self.streams = streams
        self.statistics = FeedStatistics()
        self._open_socket = open_socket
        self._exchange = exchange
        self._publish = publish
        self._settings = settings
        self._clock = clock
        self._decoder = FrameDecoder()
        self._recorder = recorder
        self._tracer = tracer
        # Bound ``append``s of the recorder's histograms: the hot path calls them directly.
        self._record_parse = recorder.parse.record if recorder is not None else None
        self._record_publish = recorder.publish.record if recorder is not None else None
        self._last_closed: dict[tuple[str, str], int] = {}
        self._message_keys = MAX_STATISTICS_KEYS + len(streams)
        # svc.feed.lag{stream} by message key: the bound ``record`` of the stream's histogram
        self._lag: dict[tuple[type, str, str], Callable[[int], None]] = {}
        self._kline_streams = [
            (s.partition("@")[0].upper(), s.partition("@kline_")[2])
            for s in streams
            if "@kline_" in s
        ]
        self.warmed_up = asyncio.Event()

    async def run(self) -> None:
        await _supervise(
            "market feed",
            open_socket=lambda: self._open_socket(self.streams),
            on_connect=self._on_connect,
            on_message=self._on_message,
            settings=self._settings,
            statistics=self.statistics,
            clock=self._clock,
            backoff=Backoff(
                initial=self._settings.backoff_initial, maximum=self._settings.backoff_max
            ),
        )

    async def _on_connect(self) -> None:
        if not self.warmed_up.is_set():
            await self._warm_up()
            self.warmed_up.set()

    async def _warm_up(self) -> None:
        """Fetch recent closed klines so strategies start warm and gaps have a baseline."""
        count = self._settings.warmup_klines
        if count <= 0:
            return
        for symbol, interval in self._kline_streams:
            rows = await self._exchange.klines(symbol, interval, limit=min(count + 1, 1000))
            # The last row is the kline still forming; everything before it is closed.
            closed = [msgspec.structs.replace(c, closed=True) for c in rows[:-1]][-count:]
            for candle in closed:
                self._publish(candle)
            if closed:
                self._last_closed[(symbol, interval)] = closed[-1].open_time
            self.statistics.backfilled += len(closed)

    async def _on_message(self, message: Any) -> None:
        ts_init = self._clock.time_ns()
        started = _perf_counter_ns()
        try:
            event = self._decoder.decode(message, ts_init)
        except DecodeError as error:
            _count(self.statistics.malformed, f"{error.field}: {error.reason}")
            return
        parsed = _perf_counter_ns()
        record_parse = self._record_parse  # None: no recorder (nothing below records either)
        if record_parse is not None:
            record_parse(parsed - started)
        self.statistics.last_message_ns = ts_init
        if isinstance(event, UnknownEvent):
            _count(self.statistics.unknown, event.event_type)
            return
        if __debug__ and not _plausible(event):
            # Development builds check what the types cannot; `python -O` skips this.
            self.statistics.malformed["invariant: implausible values"] += 1
            return
        if isinstance(event, Candle) and not _kline_times_match(event):
            # Always checked: one kline with a corrupt open time would move the gap
            # detector's baseline, and every later kline would be dropped as a duplicate.
            _count(self.statistics.malformed, "invariant: kline times do not match the interval")
            return
        key: tuple[type, str, str]
        if isinstance(event, Candle):
            key = (Candle, event.symbol, event.interval)
        else:
            key = (type(event), getattr(event, "symbol", ""), "")
        messages = self.statistics.messages
        if record_parse is None:
            if key not in messages and len(messages) >= self._message_keys:
                key = (key[0], OTHER, "")
        else:
            # One lookup: a key with a lag histogram is already counted, so within the cap.
            record_lag = self._lag.get(key)
            if record_lag is None:
                key, record_lag = self._new_lag(key)
            record_lag(ts_init - event.ts_event)  # the decoder bounds event times to int64 ns
        messages[key] += 1
        if isinstance(event, Candle) and not await self._check_gap(event):
            return
        tracer = self._tracer
        trace = None
        if tracer is not None:
            tracer.countdown -= 1  # TickTracer.start, inlined: one decrement per message
            if not tracer.countdown:
                trace = tracer.chosen(ts_init, started)
        if trace is None:
            self._publish(event)
        else:
            trace.stage("parse", started, parsed)
            trace.attributes["symbol"] = getattr(event, "symbol", "")
            trace.attributes["stream"] = type(event).__name__
            self._publish(Traced(event, trace))
            trace.stage("publish", parsed, _perf_counter_ns())
        record_publish = self._record_publish
        if record_publish is not None:
            record_publish(_perf_counter_ns() - parsed)

    def _new_lag(
        self, key: tuple[type, str, str]
    ) -> tuple[tuple[type, str, str], Callable[[int], None]]:
        """The counted key of a key without a lag histogram yet, and its histogram's record.

        Within the cap the key's histogram is created and remembered; beyond it the message
        counts under ``OTHER``, and its key is not remembered (so it is never taken as counted).
        """
        assert self._recorder is not None
        admitted = key in self.statistics.messages or len(self.statistics.messages) < (
            self._message_keys
        )
        counted = key if admitted else (key[0], OTHER, "")
        record = self._recorder.stream_lag(stream_label(*counted)).record
        if admitted:
            self._lag[key] = record
        return counted, record

    async def _check_gap(self, candle: Candle) -> bool:
        """Backfill closed klines missed before ``candle``; False if it is a duplicate."""
        key = (candle.symbol, candle.interval)
        last = self._last_closed.get(key)
        step = INTERVAL_NS.get(candle.interval)
        if last is None or step is None:
            if candle.closed:
                self._last_closed[key] = candle.open_time
            return True
        expected = last + step
        if candle.closed and candle.open_time < expected:
            self.statistics.duplicates += 1
            return False
        last_missing = candle.open_time - step
        if last_missing >= expected:
            await self._backfill(candle.symbol, candle.interval, expected, last_missing)
        if candle.closed:
            self._last_closed[key] = candle.open_time
        return True

    async def _backfill(self, symbol: str, interval: str, first_ns: int, last_ns: int) -> None:
        self.statistics.gaps += 1
        wanted = (last_ns - first_ns) // INTERVAL_NS[interval] + 1
        try:
            rows = await self._exchange.klines(
                symbol,
                interval,
                start_ms=first_ns // NS_PER_MS,
                end_ms=last_ns // NS_PER_MS,
                limit=1000,
            )
        except ExchangeError as error:
            log.warning("kline backfill %s %s failed: %s", symbol, interval, error)
            self.statistics.unfilled += wanted
            return
        filled = [
            msgspec.structs.replace(c, closed=True)
            for c in rows
            if first_ns <= c.open_time <= last_ns
        ]
        for candle in filled:
            self._publish(candle)
        if filled:
            self._last_closed[(symbol, interval)] = filled[-1].open_time
        self.statistics.backfilled += len(filled)
        self.statistics.unfilled += wanted - len(filled)
        log.info("backfilled %d of %d %s %s klines", len(filled), wanted, symbol, interval)


def _kline_times_match(candle: Candle) -> bool:
    """Binance closes a kline 1 ms before the next one opens: ``T = t + interval - 1 ms``."""
    step = INTERVAL_NS.get(candle.interval)
    return step is None or candle.close_time - candle.open_time == step - NS_PER_MS


def _plausible(event: Event) -> bool:
    """Invariants of market data that a well-formed frame can still break."""
    if isinstance(event, Candle):
        return (
            0
            < event.low
            <= min(event.open, event.close)
            <= max(event.open, event.close)
            <= event.high
        )
    if isinstance(event, Trade):
        return event.price > 0 and event.quantity >= 0
    if isinstance(event, Quote):
        return event.bid_price >= 0 and event.ask_price >= 0
    return True


class UserDataFeed:
    """Execution reports from the user-data stream -> ``on_update``."""

    def __init__(
        self,
        *,
        open_socket: SocketFactory,
        on_update: Callable[[OrderUpdate], None],
        settings: FeedSettings = FeedSettings(),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.statistics = FeedStatistics()
        self._open_socket = open_socket
        self._on_update = on_update
        self._settings = settings
        self._clock = clock
        self._decoder = FrameDecoder(stream="userData")
        self.connected = asyncio.Event()

    async def run(self) -> None:
        # A user-data stream is quiet when nothing trades: no watchdog on silence.
        settings = FeedSettings(
            watchdog_seconds=float(365 * 24 * 3600),
            backoff_initial=self._settings.backoff_initial,
            backoff_max=self._settings.backoff_max,
            healthy_seconds=self._settings.healthy_seconds,
            connect_attempts=self._settings.connect_attempts,
        )
        await _supervise(
            "user-data feed",
            open_socket=self._open_socket,
            on_connect=self._on_connect,
            on_message=self._on_message,
            settings=settings,
            statistics=self.statistics,
            clock=self._clock,
            backoff=Backoff(
                initial=self._settings.backoff_initial, maximum=self._settings.backoff_max
            ),
        )

    async def _on_connect(self) -> None:
        self.connected.set()

    async def _on_message(self, message: Any) -> None:
        raw = message if isinstance(message, str | bytes) else msgspec.json.encode(message)
        try:
            event = self._decoder.decode(raw, self._clock.time_ns())
        except DecodeError as error:
            _count(self.statistics.malformed, f"{error.field}: {error.reason}")
            return
        self.statistics.messages[(type(event), "user", "")] += 1
        if isinstance(event, OrderUpdate):
            self._on_update(event)
