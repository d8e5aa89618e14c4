"""The seed review's migration roadmap as four runnable systems, phase 0 to phase 3.

Phase 0 is the bot the seed review (``seed/000_2a5b072b05bfec20.txt``) found; every later
phase applies the next phase of the review's section 4 ("권장 조치 사항") on top of the one
before. ``bench.roadmap`` runs each phase in its own interpreter (``bench.phases.run``) and
compares them. None of the phase-0 or phase-1 code lives in ``svc``: it is the old bot,
rebuilt here from the review's quotes (``src/core/data_collector.py:185, 223, 228-232``,
``src/core/event_handler.py:_process_queue``, ``src/utils/logger.py``,
``src/execution/audit_logger.py``).

=====  ===================================================================================
phase  what changes, and which step of the seed it is
=====  ===================================================================================
0      As found (section 2 and issues #1-#7): ``logging.FileHandler`` at DEBUG written on
       the calling thread (#2); the unguarded f-string ``logger.debug`` of
       ``data_collector.py:228-232`` per parsed message, and one per event-bus dispatch
       (#1); ``import json`` inside the websocket handler (#5); ``json.loads``; per-message
       ``datetime.fromtimestamp`` (the 2.1 table: "매 메시지마다 즉시 파싱"); plain
       ``@dataclass`` events (#4); the websocket thread's callback blocks until the loop has
       taken the event (#3, ``run_coroutine_threadsafe(...).result()``); the event bus calls
       synchronous handlers on the loop (#6); the audit logger serialises and
       opens/appends/flushes its file per order on the loop (#7). The bot's three-tier
       ``asyncio.Queue`` bus (data 1000, signal 100, order 50) is already there (2.3).
1      Phase 1 "즉시 적용": (1) debug logging guarded with ``isEnabledFor`` and DEBUG off in
       production (the level is INFO: a guard alone saves nothing while DEBUG is on);
       (2) ``QueueHandler`` + ``QueueListener`` (unbounded ``queue.Queue()``, as the seed's
       snippet); (3) the websocket callback hands the event over with
       ``run_coroutine_threadsafe(queue.put(...))`` and returns at once (the seed's
       "방법 1"); (4) ``import json`` at module top.
2      Phase 2 "단기 적용", plus the data-structure items of the section-2 checklist:
       (1) slotted events - svc's ``msgspec.Struct`` models (``svc.model``: slotted, frozen,
       ``gc=False``) instead of ``@dataclass(slots=True)``, decoded in one typed pass by
       svc's ``FrameDecoder`` (replaces ``json.loads``); integer-ns timestamps, no
       ``datetime`` per message; (2) the event bus runs synchronous handlers through
       ``asyncio.to_thread`` (the seed's snippet); (3) the audit logger goes off the loop
       with the "QueueHandler pattern" - svc's ``AuditJournal`` (queue + writer thread).
3      Phase 3 "중기 적용": (1) the performance metrics it asks for (tick latency into a
       ``svc.latency`` histogram per message, ``svc.runtime.GcPauses`` on ``gc.callbacks``,
       queue backlog and drops from svc's bus statistics). The review's phase 3 is otherwise
       observability, position clean-up on fatal errors (#9) and guideline updates, which
       are not on the tick path and are not measured here. Added, because the review's own
       criteria ("GC Pause < 10ms", "틱 처리 지연 < 1ms") call for them and svc's runtime
       does them (DESIGN.md): ``gc.freeze()`` after warm-up
       (``svc.runtime.freeze_after_warmup``) and a larger GC threshold; uvloop when
       installed (what ``svc run`` uses); bounded queues with tiers and drop counting -
       svc's ``EventBus`` (the data tier drops the oldest, the order tier never drops), fed
       by ``loop.call_soon_threadsafe(put_nowait)``, and a bounded log queue
       (``svc.logs.DroppingQueueHandler``).
=====  ===================================================================================

Where the text does not fit the pipeline, the choice is written down:

* The audit writer moves off the loop in phase 2, where the review puts it (phase 2, item 3
  "AuditLogger 비동기화"), not in phase 1; so phase 1 still writes the audit file on the
  loop, and its "no blocking calls" fix is the websocket side (item 3).
* The seed's issue #6 fix wraps *every* synchronous handler in ``asyncio.to_thread``. In
  phase 2 the order tier's handlers are still plain functions (journal record, INFO log),
  so each order pays one thread round trip per handler, as the seed's code would (the
  ``2-inline-handlers`` variant switches that step off to show its cost). Phase 3 uses
  svc's pattern instead: handlers that only enqueue are coroutines and run inline.
  The strategy step is a coroutine in every phase (it is microseconds of arithmetic, and a
  thread hop costs 50-90 us on this machine per DESIGN.md), so #6 never touches it.
* The bot's strategy (an EMA 5/13 crossover that keeps its candle history in a deque) is
  the same code in every phase: the roadmap does not change strategies, and keeping it
  fixed makes the rows comparable. Its history is what "live candles" means below.
* Every phase runs in a process that has imported python-binance, the bot's client
  library (and svc's): the collector walks that heap too, as it would in the real bot.
"""

from __future__ import annotations

from bench.phases.common import Phase
from bench.phases.legacy import PHASE_0, PHASE_1
from bench.phases.modern import PHASE_2, PHASE_2_INLINE_HANDLERS, PHASE_3

PHASES: tuple[Phase, ...] = (PHASE_0, PHASE_1, PHASE_2, PHASE_3)
"""Index ``n`` is phase ``n``."""

VARIANTS: dict[str, Phase] = {"2-inline-handlers": PHASE_2_INLINE_HANDLERS}
"""A phase with one step switched off, to show that step's own effect."""

__all__ = ["PHASES", "VARIANTS", "Phase"]
