"""Where the recorded Binance payloads live, and the symbol rules they define.

The payloads sit beside the repository at ``../shared/data/binance`` (never copied into it)
unless ``SVC_BINANCE_DATA`` names another directory. Import-time users (module-level
hypothesis strategies) call ``data_dir()``; tests take the ``binance_data`` fixture.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

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
