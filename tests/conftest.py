"""Shared fixtures: where the recorded Binance payloads live.

The payloads are shared between worktrees and never copied into the repository; they sit
beside the repository at ``../shared/data/binance`` unless ``SVC_BINANCE_DATA`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recorded import BINANCE_DATA_ENV_VAR, data_dir

pytest_plugins = ["tests.matrix_plugin"]  # the reliability matrix: `faults` marker, report


@pytest.fixture(scope="session")
def binance_data() -> Path:
    """The directory of recorded Binance payloads; a missing directory fails, never skips."""
    path = data_dir()
    if not path.is_dir():
        pytest.fail(
            f"recorded Binance data not found at {path}; "
            f"set {BINANCE_DATA_ENV_VAR} to the directory holding PROVENANCE.md"
        )
    return path
