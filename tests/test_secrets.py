"""Secrets: sentinel credentials appear nowhere svc writes; the simulator authenticates every
signed request; the health server exposes no configuration and binds only where configured.

The leak test runs ``svc run`` against an external ``svc sim`` that accepts only a sentinel
API key and secret (so every signed request carries them), at ``DEBUG`` with every span
sampled and exported to a real collector, and then searches everything svc produced: its
stdout and stderr, its log file, what the collector printed of every span and metric it
received, ``/metrics``, ``/livez`` and ``/readyz`` scraped mid-run, the summary and the audit
journal. Searched for: the key, the secret, the first 12 characters of each and their random
tails (a partial mask or a truncated copy is a leak too).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from svc.health import HealthServer
from svc.sim.server import SimConfig, SimExchange
from svc.sim.signing import sign
from tests.collector import collector, free_port, wait_for_output

pytestmark = pytest.mark.faults

SVC = [sys.executable, "-m", "svc.cli"]
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Sentinels:
    key: str
    secret: str

    @classmethod
    def new(cls) -> Sentinels:
        return cls(
            key=f"SENTINEL_KEY_{secrets.token_hex(16)}",
            secret=f"SENTINEL_SECRET_{secrets.token_hex(16)}",
        )

    def needles(self) -> list[str]:
        """Every form a leak could take: whole, the first 12 characters, the random tail."""
        return [
            self.key,
            self.secret,
            self.key[:12],
            self.secret[:12],
            self.key.rpartition("_")[2],
            self.secret.rpartition("_")[2],
        ]


def leaks(text: str, needles: list[str]) -> list[str]:
    return [needle for needle in needles if needle in text]


# ------------------------------------------------------------------ an external simulator


@contextlib.asynccontextmanager
async def external_sim(
    tmp_path: Path, credentials: Sentinels
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """``svc sim`` accepting only ``credentials``; yields its URL."""
    output = (tmp_path / "sim.out").open("wb")
    process = await asyncio.create_subprocess_exec(
        *SVC,
        "sim",
        "--port",
        "0",
        "--speed",
        "60",
        "--rate",
        "20",
        "--api-key",
        credentials.key,
        "--api-secret",
        credentials.secret,
        stdout=asyncio.subprocess.PIPE,
        stderr=output,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        found = re.search(rb"on (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        # A positive control for the search: the exchange itself prints the key it accepts.
        assert leaks(line.decode(), credentials.needles()), line
        yield found.group(1).decode(), process
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
            if process.returncode is None:
                process.kill()
                await process.wait()
        output.close()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status, await response.text()


# ------------------------------------------------------------------ local addresses


def other_ipv4_addresses() -> list[str]:
    """This host's IPv4 addresses outside 127/8 (SIOCGIFADDR per interface)."""
    found = []
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                packed = fcntl.ioctl(
                    probe.fileno(), 0x8915, struct.pack("256s", name[:15].encode())
                )
            except OSError:
                continue  # no IPv4 address on this interface
        address = socket.inet_ntoa(packed[20:24])
        if not address.startswith("127."):
            found.append(address)
    return found


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (``/proc/net/tcp`` and ``tcp6``)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    addresses.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    addresses.add(socket.inet_ntop(socket.AF_INET6, words))
    return addresses


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return True  # unreachable counts as not exposed
    return False


# ------------------------------------------------------------------ the leak test

RUN_CONFIG = """
duration = 8
log_level = "DEBUG"
log_file = "{log_file}"
summary_json = "{summary}"
[sim]
url = "{url}"
[telemetry]
health_host = "127.0.0.1"
health_port = {health_port}
[audit]
path = "{audit}"
[reconcile]
retry_seconds = 1
"""


@pytest.mark.parametrize("source", ["environment", "files", "wrong_secret"])
async def test_sentinel_credentials_appear_nowhere(tmp_path: Path, source: str) -> None:
    sentinels = Sentinels.new()
    health_port = free_port()
    paths = {
        "log_file": tmp_path / "svc.log",
        "summary": tmp_path / "summary.json",
        "audit": tmp_path / "audit.jsonl",
    }
    if source == "files":
        (tmp_path / "key").write_text(sentinels.key + "\n")
        (tmp_path / "secret").write_text(sentinels.secret + "\n")
        credentials = {
            "BINANCE_API_KEY_FILE": str(tmp_path / "key"),
            "BINANCE_API_SECRET_FILE": str(tmp_path / "secret"),
        }
    elif source == "environment":
        credentials = {"BINANCE_API_KEY": sentinels.key, "BINANCE_API_SECRET": sentinels.secret}
    else:  # the right key, a wrong secret: every signed request fails -1022
        wrong = Sentinels(sentinels.key, Sentinels.new().secret)
        credentials = {"BINANCE_API_KEY": wrong.key, "BINANCE_API_SECRET": wrong.secret}
    needles = sentinels.needles()
    if source == "wrong_secret":
        needles += wrong.needles()
    scraped: dict[str, str] = {}
    with collector(tmp_path) as running:
        async with external_sim(tmp_path, sentinels) as (url, _):
            config = tmp_path / "svc.toml"
            config.write_text(
                RUN_CONFIG.format(url=url, health_port=health_port, **paths).replace("\\", "/")
            )
            base = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SVC_", "BINANCE_", "OTEL_"))
            }
            environ = {
                **base,
                **credentials,
                "OTEL_EXPORTER_OTLP_ENDPOINT": running.endpoint("grpc"),
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            }
            with (tmp_path / "stdout").open("wb") as out, (tmp_path / "stderr").open("wb") as err:
                process = await asyncio.create_subprocess_exec(
                    *SVC, "run", "--config", str(config), stdout=out, stderr=err, env=environ
                )
                scraped = await scrape_during_run(health_port, process)
                code = await stop(process, after=8 + 10)
            if source != "wrong_secret":
                wait_for_output(
                    running.output,
                    ["Name           : tick", "svc.feed.messages"],
                    time.monotonic() + 20,
                )
        running.stop()
    summary = json.loads(paths["summary"].read_text())
    captured = {
        "stdout (JSON log lines)": (tmp_path / "stdout").read_text(errors="replace"),
        "stderr (status and summary)": (tmp_path / "stderr").read_text(errors="replace"),
        "log file": paths["log_file"].read_text(errors="replace"),
        "collector (spans and metrics)": running.output.read_text(errors="replace"),
        "collector log": (tmp_path / "rotel.log").read_text(errors="replace")
        if (tmp_path / "rotel.log").exists()
        else "",
        "summary": paths["summary"].read_text(),
        "audit journal": paths["audit"].read_text() if paths["audit"].exists() else "",
        **scraped,
    }
    found = {where: leaks(text, needles) for where, text in captured.items()}
    print(
        json.dumps(
            {
                "credentials": source,
                "searched_kib": sum(len(t) for t in captured.values()) // 1024,
                "leaks": sum(map(len, found.values())),
            }
        )
    )
    assert not any(found.values()), {where: hits for where, hits in found.items() if hits}
    # The run did what leaks come from: signed requests, DEBUG logs, exported spans.
    # A wrong secret never reconciles: the run ends at --duration as an exchange error (3).
    expected = 3 if source == "wrong_secret" else 0
    assert code == expected, captured["stderr (status and summary)"][-3000:]
    assert '"DEBUG"' in captured["stdout (JSON log lines)"]
    if source == "wrong_secret":
        assert summary["reconcile"]["failures"] > 0
        assert "Signature for this request is not valid" in captured["stdout (JSON log lines)"]
    else:
        assert summary["reconcile"]["done"]
        assert len(captured["stdout (JSON log lines)"].splitlines()) > 100
        assert sum(summary["orders"]["orders_by_state"].values()) > 0, summary["orders"]
        assert summary["tracing"]["sampled"] > 0
    # Where health is bound, and what it shows, was checked mid-run.
    assert scraped["/metrics"]
    for where in ("/metrics", "/livez", "/readyz", "/not-a-route"):
        for value in (str(tmp_path), url.removeprefix("http://"), "svc.toml", "audit.jsonl"):
            assert value not in scraped[where], (where, value)


async def stop(process: asyncio.subprocess.Process, *, after: float) -> int:
    """The exit code, sending SIGTERM as an operator would if the run outlives ``after`` s
    (``--duration`` is not honoured while reconciliation keeps failing: see
    ``test_duration_ends_a_run_whose_reconciliation_keeps_failing``)."""
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(process.wait(), after)
    process.terminate()
    try:
        return await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()  # never leave a service running behind a failed test
        await process.wait()
        raise


async def scrape_during_run(port: int, process: asyncio.subprocess.Process) -> dict[str, str]:
    """/metrics, /livez and /readyz once the service is ready (or after 6 s), and where the
    health port listens."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + 6
    async with aiohttp.ClientSession() as session:
        while process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                status, body = await get(session, f"http://{LOOPBACK}:{port}/readyz")
                if status == 200 or time.monotonic() > deadline:
                    break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # a few metric collections with orders in them
        for route in ("/metrics", "/livez", "/readyz", "/not-a-route"):
            status, body = await get(session, f"http://{LOOPBACK}:{port}{route}")
            found[route] = f"HTTP {status}\n{body}"
    assert listening_addresses(port) == {LOOPBACK}, listening_addresses(port)
    for address in other_ipv4_addresses():
        assert refused(address, port), f"the health port answers on {address}"
    return found


# ------------------------------------------------------------------ the simulator's checks


@pytest.fixture
async def strict_sim() -> AsyncIterator[tuple[SimExchange, Sentinels]]:
    sentinels = Sentinels.new()
    config = SimConfig(port=0, api_key=sentinels.key, api_secret=sentinels.secret, rate=5)
    async with SimExchange(config) as sim:
        yield sim, sentinels


def signed(params: dict[str, Any], secret: str) -> str:
    query = urlencode(params)
    return f"{query}&signature={sign(secret, query)}"


def order_params(**changes: Any) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "MARKET",
        "quantity": "0.001",
        "timestamp": int(time.time() * 1000),
        **changes,
    }


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no API key", 401, -2014),
        ("another API key", 401, -2015),
        ("unsigned", 400, -1102),
        ("signed with another secret", 400, -1022),
        ("parameters changed after signing", 400, -1022),
        ("signature truncated", 400, -1022),
        ("signature of an empty payload", 400, -1022),
        ("replayed after recvWindow", 400, -1021),
        ("signed for the right secret", 200, 0),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v3/order"), ("GET", "/api/v3/account"), ("GET", "/api/v3/openOrders")],
)
async def test_the_simulator_rejects_unsigned_and_wrongly_signed_requests(
    strict_sim: tuple[SimExchange, Sentinels],
    *,
    case: str,
    status: int,
    code: int,
    method: str,
    path: str,
) -> None:
    sim, sentinels = strict_sim
    params = order_params() if path == "/api/v3/order" else {"timestamp": int(time.time() * 1000)}
    headers = {"X-MBX-APIKEY": sentinels.key}
    query = signed(params, sentinels.secret)
    if case == "no API key":
        headers = {}
    elif case == "another API key":
        headers = {"X-MBX-APIKEY": Sentinels.new().key}
    elif case == "unsigned":
        query = urlencode(params)
    elif case == "signed with another secret":
        query = signed(params, Sentinels.new().secret)
    elif case == "parameters changed after signing":
        stamp = params["timestamp"]
        query = query.replace("quantity=0.001", "quantity=0.002").replace(
            f"timestamp={stamp}", f"timestamp={stamp - 1}"
        )
    elif case == "signature truncated":
        query = query[:-1]
    elif case == "signature of an empty payload":
        query = f"{urlencode(params)}&signature={sign(sentinels.secret, '')}"
    elif case == "replayed after recvWindow":
        stale = {**params, "timestamp": params["timestamp"] - 10_000, "recvWindow": 5000}
        query = signed(stale, sentinels.secret)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{sim.http_url}{path}?{query}", headers=headers) as response,
    ):
        body = await response.json()
    assert response.status == status, body
    placed = sim.stats["orders_placed"]
    if code:
        assert body["code"] == code, body
        assert placed == 0  # a refused order never reaches the matching engine
        assert not leaks(json.dumps(body), sentinels.needles())
    elif path == "/api/v3/order":
        assert placed == 1


async def test_the_simulator_refuses_listen_keys_and_user_data_without_the_key(
    strict_sim: tuple[SimExchange, Sentinels],
) -> None:
    sim, sentinels = strict_sim
    url = f"{sim.http_url}/api/v3/userDataStream"
    async with aiohttp.ClientSession() as session:
        for headers, code in (({}, -2014), ({"X-MBX-APIKEY": "x" * 64}, -2015)):
            async with session.post(url, headers=headers) as response:
                assert (response.status, (await response.json())["code"]) == (401, code)
        async with session.ws_connect(f"{sim.ws_url}/ws-api/v3") as ws:
            params = {"apiKey": sentinels.key, "timestamp": int(time.time() * 1000)}
            for signature, code in (
                (sign(Sentinels.new().secret, urlencode(sorted(params.items()))), -1022),
                ("", -1022),
            ):
                await ws.send_json(
                    {
                        "id": 1,
                        "method": "userDataStream.subscribe.signature",
                        "params": {**params, "signature": signature},
                    }
                )
                answer = json.loads((await ws.receive(timeout=10)).data)
                assert answer["error"]["code"] == code, answer
            await ws.send_json(
                {
                    "id": 2,
                    "method": "userDataStream.subscribe.signature",
                    "params": {**params, "apiKey": Sentinels.new().key, "signature": "0" * 64},
                }
            )
            answer = json.loads((await ws.receive(timeout=10)).data)
            assert answer["error"]["code"] == -2015, answer
    assert not sim._users  # no subscription was made


# ------------------------------------------------------------------ health binding


@pytest.mark.parametrize("where", ["loopback", "another interface"])
async def test_the_health_server_binds_only_where_configured(where: str) -> None:
    others = other_ipv4_addresses()
    if where == "another interface" and not others:
        pytest.skip("this host has no IPv4 address outside 127/8")
    host = LOOPBACK if where == "loopback" else others[0]
    server = HealthServer(
        host=host, port=0, live=lambda: True, ready=lambda: (True, {}), metrics=lambda: b""
    )
    await server.start()
    try:
        assert listening_addresses(server.port) == {host}
        assert not refused(host, server.port)
        for other in [LOOPBACK, *others]:
            if other != host:
                assert refused(other, server.port), f"bound to {host}, answers on {other}"
    finally:
        await server.stop()


async def test_duration_ends_a_run_whose_reconciliation_keeps_failing(tmp_path: Path) -> None:
    sentinels = Sentinels.new()
    async with external_sim(tmp_path, sentinels) as (url, _):
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SVC_", "BINANCE_"))}
        process = await asyncio.create_subprocess_exec(
            *SVC,
            "run",
            "--sim-url",
            url,
            "--duration",
            "3",
            "--audit-path",
            str(tmp_path / "audit.jsonl"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={
                **base,
                "BINANCE_API_KEY": sentinels.key,
                "BINANCE_API_SECRET": Sentinels.new().secret,
                "SVC_TELEMETRY_HEALTH_PORT": "-1",
                "SVC_RECONCILE_RETRY_SECONDS": "0.5",
            },
        )
        try:
            await asyncio.wait_for(process.wait(), 20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 3, "a run that never reconciled ends as an exchange error"
