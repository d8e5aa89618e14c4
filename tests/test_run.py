"""`svc run` end to end: the embedded simulator, python-binance over loopback, the whole
pipeline, the audit journal and the summary, driven as a user drives it (a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from svc.audit import verify
from tests.recorded import closed_kline_frames

pytestmark = pytest.mark.integration

SVC = [sys.executable, "-m", "svc.cli"]


async def svc(*args: str, within: float = 120) -> tuple[int, str, str]:
    environ = {**os.environ, "SVC_TELEMETRY_HEALTH_PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        *SVC, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def journal(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_run_trades_against_the_simulator_and_the_journal_verifies(tmp_path: Path) -> None:
    summary_path, audit_path = tmp_path / "summary.json", tmp_path / "audit.jsonl"
    code, out, err = await svc(
        "run",
        "--duration",
        "12",
        "--summary-json",
        str(summary_path),
        "--audit-path",
        str(audit_path),
    )
    assert code == 0, err
    summary = json.loads(summary_path.read_text())
    assert summary["exit_reason"] == "duration"
    assert summary["feed"]["malformed"] == {}
    assert sum(summary["feed"]["messages"]["Candle"].values()) > 50
    assert summary["orders"]["orders_by_state"].get("FILLED", 0) >= 1
    assert summary["fills"] >= 1
    assert summary["queues"]["order"]["dropped"] == 0
    assert summary["stages"]["parse"]["count"] > 0
    assert "svc run finished: duration" in err
    assert "msg/s" in err  # the status line
    for line in out.splitlines():  # logs: JSON lines on stdout
        json.loads(line)
    assert verify(audit_path).ok
    kinds = {record["kind"] for record in journal(audit_path)}
    assert {"run.start", "intent", "order.new", "order.response", "run.stop"} <= kinds
    code, out, _ = await svc("audit", "verify", str(audit_path))
    assert code == 0
    assert "chain intact" in out


def kline_capture(binance_data: Path, path: Path, *, garbage_every: int = 0) -> int:
    """Recorded 1h BTCUSDT klines as combined-stream frames (closed), optionally with junk."""
    frames = closed_kline_frames(binance_data, 300)
    lines = []
    for index, frame in enumerate(frames):
        lines.append(json.dumps(frame))
        if garbage_every and index % garbage_every == garbage_every - 1:
            lines.append('{"stream":"btcusdt@kline_1h","data":{"e":"kline","E":"soon"}}')
            lines.append("this is not json")
    path.write_text("\n".join(lines) + "\n")
    return len(frames)


REPLAY_CONFIG = """
symbols = ["BTCUSDT"]
intervals = ["1h"]
[sim]
rate = 200.0
speed = 1.0
[feed]
warmup_klines = 0
[risk]
max_orders_per_minute = 100000
max_position = 1.0
max_signal_age_seconds = 0  # recorded 2020 data: every event is old
[[strategies]]
kind = "ema_crossover"
symbol = "BTCUSDT"
interval = "1h"
fast = 3
slow = 8
quantity = 0.001
"""


async def replay(tmp_path: Path, capture: Path, name: str) -> tuple[dict[str, Any], Path]:
    config = tmp_path / "replay.toml"
    config.write_text(REPLAY_CONFIG)
    summary_path, audit_path = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
    code, _, err = await svc(
        "run",
        "--config",
        str(config),
        "--sim-frames",
        str(capture),
        "--duration",
        "6",
        "--summary-json",
        str(summary_path),
        "--audit-path",
        str(audit_path),
    )
    assert code == 0, err
    return json.loads(summary_path.read_text()), audit_path


def intents(audit_path: Path) -> list[tuple[str, str, str, float]]:
    return [
        (r["data"]["strategy"], r["data"]["symbol"], r["data"]["side"], r["data"]["quantity"])
        for r in journal(audit_path)
        if r["kind"] == "intent"
    ]


async def test_a_replay_of_real_klines_gives_the_same_orders_twice(
    tmp_path: Path, binance_data: Path
) -> None:
    capture = tmp_path / "klines-capture.jsonl"
    frames = kline_capture(binance_data, capture)
    first, first_audit = await replay(tmp_path, capture, "first")
    second, second_audit = await replay(tmp_path, capture, "second")
    assert sum(first["feed"]["messages"]["Candle"].values()) == frames
    assert intents(first_audit) == intents(second_audit)
    assert len(intents(first_audit)) >= 5
    assert first["orders"]["orders_by_state"] == second["orders"]["orders_by_state"]


async def test_malformed_frames_mid_stream_are_counted_and_skipped(
    tmp_path: Path, binance_data: Path
) -> None:
    capture = tmp_path / "dirty-capture.jsonl"
    frames = kline_capture(binance_data, capture, garbage_every=50)
    summary, _ = await replay(tmp_path, capture, "dirty")
    assert sum(summary["feed"]["messages"]["Candle"].values()) == frames
    malformed = summary["feed"]["malformed"]
    assert sum(malformed.values()) == 2 * (frames // 50)
    assert any(reason.startswith("$.data.E") for reason in malformed)
    assert any(reason.startswith("$:") for reason in malformed)


async def test_real_captures_flow_through_with_zero_malformed(
    tmp_path: Path, binance_data: Path
) -> None:
    capture = binance_data / "ws" / "unittest_unicorn_fy.messages.jsonl"
    summary_path = tmp_path / "summary.json"
    code, _, err = await svc(
        "run",
        "--sim-frames",
        str(capture),
        "--duration",
        "4",
        "--summary-json",
        str(summary_path),
        "--audit-path",
        str(tmp_path / "a.jsonl"),
    )
    assert code == 0, err
    feed = json.loads(summary_path.read_text())["feed"]
    assert feed["malformed"] == {}
    assert feed["messages"]["Trade"]
    assert feed["unknown_event_types"]["array"] == 8


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--symbols", "btcusdt"], "symbols"),
        (["--intervals", "2m"], "intervals"),
        (["--duration", "soon"], "duration"),
        (["--exchange", "binance"], "BINANCE_API_KEY"),
    ],
)
async def test_configuration_errors_name_the_field(args: list[str], field: str) -> None:
    code, _, err = await svc("run", *args, within=30)
    assert code == 2
    assert field in err


EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "svc.toml"


async def test_check_config(tmp_path: Path) -> None:
    good = EXAMPLE_CONFIG
    code, out, _ = await svc("check-config", str(good), within=30)
    assert (code, "ok" in out) == (0, True)
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk]\nmax_positon = 1\n")
    code, _, err = await svc("check-config", str(bad), within=30)
    assert code == 2
    assert "risk.max_positon" in err
    assert "max_position" in err  # the expected form lists the known fields
