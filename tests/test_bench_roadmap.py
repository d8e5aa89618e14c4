"""The roadmap benchmark: its phases really are what they claim to be, and it runs end to end.

The unit tests drive the phase-0/1/2 building blocks (``bench.phases``) on recorded Binance
frames and check behaviour, never absolute times. The end-to-end test runs
``python -m bench roadmap --quick`` and reads its JSON.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import logging
import subprocess
import sys
import textwrap
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench import roadmap
from bench.phases import PHASES
from bench.phases.common import EmaCross, Tape, bytes_per_live_object, sync_file_logging
from bench.phases.legacy import (
    AuditLogger,
    Candle,
    FoundCollector,
    LegacyEventBus,
    QuickWinCollector,
    SlottedCandle,
    Trade,
    blocking_hand_off,
    parse_candle,
    queue_hand_off,
)
from bench.phases.modern import DecoderCollector
from bench.pipeline import load_frames
from svc import model

ROOT = Path(__file__).resolve().parents[1]
CLAIM_KEYS = {"phase1_latency", "slots_memory", "gc_pause", "tick_latency"}


@pytest.fixture(scope="module")
def frames(binance_data: Path) -> list[str]:
    """Recorded BTCUSDT klines and LTCUSDT aggTrades as combined-stream frames (2:1)."""
    return load_frames(binance_data, 30)


@pytest.fixture
def kline(frames: list[str]) -> str:
    return next(f for f in frames if '"e":"kline"' in f)


@pytest.fixture
def trade(frames: list[str]) -> str:
    return next(f for f in frames if '"e":"aggTrade"' in f)


class Recorder:
    """A websocket callback that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any, received_ns: int) -> None:
        self.events.append((event, received_ns))


# ---------------------------------------------------------------- phase 0 is the bot as found


def test_phase0_writes_one_debug_line_per_message_on_the_calling_thread(
    tmp_path: Path, kline: str, trade: str
) -> None:
    logs = sync_file_logging(tmp_path / "bot.log", level=logging.DEBUG)
    try:
        collector = FoundCollector(
            logger=logs.child("data_collector"), on_candle_callback=Recorder()
        )
        sizes = [logs.path.stat().st_size]
        for frame in (kline, trade, kline):
            collector.handle(frame, 0)
            # No flush, no listener: the FileHandler wrote before handle() returned.
            sizes.append(logs.path.stat().st_size)
    finally:
        logs.close()
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3]
    lines = logs.path.read_text().splitlines()
    assert len(lines) == 3
    assert " - DEBUG - Parsed candle: BTCUSDT 1h @ " in lines[0]
    assert " - DEBUG - Parsed trade: LTCUSDT " in lines[1]


def test_phase0_builds_datetimes_in_plain_dataclasses(kline: str, trade: str) -> None:
    recorder = Recorder()
    collector = FoundCollector(
        logger=logging.getLogger("test.roadmap"), on_candle_callback=recorder
    )
    collector.handle(kline, 1)
    collector.handle(trade, 2)
    (candle, _), (fill, _) = recorder.events
    assert type(candle) is Candle
    assert type(fill) is Trade
    for value in (candle.open_time, candle.close_time, candle.event_time, fill.trade_time):
        assert isinstance(value, datetime)
        assert value.tzinfo is not None
    assert candle.close_time > candle.open_time
    assert hasattr(candle, "__dict__")
    assert not hasattr(type(candle), "__slots__")


def _imports_inside(function: Any) -> bool:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return any(isinstance(node, ast.Import | ast.ImportFrom) for node in ast.walk(tree))


def test_phase0_imports_inside_the_handler_and_phase1_does_not() -> None:
    assert _imports_inside(FoundCollector.handle)
    assert not _imports_inside(QuickWinCollector.handle)


def test_phase0_audit_writes_synchronously_per_order(tmp_path: Path) -> None:
    audit = AuditLogger(tmp_path / "audit.jsonl")
    threads = threading.active_count()
    for number in (1, 2):
        audit.log_order({"client_order_id": f"bot-{number}", "side": "BUY"})
        lines = audit.path.read_text().splitlines()
        assert len(lines) == number  # on disk (flushed) before log_order returned
        assert json.loads(lines[-1])["client_order_id"] == f"bot-{number}"
    assert threading.active_count() == threads  # no writer thread


def test_phase0_callback_blocks_until_the_loop_takes_the_event_phase1_does_not() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    bus = asyncio.run_coroutine_threadsafe(_new_bus(), loop).result(5)
    held, release = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        held.set()
        release.wait(10)

    try:
        loop.call_soon_threadsafe(hold_the_loop)
        assert held.wait(5)
        blocking = threading.Thread(target=blocking_hand_off(bus, loop), args=("found", 0))
        blocking.start()
        queue_hand_off(bus, loop)("quick win", 0)  # returns although the loop is busy
        blocking.join(0.2)
        assert blocking.is_alive(), "the phase-0 callback returned before the loop ran"
        release.set()
        blocking.join(5)
        assert not blocking.is_alive()
        queued = asyncio.run_coroutine_threadsafe(_queued(bus), loop).result(5)
        assert sorted(item[0] for item in queued) == ["found", "quick win"]
    finally:
        release.set()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


async def _new_bus() -> LegacyEventBus:
    return LegacyEventBus(
        logger=logging.getLogger("test.roadmap"), guard_debug=True, sync_to_thread=False
    )


async def _queued(bus: LegacyEventBus) -> list[Any]:
    await asyncio.sleep(0)  # let the scheduled puts run
    data = bus._queues["data"]
    return [data.get_nowait() for _ in range(data.qsize())]


@pytest.mark.parametrize(("to_thread", "on_loop"), [(False, True), (True, False)])
async def test_sync_handlers_run_on_the_loop_until_phase2(to_thread: bool, on_loop: bool) -> None:
    bus = LegacyEventBus(
        logger=logging.getLogger("test.roadmap"), guard_debug=True, sync_to_thread=to_thread
    )
    seen = asyncio.Event()
    threads: list[int] = []
    loop = asyncio.get_running_loop()

    def handler(_order: object) -> None:
        threads.append(threading.get_ident())
        loop.call_soon_threadsafe(seen.set)

    bus.subscribe("order", handler)
    await bus.start()
    try:
        await bus.publish("order", {"side": "BUY"})
        await asyncio.wait_for(seen.wait(), 5)
    finally:
        await bus.stop()
    assert (threads == [threading.get_ident()]) is on_loop


# ---------------------------------------------------------------- later phases


def test_phase1_writes_no_debug_line(tmp_path: Path, kline: str) -> None:
    logs = sync_file_logging(tmp_path / "bot.log", level=logging.INFO)
    recorder = Recorder()
    try:
        QuickWinCollector(logger=logs.child("data_collector"), on_candle_callback=recorder).handle(
            kline, 0
        )
    finally:
        logs.close()
    assert logs.path.read_text() == ""
    assert type(recorder.events[0][0]) is Candle


def test_phase2_decodes_to_svc_structs_without_datetimes(kline: str, trade: str) -> None:
    recorder = Recorder()
    collector = DecoderCollector(
        logger=logging.getLogger("test.roadmap"), on_event_callback=recorder
    )
    collector.handle(kline, 0)
    collector.handle(trade, 0)
    (candle, _), (fill, _) = recorder.events
    assert type(candle) is model.Candle
    assert type(fill) is model.Trade
    assert isinstance(candle.open_time, int)
    assert not any(isinstance(getattr(candle, f), datetime) for f in candle.__struct_fields__)
    assert not hasattr(candle, "__dict__")


def test_the_slotted_candle_is_smaller_than_the_plain_one(kline: str) -> None:
    payload = json.loads(kline)["data"]
    plain = bytes_per_live_object(lambda _i: parse_candle(payload), 2000)
    slotted = bytes_per_live_object(lambda _i: parse_candle(payload, SlottedCandle), 2000)
    assert 0 < slotted < plain


def test_strategy_signals_on_crosses_only() -> None:
    strategy = EmaCross(history=3)
    closes = [10.0] * 3 + [5.0] * 5 + [20.0] * 5 + [5.0] * 10  # down, up (BUY), down (SELL)
    sides = [strategy.on_candle(object(), close, closed=True) for close in closes]
    assert [s for s in sides if s] == ["BUY", "SELL"]
    assert len(strategy.candles) == 3
    assert strategy.on_candle(object(), 50.0, closed=False) is None


def test_tape_records_receive_to_decision() -> None:
    tape = Tape()
    assert tape.decided(0) > 0
    assert len(tape) == 1
    tape.reset()
    assert len(tape) == 0


# ---------------------------------------------------------------- verdicts


def _phases(p99: tuple[float, float, float, float], gc_ms: float) -> dict[int, dict[str, Any]]:
    return {
        n: {
            "name": f"phase {n}",
            "rate": 1000.0,
            "median": {
                "p50_us": value / 4,
                "p99_us": value,
                "bytes_per_live_candle": 600.0 - 50 * n,
                "gc_pause_p99_ms": gc_ms,
                "gc_pause_max_ms": gc_ms,
                "gc_pauses": 3,
                "full_collection_ms": gc_ms,
            },
        }
        for n, value in enumerate(p99)
    }


MEMORY = {
    "dataclass": {"bytes_per_live_candle": 600.0, "object_bytes": 184.0},
    "dataclass(slots=True)": {"bytes_per_live_candle": 340.0, "object_bytes": 136.0},
    "svc msgspec Struct": {"bytes_per_live_candle": 550.0, "object_bytes": 128.0},
}
DEBUG = {
    "as found": {"p50_us": 480.0, "p99_us": 9000.0, "max_us": 20000.0},
    "guarded": {"p50_us": 0.1, "p99_us": 0.2, "max_us": 1.0},
}


def test_claims_follow_the_measurements() -> None:
    good = {
        c["key"]: c["verdict"]
        for c in roadmap.evaluate(_phases((3000, 500, 400, 300), 2), MEMORY, DEBUG)
    }
    assert set(good.values()) == {"REPRODUCED"}
    bad_memory = {
        **MEMORY,
        "dataclass(slots=True)": {"bytes_per_live_candle": 550.0, "object_bytes": 136.0},
    }
    quiet = {**DEBUG, "as found": {"p50_us": 10.0, "p99_us": 40.0, "max_us": 500.0}}
    bad = {
        c["key"]: c["verdict"]
        for c in roadmap.evaluate(_phases((3000, 2000, 1500, 1200), 30), bad_memory, quiet)
    }
    assert set(bad.values()) == {"REFUTED"}
    assert [c.key for c in roadmap.CLAIMS][:4] == [
        "phase1_latency",
        "slots_memory",
        "gc_pause",
        "tick_latency",
    ]


# ---------------------------------------------------------------- end to end


@pytest.mark.timeout(300)
def test_quick_run_writes_four_phases_and_the_claims(tmp_path: Path) -> None:
    out = tmp_path / "roadmap.json"
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench", "roadmap", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["name"] == "roadmap"
    assert datetime.fromisoformat(report["date"])
    assert report["machine"]["cores"] >= 1
    assert (tmp_path / "roadmap.png").stat().st_size > 0

    columns = report["columns"]
    rows = report["rows"]
    assert len(rows) == len(PHASES) == 4
    assert all(len(row) == len(columns) for row in rows)
    throughput = columns.index("throughput (msg/s)")
    p99 = columns.index("p99 tick (µs)")
    memory = columns.index("bytes per live candle")
    assert all(row[throughput] > 0 and row[p99] > 0 and row[memory] > 0 for row in rows)

    claims = {claim["key"]: claim for claim in report["claims"]}
    assert set(claims) >= CLAIM_KEYS
    for claim in claims.values():
        assert claim["verdict"] in {"REPRODUCED", "REFUTED"}
        assert claim["measured"]
        assert claim["seed"]

    facts = {int(n): phase["facts"] for n, phase in report["phases"].items()}
    paced = report["plan"]["paced_messages"]
    # Phase 0: a synchronous FileHandler at DEBUG, at least one debug line per message.
    assert facts[0]["log_handler"] == "FileHandler"
    assert facts[0]["log_level"] == "DEBUG"
    assert facts[0]["log_debug_lines"] >= paced
    assert facts[0]["hand_off"] == "blocking_hand_off"
    assert facts[0]["candle_has_dict"] is True
    # Phase 1: queued logging, no debug lines, the same dataclass candles.
    assert facts[1]["log_handler"] == "QueueHandler"
    assert facts[1]["log_debug_lines"] == 0
    assert facts[1]["candle_has_dict"] is True
    # Phases 2-3: svc's structs; phase 3 freezes the heap, tunes GC and runs svc's bus.
    assert facts[2]["candle_type"] == facts[3]["candle_type"] == "svc.model.Candle"
    assert facts[3]["gc_frozen_objects"] > 0
    assert facts[3]["gc_threshold"][0] == PHASES[3].gc_threshold[0]  # type: ignore[index]
    assert facts[3]["log_handler"] == "DroppingQueueHandler"
    assert all(facts[n]["audit_records"] > 0 for n in facts)
    assert all(facts[n]["handler_errors"] == 0 for n in facts)
