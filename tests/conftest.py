"""Shared fixtures: where the recorded Binance payloads live.

The payloads are shared between worktrees and never copied into the repository; they sit
beside the repository at ``../shared/data/binance`` unless ``SVC_BINANCE_DATA`` says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BINANCE_DATA_ENV_VAR = "SVC_BINANCE_DATA"
"""Overrides the directory of recorded Binance payloads."""

DEFAULT_BINANCE_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binance"


@pytest.fixture(scope="session")
def binance_data() -> Path:
    """The directory of recorded Binance payloads; a missing directory fails, never skips."""
    override = os.environ.get(BINANCE_DATA_ENV_VAR)
    path = Path(override) if override else DEFAULT_BINANCE_DATA
    if not path.is_dir():
        pytest.fail(
            f"recorded Binance data not found at {path}; "
            f"set {BINANCE_DATA_ENV_VAR} to the directory holding PROVENANCE.md"
        )
    return path
