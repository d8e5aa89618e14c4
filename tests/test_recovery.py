"""Start-up reconciliation (``svc.recovery``): the journal of earlier runs against the exchange.

The journals here are written by the real ``AuditJournal`` as the ``OrderManager`` submits
orders to a ``FakeExchange``; a crash is a journal cut after some record (``crash_after``),
optionally in the middle of the next line, as ``kill -9`` leaves it. The same exchange
survives every run, like a real one.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from svc.audit import AuditJournal, MemoryAuditSink, verify
from svc.clock import FakeClock
from svc.errors import ConfigError, ExchangeUnavailable, InsufficientBalance
from svc.exchange import FakeExchange
from svc.model import Balance, NewOrder, OrderUpdate, Signal
from svc.orders import OrderManager, TrackedOrder
from svc.recovery import ReconcileReport, UnknownOrders, read_journal, reconcile
from tests.recorded import recorded_rules

D = Decimal
RULES = {symbol: recorded_rules(symbol) for symbol in ("BTCUSDT", "ETHUSDT")}
PRICES = {"BTCUSDT": D("30000"), "ETHUSDT": D("2000")}
BALANCES = {"BTC": D(1), "ETH": D(10), "USDT": D(100_000)}


class Run:
    """One run of the service's order side: a real journal and an order manager."""

    def __init__(
        self,
        path: Path,
        exchange: FakeExchange,
        *,
        run_id: str,
        symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    ) -> None:
        self.path = path
        self.exchange = exchange
        self.symbols = symbols
        self.journal = AuditJournal(path=path, fsync="never")
        self.journal.start()
        self.run_id = run_id
        self.orders = self.manager()

    def manager(self) -> OrderManager:
        return OrderManager(
            exchange=self.exchange,
            audit=self.journal,
            rules={symbol: RULES[symbol] for symbol in self.symbols},
            clock=FakeClock(),
            id_prefix=f"svc{self.run_id}",
            id_family="svc",
        )

    async def trade(
        self, symbol: str, side: str, quantity: float, *, limit: float = 0.0
    ) -> TrackedOrder:
        order = self.order(symbol, side, quantity, limit=limit)
        return await self.orders.submit(order)

    def order(self, symbol: str, side: str, quantity: float, *, limit: float = 0.0) -> NewOrder:
        signal = Signal(
            strategy="flow",
            symbol=symbol,
            side="BUY" if side == "BUY" else "SELL",
            quantity=quantity,
            limit_price=limit,
            reason="test",
            ts_event=1,
            ts_init=1,
        )
        return self.orders.build(signal, last_price=float(PRICES[symbol]))

    async def reconcile(self, unknown_orders: UnknownOrders = "adopt") -> ReconcileReport:
        return await reconcile(
            orders=self.orders,
            exchange=self.exchange,
            audit=self.journal,
            journal=read_journal(self.path),
            symbols=self.symbols,
            unknown_orders=unknown_orders,
        )

    def stop(self) -> None:
        assert self.journal.stop()


def exchange_with(balances: dict[str, Decimal] | None = None) -> FakeExchange:
    return FakeExchange(rules=RULES, prices=PRICES, balances=balances or BALANCES)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def crash_after(path: Path, kind: str, client_order_id: str, *, torn: bool = False) -> None:
    """Cut the journal after the first ``kind`` record of the order, as a crash leaves it;
    ``torn`` keeps half of the next line (killed mid-write)."""
    lines = path.read_bytes().splitlines(keepends=True)
    for number, line in enumerate(lines):
        record = json.loads(line)
        if record["kind"] == kind and record["data"].get("client_order_id") == client_order_id:
            kept = b"".join(lines[: number + 1])
            if torn and number + 1 < len(lines):
                kept += lines[number + 1][: len(lines[number + 1]) // 2]
            path.write_bytes(kept)
            return
    raise AssertionError(f"no {kind} record of {client_order_id} in {path}")


def fills_of(path: Path, client_order_id: str) -> list[dict[str, Any]]:
    return [
        r["data"]
        for r in records(path)
        if r["kind"] == "order.fill" and r["data"]["client_order_id"] == client_order_id
    ]


def trade_on_exchange(
    exchange: FakeExchange,
    order: NewOrder,
    *,
    status: str,
    filled: str,
    price: str,
    commission: str = "0",
    commission_asset: str = "",
) -> OrderUpdate:
    """Make the fake exchange's order (partly) filled, as a report would say it."""
    known = exchange.orders[order.client_order_id]
    update = msgspec.structs.replace(
        known,
        execution_type="TRADE",
        status=status,
        last_quantity=D(filled),
        last_price=D(price),
        filled_quantity=D(filled),
        commission=D(commission),
        commission_asset=commission_asset,
        trade_id=known.order_id * 100,
    )
    exchange.orders[order.client_order_id] = update
    return update


def quantities(report: ReconcileReport) -> dict[str, Decimal]:
    """The report's positions as numbers (their strings keep the fills' exponents)."""
    return {symbol: D(quantity) for symbol, quantity in report.positions.items()}


def state(run: Run, client_order_id: str) -> str:
    tracked = run.orders.get(client_order_id)
    assert tracked is not None, f"{client_order_id} is not tracked"
    return str(tracked.state)


def sent(exchange: FakeExchange) -> list[str]:
    return [
        call[1].client_order_id
        for call in exchange.calls
        if call[0] == "new_order" and isinstance(call[1], NewOrder)
    ]


# ------------------------------------------------------------------------ read_journal


async def test_read_journal_replays_orders_states_and_fills_of_a_real_journal(
    tmp_path: Path,
) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    filled = await run.trade("ETHUSDT", "BUY", 0.5)
    resting = await run.trade("BTCUSDT", "BUY", 0.01, limit=29_000)
    exchange.fail_next = InsufficientBalance(-2010, "Account has insufficient balance.")
    rejected = await run.trade("ETHUSDT", "SELL", 50)
    exchange.fail_next = ExchangeUnavailable(503, "the answer was lost")
    with pytest.raises(ExchangeUnavailable):
        await run.trade("ETHUSDT", "SELL", 0.1)
    unknown = run.orders.open_orders()[-1]
    run.stop()

    journal = read_journal(path)
    assert journal.records == len(records(path))
    assert not journal.torn_final_line
    states = {cid: (o.state, o.order_id) for cid, o in journal.orders.items()}
    assert states == {
        filled.client_order_id: ("FILLED", filled.order_id),
        resting.client_order_id: ("NEW", resting.order_id),
        rejected.client_order_id: ("REJECTED", 0),
        unknown.client_order_id: ("PENDING_NEW", 0),
    }
    assert {o.order.client_order_id for o in journal.unsettled()} == {
        resting.client_order_id,
        unknown.client_order_id,
    }
    # The order as it was sent; ts_init (local time at build) is not a command field.
    assert journal.orders[resting.client_order_id].order == msgspec.structs.replace(
        resting.order, ts_init=0
    )
    assert [(f["client_order_id"], D(f["quantity"])) for f in journal.fills] == [
        (filled.client_order_id, D("0.5"))
    ]
    assert journal.orders[filled.client_order_id].filled_quote == D("1000")


def test_a_missing_journal_is_an_empty_one(tmp_path: Path) -> None:
    journal = read_journal(tmp_path / "never-written.jsonl")
    assert (journal.records, journal.orders, journal.fills) == (0, {}, [])


async def test_a_torn_final_line_is_skipped_and_the_next_start_repairs_it(tmp_path: Path) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    order = await run.trade("ETHUSDT", "BUY", 0.5)
    run.stop()
    # Killed while writing the REST response: the order is on the exchange (FILLED), the
    # journal has its order.new and half of the response.
    crash_after(path, "order.new", order.client_order_id, torn=True)
    whole = len(path.read_bytes().splitlines()) - 1

    journal = read_journal(path)
    assert journal.torn_final_line
    assert journal.records == whole
    assert journal.orders[order.client_order_id].state == "PENDING_NEW"
    assert not verify(path).ok
    assert verify(path).torn_tail

    restart = Run(path, exchange, run_id="b")
    report = await restart.reconcile()
    restart.stop()
    assert report.recovered == (order.client_order_id,)
    assert restart.orders.positions.position("ETHUSDT").quantity == D("0.5")
    assert "audit.repaired" in [r["kind"] for r in records(path)]
    assert verify(path).ok


async def test_a_damaged_line_before_the_last_is_a_config_error_naming_audit_path(
    tmp_path: Path,
) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    await run.trade("ETHUSDT", "BUY", 0.5)
    await run.trade("ETHUSDT", "SELL", 0.5)
    run.stop()
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:20] + b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(ConfigError) as raised:
        read_journal(path)
    assert raised.value.field == "audit.path"


# --------------------------------------------------------------------------- reconcile


async def test_an_order_sent_before_a_crash_is_recovered_and_its_fills_booked_once(
    tmp_path: Path,
) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    resting = await run.trade("BTCUSDT", "BUY", 0.01, limit=29_000)
    market = await run.trade("ETHUSDT", "BUY", 0.5)
    run.stop()
    crash_after(path, "order.new", market.client_order_id)  # the response never got written
    # While the service was down the resting order filled in part.
    trade_on_exchange(
        exchange, resting.order, status="PARTIALLY_FILLED", filled="0.004", price="29000"
    )
    calls_before = len(exchange.calls)

    second = Run(path, exchange, run_id="b")
    report = await second.reconcile()
    assert set(report.recovered) == {resting.client_order_id, market.client_order_id}
    assert report.not_placed == ()
    assert report.adopted == report.canceled == report.ignored == ()
    assert report.open_on_exchange == 1
    assert quantities(report) == {"BTCUSDT": D("0.004"), "ETHUSDT": D("0.5")}
    assert report.mismatches == ()
    assert state(second, resting.client_order_id) == "PARTIALLY_FILLED"
    assert state(second, market.client_order_id) == "FILLED"
    assert [o.client_order_id for o in second.orders.open_orders()] == [resting.client_order_id]
    second.stop()
    assert sent(exchange)[calls_before:] == []  # nothing is sent again

    # A second restart finds the same exchange state: nothing new to book.
    third = Run(path, exchange, run_id="c")
    again = await third.reconcile()
    third.stop()
    assert again.recovered == (resting.client_order_id,)  # still open, so still unsettled
    assert again.positions == report.positions
    assert len(fills_of(path, market.client_order_id)) == 1
    assert len(fills_of(path, resting.client_order_id)) == 1
    kinds = [r["kind"] for r in records(path)]
    assert kinds.count("order.recovered") == 3
    assert kinds.count("reconcile.done") == 2
    assert verify(path).ok


async def test_a_fill_lost_after_its_filled_response_is_booked_from_the_exchange(
    tmp_path: Path,
) -> None:
    # The writer can put the response (FILLED) and its fill record in separate writes; a
    # crash between them leaves a settled-looking order whose fill the journal never booked.
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    market = await run.trade("ETHUSDT", "BUY", 0.5)
    run.stop()
    crash_after(path, "order.response", market.client_order_id)
    assert fills_of(path, market.client_order_id) == []
    assert read_journal(path).orders[market.client_order_id].state == "FILLED"

    second = Run(path, exchange, run_id="b")
    report = await second.reconcile()
    second.stop()
    assert report.recovered == (market.client_order_id,)
    assert quantities(report)["ETHUSDT"] == D("0.5")
    assert len(fills_of(path, market.client_order_id)) == 1
    assert read_journal(path).unsettled() == []  # booked now: the next start leaves it


async def test_an_order_the_exchange_does_not_know_was_not_placed(tmp_path: Path) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    exchange.fail_next = ExchangeUnavailable(503, "connection reset before sending")
    with pytest.raises(ExchangeUnavailable):
        await run.trade("ETHUSDT", "BUY", 0.5)
    (lost,) = run.orders.open_orders()
    run.stop()

    second = Run(path, exchange, run_id="b")
    report = await second.reconcile()
    second.stop()
    assert report.not_placed == (lost.client_order_id,)
    assert report.recovered == ()
    assert state(second, lost.client_order_id) == "REJECTED"
    assert second.orders.open_orders() == []
    assert quantities(report)["ETHUSDT"] == 0
    (record,) = [r for r in records(path) if r["kind"] == "order.not_placed"]
    assert record["data"]["client_order_id"] == lost.client_order_id
    # The next start knows it settled and does not ask again.
    assert read_journal(path).unsettled() == []
    assert sent(exchange) == [lost.client_order_id]


async def place_foreign(exchange: FakeExchange, client_order_id: str) -> None:
    """An open order on the account that no journal knows (another tool, a lost journal)."""
    await exchange.new_order(
        NewOrder(
            client_order_id=client_order_id,
            symbol="BTCUSDT",
            side="SELL",
            order_type="LIMIT",
            quantity=D("0.002"),
            price=D("31000"),
            time_in_force="GTC",
            strategy="manual",
            ts_init=0,
        )
    )


@pytest.mark.parametrize("policy", ["adopt", "cancel", "ignore"])
async def test_open_orders_the_journal_does_not_know_follow_the_policy(
    tmp_path: Path, policy: UnknownOrders
) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    ours = await run.trade("BTCUSDT", "BUY", 0.01, limit=29_000)
    run.stop()
    await place_foreign(exchange, "manual-1")

    second = Run(path, exchange, run_id="b")
    report = await second.reconcile(policy)
    second.stop()
    assert report.open_on_exchange == 2
    assert report.recovered == (ours.client_order_id,)
    expected = {
        "adopt": (("manual-1",), (), ()),
        "cancel": ((), ("manual-1",), ()),
        "ignore": ((), (), ("manual-1",)),
    }[policy]
    assert (report.adopted, report.canceled, report.ignored) == expected
    foreign = second.orders.get("manual-1")
    on_exchange = exchange.orders["manual-1"].status
    if policy == "adopt":
        assert foreign is not None
        assert foreign.state == "NEW"
        assert on_exchange == "NEW"
        assert {o.client_order_id for o in second.orders.open_orders()} == {
            ours.client_order_id,
            "manual-1",
        }  # so the shutdown cancels it
    elif policy == "cancel":
        assert foreign is not None
        assert foreign.state == "CANCELED"
        assert on_exchange == "CANCELED"
    else:
        assert foreign is None
        assert on_exchange == "NEW"
    assert exchange.orders[ours.client_order_id].status == "NEW"  # ours are never canceled


async def test_the_journal_fills_rebuild_positions_pnl_and_fees(tmp_path: Path) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    await run.trade("ETHUSDT", "BUY", 0.5)
    exchange.prices["ETHUSDT"] = D("2100")
    await run.trade("ETHUSDT", "SELL", 0.2)
    exchange.prices["ETHUSDT"] = D("1900")
    await run.trade("ETHUSDT", "SELL", 0.5)  # flips short
    limit = await run.trade("BTCUSDT", "BUY", 0.01, limit=29_000)
    report_ = trade_on_exchange(
        exchange,
        limit.order,
        status="FILLED",
        filled="0.01",
        price="29000",
        commission="0.00001",
        commission_asset="BTC",
    )
    run.orders.on_update(report_)
    before = run.orders.positions.snapshot()
    run.stop()
    assert D(before["ETHUSDT"]["quantity"]) == D("-0.2")
    assert D(before["BTCUSDT"]["fee.BTC"]) == D("0.00001")

    second = Run(path, exchange, run_id="b")
    report = await second.reconcile()
    second.stop()
    assert second.orders.positions.snapshot() == before
    assert report.recovered == ()
    assert quantities(report) == {"BTCUSDT": D("0.00999"), "ETHUSDT": D("-0.2")}


async def test_another_shards_orders_and_fills_are_left_to_it(tmp_path: Path) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    await run.trade("ETHUSDT", "BUY", 0.5)
    eth_open = await run.trade("ETHUSDT", "BUY", 0.01, limit=1_900)
    await run.trade("BTCUSDT", "BUY", 0.01)
    run.stop()
    calls_before = len(exchange.calls)

    # After a re-shard this replica trades BTCUSDT only (and knows only its rules).
    second = Run(path, exchange, run_id="b", symbols=("BTCUSDT",))
    report = await second.reconcile("cancel")
    second.stop()
    assert report.recovered == report.canceled == ()
    assert quantities(report) == {"BTCUSDT": D("0.01")}
    assert set(second.orders.positions.snapshot()) == {"BTCUSDT"}
    assert second.orders.get(eth_open.client_order_id) is None
    assert exchange.orders[eth_open.client_order_id].status == "NEW"
    asked = {str(call[1]) for call in exchange.calls[calls_before:]}
    assert not any("ETHUSDT" in call for call in asked)


@pytest.mark.parametrize(("eth_balance", "mismatched"), [("0.1", True), ("10.5", False)])
async def test_a_journal_position_above_the_base_balance_is_a_mismatch(
    tmp_path: Path, eth_balance: str, mismatched: bool
) -> None:
    path, exchange = tmp_path / "audit.jsonl", exchange_with()
    run = Run(path, exchange, run_id="a")
    await run.trade("ETHUSDT", "BUY", 0.5)
    run.stop()
    exchange._balances["ETH"] = D(eth_balance)  # someone withdrew (or the journal is wrong)

    second = Run(path, exchange, run_id="b")
    report = await second.reconcile()
    second.stop()
    if mismatched:
        (mismatch,) = report.mismatches
        assert "ETHUSDT" in mismatch
        assert "0.5" in mismatch
        assert "0.1" in mismatch
    else:
        assert report.mismatches == ()
    (done,) = [r["data"] for r in records(path) if r["kind"] == "reconcile.done"]
    assert done["mismatches"] == list(report.mismatches)
    assert done["balances"]["ETH"] == eth_balance


class FlakyBalances(FakeExchange):
    """``balances()`` fails ``failures`` times (the exchange goes away mid-reconciliation)."""

    failures = 1

    async def balances(self) -> dict[str, Balance]:
        if self.failures:
            self.failures -= 1
            raise ExchangeUnavailable(503, "Service Unavailable")
        return await super().balances()


async def test_a_reconciliation_retried_after_a_failure_books_each_fill_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    exchange = FlakyBalances(rules=RULES, prices=PRICES, balances=BALANCES)
    run = Run(path, exchange, run_id="a")
    market = await run.trade("ETHUSDT", "BUY", 0.5)
    run.stop()
    crash_after(path, "order.new", market.client_order_id)

    # As svc.app does: on an ExchangeError, a fresh order manager and the same journal.
    second = Run(path, exchange, run_id="b")
    journal = read_journal(path)
    with pytest.raises(ExchangeUnavailable):
        await reconcile(
            orders=second.orders,
            exchange=exchange,
            audit=second.journal,
            journal=journal,
            symbols=second.symbols,
            unknown_orders="adopt",
        )
    second.orders = second.manager()
    report = await reconcile(
        orders=second.orders,
        exchange=exchange,
        audit=second.journal,
        journal=journal,
        symbols=second.symbols,
        unknown_orders="adopt",
    )
    second.stop()
    assert report.recovered == (market.client_order_id,)
    assert quantities(report)["ETHUSDT"] == D("0.5")
    assert len(fills_of(path, market.client_order_id)) == 1

    third = Run(path, exchange, run_id="c")
    again = await third.reconcile()
    third.stop()
    assert quantities(again)["ETHUSDT"] == D("0.5")


async def test_reconcile_audits_what_it_did(tmp_path: Path) -> None:
    exchange = exchange_with()
    sink = MemoryAuditSink()
    orders = OrderManager(
        exchange=exchange, audit=sink, rules=RULES, clock=FakeClock(), id_prefix="svcz"
    )
    await place_foreign(exchange, "manual-1")
    report = await reconcile(
        orders=orders,
        exchange=exchange,
        audit=sink,
        journal=read_journal(tmp_path / "none.jsonl"),
        symbols=("BTCUSDT", "ETHUSDT"),
        unknown_orders="adopt",
    )
    assert sink.kinds() == ["order.adopted", "reconcile.done"]
    done = sink.records[-1]
    assert done.critical
    assert done.payload["adopted"] == ("manual-1",)
    assert done.payload["journal_orders"] == 0
    assert set(done.payload["balances"]) == {"BTC", "ETH", "USDT"}
    assert quantities(report) == {"BTCUSDT": 0, "ETHUSDT": 0}
