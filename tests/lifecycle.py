"""Test helpers: `svc sim` and `svc run` as real processes on loopback, as an operator runs them.

``Simulator`` is an external ``svc sim`` (it outlives the ``svc run`` processes, like a real
exchange) with its admin endpoints and signed REST queries; ``Service`` is one ``svc run``
process with its output in files (never pipes, so a chatty process cannot block on a full
pipe). Both are context managers that always end their process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from svc.sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET

SVC = [sys.executable, "-m", "svc.cli"]

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], *, within: float, every: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``within``."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(every)


class _Process:
    """A subprocess whose stdout and stderr go to files; ended on exit of the context."""

    def __init__(self, args: list[str], *, name: str, directory: Path) -> None:
        self.stdout_path = directory / f"{name}.out"
        self.stderr_path = directory / f"{name}.err"
        environ = {**os.environ, "SVC_LOG_LEVEL": "INFO"}
        environ.pop("HOSTNAME", None)  # sharding must not depend on the test machine's name
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(  # noqa: S603  (svc itself, fixed arguments)
                args, stdout=out, stderr=err, env=environ
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end()

    def end(self) -> None:
        """Terminate (then kill) the process if it still runs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, within: float) -> int:
        try:
            return self.process.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"process did not exit within {within:.0f} s; stderr ends:\n{self.stderr()[-3000:]}"
            ) from None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class Simulator(_Process):
    """``svc sim --port 0``: the URL it prints, its state, and signed queries of its orders."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            [*SVC, "sim", "--port", "0", "--speed", "60", "--rate", "20"],
            name="sim",
            directory=directory,
        )
        try:
            self.url = wait_for("svc sim to print its address", self._address, within=30)
        except AssertionError:
            self.end()
            raise

    def _address(self) -> str | None:
        if not self.running:
            raise AssertionError(f"svc sim exited: {self.stderr()[-2000:]}")
        for word in self.stdout().split():
            if word.startswith("http://127.0.0.1:"):
                return word
        return None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310  (loopback)
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.get("/_sim/state")
        return state

    def balance(self, asset: str) -> Decimal:
        free, locked = self.state()["balances"][asset]
        return Decimal(free) + Decimal(locked)

    def silence(self) -> None:
        """Stop market data: no more signals, so no order races the test's next step."""
        self.post("/_sim/faults", {"silent": True})

    def step_size(self, symbol: str) -> Decimal:
        info = self.get(f"/api/v3/exchangeInfo?symbol={symbol}")
        (lot,) = [f for f in info["symbols"][0]["filters"] if f["filterType"] == "LOT_SIZE"]
        return Decimal(lot["stepSize"])

    def query_order(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """GET /api/v3/order (signed); None when the simulator never had the order."""
        params = {
            "symbol": symbol,
            "origClientOrderId": client_order_id,
            "timestamp": str(int(time.time() * 1000)),
        }
        query = urllib.parse.urlencode(params)
        digest = hmac.new(DEFAULT_API_SECRET.encode(), query.encode(), hashlib.sha256)
        request = urllib.request.Request(  # noqa: S310  (loopback)
            f"{self.url}/api/v3/order?{query}&signature={digest.hexdigest()}",
            headers={"X-MBX-APIKEY": DEFAULT_API_KEY},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                order: dict[str, Any] = json.loads(response.read())
                return order
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
            if body.get("code") == -2013:  # Order does not exist.
                return None
            raise


def write_config(
    directory: Path,
    *,
    name: str = "svc.toml",
    sim_url: str,
    audit_path: Path,
    budget: float = 10.0,
    flatten: bool = False,
    eth_cooldown: float = 0.2,
) -> Path:
    """A ``svc run`` configuration for the external simulator whose orders flow at once:
    BTCUSDT limit orders 1 % away from the trade price (they rest), ETHUSDT market orders
    (positions build)."""
    path = directory / name
    path.write_text(
        f"""
symbols = ["BTCUSDT", "ETHUSDT"]
intervals = ["1m"]
status_interval = 1.0

[sim]
url = "{sim_url}"

[telemetry]
health_port = -1

[feed]
warmup_klines = 0

[risk]
max_position = 0.05
max_orders_per_minute = 600

[audit]
path = "{audit_path}"

[emergency]
shutdown_budget_seconds = {budget}
flatten = {"true" if flatten else "false"}

[[strategies]]
kind = "trade_flow"
symbol = "BTCUSDT"
window = 5
threshold = 0.1
quantity = 0.001
cooldown_ns = 200_000_000
limit_offset = 0.01

[[strategies]]
kind = "trade_flow"
symbol = "ETHUSDT"
window = 5
threshold = 0.1
quantity = 0.01
cooldown_ns = {int(eth_cooldown * 1e9)}
"""
    )
    return path


class Service(_Process):
    """One ``svc run --config FILE`` process."""

    def __init__(self, config: Path, *, name: str = "run") -> None:
        super().__init__([*SVC, "run", "--config", str(config)], name=name, directory=config.parent)


def journal(path: Path) -> list[dict[str, Any]]:
    """The journal's records; a torn final line (a kill mid-write) is left out."""
    records = []
    lines = path.read_bytes().splitlines() if path.exists() else []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number != len(lines):
                raise
    return records


def kinds(path: Path, kind: str) -> list[dict[str, Any]]:
    """The ``data`` of every ``kind`` record."""
    return [record["data"] for record in journal(path) if record["kind"] == kind]


def audit_verify(path: Path) -> tuple[int, str]:
    """``svc audit verify PATH``: its exit code and output."""
    done = subprocess.run(  # noqa: S603  (svc itself, fixed arguments)
        [*SVC, "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr
