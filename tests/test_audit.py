"""The audit journal: hash chain, tamper detection, torn-tail repair, queues and fsync policy."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from svc.audit import (
    GENESIS_HASH,
    REDACTED,
    AuditJournal,
    AuditSink,
    MemoryAuditSink,
    verify,
)
from svc.clock import FakeClock
from svc.errors import ConfigError


class GatedFile:
    """The real journal file, but ``write`` waits for ``gate`` and notes the writing thread."""

    def __init__(self, path: Path, gate: threading.Event) -> None:
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (closed by the journal)
        self.gate = gate
        self.entered = threading.Event()
        self.writer_threads: set[str] = set()

    def write(self, data: bytes, /) -> int | None:
        self.writer_threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(10), "test left the writer gated"
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def truncate(self, size: int, /) -> int:
        return self._file.truncate(size)

    def close(self) -> None:
        self._file.close()


class FailingFile(GatedFile):
    """Writes half of the first ``failures`` writes, then fails them like a full disk."""

    def __init__(self, path: Path, failures: int) -> None:
        gate = threading.Event()
        gate.set()
        super().__init__(path, gate)
        self.failures = failures

    def write(self, data: bytes, /) -> int | None:
        if self.failures:
            self.failures -= 1
            super().write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def gated_opener(gate: threading.Event) -> tuple[Callable[[Path], GatedFile], list[GatedFile]]:
    files: list[GatedFile] = []

    def opener(path: Path) -> GatedFile:
        files.append(GatedFile(path, gate))
        return files[-1]

    return opener, files


def open_gate() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "journal.jsonl"


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr("svc.audit.os.fsync", calls.append)
    return calls


@pytest.fixture
def journal_factory(journal_path: Path) -> Iterator[Callable[..., AuditJournal]]:
    made: list[AuditJournal] = []

    def make(**kwargs: Any) -> AuditJournal:
        made.append(AuditJournal(path=journal_path, **kwargs))
        return made[-1]

    yield make
    for journal in made:
        journal.stop(5)


def write_journal(path: Path, count: int) -> None:
    journal = AuditJournal(path=path, fsync="never")
    journal.start()
    for n in range(count):
        journal.record("order.submit", {"n": n}, critical=True)
    assert journal.stop(5)


# -- the chain ------------------------------------------------------------------------------


def test_chain_verifies_after_records_from_many_threads(
    journal_factory: Callable[..., AuditJournal], journal_path: Path
) -> None:
    journal = journal_factory(fsync="batch", batch_interval=0.01)
    journal.start()

    def produce(thread: int) -> None:
        for n in range(200):
            journal.record("tick", {"thread": thread, "n": n}, critical=n % 3 == 0)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert journal.stop(5)

    result = verify(journal_path)
    assert result.ok, result.summary()
    assert result.records == 1600
    records = lines_of(journal_path)
    assert [r["seq"] for r in records] == list(range(1, 1601))
    assert records[0]["prev"] == GENESIS_HASH
    # Each thread's records keep their order within a tier.
    for producer in range(8):
        for critical in (True, False):
            ns = [
                r["data"]["n"]
                for r in records
                if r["data"]["thread"] == producer and (r["data"]["n"] % 3 == 0) is critical
            ]
            assert ns == sorted(ns)
    stats = journal.statistics()
    assert (stats.recorded, stats.written, stats.dropped, stats.backlog) == (1600, 1600, 0, 0)


def test_record_carries_both_timestamps_trace_id_and_decimals_as_strings(
    journal_factory: Callable[..., AuditJournal], journal_path: Path
) -> None:
    class Fill(msgspec.Struct, frozen=True):
        quantity: Decimal
        price: Decimal

    clock = FakeClock()
    journal = journal_factory(clock=clock)
    journal.start()
    payload: dict[Any, Any] = {"fill": Fill(Decimal("0.0010"), Decimal("43000.10"))}
    payload |= {"odd": object(), 7: "seven"}
    journal.record(
        "fill",
        payload,
        critical=True,
        ts_event=1_700_000_000_123_000_000,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )
    assert journal.stop(5)

    [record] = lines_of(journal_path)
    assert record["ts_init"] == clock.time_ns()
    assert record["ts_event"] == 1_700_000_000_123_000_000
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record["kind"] == "fill"
    assert record["data"]["fill"] == {"quantity": "0.0010", "price": "43000.10"}
    assert record["data"]["odd"].startswith("<object object")
    assert record["data"]["7"] == "seven"
    assert verify(journal_path).ok


def test_appending_continues_seq_and_chain(journal_path: Path) -> None:
    write_journal(journal_path, 4)
    write_journal(journal_path, 3)
    records = lines_of(journal_path)
    assert [r["seq"] for r in records] == list(range(1, 8))
    assert records[4]["prev"] == records[3]["hash"]
    assert verify(journal_path).records == 7


# -- tampering ------------------------------------------------------------------------------


def _edit_payload(lines: list[bytes]) -> list[bytes]:
    record = msgspec.json.decode(lines[3])
    record["data"]["n"] = 99
    lines[3] = msgspec.json.Encoder(order="sorted").encode(record)
    return lines


def _edit_hash(lines: list[bytes]) -> list[bytes]:
    record = msgspec.json.decode(lines[3])
    record["hash"] = "f" * 64
    lines[3] = msgspec.json.Encoder(order="sorted").encode(record)
    return lines


def _edit_payload_and_rehash(lines: list[bytes]) -> list[bytes]:
    import hashlib  # noqa: PLC0415 (only this forgery needs it)

    record = msgspec.json.decode(lines[3])
    record["data"]["n"] = 99
    del record["hash"]
    encoder = msgspec.json.Encoder(order="sorted")
    record["hash"] = hashlib.sha256(encoder.encode(record)).hexdigest()
    lines[3] = encoder.encode(record)
    return lines


@pytest.mark.parametrize(
    ("tamper", "first_bad_line", "reason"),
    [
        pytest.param(_edit_payload, 4, "hash does not match", id="payload-edit"),
        pytest.param(_edit_hash, 4, "hash does not match", id="hash-edit"),
        pytest.param(_edit_payload_and_rehash, 5, "prev does not match", id="rehashed-edit"),
        pytest.param(lambda lines: lines[:3] + lines[4:], 4, "seq 5 where 4", id="deleted"),
        pytest.param(
            lambda lines: [*lines[:3], lines[4], lines[3], *lines[5:]],
            4,
            "seq 5 where 4",
            id="reordered",
        ),
        pytest.param(lambda lines: lines[:9], None, "", id="truncated-cleanly"),
        pytest.param(lambda lines: [*lines, lines[9]], 11, "seq 10 where 11", id="duplicated"),
        pytest.param(lambda lines: lines[1:], 1, "seq 2 where 1", id="first-deleted"),
    ],
)
def test_tampering_is_detected_at_the_first_bad_line(
    journal_path: Path,
    tamper: Callable[[list[bytes]], list[bytes]],
    first_bad_line: int | None,
    reason: str,
) -> None:
    write_journal(journal_path, 10)
    assert verify(journal_path).ok
    lines = tamper(journal_path.read_bytes().splitlines())
    journal_path.write_bytes(b"".join(line + b"\n" for line in lines))

    result = verify(journal_path)
    assert result.first_bad_line == first_bad_line, result.summary()
    assert reason in result.reason
    assert result.ok is (first_bad_line is None)
    assert not result.torn_tail
    if first_bad_line is not None:
        assert result.records == first_bad_line - 1
        assert f"line {first_bad_line}" in result.summary()


def test_a_bad_line_before_the_last_is_corruption_not_a_torn_tail(journal_path: Path) -> None:
    write_journal(journal_path, 5)
    lines = journal_path.read_bytes().splitlines()
    lines[2] = lines[2][:40]
    journal_path.write_bytes(b"".join(line + b"\n" for line in lines))
    result = verify(journal_path)
    assert (result.ok, result.torn_tail, result.first_bad_line) == (False, False, 3)


# -- torn tail ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b'{"data":{"n":5},"hash":"ab', id="cut-mid-record"),
        pytest.param(b"\x00" * 64, id="zero-filled"),
        pytest.param(b"not json\n", id="garbage-line"),
    ],
)
def test_torn_final_line_is_reported_then_repaired_by_the_next_start(
    journal_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    write_journal(journal_path, 5)
    with journal_path.open("ab") as file:
        file.write(tail)

    result = verify(journal_path)
    assert (result.ok, result.torn_tail, result.records, result.first_bad_line) == (
        False,
        True,
        5,
        6,
    )
    assert "torn final record" in result.reason

    journal = AuditJournal(path=journal_path)
    with caplog.at_level(logging.WARNING, logger="svc.audit"):
        journal.start()
    journal.record("order.submit", {"n": 6}, critical=True)
    journal.record("intent", {"n": 7})
    assert journal.stop(5)

    assert any("torn final record" in message for message in caplog.messages)
    result = verify(journal_path)
    assert result.ok, result.summary()
    assert result.records == 8
    records = lines_of(journal_path)
    repaired = records[5]
    assert repaired["kind"] == "audit.repaired"
    assert repaired["seq"] == 6
    assert repaired["prev"] == records[4]["hash"]
    assert repaired["data"]["cut_bytes"] == len(tail)
    assert repaired["data"]["offset"] == len(b"".join(lines_after_cut(journal_path, 5)))
    assert [r["kind"] for r in records[6:]] == ["order.submit", "intent"]


def lines_after_cut(path: Path, count: int) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)[:count]


def test_whole_final_record_missing_its_newline_is_completed_not_cut(journal_path: Path) -> None:
    write_journal(journal_path, 3)
    journal_path.write_bytes(journal_path.read_bytes().rstrip(b"\n"))
    assert verify(journal_path).ok

    write_journal(journal_path, 2)
    records = lines_of(journal_path)
    assert [r["kind"] for r in records] == ["order.submit"] * 5
    assert verify(journal_path).records == 5


def test_start_refuses_a_journal_damaged_before_its_final_line(journal_path: Path) -> None:
    journal_path.parent.mkdir(parents=True)
    journal_path.write_bytes(b"garbage\nmore garbage")
    journal = AuditJournal(path=journal_path)
    with pytest.raises(ConfigError, match="damaged before its final line"):
        journal.start()


# -- queues ---------------------------------------------------------------------------------


def test_critical_records_are_never_lost_and_record_never_blocks(
    journal_factory: Callable[..., AuditJournal], journal_path: Path
) -> None:
    gate = threading.Event()
    opener, files = gated_opener(gate)
    journal = journal_factory(capacity=2, critical_capacity=2, fsync="never", opener=opener)
    journal.start()
    journal.record("first", {}, critical=True)
    assert files[0].entered.wait(5), "the writer never reached write()"

    def produce() -> None:
        for n in range(10):
            journal.record("order.submit", {"n": n}, critical=True)
        for n in range(5):
            journal.record("intent", {"n": n})

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(5)
    assert not producer.is_alive(), "record() blocked while the writer was stuck"
    assert not gate.is_set()

    stats = journal.statistics()
    assert stats.critical_overflow == 8
    assert stats.dropped == 3
    assert stats.backlog == 12
    assert stats.written == 0

    gate.set()
    assert journal.stop(5)
    records = lines_of(journal_path)
    assert [r["kind"] for r in records] == ["first"] + ["order.submit"] * 10 + ["intent"] * 2
    assert [r["data"]["n"] for r in records[1:11]] == list(range(10))
    assert [r["data"]["n"] for r in records[11:]] == [0, 1]
    assert verify(journal_path).ok
    assert journal.statistics().written == 13


def test_normal_records_beyond_capacity_are_dropped_and_counted(
    journal_factory: Callable[..., AuditJournal],
    journal_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = journal_factory(capacity=3, critical_capacity=1)
    # Not started yet: nothing drains the queues.
    with caplog.at_level(logging.WARNING, logger="svc.audit"):
        for n in range(5):
            journal.record("intent", {"n": n})
        for n in range(10):
            journal.record("order.submit", {"n": n}, critical=True)
    stats = journal.statistics()
    assert (stats.recorded, stats.dropped, stats.critical_overflow, stats.backlog) == (15, 2, 9, 13)
    # Logged on the 1st, 2nd, 4th, 8th occurrence, not on every record.
    assert sum("dropped (queue full)" in message for message in caplog.messages) == 2
    assert sum("critical queue over capacity" in message for message in caplog.messages) == 4

    journal.start()
    assert journal.stop(5)
    records = lines_of(journal_path)
    assert [r["kind"] for r in records] == ["order.submit"] * 10 + ["intent"] * 3
    assert [r["data"]["n"] for r in records] == [*range(10), 0, 1, 2]
    assert journal.statistics().written == 13


def test_stop_drains_everything_and_later_records_are_counted_not_written(
    journal_factory: Callable[..., AuditJournal], journal_path: Path
) -> None:
    journal = journal_factory(fsync="batch", capacity=2000)
    journal.start()
    for n in range(1000):
        journal.record("tick", {"n": n}, critical=n % 2 == 0)
    assert journal.stop(5)
    assert journal.state == "stopped"
    assert len(lines_of(journal_path)) == 1000

    journal.record("fill", {"late": True}, critical=True)
    stats = journal.statistics()
    assert (stats.written, stats.dropped, stats.backlog) == (1000, 1, 0)
    assert len(lines_of(journal_path)) == 1000
    assert verify(journal_path).records == 1000


async def test_record_on_the_event_loop_writes_on_the_writer_thread(
    journal_factory: Callable[..., AuditJournal],
) -> None:
    opener, files = gated_opener(open_gate())
    journal = journal_factory(opener=opener)
    journal.start()
    for n in range(20):
        journal.record("tick", {"n": n}, critical=n % 5 == 0)
    assert await asyncio.to_thread(journal.flush, 5)

    assert files[0].writer_threads == {"svc-audit-writer"}
    assert threading.current_thread().name not in files[0].writer_threads
    assert await asyncio.to_thread(journal.stop, 5)


# -- failures -------------------------------------------------------------------------------


def test_a_failed_write_is_counted_logged_and_cut_so_the_chain_survives(
    journal_factory: Callable[..., AuditJournal],
    journal_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = journal_factory(fsync="never", opener=lambda path: FailingFile(path, failures=1))
    for n in range(3):  # queued before start, so they form one batch and one write
        journal.record("order.submit", {"n": n}, critical=True)
    with caplog.at_level(logging.ERROR, logger="svc.audit"):
        journal.start()
        assert not journal.flush(5)  # a write failed meanwhile
    stats = journal.statistics()
    assert (stats.write_errors, stats.lost, stats.written) == (1, 3, 0)
    assert any("3 records lost (3 critical)" in message for message in caplog.messages)

    journal.record("order.submit", {"n": 3}, critical=True)
    assert journal.flush(5)
    assert journal.stop(5)
    result = verify(journal_path)
    assert result.ok, result.summary()
    assert [r["data"]["n"] for r in lines_of(journal_path)] == [3]


def test_record_never_raises_on_a_bad_payload(
    journal_factory: Callable[..., AuditJournal], caplog: pytest.LogCaptureFixture
) -> None:
    journal = journal_factory()
    with caplog.at_level(logging.ERROR, logger="svc.audit"):
        journal.record("intent", None)  # type: ignore[arg-type]
    assert journal.statistics().dropped == 1
    assert "payload is not a mapping" in caplog.text


# -- secrets --------------------------------------------------------------------------------


def test_secret_looking_keys_are_redacted_at_any_depth(
    journal_factory: Callable[..., AuditJournal], journal_path: Path
) -> None:
    journal = journal_factory()
    journal.start()
    journal.record(
        "order.submit",
        {
            "api_key": "KEY-1",
            "request": {
                "apiKey": "KEY-2",
                "headers": {"X-MBX-APIKEY": "KEY-3"},
                "params": [{"signature": "SIG-1", "symbol": "BTCUSDT"}],
                "query": "symbol=BTCUSDT&side=BUY&timestamp=1&signature=SIG-2",
            },
            "secretKey": "SECRET-1",
            "api_secret": "SECRET-2",
            "quantity": "0.001",
        },
        critical=True,
    )
    assert journal.stop(5)

    text = journal_path.read_text()
    for secret in ("KEY-1", "KEY-2", "KEY-3", "SIG-1", "SIG-2", "SECRET-1", "SECRET-2"):
        assert secret not in text
    [record] = lines_of(journal_path)
    data = record["data"]
    assert data["api_key"] == data["secretKey"] == data["api_secret"] == REDACTED
    assert data["request"]["apiKey"] == data["request"]["headers"]["X-MBX-APIKEY"] == REDACTED
    assert data["request"]["params"] == [{"signature": REDACTED, "symbol": "BTCUSDT"}]
    assert data["request"]["query"] == f"symbol=BTCUSDT&side=BUY&timestamp=1&signature={REDACTED}"
    assert data["quantity"] == "0.001"
    assert verify(journal_path).ok


# -- fsync policy ---------------------------------------------------------------------------


def test_fsync_always_syncs_every_record(
    journal_factory: Callable[..., AuditJournal], fsyncs: list[int]
) -> None:
    journal = journal_factory(fsync="always")
    journal.start()
    for n in range(7):
        journal.record("tick", {"n": n}, critical=n == 3)
    assert journal.flush(5)
    assert len(fsyncs) == 7
    assert journal.stop(5)
    assert len(fsyncs) == 7  # nothing left unsynced for stop()


def test_fsync_never_syncs_only_on_flush(
    journal_factory: Callable[..., AuditJournal], fsyncs: list[int]
) -> None:
    journal = journal_factory(fsync="never")
    journal.start()
    for n in range(5):
        journal.record("order.submit", {"n": n}, critical=True)
    assert wait_until(lambda: journal.statistics().written == 5)
    assert fsyncs == []
    assert journal.flush(5)
    assert len(fsyncs) == 1


def test_fsync_critical_syncs_order_events_at_once_and_batches_the_rest(
    journal_factory: Callable[..., AuditJournal], fsyncs: list[int]
) -> None:
    journal = journal_factory(fsync="critical", batch_interval=60)
    journal.start()
    for n in range(5):
        journal.record("intent", {"n": n})
    assert wait_until(lambda: journal.statistics().written == 5)
    assert fsyncs == []
    journal.record("order.submit", {"n": 5}, critical=True)
    assert wait_until(lambda: len(fsyncs) == 1)
    assert journal.statistics().written == 6


def test_fsync_batch_syncs_after_the_interval_without_a_flush(
    journal_factory: Callable[..., AuditJournal], fsyncs: list[int]
) -> None:
    journal = journal_factory(fsync="batch", batch_interval=0.02)
    journal.start()
    for n in range(5):
        journal.record("order.submit", {"n": n}, critical=True)
    assert wait_until(lambda: len(fsyncs) == 1)
    assert journal.statistics().fsyncs == 1


async def test_a_write_never_waits_behind_an_fsync_of_earlier_records(
    journal_factory: Callable[..., AuditJournal],
    journal_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The order path's write-ahead (``wait_written``) is a write, not a write plus the
    fsync the previous critical record started; ``flush()`` still waits for the fsync."""
    release = threading.Event()
    syncing = threading.Event()
    threads: list[str] = []

    def slow_fsync(_fd: int) -> None:
        threads.append(threading.current_thread().name)
        syncing.set()
        assert release.wait(10), "test left the fsync blocked"

    monkeypatch.setattr("svc.audit.os.fsync", slow_fsync)
    journal = journal_factory(fsync="critical")
    journal.start()
    try:
        journal.record("intent", {"client_order_id": "a-1"}, critical=True)
        assert await asyncio.to_thread(syncing.wait, 5), "no fsync started"
        journal.record("order.new", {"client_order_id": "a-1"}, critical=True)
        assert await journal.wait_written(5.0) is True  # while the first fsync still blocks
        assert not release.is_set()
        assert [r["kind"] for r in lines_of(journal_path)] == ["intent", "order.new"]
        assert journal.flush(0.2) is False  # not durable until an fsync covers it
    finally:
        release.set()
    assert journal.flush(5) is True
    assert set(threads) == {"svc-audit-fsync"}
    assert journal.stop(5)


def test_bad_configuration_names_the_field(journal_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"audit\.fsync"):
        AuditJournal(path=journal_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"audit\.capacity"):
        AuditJournal(path=journal_path, capacity=0)


# -- the fake -------------------------------------------------------------------------------


def test_memory_sink_records_calls_as_made() -> None:
    sink: AuditSink = MemoryAuditSink()
    sink.record("intent", {"side": "BUY"}, ts_event=5, trace_id="t1")
    sink.record("fill", {"qty": "1"}, critical=True)
    assert isinstance(sink, MemoryAuditSink)
    assert sink.kinds() == ["intent", "fill"]
    assert sink.records[0] == ("intent", {"side": "BUY"}, False, 5, "t1")
    assert sink.records[1].critical
    assert sink.statistics().recorded == 2


# ------------------------------------------------------------------ write-ahead for orders


async def test_wait_written_returns_once_the_record_is_in_the_file(
    journal_factory: Callable[..., AuditJournal], journal_path: Path
) -> None:
    gate = threading.Event()
    opener, _files = gated_opener(gate)
    journal = journal_factory(opener=opener, fsync="never")
    journal.start()
    journal.record("order.new", {"client_order_id": "a-1"}, critical=True)
    waiting = asyncio.ensure_future(journal.wait_written(5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "returned before the writer could write"
    gate.set()
    assert await waiting is True
    assert [r["data"]["client_order_id"] for r in lines_of(journal_path)] == ["a-1"]
    assert await journal.wait_written(1.0) is True  # nothing pending: at once


async def test_wait_written_is_false_when_the_write_fails_or_takes_too_long(
    journal_factory: Callable[..., AuditJournal], journal_path: Path
) -> None:
    failing = journal_factory(opener=lambda path: FailingFile(path, failures=1))
    failing.start()
    failing.record("order.new", {"client_order_id": "b-1"}, critical=True)
    assert await failing.wait_written(5.0) is False
    failing.record("order.new", {"client_order_id": "b-2"}, critical=True)
    assert await failing.wait_written(5.0) is True
    failing.stop(5)
    stuck_gate = threading.Event()
    opener, _files = gated_opener(stuck_gate)
    stuck = AuditJournal(path=journal_path.with_name("stuck.jsonl"), opener=opener)
    stuck.start()
    try:
        stuck.record("order.new", {"client_order_id": "c-1"}, critical=True)
        assert await stuck.wait_written(0.1) is False
    finally:
        stuck_gate.set()
        stuck.stop(5)


async def test_an_order_is_not_sent_when_the_journal_cannot_record_it_first(
    tmp_path: Path,
) -> None:
    from svc.errors import AuditUnavailable  # noqa: PLC0415
    from svc.exchange import FakeExchange  # noqa: PLC0415
    from svc.orders import OrderManager, OrderState  # noqa: PLC0415
    from tests.recorded import recorded_rules  # noqa: PLC0415
    from tests.simclient import market_order  # noqa: PLC0415

    rules = {"BTCUSDT": recorded_rules("BTCUSDT")}
    exchange = FakeExchange(rules=rules, prices={"BTCUSDT": Decimal(60_000)})
    gate = threading.Event()
    opener, _files = gated_opener(gate)
    journal = AuditJournal(path=tmp_path / "j.jsonl", opener=opener)
    journal.start()
    orders = OrderManager(
        exchange=exchange, audit=journal, rules=rules, id_prefix="svct", write_ahead_timeout=0.1
    )
    order = market_order("svct-x-1")
    try:
        with pytest.raises(AuditUnavailable):
            await orders.submit(order)
        assert not [c for c in exchange.calls if c[0] == "new_order"]
        tracked = orders.get("svct-x-1")
        assert tracked is not None
        assert tracked.state is OrderState.REJECTED
    finally:
        gate.set()
        journal.stop(5)
