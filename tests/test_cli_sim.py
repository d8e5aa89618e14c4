"""`svc sim` as a user runs it: a subprocess on loopback, driven by python-binance."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from binance import AsyncClient, BinanceSocketManager
from binance.ws.websocket_api import WebsocketAPI

pytestmark = pytest.mark.integration

SVC = [sys.executable, "-m", "svc.cli"]


@pytest.fixture
async def sim_process() -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        *SVC,
        "sim",
        "--port",
        "0",
        "--speed",
        "60",
        "--rate",
        "20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, f"svc sim did not say where it listens: {line!r}"
    yield match.group(1)
    process.terminate()
    assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_python_binance_streams_klines_and_gets_a_fill(sim_process: str) -> None:
    port = sim_process
    client = AsyncClient("svc-sim-api-key", "svc-sim-api-secret")
    client.API_URL = f"http://127.0.0.1:{port}/api"
    client.ws_api = WebsocketAPI(url=f"ws://127.0.0.1:{port}/ws-api/v3")
    manager = BinanceSocketManager(client)
    manager.STREAM_URL = f"ws://127.0.0.1:{port}/"
    try:
        async with manager.kline_socket("BTCUSDT") as socket:
            message = await asyncio.wait_for(socket.recv(), 10)
        assert message["e"] == "kline"
        assert message["k"]["i"] == "1m"
        async with manager.user_socket() as user:
            order = await client.create_order(
                symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002"
            )
            assert order["status"] == "FILLED"
            reports = [await asyncio.wait_for(user.recv(), 10) for _ in range(2)]
        assert [r["x"] for r in reports] == ["NEW", "TRADE"]
        assert reports[1]["X"] == "FILLED"
        assert reports[1]["z"] == "0.00200000"
    finally:
        await client.close_connection()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--symbols", "btcusdt"], "symbols"),
        (["--intervals", "7m"], "intervals"),
        (["--market", "/nonexistent.json"], "market"),
        (["--speed", "-1"], "--speed"),
        (["--port", "70000"], "--port"),
    ],
)
async def test_bad_configuration_names_the_field(args: list[str], needle: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *SVC,
        "sim",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert needle in stderr.decode()


async def _svc(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *SVC, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_decode_reports_real_captures_without_malformed_frames(binance_data: Path) -> None:
    capture = binance_data / "ws" / "unittest_unicorn_fy.messages.jsonl"
    code, out = await _svc("decode", str(capture), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["frames"] == 50
    assert report["malformed"] == {}
    assert report["decoded"]["Candle"] == 3


async def test_decode_counts_malformed_frames_by_reason(tmp_path: Path) -> None:
    capture = tmp_path / "bad.jsonl"
    capture.write_text(
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1}}\n'
        "not json\n"
        '{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"X","b":"1","B":"1","a":"x","A":"1"}}\n'
    )
    code, out = await _svc("decode", str(capture), "--json")
    report = json.loads(out)
    assert code == 65
    assert report["frames"] == 3
    assert sum(report["malformed"].values()) == 3
    assert any(reason.startswith("$.data.a") for reason in report["malformed"])
