"""A real OpenTelemetry collector for the tests: rotel-agent (from the ``rotel`` wheel) on
loopback, printing every span and metric it receives to a log file the tests read."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


def rotel_agent() -> Path:
    """The collector binary shipped in the ``rotel`` wheel (a dev dependency)."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        pytest.fail("the rotel package is not installed; install the dev extra")
    agent = Path(spec.origin).parent / "rotel-agent"
    if not agent.is_file():
        pytest.fail(f"rotel-agent not found at {agent}")
    return agent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(port: int, deadline: float) -> None:
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.2).close()
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"rotel-agent is not listening on {LOOPBACK}:{port}")
            time.sleep(0.05)
        else:
            return


def wait_for_output(log: Path, needles: Sequence[str], deadline: float) -> str:
    while True:
        text = log.read_text(errors="replace")
        if all(needle in text for needle in needles):
            return text
        if time.monotonic() > deadline:
            missing = [needle for needle in needles if needle not in text]
            pytest.fail(f"collector output lacks {missing}; it was:\n{text[-4000:]}")
        time.sleep(0.1)


@dataclass
class Collector:
    grpc_port: int
    http_port: int
    output: Path
    process: subprocess.Popen[bytes]

    def endpoint(self, protocol: str) -> str:
        port = self.grpc_port if protocol == "grpc" else self.http_port
        return f"http://{LOOPBACK}:{port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def collector(tmp_path: Path) -> Iterator[Collector]:
    """rotel-agent on two free loopback ports; stopped (and waited for) on exit."""
    grpc_port, http_port = free_port(), free_port()
    output = tmp_path / "rotel.out"
    # fmt: off
    command = [
        str(rotel_agent()), "start",
        "--otlp-grpc-endpoint", f"{LOOPBACK}:{grpc_port}",
        "--otlp-http-endpoint", f"{LOOPBACK}:{http_port}",
        "--exporter", "blackhole",
        "--debug-log", "traces", "--debug-log", "metrics",
        "--debug-log-verbosity", "detailed",
        "--pid-file", str(tmp_path / "rotel.pid"),
        "--log-file", str(tmp_path / "rotel.log"),
    ]
    # fmt: on
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
    running = Collector(grpc_port, http_port, output, process)
    try:
        deadline = time.monotonic() + 15.0
        wait_listening(grpc_port, deadline)
        wait_listening(http_port, deadline)
        yield running
    finally:
        running.stop()
