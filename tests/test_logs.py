"""setup_logging: JSON lines written by the listener thread, bounded queue, redaction."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from svc.errors import ConfigError
from svc.logs import MASK, LoggingHandle, setup_logging, validate_level

FAST = 5.0


class RecordingStream(io.StringIO):
    """A stream that remembers which thread wrote each line and can be made to block."""

    def __init__(self) -> None:
        super().__init__()
        self.writer_idents: set[int] = set()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def write(self, text: str) -> int:
        self.writer_idents.add(threading.get_ident())
        self.entered.set()
        self.release.wait(FAST)
        return super().write(text)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[list[LoggingHandle]]:
    """Give back the root logger exactly as it was, whatever a test installed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    started: list[LoggingHandle] = []
    yield started
    for handle in started:
        handle.stop()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def stream() -> RecordingStream:
    return RecordingStream()


def start(started: list[LoggingHandle], **kwargs: Any) -> LoggingHandle:
    kwargs.setdefault("environ", {})  # never mask by the developer's real credentials
    handle = setup_logging(**kwargs)
    started.append(handle)
    return handle


def test_json_lines_carry_fields(
    restore_root_logger: list[LoggingHandle], stream: RecordingStream
) -> None:
    handle = start(restore_root_logger, stream=stream)
    log = logging.getLogger("svc.test")
    log.info("filled %s at %.2f", "BTCUSDT", 42000.5, extra={"order_id": 7, "side": "BUY"})
    log.warning("traced", extra={"trace_id": "ab" * 16, "span_id": "cd" * 8})
    log.debug("invisible: DEBUG is off by default")
    try:
        raise ValueError("bad fill")
    except ValueError:
        log.exception("handler failed")
    handle.stop()

    first, second, third = stream.lines()
    assert first["level"] == "INFO"
    assert first["logger"] == "svc.test"
    assert first["message"] == "filled BTCUSDT at 42000.50"
    assert (first["order_id"], first["side"]) == (7, "BUY")
    assert (first["trace_id"], first["span_id"]) == ("", "")
    assert first["ts"].endswith("+00:00")
    assert time.time() - _epoch(first["ts"]) < 60
    assert (second["trace_id"], second["span_id"]) == ("ab" * 16, "cd" * 8)
    assert third["level"] == "ERROR"
    assert third["message"] == "handler failed"  # the traceback is its own field
    assert "ValueError: bad fill" in third["exception"]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_io_happens_on_the_listener_thread(
    restore_root_logger: list[LoggingHandle], stream: RecordingStream
) -> None:
    handle = start(restore_root_logger, stream=stream)
    listener = handle.listener_thread_ident
    for n in range(20):
        logging.getLogger("svc.test").info("line %d", n)
    handle.stop()
    assert len(stream.lines()) == 20
    assert listener is not None
    assert stream.writer_idents == {listener}
    assert threading.get_ident() not in stream.writer_idents


def test_full_queue_drops_and_counts_without_blocking(
    restore_root_logger: list[LoggingHandle], stream: RecordingStream
) -> None:
    handle = start(restore_root_logger, stream=stream, capacity=5)
    log = logging.getLogger("svc.test")
    stream.release.clear()  # the listener will block on its first write
    log.info("first")
    assert stream.entered.wait(FAST)  # the listener holds "first"; the queue is empty

    began = time.perf_counter()
    for n in range(8):
        log.info("burst %d", n)
    elapsed = time.perf_counter() - began
    assert elapsed < 1.0  # nowhere near the 5 s the blocked stream would hold a waiting put
    assert handle.dropped == 3
    assert handle.depth == 5

    stream.release.set()
    handle.stop()
    assert [line["message"] for line in stream.lines()] == [
        "first",
        *(f"burst {n}" for n in range(5)),
    ]


def test_secrets_are_redacted(
    restore_root_logger: list[LoggingHandle], stream: RecordingStream, tmp_path: Path
) -> None:
    environ = {
        "BINANCE_API_KEY": "key-AAAA1111",
        "BINANCE_API_SECRET": "secret-BBBB2222",
        "SVC_SIM_API_SECRET": "",  # empty: nothing to mask
    }
    log_file = tmp_path / "svc.log"
    handle = start(restore_root_logger, stream=stream, file=log_file, environ=environ)
    log = logging.getLogger("svc.exchange")
    log.info(
        "signed request with key %s",
        "key-AAAA1111",
        extra={
            "api_key": "anything",
            "apiKey": "anything",
            "signature": "deadbeef",
            "X-MBX-SECRET": "x",
            "params": {"nested": "secret-BBBB2222"},
            "note": "uses secret-BBBB2222 inline",
            "symbol": "BTCUSDT",
        },
    )
    try:
        raise RuntimeError("rejected for key-AAAA1111")
    except RuntimeError:
        log.exception("order failed")
    handle.stop()

    text = stream.getvalue()
    assert "AAAA1111" not in text
    assert "BBBB2222" not in text
    assert "anything" not in text
    assert "deadbeef" not in text
    first, second = stream.lines()
    assert first["message"] == f"signed request with key {MASK}"
    for key in ("api_key", "apiKey", "signature", "X-MBX-SECRET"):
        assert first[key] == MASK
    assert first["note"] == f"uses {MASK} inline"
    assert first["symbol"] == "BTCUSDT"  # ordinary fields untouched
    assert "AAAA1111" not in second["exception"]
    file_text = log_file.read_text(encoding="utf-8")
    assert file_text == text  # the file gets the same redacted lines


def test_stop_is_idempotent(
    restore_root_logger: list[LoggingHandle], stream: RecordingStream
) -> None:
    handle = start(restore_root_logger, stream=stream)
    logging.getLogger("svc.test").info("once")
    handle.stop()
    handle.stop()
    assert handle.listener_thread_ident is None
    assert handle.queue_handler not in logging.getLogger().handlers
    logging.getLogger("svc.test").info("after stop goes nowhere")
    assert [line["message"] for line in stream.lines()] == ["once"]


def test_setup_twice_keeps_one_handler(
    restore_root_logger: list[LoggingHandle], stream: RecordingStream
) -> None:
    first = start(restore_root_logger, stream=io.StringIO())
    second = start(restore_root_logger, stream=stream, level="debug")
    root = logging.getLogger()
    assert root.handlers == [second.queue_handler]
    assert root.level == logging.DEBUG
    assert first.listener_thread_ident is None  # the first handle was stopped
    logging.getLogger("svc.test").debug("once, not twice")
    second.stop()
    assert [line["message"] for line in stream.lines()] == ["once, not twice"]


def test_bad_format_arguments_do_not_raise(
    restore_root_logger: list[LoggingHandle], stream: RecordingStream
) -> None:
    handle = start(restore_root_logger, stream=stream)
    logging.getLogger("svc.test").info("%d ticks", "not a number")
    handle.stop()
    (line,) = stream.lines()
    assert "unformattable" in line["message"]


@pytest.mark.parametrize(
    ("text", "expected"), [("info", "INFO"), (" Warning ", "WARNING"), ("DEBUG", "DEBUG")]
)
def test_validate_level_accepts(text: str, expected: str) -> None:
    assert validate_level(text) == expected


@pytest.mark.parametrize("text", ["", "verbose", "WARN", "10"])
def test_validate_level_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_level(text)
    assert raised.value.field == "log_level"
    assert "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in str(raised.value)


def test_setup_rejects_bad_level_before_touching_root(stream: RecordingStream) -> None:
    before = logging.getLogger().handlers[:]
    with pytest.raises(ConfigError):
        setup_logging(level="loud", stream=stream, environ={})
    assert logging.getLogger().handlers == before
