"""The service's lifecycle as an operator (or Kubernetes) drives it: SIGTERM with open orders
and positions, ``kill -9`` in the middle of order flow and a restart, two replicas on one
journal, a stuck exchange at shutdown.

Real processes on loopback: one external ``svc sim`` per test (it keeps its orders and
balances across ``svc run`` restarts, like a real exchange) and ``svc run`` subprocesses
(see ``tests.lifecycle``). Before a SIGTERM the simulator's market data is silenced, so no
new order races the shutdown being checked.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from svc.audit import verify
from svc.recovery import read_journal
from tests.lifecycle import (
    Service,
    Simulator,
    audit_verify,
    journal,
    kinds,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

START_ETH = Decimal(10)  # svc.sim.server.DEFAULT_BALANCES
FEE_RATE = Decimal("0.001")  # the simulator's commission, charged in the received asset
EXIT_CONFIG, EXIT_SHUTDOWN_INCOMPLETE = 2, 4


@pytest.fixture
def sim(tmp_path: Path) -> Any:
    with Simulator(tmp_path) as simulator:
        yield simulator


def orders_placed(sim: Simulator) -> int:
    placed: int = sim.state()["stats"].get("orders_placed", 0)
    return placed


def eth_moved(sim: Simulator) -> bool:
    """The ETH balance is a position away from the start (a market order filled)."""
    return abs(sim.balance("ETH") - START_ETH) >= Decimal("0.005")


def hold_an_eth_position(sim: Simulator) -> None:
    """Wait for an ETH position, then silence the market with the position still open.

    Orders already on their way when the market goes quiet can close the position again;
    then the market resumes and the wait starts over.
    """
    for _ in range(5):
        wait_for("an ETH position", lambda: eth_moved(sim), within=30)
        sim.silence()
        placed = orders_placed(sim)
        time.sleep(0.5)  # let orders already signalled reach the exchange
        while orders_placed(sim) != placed:
            placed = orders_placed(sim)
            time.sleep(0.5)
        if eth_moved(sim):
            return
        sim.post("/_sim/faults", {"silent": False})
    raise AssertionError("the ETH position kept closing before the market went quiet")


def eth_tolerance(audit: Path, step: Decimal) -> Decimal:
    """How far a flat journal position may leave the ETH balance from where it started: the
    lot step (dust stays), plus the commissions of fills recovered by a query, which Binance
    (and the simulator) does not report."""
    traded = sum(
        (Decimal(f["quantity"]) for f in kinds(audit, "order.fill") if f["symbol"] == "ETHUSDT"),
        Decimal(0),
    )
    return step + FEE_RATE * traded


def journal_position(audit: Path, symbol: str) -> Decimal:
    """The position the journal's fills add up to (base commissions taken off)."""
    position = Decimal(0)
    for fill in kinds(audit, "order.fill"):
        if fill["symbol"] != symbol:
            continue
        quantity = Decimal(fill["quantity"])
        position += quantity if fill["side"] == "BUY" else -quantity
        if fill["commission_asset"] == "ETH":
            position -= Decimal(fill["commission"])
    return position


def tear_the_final_record(audit: Path) -> None:
    """Cut the journal's final record in half, as a kill in the middle of writing it would.

    Not an ``order.new``: the journal writes those behind the request to the exchange, so
    one cut there loses an order the exchange has (a known gap, reported), which is not
    what this test is about.
    """
    data = audit.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    if json.loads(data[start:])["kind"] == "order.new":
        return
    audit.write_bytes(data[: start + (len(data) - start) // 2])


def steps_of(audit: Path) -> dict[str, dict[str, Any]]:
    return {step["step"]: step for step in kinds(audit, "shutdown.step")}


def stop(run: Service, sim: Simulator, *, within: float) -> int:
    """Silence the market, SIGTERM the service, and return its exit code."""
    sim.silence()
    run.send(signal.SIGTERM)
    return run.wait(within)


def test_sigterm_cancels_open_orders_and_journals_every_step(
    tmp_path: Path, sim: Simulator
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = write_config(tmp_path, sim_url=sim.url, audit_path=audit, budget=10)
    with Service(config) as run:
        wait_for("resting orders", lambda: sim.state()["open_orders"] >= 3, within=30)
        assert stop(run, sim, within=10 + 5) == 0, run.stderr()[-3000:]
    assert sim.state()["open_orders"] == 0
    steps = steps_of(audit)
    for name in ("stop_new_orders", "cancel_open_orders", "drain_order_tier"):
        assert steps[name]["outcome"] == "ok", steps[name]
        assert steps[name]["reason"] == "SIGTERM"
    assert "flatten_positions" not in steps  # emergency.flatten is off
    assert steps["cancel_open_orders"]["detail"].endswith("canceled")
    (stopped,) = kinds(audit, "run.stop")
    shutdown = stopped["shutdown"]
    assert shutdown["complete"] is True
    assert shutdown["seconds"] < 10
    assert [s["step"] for s in shutdown["steps"]] == [
        "stop_new_orders",
        "cancel_open_orders",
        "drain_order_tier",
    ]
    assert journal(audit)[-1]["kind"] == "run.stop"  # recorded after every trading step
    canceled = {r["client_order_id"] for r in kinds(audit, "order.cancel")}
    assert len(canceled) >= 3
    code, output = audit_verify(audit)
    assert code == 0, output


def test_sigterm_with_flatten_closes_the_position(tmp_path: Path, sim: Simulator) -> None:
    audit = tmp_path / "audit.jsonl"
    config = write_config(tmp_path, sim_url=sim.url, audit_path=audit, flatten=True)
    step = sim.step_size("ETHUSDT")
    with Service(config) as run:
        wait_for("resting orders", lambda: sim.state()["open_orders"] >= 1, within=30)
        hold_an_eth_position(sim)
        assert stop(run, sim, within=15) == 0, run.stderr()[-3000:]
    flatten = steps_of(audit)["flatten_positions"]
    assert flatten["outcome"] == "ok", flatten
    assert "ETHUSDT" in flatten["detail"]
    assert "dust" not in flatten["detail"]
    assert abs(sim.balance("ETH") - START_ETH) <= eth_tolerance(audit, step)
    assert abs(journal_position(audit, "ETHUSDT")) < step
    assert sim.state()["open_orders"] == 0
    (stopped,) = kinds(audit, "run.stop")
    assert [s["step"] for s in stopped["shutdown"]["steps"]] == [
        "stop_new_orders",
        "cancel_open_orders",
        "flatten_positions",
        "drain_order_tier",
    ]


KILL_CYCLES = 20
"""kill -9 at a random moment of order flow, then a restart, this many times in a row."""


def test_kill_9_mid_flow_and_restarts_lose_and_duplicate_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = write_config(tmp_path, sim_url=sim.url, audit_path=audit)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    context = f"(seed {seed})"
    torn_kills = 0
    unsettled_at_kill: list[set[str]] = []
    for cycle in range(KILL_CYCLES):
        with Service(config, name=f"run{cycle}") as run:
            before = orders_placed(sim)
            wait_for("orders", lambda: orders_placed(sim) > before, within=30)  # noqa: B023
            time.sleep(rng.uniform(0.2, 2.5))
            run.send(signal.SIGKILL)
            assert run.wait(10) == -signal.SIGKILL
        result = verify(audit)
        assert result.ok or result.torn_tail, f"{result.summary()} {context}"
        if cycle == 1 and result.ok:
            tear_the_final_record(audit)  # a kill mid-write, whatever the timing did
            result = verify(audit)
        torn_kills += not result.ok
        unsettled_at_kill.append({o.order.client_order_id for o in read_journal(audit).unsettled()})

    with Service(config, name="final") as run:
        wait_for(
            "the restart's reconciliation",
            lambda: len(kinds(audit, "reconcile.done")) == KILL_CYCLES + 1,
            within=30,
        )
        before = orders_placed(sim)
        wait_for("orders after the restart", lambda: orders_placed(sim) > before, within=30)
        assert stop(run, sim, within=15) == 0, run.stderr()[-3000:]

    code, output = audit_verify(audit)
    assert code == 0, f"{output} {context}"
    assert len(kinds(audit, "audit.repaired")) == torn_kills, context
    new_ids = Counter(r["client_order_id"] for r in kinds(audit, "order.new"))
    assert new_ids, context
    assert [cid for cid, count in new_ids.items() if count > 1] == [], context

    # Each restart settled what the killed run left unsettled, and found it on the exchange.
    starts = kinds(audit, "reconcile.done")[1:]
    for cycle, (done, unsettled) in enumerate(zip(starts, unsettled_at_kill, strict=True)):
        assert set(done["recovered"]) | set(done["not_placed"]) == unsettled, (cycle, context)
        eth_delta = Decimal(done["balances"]["ETH"]) - START_ETH
        drift = abs(eth_delta - Decimal(done["positions"]["ETHUSDT"]))
        assert drift <= eth_tolerance(audit, Decimal(0)), (cycle, drift, context)
        assert done["mismatches"] == [], context

    # Random kill moments: most land with orders in flight or resting, so restarts recover.
    assert sum(bool(done["recovered"]) for done in starts) >= KILL_CYCLES // 2, context

    # Every order the simulator ever placed is in the journal, and only those are.
    named = {
        r["data"]["client_order_id"]: r["data"].get("symbol")
        for r in journal(audit)
        if isinstance(r["data"].get("client_order_id"), str) and r["data"].get("symbol")
    }
    known = {cid for cid, symbol in named.items() if sim.query_order(symbol, cid) is not None}
    assert len(known) == orders_placed(sim), context
    for cid in (r["client_order_id"] for r in kinds(audit, "order.not_placed")):
        assert cid not in known, context
    answered = {r["client_order_id"] for r in kinds(audit, "order.response")}
    assert answered <= known, context
    assert sim.state()["open_orders"] == 0, context
    eth_delta = sim.balance("ETH") - START_ETH
    drift = abs(eth_delta - journal_position(audit, "ETHUSDT"))
    assert drift <= eth_tolerance(audit, Decimal(0)), (drift, context)


def test_flatten_right_after_a_restart_closes_the_journals_position(
    tmp_path: Path, sim: Simulator
) -> None:
    audit = tmp_path / "audit.jsonl"
    step = sim.step_size("ETHUSDT")
    first = write_config(tmp_path, sim_url=sim.url, audit_path=audit)
    with Service(first, name="crashed") as run:
        wait_for("resting orders", lambda: sim.state()["open_orders"] >= 1, within=30)
        hold_an_eth_position(sim)  # and the market stays silent: no last price after the restart
        run.send(signal.SIGKILL)
        run.wait(10)
    second = write_config(
        tmp_path, sim_url=sim.url, audit_path=audit, flatten=True, name="flatten.toml"
    )
    with Service(second, name="restarted") as run:
        wait_for("reconciliation", lambda: len(kinds(audit, "reconcile.done")) == 2, within=30)
        run.send(signal.SIGTERM)
        assert run.wait(15) == 0, run.stderr()[-3000:]
    flatten = steps_of(audit)["flatten_positions"]
    assert flatten["outcome"] == "ok", flatten
    assert "dust" not in flatten["detail"], flatten
    assert abs(sim.balance("ETH") - START_ETH) <= eth_tolerance(audit, step)
    assert sim.state()["open_orders"] == 0


def test_a_second_service_on_the_same_journal_is_refused(tmp_path: Path, sim: Simulator) -> None:
    audit = tmp_path / "audit.jsonl"
    config = write_config(tmp_path, sim_url=sim.url, audit_path=audit)
    with Service(config, name="first") as first:
        wait_for("resting orders", lambda: sim.state()["open_orders"] >= 1, within=30)
        with Service(config, name="second") as second:
            assert second.wait(30) == EXIT_CONFIG
            assert "audit.path" in second.stderr()
        assert first.running
        assert sim.state()["open_orders"] >= 1  # the refused one canceled nothing
        assert stop(first, sim, within=15) == 0, first.stderr()[-3000:]
    assert len(kinds(audit, "run.start")) == 1
    code, output = audit_verify(audit)
    assert code == 0, output


def test_a_stuck_exchange_leaves_the_shutdown_incomplete_but_journaled(
    tmp_path: Path, sim: Simulator
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = write_config(tmp_path, sim_url=sim.url, audit_path=audit, budget=3)
    with Service(config) as run:
        wait_for("resting orders", lambda: sim.state()["open_orders"] >= 5, within=30)
        sim.silence()
        sim.post("/_sim/faults", {"latency_ms": 1000})  # every cancel takes a second
        run.send(signal.SIGTERM)
        assert run.wait(3 + 5) == EXIT_SHUTDOWN_INCOMPLETE, run.stderr()[-3000:]
        logs = run.stdout()
    steps = steps_of(audit)
    assert steps["cancel_open_orders"]["outcome"] == "timeout"
    assert steps["drain_order_tier"]["outcome"] == "ok"  # the later step still ran
    (stopped,) = kinds(audit, "run.stop")
    assert stopped["shutdown"]["complete"] is False
    # The trading steps left part of the budget for flushing the journal.
    assert "shutdown step flush_audit: ok" in logs
    code, output = audit_verify(audit)
    assert code == 0, output
