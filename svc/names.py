"""Every metric, span and attribute name svc publishes: one vocabulary for code, dashboards,
alert rules and runbooks. Published names never change; new ones are added here first.

Metric names are OpenTelemetry names (dots); the Prometheus exporter turns
``svc.stage.duration`` (unit ``s``) into ``svc_stage_duration_seconds``.
"""

from __future__ import annotations

from typing import Final

from svc.latency import STAGES, TICK_OUTCOMES

SERVICE_NAME: Final = "svc"
METER_NAME: Final = "svc"
TRACER_NAME: Final = "svc"

# ---------------------------------------------------------------- metrics (DESIGN.md catalogue)
STAGE_DURATION: Final = "svc.stage.duration"
"""histogram, s, {stage}: where a tick spends its time."""
TICK_DURATION: Final = "svc.tick.duration"
"""histogram, s, {outcome}: receive to decision, end to end."""
FEED_LAG: Final = "svc.feed.lag"
"""histogram, s, {stream}: ts_init - ts_event, exchange to us."""
QUEUE_DEPTH: Final = "svc.queue.depth"
"""gauge, {tier}."""
QUEUE_DROPPED: Final = "svc.queue.dropped"
"""counter, {tier}: items dropped (data tier overflow)."""
QUEUE_WAIT: Final = "svc.queue.wait"
"""histogram, s, {tier}: time an item spent in the queue."""
QUEUE_BLOCKED: Final = "svc.queue.blocked"
"""gauge, {tier}: producers waiting for space (order tier back-pressure)."""
LOOP_LAG: Final = "svc.loop.lag"
"""histogram, s: how late the event loop ran a timer."""
GC_PAUSE: Final = "svc.gc.pause"
"""histogram, s, {generation}."""
FEED_RECONNECTS: Final = "svc.feed.reconnects"
"""counter, {stream, reason}."""
FEED_GAPS: Final = "svc.feed.gaps"
"""counter, {stream}: kline gaps detected (and backfilled)."""
FEED_MESSAGES: Final = "svc.feed.messages"
"""counter, {stream, type}: decoded messages; malformed ones carry reason."""
FEED_MALFORMED: Final = "svc.feed.malformed"
"""counter, {reason}."""
ORDER_ROUNDTRIP: Final = "svc.order.roundtrip"
"""histogram, s, {type, outcome}: submit to exchange ack."""
ORDERS: Final = "svc.orders"
"""counter, {status}: submitted, acked, filled, rejected, canceled."""
RATE_LIMIT_USED: Final = "svc.exchange.rate_limit.used"
"""gauge, {window}: Binance's X-MBX-USED-WEIGHT-* headers."""
AUDIT_BACKLOG: Final = "svc.audit.backlog"
"""gauge: records waiting for the writer thread."""
AUDIT_WRITE_DURATION: Final = "svc.audit.write.duration"
"""histogram, s."""
AUDIT_DROPPED: Final = "svc.audit.dropped"
"""counter: non-critical records dropped (queue full)."""
LOG_DROPPED: Final = "svc.log.dropped"
"""counter: log records dropped (queue full)."""
SPANS_DROPPED: Final = "svc.telemetry.spans.dropped"
"""counter: spans the export queue could not take."""
POSITIONS_OPEN: Final = "svc.positions.open"
"""gauge, {symbol}: base quantity held."""
SHUTDOWN_DURATION: Final = "svc.shutdown.duration"
"""histogram, s, {outcome}: the whole shutdown path; outcome complete or incomplete."""
EXCHANGE_THROTTLED: Final = "svc.exchange.throttled"
"""counter, {status}: HTTP 429 (rate limited) and 418 (IP banned) answers from the exchange."""
EXCHANGE_REFUSED: Final = "svc.exchange.refused"
"""counter, {reason}: REST requests not sent while backing off or banned."""
EXCHANGE_BACKOFF: Final = "svc.exchange.backoff"
"""gauge, s, {reason}: seconds until REST requests are allowed again (0 when they are)."""
RECONCILE_FAILURES: Final = "svc.reconcile.failures"
"""counter: start-up reconciliation attempts that failed (the service does not trade)."""

# ---------------------------------------------------------------- spans
SPAN_TICK: Final = "tick"
"""The root span of a sampled message; its children are named from ``STAGES``."""
SPAN_STAGES: Final = STAGES

# ---------------------------------------------------------------- attributes
ATTR_STAGE: Final = "stage"
ATTR_OUTCOME: Final = "outcome"
ATTR_TIER: Final = "tier"
ATTR_GENERATION: Final = "generation"
ATTR_STREAM: Final = "stream"
ATTR_SYMBOL: Final = "symbol"
ATTR_REASON: Final = "reason"
ATTR_STATUS: Final = "status"
ATTR_TYPE: Final = "type"
ATTR_WINDOW: Final = "window"
ATTR_CLIENT_ORDER_ID: Final = "svc.client_order_id"
ATTR_STRATEGY: Final = "svc.strategy"
ATTR_SAMPLED_BECAUSE: Final = "svc.sampled_because"
"""Why a tick was recorded: ``ratio`` (the sampler), ``slow`` or ``error`` (forced)."""

TICK_OUTCOME_NAMES: Final = TICK_OUTCOMES

# Latency buckets in seconds, 1 us .. 10 s, shared by OTLP and /metrics.
LATENCY_BUCKETS_SECONDS: Final = (
    0.000_001,
    0.000_002,
    0.000_005,
    0.000_010,
    0.000_020,
    0.000_050,
    0.000_100,
    0.000_200,
    0.000_500,
    0.001,
    0.002,
    0.005,
    0.010,
    0.020,
    0.050,
    0.100,
    0.200,
    0.500,
    1.0,
    2.0,
    5.0,
    10.0,
)
