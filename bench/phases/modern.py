"""Phases 2 and 3: the review's phase 2 (data structures, handlers and audit off the loop)
and phase 3 (metrics, GC and loop tuning, bounded tiered queues), built from svc's parts.

Phase 2 keeps phase 1's logging, hand-off and event bus (now with the issue #6 fix on) and
swaps the data path for svc's: ``FrameDecoder`` -> ``svc.model`` events (slotted, frozen
``msgspec.Struct``, integer-ns timestamps, no ``datetime``) and the audit file for svc's
``AuditJournal`` (queue + writer thread). Phase 3 swaps the bus for svc's ``EventBus``, the
log queue for svc's bounded one, adds the service's own metrics, uvloop and GC tuning.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import queue
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

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
)
from bench.phases.legacy import LegacyEventBus, queue_hand_off
from svc.audit import AuditJournal
from svc.binance.streams import FrameDecoder
from svc.bus import EventBus
from svc.latency import LatencyHistogram
from svc.logs import DroppingQueueHandler
from svc.model import Candle, Event, NewOrder, Trade
from svc.runtime import GcPauses

GC_THRESHOLD = (50_000, 20, 20)
"""Phase 3's ``gc.set_threshold``, the tuning ``bench/gc.py`` measures: generation 0 is
collected after 50,000 net allocations of container objects instead of 700 (~70x rarer) and
the older generations less often. Each young collection stays short because market events
(``gc=False`` structs) are never tracked; ``gc.freeze()`` after warm-up keeps full
collections short."""
LOG_QUEUE_CAPACITY = 10_000
AUDIT_FSYNC = "never"
"""The same durability as phase 0's audit logger (flush, no fsync), so only where the write
happens changes; svc's own default fsyncs batches that hold critical records."""

Callback = Callable[[Event, int], None]


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional: phase 3 uses it only when installed
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


class DecoderCollector:
    """The websocket handler after phase 2: svc's ``FrameDecoder``, a guarded debug line."""

    def __init__(self, *, logger: logging.Logger, on_event_callback: Callback) -> None:
        self.logger = logger
        self.on_event_callback = on_event_callback
        self._decode = FrameDecoder().decode

    def handle(self, message: str, received_ns: int) -> None:
        event = self._decode(message, time.time_ns())
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("Parsed %r", event)
        self.on_event_callback(event, received_ns)


def tier_hand_off(bus: EventBus, loop: asyncio.AbstractEventLoop) -> Callback:
    """Phase 3: one ``call_soon_threadsafe`` onto svc's data tier, which never blocks and
    drops the oldest event (counted) when full; no task or future per message."""
    put_nowait = bus.data.put_nowait
    call_soon_threadsafe = loop.call_soon_threadsafe

    def on_event(event: Event, received_ns: int) -> None:
        call_soon_threadsafe(put_nowait, (event, received_ns))

    return on_event


class ModernBot:
    """The loop side with svc's events: the same strategy, orders as ``svc.model.NewOrder``."""

    def __init__(
        self,
        *,
        publish_order: Callable[[NewOrder], Any],
        strategy: EmaCross,
        tape: Tape,
        journal: AuditJournal,
        logger: logging.Logger,
        tick_histogram: LatencyHistogram | None = None,
    ) -> None:
        self._publish_order = publish_order
        self.strategy = strategy
        self.tape = tape
        self.journal = journal
        self.logger = logger
        self.tick_histogram = tick_histogram
        self._orders = 0

    async def on_market(self, item: tuple[Event, int]) -> None:
        event, received_ns = item
        side = None
        if type(event) is Candle:
            side = self.strategy.on_candle(event, event.close, event.closed)
        elif type(event) is Trade:
            self.strategy.on_trade(event.price)
        latency = self.tape.decided(received_ns)
        if self.tick_histogram is not None:  # phase 3: the service's own tick metric
            self.tick_histogram.record(latency)
        if side is not None:
            await self._publish_order(self._order(event, side))

    def _order(self, event: Event, side: str) -> NewOrder:
        self._orders += 1
        self.tape.orders += 1
        return NewOrder(
            client_order_id=f"bot-{self._orders}",
            symbol=event.symbol,  # type: ignore[union-attr]
            side=side,  # type: ignore[arg-type]
            order_type="MARKET",
            quantity=ORDER_QUANTITY.quantize(QUANTITY_STEP),
            price=Decimal(0),  # MARKET
            time_in_force="",
            strategy="ema_cross",
            ts_init=event.ts_init,  # type: ignore[union-attr]
        )

    def record_order(self, order: NewOrder) -> None:
        """A plain function: phase 2's bus runs it through ``asyncio.to_thread``."""
        self.journal.record("order.submit", msgspec.structs.asdict(order), critical=True)

    def log_submitted(self, order: NewOrder) -> None:
        """The bot's INFO line per order, as in phases 0 and 1."""
        self.logger.info(
            f"Order submitted: {order.client_order_id} {order.side} "  # noqa: G004 - the bot's
            f"{order.quantity} {order.symbol}"
        )

    async def on_order(self, order: NewOrder) -> None:
        """Phase 3: both enqueue only (journal queue, log queue), so they run inline."""
        self.record_order(order)
        self.log_submitted(order)


def _candle_parser() -> Callable[[str], object]:
    decode = FrameDecoder().decode
    return lambda frame: decode(frame, time.time_ns())


def _journal_facts(journal: AuditJournal) -> dict[str, Any]:
    stats = journal.statistics()
    return {
        "audit": f"svc AuditJournal (writer thread, fsync={AUDIT_FSYNC})",
        "audit_records": stats.written,
        "audit_dropped": stats.dropped,
    }


def _build_phase2(context: BuildContext, *, to_thread: bool = True) -> Pipeline:
    """Phase 2; ``to_thread=False`` switches its step 2.2 off (sync handlers run inline)."""
    loop = asyncio.get_running_loop()
    handler = logging.handlers.QueueHandler(queue.Queue())
    logs = queue_logging(context.workdir / "bot.log", level=logging.INFO, handler=handler)
    bus = LegacyEventBus(
        logger=logs.child("event_handler"), guard_debug=True, sync_to_thread=to_thread
    )
    journal = AuditJournal(path=context.workdir / "audit.jsonl", fsync=AUDIT_FSYNC)
    journal.start()
    strategy = EmaCross(history=context.history)

    async def publish_order(order: NewOrder) -> None:
        await bus.publish("order", order)

    bot = ModernBot(
        publish_order=publish_order,
        strategy=strategy,
        tape=context.tape,
        journal=journal,
        logger=logs.child("main"),
    )
    bus.subscribe("data", bot.on_market)
    bus.subscribe("order", bot.record_order)  # plain functions: to_thread (issue #6 fix)
    bus.subscribe("order", bot.log_submitted)
    collector = DecoderCollector(
        logger=logs.child("data_collector"), on_event_callback=queue_hand_off(bus, loop)
    )

    async def stop() -> None:
        await bus.stop()
        journal.stop()
        logs.close()

    def facts() -> dict[str, Any]:
        return {
            **logs.facts(),
            **_journal_facts(journal),
            "collector": type(collector).__name__,
            "hand_off": queue_hand_off.__name__,
            "bus": f"{type(bus).__name__}(sync handlers "
            + ("via asyncio.to_thread)" if to_thread else "on the loop)"),
            "handler_errors": bus.handler_errors,
        }

    return Pipeline(
        handle=collector.handle,
        parse_candle=_candle_parser(),
        strategy=strategy,
        tape=context.tape,
        start=bus.start,
        stop=stop,
        dropped=lambda: 0,
        facts=facts,
    )


def _build_phase3(context: BuildContext) -> Pipeline:
    loop = asyncio.get_running_loop()
    handler = DroppingQueueHandler(queue.Queue(LOG_QUEUE_CAPACITY))
    logs: BotLogging = queue_logging(
        context.workdir / "bot.log", level=logging.INFO, handler=handler
    )
    bus = EventBus()
    journal = AuditJournal(path=context.workdir / "audit.jsonl", fsync=AUDIT_FSYNC)
    journal.start()
    strategy = EmaCross(history=context.history)
    tick_histogram = LatencyHistogram()
    gc_pauses = GcPauses()
    bot = ModernBot(
        publish_order=bus.order.put,
        strategy=strategy,
        tape=context.tape,
        journal=journal,
        logger=logs.child("main"),
        tick_histogram=tick_histogram,
    )
    bus.subscribe("data", bot.on_market)
    bus.subscribe("order", bot.on_order)
    collector = DecoderCollector(
        logger=logs.child("data_collector"), on_event_callback=tier_hand_off(bus, loop)
    )
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        gc_pauses.install()
        tasks.append(asyncio.create_task(bus.run(), name="bus"))
        tasks.append(asyncio.create_task(gc_pauses.run(), name="runtime.gc"))
        await asyncio.sleep(0)

    async def stop() -> None:
        await bus.drain(5.0)
        bus.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        gc_pauses.uninstall()
        journal.stop()
        logs.close()

    def facts() -> dict[str, Any]:
        data = bus.data.statistics()
        return {
            **logs.facts(),
            **_journal_facts(journal),
            "log_dropped": handler.dropped,
            "collector": type(collector).__name__,
            "hand_off": tier_hand_off.__name__,
            "bus": "svc EventBus (data drops oldest, order never drops)",
            "data_tier_dropped": data.dropped,
            "data_tier_high_water": data.high_water,
            "handler_errors": sum(t.handler_errors for t in bus.statistics().values()),
        }

    def service_metrics() -> dict[str, Any]:
        """What the phase's own telemetry saw (the seed's phase 3.1), over the whole process."""
        gc_pauses.drain()
        pauses = LatencyHistogram()
        for histogram in gc_pauses.histograms.values():
            pauses.merge(histogram)
        return {
            "tick_p99_us": tick_histogram.percentile(99) / 1e3,
            "tick_count": tick_histogram.count,
            "gc_pause_p99_ms": pauses.percentile(99) / 1e6 if pauses.count else 0.0,
            "gc_pauses": pauses.count,
            "queue_wait_p99_us": bus.data.queue_wait.percentile(99) / 1e3,
            "data_tier_dropped": bus.data.statistics().dropped,
        }

    return Pipeline(
        handle=collector.handle,
        parse_candle=_candle_parser(),
        strategy=strategy,
        tape=context.tape,
        start=start,
        stop=stop,
        dropped=lambda: bus.data.statistics().dropped,
        facts=facts,
        service_metrics=service_metrics,
    )


PHASE_2 = Phase(
    number=2,
    name="data structures",
    seed_steps=(
        "phase 2.1 slotted events: svc.model msgspec Structs via FrameDecoder",
        "2.1 checklist: integer-ns timestamps, no datetime per message",
        "phase 2.2 sync handlers via asyncio.to_thread",
        "phase 2.3 audit off the loop: svc AuditJournal (queue + writer thread)",
    ),
    build=_build_phase2,
)

PHASE_2_INLINE_HANDLERS = Phase(
    number=2,
    name="data structures, step 2.2 off",
    seed_steps=(
        *PHASE_2.seed_steps[:2],
        "phase 2.2 switched off: the order handlers (journal record, log) run inline",
        PHASE_2.seed_steps[3],
    ),
    build=lambda context: _build_phase2(context, to_thread=False),
)
"""Phase 2 with one step switched off, to show what ``asyncio.to_thread`` per sync handler
costs once the handlers no longer block (both only enqueue after step 2.3)."""

PHASE_3 = Phase(
    number=3,
    name="runtime",
    seed_steps=(
        "phase 3.1 metrics: tick histogram, GcPauses, queue statistics",
        f"gc.freeze() after warm-up, gc.set_threshold{GC_THRESHOLD}",
        "uvloop (when installed)",
        "svc EventBus: bounded tiers, drop-oldest data tier; bounded log queue",
    ),
    build=_build_phase3,
    loop_factory=_uvloop_factory(),
    gc_threshold=GC_THRESHOLD,
    freeze_after_warmup=True,
)
