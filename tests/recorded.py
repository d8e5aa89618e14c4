"""Where the recorded Binance payloads live, and the symbol rules they define.

The payloads sit beside the repository at ``../shared/data/binance`` (never copied into it)
unless ``SVC_BINANCE_DATA`` names another directory. Import-time users (module-level
hypothesis strategies) call ``data_dir()``; tests take the ``binance_data`` fixture.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from svc.binance.rest import exchange_rules
from svc.model import SymbolRules

BINANCE_DATA_ENV_VAR = "SVC_BINANCE_DATA"
DEFAULT_BINANCE_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binance"


def data_dir() -> Path:
    """The directory of recorded payloads (it may not exist: callers decide how to fail)."""
    override = os.environ.get(BINANCE_DATA_ENV_VAR)
    return Path(override) if override else DEFAULT_BINANCE_DATA


@cache
def recorded_rules(symbol: str) -> SymbolRules:
    """The rules of ``symbol`` in the recorded spot exchangeInfo, through svc's own decoder."""
    raw = (data_dir() / "rest" / "api_v3_exchangeInfo.json").read_bytes()
    return exchange_rules(raw)[symbol]


KLINES_BTCUSDT_1H = Path("klines") / "api_v3_klines_BTCUSDT_1h_20200501_1000.json"


def closed_kline_frames(data: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` recorded 1h BTCUSDT REST klines as closed combined-stream
    ``btcusdt@kline_1h`` frames (event time 1 ms after the close)."""
    rows = json.loads((data / KLINES_BTCUSDT_1H).read_text())[:count]
    frames = []
    for row in rows:
        kline = {
            "t": row[0],
            "T": row[6],
            "s": "BTCUSDT",
            "i": "1h",
            "f": 0,
            "L": row[8],
            "o": row[1],
            "c": row[4],
            "h": row[2],
            "l": row[3],
            "v": row[5],
            "n": row[8],
            "x": True,
            "q": row[7],
            "V": row[9],
            "Q": row[10],
            "B": "0",
        }
        data_ = {"e": "kline", "E": row[6] + 1, "s": "BTCUSDT", "k": kline}
        frames.append({"stream": "btcusdt@kline_1h", "data": data_})
    return frames


# A 1m kline event captured from Binance (unicorn-fy's test data, 2020-10-02): a base to edit.
CAPTURED_KLINE: dict[str, Any] = {
    "e": "kline",
    "E": 1601630228469,
    "s": "BTCUSDT",
    "k": {
        "t": 1601630220000,
        "T": 1601630279999,
        "s": "BTCUSDT",
        "i": "1m",
        "f": 427033476,
        "L": 427033658,
        "o": "10437.32000000",
        "c": "10441.80000000",
        "h": "10441.80000000",
        "l": "10437.32000000",
        "v": "20.63957400",
        "n": 183,
        "x": False,
        "q": "215452.69236872",
        "V": "19.31210700",
        "Q": "201593.99488069",
        "B": "0",
    },
}
