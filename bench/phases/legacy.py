"""Phases 0 and 1: the bot as the seed review found it, and after the review's phase 1.

The classes are named after the modules the review quotes (``src/core/data_collector.py``,
``src/core/event_handler.py``, ``src/execution/audit_logger.py``, ``src/main.py``). Phase 1
changes exactly the four things the review's phase 1 lists; everything else is shared code.
The event bus defined here also serves phase 2, with the review's issue #6 fix switched on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import queue
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.phases.common import (
    ORDER_QUANTITY,
    QUANTITY_STEP,
    BotLogging,
    BuildContext,
    EmaCross,
    Phase,
    Pipeline,
    Tape,
    queue_logging,
    sync_file_logging,
)

# ---------------------------------------------------------------- src/models (issue #4)


@dataclass
class Candle:
    """``src/models/candle.py`` as found: a plain dataclass (an instance ``__dict__``)."""

    symbol: str
    interval: str
    open_time: datetime
    close_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    is_closed: bool
    event_time: datetime


@dataclass(slots=True)
class SlottedCandle:
    """The review's issue #4 fix applied alone: the same fields, ``@dataclass(slots=True)``."""

    symbol: str
    interval: str
    open_time: datetime
    close_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    is_closed: bool
    event_time: datetime


@dataclass
class Trade:
    """``src/models/event.py``'s trade as found."""

    symbol: str
    trade_id: int
    price: float
    quantity: float
    is_buyer_maker: bool
    trade_time: datetime
    event_time: datetime


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def parse_candle(data: dict[str, Any], kind: type[Candle | SlottedCandle] = Candle) -> Any:
    """The kline payload of one frame -> a candle; datetimes built at once (2.1: 매 메시지마다)."""
    k = data["k"]
    return kind(
        symbol=k["s"],
        interval=k["i"],
        open_time=_time(k["t"]),
        close_time=_time(k["T"]),
        open=float(k["o"]),
        high=float(k["h"]),
        low=float(k["l"]),
        close=float(k["c"]),
        volume=float(k["v"]),
        quote_volume=float(k["q"]),
        trades=int(k["n"]),
        is_closed=bool(k["x"]),
        event_time=_time(data["E"]),
    )


def parse_trade(data: dict[str, Any]) -> Trade:
    return Trade(
        symbol=data["s"],
        trade_id=int(data["a"]),
        price=float(data["p"]),
        quantity=float(data["q"]),
        is_buyer_maker=bool(data["m"]),
        trade_time=_time(data["T"]),
        event_time=_time(data["E"]),
    )


def parse_candle_frame(frame: str) -> Candle:
    return parse_candle(json.loads(frame)["data"])  # type: ignore[no-any-return]


# ---------------------------------------------------------------- src/core/data_collector.py

Callback = Callable[[Candle | Trade, int], None]


class FoundCollector:
    """Phase 0: ``BinanceDataCollector._handle_kline_message`` as the review quotes it.

    Runs on the websocket library's thread. Lines 185 (``import json`` per call, issue #5),
    228-232 (an f-string debug line per message, issue #1) and 223 (a synchronous
    ``on_candle_callback``, issue #3) are kept as quoted.
    """

    def __init__(self, *, logger: logging.Logger, on_candle_callback: Callback) -> None:
        self.logger = logger
        self.on_candle_callback = on_candle_callback

    def handle(self, message: Any, received_ns: int) -> None:
        if isinstance(message, str):
            import json  # noqa: PLC0415 - issue #5 as found: an import statement per message

            message = json.loads(message)
        data = message["data"]
        event: Candle | Trade
        if data["e"] == "kline":
            candle = event = parse_candle(data)
            self.logger.debug(
                f"Parsed candle: {candle.symbol} {candle.interval} "  # noqa: G004 - issue #1
                f"@ {candle.close_time.isoformat()} "
                f"(close={candle.close}, closed={candle.is_closed})"
            )
        else:
            trade = event = parse_trade(data)
            self.logger.debug(
                f"Parsed trade: {trade.symbol} {trade.trade_id} "  # noqa: G004 - issue #1
                f"@ {trade.trade_time.isoformat()} (price={trade.price}, qty={trade.quantity})"
            )
        if self.on_candle_callback:
            self.on_candle_callback(event, received_ns)


class QuickWinCollector(FoundCollector):
    """Phase 1: issue #5 (``json`` imported at module top) and #1 (debug guarded) fixed."""

    def handle(self, message: Any, received_ns: int) -> None:
        if isinstance(message, str):
            message = json.loads(message)
        data = message["data"]
        event: Candle | Trade
        debug = self.logger.isEnabledFor(logging.DEBUG)
        if data["e"] == "kline":
            candle = event = parse_candle(data)
            if debug:
                self.logger.debug(
                    f"Parsed candle: {candle.symbol} {candle.interval} "  # noqa: G004 - guarded
                    f"@ {candle.close_time.isoformat()} "
                    f"(close={candle.close}, closed={candle.is_closed})"
                )
        else:
            trade = event = parse_trade(data)
            if debug:
                self.logger.debug(
                    f"Parsed trade: {trade.symbol} {trade.trade_id} "  # noqa: G004 - guarded
                    f"@ {trade.trade_time.isoformat()} (price={trade.price}, qty={trade.quantity})"
                )
        if self.on_candle_callback:
            self.on_candle_callback(event, received_ns)


# ---------------------------------------------------------------- src/main.py: the callback


def blocking_hand_off(bus: LegacyEventBus, loop: asyncio.AbstractEventLoop) -> Callback:
    """Phase 0 (issue #3): the websocket thread waits until the loop has queued the event,
    so a busy loop or a full data queue stalls the socket reader ("전체 파이프라인 대기")."""

    def on_candle(event: Any, received_ns: int) -> None:
        asyncio.run_coroutine_threadsafe(bus.publish("data", (event, received_ns)), loop).result()

    return on_candle


def queue_hand_off(bus: LegacyEventBus, loop: asyncio.AbstractEventLoop) -> Callback:
    """Phase 1 (the review's "방법 1"): schedule the put on the loop and return at once.

    Unbounded in disguise: when the data queue is full, every pending put is a task
    waiting on the loop (phase 3 replaces it with a drop-oldest tier).
    """

    def on_candle(event: Any, received_ns: int) -> None:
        asyncio.run_coroutine_threadsafe(bus.publish("data", (event, received_ns)), loop)

    return on_candle


# ---------------------------------------------------------------- src/core/event_handler.py


class LegacyEventBus:
    """The bot's three-tier ``asyncio.Queue`` bus (review 2.3) and its ``_process_queue``.

    ``guard_debug`` is the phase-1 fix of issue #1 for its debug line; ``sync_to_thread`` is
    the phase-2 fix of issue #6 (synchronous handlers run through ``asyncio.to_thread``
    instead of on the loop).
    """

    def __init__(self, *, logger: logging.Logger, guard_debug: bool, sync_to_thread: bool):
        self.logger = logger
        self._guard_debug = guard_debug
        self._sync_to_thread = sync_to_thread
        self._queues: dict[str, asyncio.Queue[Any]] = {
            "data": asyncio.Queue(maxsize=1000),  # 고빈도, 드롭 가능
            "signal": asyncio.Queue(maxsize=100),  # 중간 우선순위
            "order": asyncio.Queue(maxsize=50),  # 크리티컬, 절대 드롭 불가
        }
        self._handlers: dict[str, list[Callable[[Any], Any]]] = {name: [] for name in self._queues}
        self._tasks: list[asyncio.Task[None]] = []
        self.handler_errors = 0

    def subscribe(self, tier: str, handler: Callable[[Any], Any]) -> None:
        self._handlers[tier].append(handler)

    async def publish(self, tier: str, event: Any) -> None:
        await self._queues[tier].put(event)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._process_queue(name), name=f"bus.{name}")
            for name in self._queues
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _process_queue(self, tier: str) -> None:
        queue = self._queues[tier]
        handlers = self._handlers[tier]
        while True:
            event = await queue.get()
            if not self._guard_debug or self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug(
                    f"Dispatching {type(event).__name__} from the {tier} queue "  # noqa: G004 - issue #1
                    f"to {len(handlers)} handler(s)"
                )
            for handler in handlers:
                try:
                    if asyncio.iscoroutinefunction(handler):
                        await handler(event)
                    elif self._sync_to_thread:
                        await asyncio.to_thread(handler, event)
                    else:
                        handler(event)  # 동기 핸들러 -> 이벤트 루프 블로킹 (issue #6)
                except Exception:
                    self.handler_errors += 1
                    self.logger.exception("handler %r failed on the %s queue", handler, tier)
            queue.task_done()


# ---------------------------------------------------------------- src/execution/audit_logger.py


class AuditLogger:
    """Issue #7 as found: JSON-serialise every order event and append it, synchronously.

    Opens, appends, flushes and closes the file per record on the caller's thread: the
    event loop, since the order queue's consumer calls it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = 0

    def log_order(self, order: dict[str, Any]) -> None:
        record = {"timestamp": datetime.now(UTC).isoformat(), "event": "order_submitted", **order}
        line = json.dumps(record, default=str)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")
            file.flush()
        self.records += 1


# ---------------------------------------------------------------- src/main.py: the bot


class LegacyBot:
    """The loop side: strategy step on the data queue, order building, order handlers."""

    def __init__(
        self,
        *,
        bus: LegacyEventBus,
        strategy: EmaCross,
        tape: Tape,
        audit: AuditLogger,
        logger: logging.Logger,
    ):
        self.bus = bus
        self.strategy = strategy
        self.tape = tape
        self.audit = audit
        self.logger = logger
        self._orders = 0

    async def on_market(self, item: tuple[Candle | Trade, int]) -> None:
        event, received_ns = item
        if type(event) is Candle:
            side = self.strategy.on_candle(event, event.close, event.is_closed)
        else:
            self.strategy.on_trade(event.price)
            side = None
        self.tape.decided(received_ns)
        if side is not None:
            await self.bus.publish("order", self._order(event, side))

    def _order(self, event: Candle | Trade, side: str) -> dict[str, Any]:
        # Decimal only where the order is built (review 2.1: "주문 시점에만 변환").
        self._orders += 1
        self.tape.orders += 1
        return {
            "client_order_id": f"bot-{self._orders}",
            "symbol": event.symbol,
            "side": side,
            "type": "MARKET",
            "quantity": ORDER_QUANTITY.quantize(QUANTITY_STEP),
            "reference_price": event.close if isinstance(event, Candle) else event.price,
        }

    def log_submitted(self, order: dict[str, Any]) -> None:
        """The bot's INFO line per order: an f-string, enabled in every phase."""
        self.logger.info(
            f"Order submitted: {order['client_order_id']} {order['side']} "  # noqa: G004 - the bot's
            f"{order['quantity']} {order['symbol']} @ ~{order['reference_price']}"
        )


# ---------------------------------------------------------------- assembly


def _build_legacy(context: BuildContext, *, phase: int) -> Pipeline:
    loop = asyncio.get_running_loop()
    log_path = context.workdir / "bot.log"
    logs: BotLogging
    if phase == 0:
        logs = sync_file_logging(log_path, level=logging.DEBUG)  # DEBUG: no default (2.2)
    else:
        handler = logging.handlers.QueueHandler(queue.Queue())  # the seed's snippet: unbounded
        logs = queue_logging(log_path, level=logging.INFO, handler=handler)
    bus = LegacyEventBus(
        logger=logs.child("event_handler"), guard_debug=phase >= 1, sync_to_thread=False
    )
    strategy = EmaCross(history=context.history)
    audit = AuditLogger(context.workdir / "audit.jsonl")
    bot = LegacyBot(
        bus=bus, strategy=strategy, tape=context.tape, audit=audit, logger=logs.child("main")
    )
    bus.subscribe("data", bot.on_market)
    bus.subscribe("order", audit.log_order)
    bus.subscribe("order", bot.log_submitted)
    hand_off = blocking_hand_off if phase == 0 else queue_hand_off
    collector_type = FoundCollector if phase == 0 else QuickWinCollector
    collector = collector_type(
        logger=logs.child("data_collector"), on_candle_callback=hand_off(bus, loop)
    )

    async def stop() -> None:
        await bus.stop()
        logs.close()

    def facts() -> dict[str, Any]:
        return {
            **logs.facts(),
            "collector": type(collector).__name__,
            "hand_off": hand_off.__name__,
            "bus": f"{type(bus).__name__}(sync handlers on the loop)",
            "audit": f"{type(audit).__name__} (open/append/flush per order on the loop)",
            "audit_records": audit.records,
            "handler_errors": bus.handler_errors,
        }

    return Pipeline(
        handle=collector.handle,
        parse_candle=parse_candle_frame,
        strategy=strategy,
        tape=context.tape,
        start=bus.start,
        stop=stop,
        dropped=lambda: 0,
        facts=facts,
    )


PHASE_0 = Phase(
    number=0,
    name="as found",
    seed_steps=(
        "#1 unguarded f-string logger.debug per message (data_collector.py:228-232)",
        "#2 synchronous logging.FileHandler at DEBUG",
        "#3 blocking websocket callback (run_coroutine_threadsafe(...).result())",
        "#4 plain @dataclass events; datetime parsed per message (2.1)",
        "#5 import json inside the handler",
        "#6 synchronous handlers called on the loop",
        "#7 audit open/append/flush per order on the loop",
    ),
    build=lambda context: _build_legacy(context, phase=0),
)

PHASE_1 = Phase(
    number=1,
    name="quick wins",
    seed_steps=(
        "phase 1.1 debug guarded with isEnabledFor, DEBUG off (INFO)",
        "phase 1.2 QueueHandler + QueueListener",
        "phase 1.3 websocket callback -> run_coroutine_threadsafe(queue.put), no wait",
        "phase 1.4 import json at module top",
    ),
    build=lambda context: _build_legacy(context, phase=1),
)
