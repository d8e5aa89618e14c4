"""Logging off the event loop: a bounded queue on the hot side, JSON lines written by a thread.

``setup_logging`` gives the root logger exactly one handler, a ``QueueHandler`` that puts
records into a bounded ``queue.Queue`` without ever blocking: when the queue is full the
record is dropped and counted (``LoggingHandle.dropped``, exported as ``svc.log.dropped``).
A ``QueueListener`` thread formats each record as one JSON object per line (``ts``,
``level``, ``logger``, ``message``, ``trace_id``, ``span_id``, then any ``extra`` fields) and
writes it to the stream (stdout for Kubernetes) and optionally to a rotating file.

On the calling thread only the message is %-formatted (its arguments may change later) and
secrets are redacted: ``extra`` values whose key looks like a credential, and the values of
the credential environment variables wherever they appear. The listener masks those values
once more in the finished line, so a secret nested in an ``extra`` structure is caught too.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from svc.errors import ConfigError

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

SECRET_ENV_VARS: Final = ("BINANCE_API_KEY", "BINANCE_API_SECRET", "SVC_SIM_API_SECRET")
"""Environment variables whose values are masked in every log line."""

MASK: Final = "***"
_SECRET_KEY_PARTS: Final = ("apikey", "secret", "signature", "password")
_MIN_SECRET_LENGTH: Final = 4  # shorter env values would mask ordinary words, not secrets
FILE_MAX_BYTES: Final = 10 * 1024 * 1024
FILE_BACKUP_COUNT: Final = 5

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}


def validate_level(text: str) -> str:
    """The canonical level name for ``text`` (case-insensitive), or ``ConfigError``."""
    level = text.strip().upper()
    if level not in LEVELS:
        raise ConfigError("log_level", "expected one of " + ", ".join(LEVELS))
    return level


def _is_secret_key(key: str) -> bool:
    folded = key.lower().replace("_", "").replace("-", "")
    return any(part in folded for part in _SECRET_KEY_PARTS)


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Redacts credentials on the calling thread, before a record leaves for the queue.

    The record's message is formatted here (``msg`` becomes the masked text, ``args`` None)
    and an exception is rendered to ``exc_text`` so that it can be masked too.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if len(s) >= _MIN_SECRET_LENGTH)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not raise into the caller
            message = f"unformattable log message {record.msg!r} with args {record.args!r}"
        record.msg = _mask(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _mask(record.exc_text, secrets)
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRIBUTES:
                continue
            if _is_secret_key(key):
                setattr(record, key, MASK)
            elif isinstance(value, str) and secrets:
                setattr(record, key, _mask(value, secrets))
        return True


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A ``QueueHandler`` that never blocks: a full queue drops the record and counts it."""

    def __init__(self, log_queue: queue.Queue[Any]) -> None:
        super().__init__(log_queue)
        self._dropped = 0
        self._dropped_lock = threading.Lock()  # taken only when dropping

    @property
    def dropped(self) -> int:
        return self._dropped

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._dropped_lock:
                self._dropped += 1

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stdlib version folds the traceback into the message; keep it separate for JSON.
        # RedactingFilter has already formatted the message and rendered the exception.
        prepared = copy.copy(record)
        prepared.message = prepared.getMessage()
        prepared.msg = prepared.message
        prepared.args = None
        prepared.exc_info = None  # tracebacks keep frames alive; exc_text carries the text
        return prepared


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO-8601 UTC), level, logger, message, trace_id,
    span_id, exception/stack when present, then the ``extra`` fields (never overriding)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if len(s) >= _MIN_SECRET_LENGTH)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", ""),
            "span_id": getattr(record, "span_id", ""),
        }
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES:
                line.setdefault(key, value)
        return _mask(json.dumps(line, default=str, ensure_ascii=False), self._secrets)


class _Listener(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        # The stdlib uses put_nowait, which raises on a full queue; the listener is running
        # and emptying it, so waiting here for one slot is safe.
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]


class LoggingHandle:
    """What ``setup_logging`` installed: drop counter, queue depth, and ``stop``."""

    def __init__(
        self,
        *,
        queue_handler: DroppingQueueHandler,
        listener: logging.handlers.QueueListener,
        handlers: tuple[logging.Handler, ...],
        log_queue: queue.Queue[Any],
    ) -> None:
        self.queue_handler = queue_handler
        self._listener = listener
        self._handlers = handlers
        self._queue = log_queue
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full."""
        return self.queue_handler.dropped

    @property
    def depth(self) -> int:
        """Records waiting for the listener."""
        return self._queue.qsize()

    @property
    def listener_thread_ident(self) -> int | None:
        thread: threading.Thread | None = getattr(self._listener, "_thread", None)
        return thread.ident if thread is not None else None

    def stop(self) -> None:
        """Detach from the root logger, write what is queued, stop the thread. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        logging.getLogger().removeHandler(self.queue_handler)
        self._listener.stop()
        for handler in self._handlers:
            handler.flush()
            if isinstance(handler, logging.FileHandler):
                handler.close()  # never close the stream we were given (stdout)


_active: LoggingHandle | None = None
_active_lock = threading.Lock()


def setup_logging(
    *,
    level: str = "INFO",
    stream: TextIO = sys.stdout,
    file: Path | None = None,
    capacity: int = 10_000,
    environ: Mapping[str, str] | None = None,
) -> LoggingHandle:
    """Route all logging through a bounded queue to a JSON-lines writer thread.

    Replaces every handler on the root logger (like ``basicConfig(force=True)``, without
    closing handlers it did not create) and stops the handle of a previous call. ``environ``
    (default ``os.environ``) is read once for the values of ``SECRET_ENV_VARS``.
    """
    global _active  # noqa: PLW0603 - the root logger is process-global; so is what owns it
    level = validate_level(level)
    if capacity < 1:
        raise ConfigError("log_queue_capacity", "expected a positive integer")
    env = os.environ if environ is None else environ
    secrets = [env[name] for name in SECRET_ENV_VARS if env.get(name)]

    formatter = JsonLinesFormatter(secrets)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if file is not None:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                file, maxBytes=FILE_MAX_BYTES, backupCount=FILE_BACKUP_COUNT, encoding="utf-8"
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)

    log_queue: queue.Queue[Any] = queue.Queue(capacity)
    queue_handler = DroppingQueueHandler(log_queue)
    queue_handler.addFilter(RedactingFilter(secrets))
    listener = _Listener(log_queue, *handlers, respect_handler_level=True)
    handle = LoggingHandle(
        queue_handler=queue_handler,
        listener=listener,
        handlers=tuple(handlers),
        log_queue=log_queue,
    )

    with _active_lock:
        if _active is not None:
            _active.stop()
        root = logging.getLogger()
        for existing in root.handlers[:]:
            root.removeHandler(existing)
        root.addHandler(queue_handler)
        root.setLevel(level)
        listener.start()
        _active = handle
    return handle
