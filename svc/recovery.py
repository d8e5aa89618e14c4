"""Start-up reconciliation: the audit journal of earlier runs against the exchange's state.

Before the service trades it rebuilds what earlier runs left behind and checks it with the
exchange (``reconcile``):

1. ``read_journal`` replays the journal: every order it sent (``order.new``), the last state
   the journal saw for each, and every booked fill (``order.fill``). An order is unsettled
   until its state is terminal and its booked fills add up to what the exchange reported.
   A torn final line (a crash mid-write) is ignored here; ``AuditJournal.start`` cuts it
   off and records the repair.
2. Positions are rebuilt from the journal's fills, so a restart keeps the inventory the
   service built (and ``emergency.flatten`` can close it).
3. Every order the journal left unsettled (sent, or acknowledged and still open) is queried
   by its client order id. Known to the exchange: tracked again, and fills the journal
   missed are booked and audited (``order.recovered``). Unknown to the exchange: it was
   never placed (``order.not_placed``). Client order ids carry the run's id, so an order is
   never sent twice: a new run never reuses an id.
4. Open orders on the exchange that the journal does not know are adopted, cancelled or
   ignored (``reconcile.unknown_orders``).
5. Balances are fetched and audited beside the rebuilt positions; a long position larger
   than the balance of its base asset is logged as a mismatch.

Any ``ExchangeError`` propagates before anything is booked or audited: the caller keeps the
service unready and retries from the same journal state.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from svc.audit import AuditSink
from svc.errors import ConfigError, ExchangeError, UnknownOrder
from svc.exchange import ExchangeClient
from svc.model import Balance, NewOrder, OrderUpdate
from svc.orders import (
    AUDIT_ORDER_FILL,
    AUDIT_ORDER_NEW,
    AUDIT_ORDER_REJECTED,
    TERMINAL_STATES,
    OrderManager,
    OrderState,
)

log = logging.getLogger(__name__)

AUDIT_RECONCILE = "reconcile.done"
UnknownOrders = Literal["adopt", "cancel", "ignore"]

_ZERO = Decimal(0)
_TERMINAL = frozenset(str(state) for state in TERMINAL_STATES)


@dataclasses.dataclass(slots=True)
class JournalOrder:
    """One order an earlier run sent, as far as the journal saw it."""

    order: NewOrder
    state: str = str(OrderState.PENDING_NEW)
    order_id: int = 0
    filled_quantity: Decimal = _ZERO
    filled_quote: Decimal = _ZERO
    reported_quantity: Decimal = _ZERO
    """The largest cumulative fill the exchange reported for it in the journal's updates."""

    @property
    def settled(self) -> bool:
        # A terminal state whose fills the journal did not all book (a crash between the
        # update and its fill records) still needs the exchange to book the rest.
        return self.state in _TERMINAL and self.filled_quantity >= self.reported_quantity


@dataclasses.dataclass(slots=True)
class JournalState:
    """What ``read_journal`` found."""

    orders: dict[str, JournalOrder] = dataclasses.field(default_factory=dict)
    fills: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    records: int = 0
    torn_final_line: bool = False

    def unsettled(self) -> list[JournalOrder]:
        return [o for o in self.orders.values() if not o.settled]


@dataclasses.dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What start-up reconciliation did; audited as ``reconcile.done``."""

    journal_records: int
    journal_orders: int
    recovered: tuple[str, ...]
    not_placed: tuple[str, ...]
    open_on_exchange: int
    adopted: tuple[str, ...]
    canceled: tuple[str, ...]
    ignored: tuple[str, ...]
    positions: dict[str, str]
    mismatches: tuple[str, ...]


def read_journal(path: Path) -> JournalState:
    """Replay the journal at ``path`` (missing: empty); a torn final line is skipped."""
    state = JournalState()
    for record in _records(path, state):
        kind = record.get("kind")
        data = record.get("data")
        if not isinstance(data, dict):
            continue
        client_id = data.get("client_order_id")
        if kind == AUDIT_ORDER_NEW and isinstance(client_id, str):
            state.orders[client_id] = JournalOrder(order=_new_order(data))
            continue
        known = state.orders.get(client_id) if isinstance(client_id, str) else None
        if kind == AUDIT_ORDER_FILL:
            state.fills.append(data)
            if known is not None:
                known.filled_quantity += Decimal(data["quantity"])
                known.filled_quote += Decimal(data["quote"])
            continue
        if known is None:
            continue
        if kind == AUDIT_ORDER_REJECTED:
            known.state = str(OrderState.REJECTED)
        elif isinstance(data.get("state"), str):
            known.state = data["state"]
        elif kind == "order.not_placed":
            known.state = str(OrderState.REJECTED)
        order_id = data.get("order_id")
        if isinstance(order_id, int) and order_id > 0:
            known.order_id = order_id
        reported = data.get("filled_quantity")
        if isinstance(reported, str):
            known.reported_quantity = max(known.reported_quantity, Decimal(reported))
    return state


def _records(path: Path, state: JournalState) -> Iterator[dict[str, Any]]:
    try:
        file = open(path, "rb")  # noqa: SIM115  (closed below; lines are streamed)
    except FileNotFoundError:
        return
    with file:
        pending: bytes | None = None
        for line in file:
            if pending is not None:
                yield _decode(pending, final=False)
                state.records += 1
            pending = line
        if pending is not None:
            try:
                record = _decode(pending, final=True)
            except ValueError:
                state.torn_final_line = True
                log.warning("audit journal %s ends in a torn line; it will be repaired", path)
                return
            state.records += 1
            yield record


def _decode(line: bytes, *, final: bool) -> dict[str, Any]:
    try:
        record = msgspec.json.decode(line)
    except msgspec.DecodeError:
        record = None
    if isinstance(record, dict):
        return record
    if final:
        raise ValueError("torn final line")
    raise ConfigError(
        "audit.path",
        "the audit journal is damaged before its final line; run `svc audit verify` on it",
    )


async def _ask(
    exchange: ExchangeClient, unsettled: Sequence[JournalOrder], symbols: Sequence[str]
) -> tuple[dict[str, OrderUpdate | UnknownOrder], list[OrderUpdate], dict[str, Balance]]:
    """Everything reconciliation needs from the exchange (``ExchangeError`` propagates)."""
    answers: dict[str, OrderUpdate | UnknownOrder] = {}
    for entry in unsettled:
        client_id = entry.order.client_order_id
        try:
            answers[client_id] = await exchange.query_order(entry.order.symbol, client_id)
        except UnknownOrder as error:
            answers[client_id] = error
    open_on_exchange = [
        update for symbol in symbols for update in await exchange.open_orders(symbol)
    ]
    return answers, open_on_exchange, await exchange.balances()


def _book_fills(orders: OrderManager, fills: Sequence[dict[str, Any]], traded: set[str]) -> None:
    """Positions from the journal's fills of the ``traded`` symbols."""
    for fill in fills:
        if fill["symbol"] not in traded:
            continue
        orders.positions.apply_fill(
            fill["symbol"],
            "BUY" if fill["side"] == "BUY" else "SELL",
            Decimal(fill["quantity"]),
            Decimal(fill["quote"]),
            commission=Decimal(fill.get("commission", "0")),
            commission_asset=fill.get("commission_asset", ""),
        )


def _new_order(data: dict[str, Any]) -> NewOrder:
    return NewOrder(
        client_order_id=data["client_order_id"],
        symbol=data["symbol"],
        side="BUY" if data["side"] == "BUY" else "SELL",
        order_type="MARKET" if data["order_type"] == "MARKET" else "LIMIT",
        quantity=Decimal(data["quantity"]),
        price=Decimal(data["price"]),
        time_in_force=data.get("time_in_force", ""),
        strategy=data.get("strategy", ""),
        ts_init=0,
    )


async def reconcile(
    *,
    orders: OrderManager,
    exchange: ExchangeClient,
    audit: AuditSink,
    journal: JournalState,
    symbols: Sequence[str],
    unknown_orders: UnknownOrders,
) -> ReconcileReport:
    """Rebuild positions and orders from ``journal`` and settle them with the exchange.

    Everything is asked of the exchange before anything is booked or audited, so an
    ``ExchangeError`` leaves ``orders`` and ``audit`` untouched and the caller can retry
    from the same ``journal`` without booking a fill twice.
    """
    traded = set(symbols)
    # Another shard's orders and fills: its owner settles and books them.
    unsettled = [entry for entry in journal.unsettled() if entry.order.symbol in traded]
    answers, open_on_exchange, balances = await _ask(exchange, unsettled, symbols)
    _book_fills(orders, journal.fills, traded)
    recovered: list[str] = []
    not_placed: list[str] = []
    for entry in unsettled:
        tracked = orders.restore(
            entry.order,
            order_id=entry.order_id,
            filled_quantity=entry.filled_quantity,
            filled_quote=entry.filled_quote,
        )
        answer = answers[entry.order.client_order_id]
        if isinstance(answer, UnknownOrder):
            orders.not_placed(tracked, f"unknown to the exchange at reconciliation: {answer.msg}")
            not_placed.append(entry.order.client_order_id)
            continue
        orders.recovered(tracked, answer)
        recovered.append(entry.order.client_order_id)
    adopted: list[str] = []
    canceled: list[str] = []
    ignored: list[str] = []
    for update in open_on_exchange:
        client_id = update.client_order_id
        if orders.get(client_id) is not None or client_id in journal.orders:
            continue  # ours, recovered above (or settled: the exchange is behind)
        if unknown_orders == "ignore":
            ignored.append(client_id)
            continue
        orders.adopt(update)
        adopted.append(client_id)
        if unknown_orders == "cancel":
            try:
                await orders.cancel(client_id, "reconcile: unknown order")
            except ExchangeError as error:
                log.error("reconcile: could not cancel unknown order %s: %s", client_id, error)
                continue
            canceled.append(client_id)
    positions: dict[str, str] = {}
    mismatches: list[str] = []
    for symbol in symbols:
        quantity = orders.positions.position(symbol).quantity
        positions[symbol] = str(quantity)
        base = orders.rules_of(symbol).base_asset
        held = balances.get(base)
        total = (held.free + held.locked) if held is not None else _ZERO
        if quantity > total:
            mismatches.append(f"{symbol}: journal position {quantity} > {base} balance {total}")
    for mismatch in mismatches:
        log.error("reconcile: %s", mismatch)
    report = ReconcileReport(
        journal_records=journal.records,
        journal_orders=len(journal.orders),
        recovered=tuple(recovered),
        not_placed=tuple(not_placed),
        open_on_exchange=len(open_on_exchange),
        adopted=tuple(a for a in adopted if a not in canceled),
        canceled=tuple(canceled),
        ignored=tuple(ignored),
        positions=positions,
        mismatches=tuple(mismatches),
    )
    audit.record(
        AUDIT_RECONCILE,
        {
            **dataclasses.asdict(report),
            "balances": {
                asset: str(b.free + b.locked)
                for asset, b in balances.items()
                if asset in {orders.rules_of(s).base_asset for s in symbols}
                or asset in {orders.rules_of(s).quote_asset for s in symbols}
            },
        },
        critical=True,
    )
    return report
