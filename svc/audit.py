"""The append-only audit journal: every intent, order command, exchange response and fill.

This module owns the journal file format, the writer thread that appends to it, and
``verify()``, which checks a journal (``svc audit verify FILE``).

Format: one JSON object per line, keys sorted, compact::

    {"data": {...}, "hash": "<hex>", "kind": "order.submit", "prev": "<hex>", "seq": 7,
     "trace_id": "...", "ts_event": <ns>, "ts_init": <ns>}

``hash`` is the SHA-256 of the canonical serialization of the record without ``hash``, and
``prev`` is the previous record's ``hash`` (64 zeros for the first), so editing, deleting or
reordering any line breaks the chain at that line. Decimals are written as strings.

Threading: ``record()`` runs on the caller's thread (usually the event loop). It copies the
payload, stamps ``ts_init`` and appends to an in-memory queue under a short lock; it never
touches the file and never raises. One writer thread does the encoding, redaction, hashing
and writing; a second thread does the fsyncs the policy asks for, so that a write (and an
order command waiting for it, ``wait_written``) never queues behind an fsync of earlier
records: an fsync takes milliseconds on most disks, a write microseconds. An fsync covers
every write that completed before it began; ``flush()`` and ``stop()`` wait for one that
covers everything queued. There are two tiers:

* critical (order commands, exchange responses, fills: ``critical=True``) is never dropped.
  Past ``critical_capacity`` records still queue (memory grows) and every one of them is
  counted in ``critical_overflow``, which is the number to alert on. Keeping one FIFO
  instead of a separate overflow deque keeps order events in the order they were recorded.
* normal is bounded by ``capacity``; records beyond it are dropped and counted.

The writer always drains the critical tier before touching the normal one, so ``seq`` order
is write order, not record order across tiers; ``ts_init`` keeps the record order.

fsync policy: ``always`` (after every record, by the writer itself, before the next write),
``critical`` (after every batch holding a critical record; normal records at most every
``batch_interval`` seconds), ``batch`` (at most every ``batch_interval`` seconds), ``never``
(left to the OS). ``flush()`` and ``stop()`` fsync whatever the policy.

Failures (disk full, permissions) are counted in ``write_errors``/``lost`` and logged; a
failed write is truncated away so the chain on disk stays intact. On ``start()`` a torn final
line (a crash mid-write) is cut off, logged, and recorded as an ``audit.repaired`` record.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol

import msgspec

from svc.clock import SYSTEM_CLOCK, Clock
from svc.errors import ConfigError
from svc.latency import LatencyHistogram

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "critical", "batch", "never"]

GENESIS_HASH = "0" * 64
"""``prev`` of the first record of a journal."""

REDACTED = "[REDACTED]"

_RECORD_KEYS = frozenset({"seq", "ts_init", "ts_event", "kind", "trace_id", "data", "prev", "hash"})
_NORMAL_BATCH = 512  # normal records per writer pass; critical ones are re-checked in between
_DURATION_RING = 1024

# Key names are compared lower-cased without "_" and "-", so "api_key", "apiKey",
# "X-MBX-APIKEY", "secretKey" and "signature" all match.
_SECRET_KEY_PARTS = ("apikey", "secret", "signature", "password", "privatekey")
# Signed query strings ("symbol=BTCUSDT&...&signature=ab12") passed as plain string values.
_SECRET_IN_TEXT = re.compile(
    r"((?:api[_-]?key|secret[a-z_]*|signature|password)=)[^&\s\"']+", re.IGNORECASE
)

_encoder = msgspec.json.Encoder(order="sorted")


@dataclasses.dataclass(frozen=True, slots=True)
class AuditStatistics:
    """A snapshot of the journal's counters.

    ``recorded`` counts ``record()`` calls; ``dropped`` those refused (normal tier full,
    journal stopped, payload not a mapping); ``written`` lines appended; ``lost`` records
    that a failed write could not append; ``backlog`` records queued now.
    ``write_durations_ns`` holds the durations of the last writes (one append of a batch, or
    of one record plus its fsync under ``always``), newest last; ``writes`` is their running
    total, so a reader can take only the ones it has not seen. Batched fsyncs are timed
    apart, in the ``*fsync*`` fields.
    """

    recorded: int = 0
    written: int = 0
    dropped: int = 0
    critical_overflow: int = 0
    backlog: int = 0
    write_errors: int = 0
    lost: int = 0
    writes: int = 0
    last_write_duration_ns: int = 0
    max_write_duration_ns: int = 0
    write_durations_ns: tuple[int, ...] = ()
    fsyncs: int = 0
    last_fsync_duration_ns: int = 0
    max_fsync_duration_ns: int = 0


class AuditSink(Protocol):
    """Where the trading path sends what it must be able to prove later."""

    def record(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        critical: bool = False,
        ts_event: int = 0,
        trace_id: str = "",
    ) -> None:
        """Queue one record. Never blocks on I/O and never raises."""
        ...

    async def wait_written(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until every critical record queued so far has reached the file (the OS, not
        necessarily the disk): the write-ahead point for order commands. False if that did
        not happen within ``timeout`` seconds or the write failed."""
        ...

    def statistics(self) -> AuditStatistics: ...


class AuditRecord(NamedTuple):
    """One call to ``MemoryAuditSink.record``, as the caller made it."""

    kind: str
    payload: Mapping[str, Any]
    critical: bool
    ts_event: int
    trace_id: str


class MemoryAuditSink:
    """An in-memory ``AuditSink`` for tests: keeps every call in ``records``."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        critical: bool = False,
        ts_event: int = 0,
        trace_id: str = "",
    ) -> None:
        self.records.append(AuditRecord(kind, payload, critical, ts_event, trace_id))

    async def wait_written(self, timeout: float) -> bool:  # noqa: ASYNC109, ARG002
        return True

    def kinds(self) -> list[str]:
        return [record.kind for record in self.records]

    def clear(self) -> None:
        self.records.clear()

    def statistics(self) -> AuditStatistics:
        count = len(self.records)
        return AuditStatistics(recorded=count, written=count)


class AuditFile(Protocol):
    """The part of a binary file the writer uses; ``opener`` returns one."""

    def write(self, data: bytes, /) -> int | None: ...
    def flush(self) -> None: ...
    def fileno(self) -> int: ...
    def truncate(self, size: int, /) -> int: ...
    def close(self) -> None: ...


def open_append(path: Path) -> AuditFile:
    """The default opener: unbuffered, append-only, so each write goes straight to the OS."""
    return open(path, "ab", buffering=0)


class _Pending(NamedTuple):
    kind: str
    data: dict[Any, Any]
    critical: bool
    ts_event: int
    trace_id: str
    ts_init: int


class AuditJournal:
    """The real ``AuditSink``: a hash-chained JSONL file appended by one writer thread."""

    def __init__(
        self,
        *,
        path: Path,
        clock: Clock = SYSTEM_CLOCK,
        capacity: int = 10_000,
        critical_capacity: int = 10_000,
        fsync: FsyncPolicy = "critical",
        batch_interval: float = 0.2,
        opener: Callable[[Path], AuditFile] = open_append,
    ) -> None:
        if capacity < 1 or critical_capacity < 1:
            raise ConfigError("audit.capacity", "queue capacities must be at least 1")
        if fsync not in ("always", "critical", "batch", "never"):
            raise ConfigError("audit.fsync", f"expected always|critical|batch|never, got {fsync!r}")
        if batch_interval <= 0:
            raise ConfigError("audit.batch_interval", "expected a positive number of seconds")
        self._path = Path(path)
        self._clock = clock
        self._capacity = capacity
        self._critical_capacity = critical_capacity
        self._fsync = fsync
        self._batch_interval = batch_interval
        self._opener = opener

        # record() takes the bare lock (cheaper than the Condition's Python-level __enter__)
        # and notifies only when the writer is actually waiting.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Guarded by _lock:
        self._writer_waiting = False
        self._critical: collections.deque[_Pending] = collections.deque()
        self._normal: collections.deque[_Pending] = collections.deque()
        self._state: Literal["new", "running", "stopping", "stopped"] = "new"
        self._closed = False
        self._sync_requested = False
        self._recorded = 0
        self._dropped = 0
        self._critical_overflow = 0
        self._accepted = [0, 0]  # [critical, normal] records queued so far
        self._done = [0, 0]  # [critical, normal] written (or lost) and fsynced
        self._lost_upto = [0, 0]  # [critical, normal] position of the last lost record
        self._flush_floor = [0, 0]  # [critical, normal] what the previous flush() covered
        # wait_written(): (critical records that must be settled, loop, future), resolved by
        # the writer after each critical chunk.
        self._waiters = _WriteWaiters()
        self._written = 0
        self._write_errors = 0
        self._lost = 0
        self._writes = 0
        self._last_duration = 0
        self._max_duration = 0
        self._durations: collections.deque[int] = collections.deque(maxlen=_DURATION_RING)
        self.write_duration = LatencyHistogram()
        """Every write's duration (``svc.audit.write.duration``), recorded by the writer."""
        self._fsyncs = self._last_fsync_duration = self._max_fsync_duration = 0
        self._fs = _FsyncState()  # shared by the writer and the fsync thread, under _lock
        # The fsync thread waits on its own condition: record()'s single notify() must reach
        # the writer, never the fsync thread.
        self._fs_cond = threading.Condition(self._lock)

        # Owned by the writer thread once started:
        self._file: AuditFile | None = None
        self._file_lock: BinaryIO | None = None
        self._thread: threading.Thread | None = None
        self._syncer: threading.Thread | None = None
        self._seq = 0
        self._prev = GENESIS_HASH
        self._offset = 0
        self._taken = [0, 0]  # [critical, normal] records the writer has handled, in order

    @property
    def path(self) -> Path:
        return self._path

    @property
    def state(self) -> str:
        """``new``, ``running``, ``stopping`` or ``stopped``."""
        return self._state

    # -- lifecycle (cold path) -------------------------------------------------------------

    def start(self) -> None:
        """Open the journal (repairing a torn tail), then start the writer thread.

        Raises ``OSError`` if the file cannot be opened, and ``ConfigError`` if the file's last
        complete line is not a journal record (that is corruption, not a torn write).
        """
        if self._state != "new":
            raise RuntimeError(f"audit journal is {self._state}; start() runs once")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file_lock = _lock_exclusively(self._path)
        try:
            repair = self._open_existing()
            self._file = self._opener(self._path)
        except BaseException:
            self._file_lock.close()
            self._file_lock = None
            raise
        self._fs.last_sync = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="svc-audit-writer", daemon=True)
        self._syncer = threading.Thread(
            target=self._run_syncer, name="svc-audit-fsync", daemon=True
        )
        with self._cond:
            self._state = "running"
        self._syncer.start()
        self._thread.start()
        if repair is not None:
            log.warning(
                "audit journal %s had a torn final record; cut %d bytes at offset %d",
                self._path,
                repair["cut_bytes"],
                repair["offset"],
            )
            self.record("audit.repaired", repair, critical=True)

    def stop(self, timeout: float = 5.0) -> bool:
        """Write everything queued, fsync, close; False if that took longer than ``timeout``."""
        with self._cond:
            if self._state == "new":
                self._state = "stopped"
                self._closed = True
                return not self._critical and not self._normal
            if self._state == "running":
                self._state = "stopping"
            self._cond.notify_all()
        assert self._thread is not None
        self._thread.join(timeout)
        drained = not self._thread.is_alive()
        if not drained:
            log.error(
                "audit writer did not drain within %.1f s; %d records still queued",
                timeout,
                self.statistics().backlog,
            )
        return drained

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued so far is written and fsynced.

        False on timeout, or if a record recorded since the previous ``flush()`` was lost to
        a failed write (see ``write_errors`` and ``lost``).
        """
        with self._cond:
            target = list(self._accepted)
            floor, self._flush_floor = self._flush_floor, target
            self._sync_requested = True
            self._cond.notify_all()
            done = self._cond.wait_for(
                lambda: self._done[0] >= target[0] and self._done[1] >= target[1], timeout
            )
            lost = self._lost_upto[0] > floor[0] or self._lost_upto[1] > floor[1]
            return done and not lost

    # -- the trading path --------------------------------------------------------------------

    def record(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        critical: bool = False,
        ts_event: int = 0,
        trace_id: str = "",
    ) -> None:
        """Queue one record; never blocks on I/O and never raises.

        The payload is copied one level deep; nested values must not be mutated afterwards.
        """
        try:
            item = _Pending(
                kind, dict(payload), critical, ts_event, trace_id, self._clock.time_ns()
            )
        except Exception:
            log.exception("audit record %r refused: payload is not a mapping", kind)
            with self._cond:
                self._recorded += 1
                self._dropped += 1
            return
        with self._lock:
            self._recorded += 1
            dropped = overflow = 0
            if self._closed:
                self._dropped += 1
                dropped = self._dropped
            elif critical:
                if len(self._critical) >= self._critical_capacity:
                    self._critical_overflow += 1
                    overflow = self._critical_overflow
                self._critical.append(item)
                self._accepted[0] += 1
                if self._writer_waiting:
                    self._cond.notify()
            elif len(self._normal) >= self._capacity:
                self._dropped += 1
                dropped = self._dropped
            else:
                self._normal.append(item)
                self._accepted[1] += 1
                if self._writer_waiting:
                    self._cond.notify()
        # Log the 1st, 2nd, 4th, 8th ... occurrence: visible without flooding the log.
        if dropped and dropped & (dropped - 1) == 0:
            log.warning(
                "audit record %r dropped (%s); %d dropped so far",
                kind,
                "journal stopped" if self._closed else "queue full",
                dropped,
            )
        if overflow and overflow & (overflow - 1) == 0:
            log.warning(
                "audit critical queue over capacity %d; %d critical records overflowed so far",
                self._critical_capacity,
                overflow,
            )

    def statistics(self) -> AuditStatistics:
        with self._cond:
            return AuditStatistics(
                recorded=self._recorded,
                written=self._written,
                dropped=self._dropped,
                critical_overflow=self._critical_overflow,
                backlog=len(self._critical) + len(self._normal),
                write_errors=self._write_errors,
                lost=self._lost,
                writes=self._writes,
                last_write_duration_ns=self._last_duration,
                max_write_duration_ns=self._max_duration,
                write_durations_ns=tuple(self._durations),
                fsyncs=self._fsyncs,
                last_fsync_duration_ns=self._last_fsync_duration,
                max_fsync_duration_ns=self._max_fsync_duration,
            )

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if not self._run_once():
                    return
            except Exception:
                # A bug here must not kill the only writer; count it and keep going.
                log.exception("audit writer failed unexpectedly")
                with self._cond:
                    self._write_errors += 1

    def _run_once(self) -> bool:
        """One pass: take a batch, write it, fsync as the policy says. False when finished."""
        with self._cond:
            while not (self._critical or self._normal or self._sync_requested):
                if self._state == "stopping":
                    break
                timeout = self._sync_wait()
                if timeout is not None and timeout <= 0:
                    break
                self._writer_waiting = True
                self._cond.wait(timeout)
                self._writer_waiting = False
            critical = list(self._critical)
            self._critical.clear()
            normal = [self._normal.popleft() for _ in range(min(_NORMAL_BATCH, len(self._normal)))]
            finishing = self._state == "stopping" and not self._normal
            sync = self._sync_requested or finishing
            self._sync_requested = False
            if finishing:
                self._closed = True  # nothing is accepted after the writer's last look

        self._write_batch(critical, critical=True)
        self._write_batch(normal, critical=False)
        if finishing:
            self._stop_syncer()
            self._sync()  # the last one, after every write, by the writer itself
            self._close()
            return False
        if sync or (critical and self._fsync == "critical") or self._sync_due():
            with self._cond:
                self._fs.pending = True
                self._fs_cond.notify()
        return True

    def _sync_wait(self) -> float | None:
        """Seconds until a batched fsync is due; None when nothing is waiting for one (or
        the fsync thread has one to do already).

        Real monotonic time, not the injected clock: this only paces ``Condition.wait``.
        """
        if not self._fs.dirty or self._fs.pending or self._fsync not in ("batch", "critical"):
            return None
        return self._fs.last_sync + self._batch_interval - time.monotonic()

    def _sync_due(self) -> bool:
        wait = self._sync_wait()
        return wait is not None and wait <= 0

    def _write_batch(self, items: list[_Pending], *, critical: bool) -> None:
        if not items:
            return
        tier = 0 if critical else 1
        # "always" writes and fsyncs record by record; otherwise a batch is one append.
        chunks = [[item] for item in items] if self._fsync == "always" else [items]
        for chunk in chunks:
            self._write_chunk(chunk, tier)

    async def wait_written(self, timeout: float) -> bool:  # noqa: ASYNC109
        """See ``AuditSink.wait_written``. Call from the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            target = self._accepted[0]
            if self._state not in ("running", "stopping"):
                return False
            if self._waiters.written >= target:
                return self._lost_upto[0] < target
            self._waiters.waiting.append((target, loop, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False

    def _settle_waiters(self, count: int) -> None:
        """``count`` more critical records are written (or lost): resolve their waiters."""
        waiters = self._waiters
        with self._lock:
            waiters.written += count
            settled = waiters.written
            lost = self._lost_upto[0]
            ready = [w for w in waiters.waiting if w[0] <= settled]
            if not ready:
                return
            waiters.waiting = [w for w in waiters.waiting if w[0] > settled]
        for target, loop, future in ready:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future, lost < target)

    def _write_chunk(self, chunk: list[_Pending], tier: int) -> None:
        assert self._file is not None
        try:
            self._write_chunk_unsettled(chunk, tier)
        finally:
            if tier == 0:
                self._settle_waiters(len(chunk))

    def _write_chunk_unsettled(self, chunk: list[_Pending], tier: int) -> None:
        assert self._file is not None
        self._taken[tier] += len(chunk)
        seq, prev = self._seq, self._prev
        lines = []
        for item in chunk:
            seq += 1
            line, prev = _encode_record(item, seq, prev)
            lines.append(line)
        data = b"".join(lines)
        started = self._clock.monotonic_ns()
        try:
            _write_all(self._file, data)
            if self._fsync == "always":
                self._file.flush()
                os.fsync(self._file.fileno())
        except OSError as error:
            self._rollback()
            log.error(
                "audit write to %s failed (%s); %d records lost (%d critical)",
                self._path,
                error,
                len(chunk),
                sum(item.critical for item in chunk),
            )
            with self._cond:
                self._write_errors += 1
                self._lost += len(chunk)
                self._lost_upto[tier] = self._taken[tier]
                self._fs.unsynced[tier] += len(chunk)  # lost, but flush() must not wait for them
            return
        duration = self._clock.monotonic_ns() - started
        self._seq, self._prev = seq, prev
        self._offset += len(data)
        with self._cond:
            if self._fsync == "always":
                self._done[tier] += len(chunk)
                self._cond.notify_all()
            else:
                self._fs.dirty = True
                self._fs.unsynced[tier] += len(chunk)
            self._written += len(chunk)
            self._writes += 1
            self._last_duration = duration
            self._max_duration = max(self._max_duration, duration)
            self._durations.append(duration)
            self.write_duration.record(duration)

    def _rollback(self) -> None:
        """Cut a partly written chunk so the chain on disk ends at the last good record."""
        assert self._file is not None
        try:
            self._file.truncate(self._offset)
        except OSError as error:
            log.error(
                "audit journal %s could not be truncated after a failed write: %s",
                self._path,
                error,
            )

    def _run_syncer(self) -> None:
        """The fsync thread: one fsync per request, while the writer goes on writing."""
        while True:
            with self._cond:
                while not (self._fs.pending or self._fs.stop):
                    self._fs_cond.wait()
                if self._fs.stop:  # the writer does the last fsync itself
                    return
                self._fs.pending = False
            try:
                self._sync()
            except Exception:
                log.exception("audit fsync thread failed unexpectedly")
                with self._cond:
                    self._write_errors += 1

    def _stop_syncer(self) -> None:
        with self._cond:
            self._fs.stop = True
            self._fs_cond.notify()
        if self._syncer is not None:
            self._syncer.join()

    def _sync(self) -> None:
        """fsync what is written so far; then those records count as done (``flush()``).

        Runs on the fsync thread, or on the writer once the fsync thread has stopped.
        """
        assert self._file is not None
        with self._cond:
            dirty, self._fs.dirty = self._fs.dirty, False
            covered, self._fs.unsynced = self._fs.unsynced, [0, 0]
        if dirty:
            started = self._clock.monotonic_ns()
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as error:
                log.error("audit fsync of %s failed: %s", self._path, error)
                with self._cond:
                    self._write_errors += 1
            duration = self._clock.monotonic_ns() - started
            with self._cond:
                self._fsyncs += 1
                self._last_fsync_duration = duration
                self._max_fsync_duration = max(self._max_fsync_duration, duration)
        with self._cond:
            self._fs.last_sync = time.monotonic()
            self._done[0] += covered[0]
            self._done[1] += covered[1]
            self._cond.notify_all()

    def _close(self) -> None:
        assert self._file is not None
        try:
            self._file.close()
        except OSError as error:
            log.error("audit journal %s did not close cleanly: %s", self._path, error)
        if self._file_lock is not None:
            self._file_lock.close()  # releases the flock
        with self._cond:
            self._state = "stopped"
            self._cond.notify_all()

    # -- opening an existing journal -----------------------------------------------------------

    def _open_existing(self) -> dict[str, Any] | None:
        """Continue the chain of an existing journal; cut a torn final line.

        Returns the payload of the ``audit.repaired`` record, or None if nothing was cut.
        """
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            return None
        if size == 0:
            return None
        lines, newline_at_end = _last_lines(self._path, size)
        final_offset, final = lines[-1]
        record = _parse_record(final)
        repair: dict[str, Any] | None = None
        if record is None:
            with open(self._path, "r+b") as file:
                file.truncate(final_offset)
                os.fsync(file.fileno())
            repair = {
                "offset": final_offset,
                "cut_bytes": size - final_offset,
                "cut_text": final[:200].decode("utf-8", "replace"),
            }
            size = final_offset
            if len(lines) > 1:
                record = _parse_record(lines[-2][1])
                if record is None:
                    raise ConfigError(
                        "audit.path",
                        f"{self._path} is damaged before its final line (byte "
                        f"{lines[-2][0]}); run `svc audit verify` on it and move it aside",
                    )
        elif not newline_at_end:
            # A whole record whose newline never reached the disk: complete it, lose nothing.
            with open(self._path, "ab") as file:
                file.write(b"\n")
            size += 1
        if record is not None:
            self._seq, self._prev = record["seq"], record["hash"]
        self._offset = size
        return repair


@dataclasses.dataclass(slots=True)
class _FsyncState:
    """What is written but not yet covered by an fsync, and the writer's requests for one;
    guarded by the journal's lock (the writer and the fsync thread share it)."""

    dirty: bool = False
    unsynced: list[int] = dataclasses.field(default_factory=lambda: [0, 0])
    """[critical, normal] records written (or lost) since the last fsync began."""
    pending: bool = False
    """The writer asked for an fsync the fsync thread has not started yet."""
    stop: bool = False
    last_sync: float = 0.0
    """``time.monotonic()`` of the last fsync's end (paces the ``batch`` interval)."""


class _WriteWaiters:
    """``wait_written`` futures and how many critical records are written (or lost) so
    far; guarded by the journal's lock, resolved by the writer thread."""

    __slots__ = ("waiting", "written")

    def __init__(self) -> None:
        self.written = 0
        self.waiting: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []


def _resolve(future: asyncio.Future[bool], ok: bool) -> None:  # noqa: FBT001  (call_soon args)
    if not future.done():
        future.set_result(ok)


def _lock_exclusively(path: Path) -> BinaryIO:
    """Hold an exclusive ``flock`` on ``<journal>.lock`` for the journal's lifetime, so two
    processes (a restarted pod and its not-yet-dead predecessor) never append to one chain."""
    lock_path = path.with_name(path.name + ".lock")
    handle = open(lock_path, "a+b")  # noqa: SIM115  (held open until the journal closes)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            "audit.path",
            f"{path} is in use by another process (lock {lock_path}); is another svc running?",
        ) from None
    return handle


def _last_lines(path: Path, size: int) -> tuple[list[tuple[int, bytes]], bool]:
    """The file's last one or two lines as (offset, bytes without the newline), and whether
    the file ends with a newline. Reads backwards in growing chunks, never the whole journal
    unless it must.
    """
    chunk = 64 * 1024
    with open(path, "rb") as file:
        while True:
            start = max(0, size - chunk)
            file.seek(start)
            data = file.read(size - start)
            newline_at_end = data.endswith(b"\n")
            body = data[:-1] if newline_at_end else data
            parts = body.split(b"\n")
            # When reading from the middle, the first part is a fragment: do not trust it.
            if start == 0 or len(parts) > 2:
                final_offset = start + len(body) - len(parts[-1])
                lines = [(final_offset, parts[-1])]
                if len(parts) > 1:
                    lines.insert(0, (final_offset - 1 - len(parts[-2]), parts[-2]))
                return lines, newline_at_end
            chunk *= 4


def _parse_record(line: bytes) -> dict[str, Any] | None:
    try:
        record = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("seq"), int)
        or not isinstance(record.get("hash"), str)
    ):
        return None
    return record


def _write_all(file: AuditFile, data: bytes) -> None:
    while data:
        written = file.write(data)
        if not written:
            raise OSError("audit write made no progress")
        data = data[written:]


def _encode_record(item: _Pending, seq: int, prev: str) -> tuple[bytes, str]:
    """The line for one record (with its newline) and its hash."""
    try:
        data = _redact(msgspec.to_builtins(item.data, str_keys=True, enc_hook=repr))
    except Exception as error:  # the order event itself must still reach the journal
        log.exception("audit payload of %r could not be encoded", item.kind)
        data = {"unencodable": f"{type(error).__name__}: {error}"}
    record = {
        "seq": seq,
        "ts_init": item.ts_init,
        "ts_event": item.ts_event,
        "kind": str(item.kind),
        "trace_id": str(item.trace_id),
        "data": data,
        "prev": prev,
    }
    digest = hashlib.sha256(_encoder.encode(record)).hexdigest()
    record["hash"] = digest
    return _encoder.encode(record) + b"\n", digest


def _redact(value: Any) -> Any:
    """Replace the values of secret-looking keys, at any depth, with ``REDACTED``."""
    if isinstance(value, dict):
        return {
            key: REDACTED if _is_secret_key(key) else _redact(item) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    if isinstance(value, str) and "=" in value:
        return _SECRET_IN_TEXT.sub(lambda match: match.group(1) + REDACTED, value)
    return value


def _is_secret_key(key: str) -> bool:
    folded = key.lower().replace("_", "").replace("-", "")
    return any(part in folded for part in _SECRET_KEY_PARTS)


# -- verification ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyResult:
    """What ``verify()`` found. ``first_bad_line`` is 1-based; ``records`` counts valid ones."""

    ok: bool
    records: int
    first_bad_line: int | None = None
    reason: str = ""
    torn_tail: bool = False

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.records} records, chain intact"
        return f"line {self.first_bad_line}: {self.reason} ({self.records} valid records before it)"


def verify(path: Path) -> VerifyResult:
    """Check a journal line by line: JSON, fields, seq continuity, prev links and hashes."""
    expected_seq, prev = 1, GENESIS_HASH
    records = 0
    with open(path, "rb") as file:
        lines = iter(file)
        line = next(lines, None)
        number = 0
        while line is not None:
            number += 1
            following = next(lines, None)
            record = _parse_record(line)
            if record is None:
                if following is None:
                    return VerifyResult(
                        ok=False,
                        records=records,
                        first_bad_line=number,
                        reason="torn final record (the next start repairs it)",
                        torn_tail=True,
                    )
                return _bad(records, number, "not a JSON audit record")
            problem = _check(record, expected_seq, prev)
            if problem:
                return _bad(records, number, problem)
            records += 1
            expected_seq, prev = expected_seq + 1, record["hash"]
            line = following
    return VerifyResult(ok=True, records=records)


def _check(record: dict[str, Any], expected_seq: int, prev: str) -> str:
    if set(record) != _RECORD_KEYS:
        return f"fields {sorted(record)} are not {sorted(_RECORD_KEYS)}"
    if record["seq"] != expected_seq:
        return (
            f"seq {record['seq']} where {expected_seq} was expected "
            "(a record is missing, added or out of order)"
        )
    if record["prev"] != prev:
        return "prev does not match the previous record's hash"
    stated = record.pop("hash")
    actual = hashlib.sha256(_encoder.encode(record)).hexdigest()
    record["hash"] = stated
    if actual != stated:
        return "hash does not match the record's contents (edited)"
    return ""


def _bad(records: int, number: int, reason: str) -> VerifyResult:
    return VerifyResult(ok=False, records=records, first_bad_line=number, reason=reason)
