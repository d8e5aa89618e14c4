"""What every roadmap phase shares: the bot's strategy, the decision tape, logging set-ups,
the shape of a built pipeline, and the memory probe.

None of this is a roadmap step. The strategy and the order size are the bot's and stay
fixed; the tape is the benchmark's stopwatch (one ``perf_counter_ns`` and one array append
where the strategy has decided).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import logging.handlers
import queue
import tracemalloc
from array import array
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import msgspec

BOT_LOGGER = "bench.roadmap.bot"
"""The bot's logger tree; ``src.*`` modules of the seed map to children of it."""
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
ORDER_QUANTITY = Decimal("0.001")
QUANTITY_STEP = Decimal("0.00001")


class Tape:
    """Receive -> decision time of every message of one run, in ns."""

    __slots__ = ("last_ns", "latencies", "orders")

    def __init__(self) -> None:
        self.latencies = array("q")
        self.last_ns = 0
        self.orders = 0

    def decided(self, received_ns: int) -> int:
        """Stamp the decision on the message received at ``received_ns``; returns the latency."""
        now = perf_counter_ns()
        latency = now - received_ns
        self.latencies.append(latency)
        self.last_ns = now
        return latency

    def reset(self) -> None:
        self.latencies = array("q")
        self.last_ns = 0
        self.orders = 0

    def __len__(self) -> int:
        return len(self.latencies)


class EmaCross:
    """The bot's strategy, the same in every phase: an EMA 5/13 crossover of closed candles.

    It keeps its candle history in ``candles`` (a bounded deque): those are the live candles
    whose size the roadmap's slots step is about. BUY on a cross up when flat, SELL on a cross
    down when long; trades only update the last price.
    """

    __slots__ = (
        "_fast",
        "_fast_alpha",
        "_sign",
        "_slow",
        "_slow_alpha",
        "candles",
        "last_price",
        "long",
    )

    def __init__(self, *, history: int, fast: int = 5, slow: int = 13) -> None:
        self.candles: deque[object] = deque(maxlen=history)
        self._fast_alpha = 2.0 / (fast + 1)
        self._slow_alpha = 2.0 / (slow + 1)
        self._fast: float | None = None
        self._slow = 0.0
        self._sign = 0
        self.last_price = 0.0
        self.long = False

    def on_candle(self, candle: object, close: float, closed: bool) -> str | None:
        if not closed:
            return None
        self.candles.append(candle)
        fast = self._fast
        if fast is None:
            self._fast = self._slow = close
            return None
        fast += self._fast_alpha * (close - fast)
        slow = self._slow + self._slow_alpha * (close - self._slow)
        self._fast, self._slow = fast, slow
        if fast == slow:
            return None
        sign = 1 if fast > slow else -1
        previous, self._sign = self._sign, sign
        if previous in (0, sign):
            return None
        if sign > 0 and not self.long:
            self.long = True
            return "BUY"
        if sign < 0 and self.long:
            self.long = False
            return "SELL"
        return None

    def on_trade(self, price: float) -> None:
        self.last_price = price


@dataclass(slots=True)
class Pipeline:
    """One phase, built and ready: what the reader thread calls and what the run reads."""

    handle: Callable[[str, int], None]
    """Called on the websocket reader thread with each raw frame and its receive time."""
    parse_candle: Callable[[str], object]
    """One kline frame -> the candle object this phase keeps alive (prefill, memory probe)."""
    strategy: EmaCross
    tape: Tape
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    dropped: Callable[[], int]
    """Messages the phase dropped on purpose (phase 3's data tier under overload)."""
    facts: Callable[[], dict[str, Any]]
    """What the phase really runs: handlers, levels, types; read after ``stop``."""
    service_metrics: Callable[[], dict[str, Any]] = field(default=dict)
    """The phase's own telemetry, when it has any (phase 3)."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    workdir: Path
    tape: Tape
    history: int


@dataclass(frozen=True, slots=True)
class Phase:
    number: int
    name: str
    seed_steps: tuple[str, ...]
    build: Callable[[BuildContext], Pipeline]
    loop_factory: Callable[[], Any] | None = None
    """``None``: asyncio's default loop, as the bot had."""
    gc_threshold: tuple[int, int, int] | None = None
    freeze_after_warmup: bool = False


# ---------------------------------------------------------------- logging set-ups


class BotLogging:
    """The handlers a phase hung on the bot's logger; ``close`` takes them down again."""

    def __init__(
        self,
        *,
        level: int,
        handler: logging.Handler,
        file_handler: logging.FileHandler,
        listener: logging.handlers.QueueListener | None = None,
    ) -> None:
        self.logger = logging.getLogger(BOT_LOGGER)
        self.handler = handler
        self.file_handler = file_handler
        self.listener = listener
        self.path = Path(file_handler.baseFilename)
        for existing in self.logger.handlers[:]:
            self.logger.removeHandler(existing)
        self.logger.setLevel(level)
        self.logger.propagate = False
        self.logger.addHandler(handler)
        if listener is not None:
            listener.start()

    def child(self, name: str) -> logging.Logger:
        return self.logger.getChild(name)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        if self.listener is not None:
            self.listener.stop()  # writes what is queued
        self.file_handler.close()

    def facts(self) -> dict[str, Any]:
        text = self.path.read_bytes() if self.path.exists() else b""
        return {
            "log_level": logging.getLevelName(self.logger.level),
            "log_handler": type(self.handler).__name__,
            "log_writer": type(self.file_handler).__name__
            + (" on a QueueListener thread" if self.listener else " on the calling thread"),
            "log_lines": text.count(b"\n"),
            "log_debug_lines": text.count(b" - DEBUG - "),
        }


def _file_handler(path: Path) -> logging.FileHandler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def sync_file_logging(path: Path, *, level: int) -> BotLogging:
    """``src/utils/logger.py`` as found: the file is written by whoever logs (issue #2)."""
    file_handler = _file_handler(path)
    return BotLogging(level=level, handler=file_handler, file_handler=file_handler)


def queue_logging(path: Path, *, level: int, handler: logging.handlers.QueueHandler) -> BotLogging:
    """The seed's fix for issue #2: ``handler`` enqueues, a ``QueueListener`` thread writes."""
    file_handler = _file_handler(path)
    log_queue: queue.Queue[Any] = handler.queue  # type: ignore[assignment]
    listener = logging.handlers.QueueListener(log_queue, file_handler)
    return BotLogging(level=level, handler=handler, file_handler=file_handler, listener=listener)


# ---------------------------------------------------------------- memory


def bytes_per_live_object(build: Callable[[int], object], count: int) -> float:
    """Bytes each of ``count`` objects made by ``build(i)`` keeps allocated (tracemalloc).

    Counts the object and every value only it references (strings, floats, datetimes, the
    instance ``__dict__``); not the list slot that keeps it alive, nor garbage the parse
    left behind (it is collected before the second reading).
    """
    keep: list[object] = [None] * count
    build(0)  # first-call caches (decoder routes, type caches) are not per-object memory
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(count):
            keep[index] = build(index)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / count


def object_bytes(sample: object, count: int) -> float:
    """Bytes of the instance alone: ``count`` copies of ``sample`` that share all its values.

    ``sys.getsizeof(obj) + sys.getsizeof(obj.__dict__)`` would overstate a plain instance on
    CPython 3.11+, where attribute values live inline and reading ``__dict__`` creates the
    dict it then measures; ``tracemalloc`` sees what the instance really holds.
    """
    kind: Any = type(sample)
    if dataclasses.is_dataclass(sample):
        fields = {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample)}
    else:
        fields = msgspec.structs.asdict(sample)  # type: ignore[arg-type]
    return bytes_per_live_object(lambda _index: kind(**fields), count)
