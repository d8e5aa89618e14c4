"""pytest plugin of the reliability matrix (``tests/reliability_matrix.py``).

* Every collected test that a matrix row matches gets the ``faults`` marker, so
  ``pytest -m faults`` runs the whole matrix, whoever wrote the test and whatever file it
  lives in (rows with ``in_faults_suite=False`` keep their own marker).
* With ``SVC_RELIABILITY_REPORT=<path>``, the outcome of every test marked ``faults`` is
  written to ``<path>`` as JSON when the session ends: node id, outcome (``passed``,
  ``failed``, ``error``, ``skipped``, ``xfailed``, ``xpassed``), duration, a one-line reason
  when it did not pass, and any JSON object the test printed (its measurements).
  ``tools/reliability_report.py`` renders ``docs/reliability.md`` from it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from tests.reliability_matrix import ROWS

REPORT_ENV = "SVC_RELIABILITY_REPORT"
MARKER = "faults"


def matches(nodeid: str) -> list[int]:
    """Indexes of the rows whose patterns match ``nodeid``."""
    return [i for i, row in enumerate(ROWS) if any(fnmatchcase(nodeid, p) for p in row.tests)]


def pytest_configure(config: pytest.Config) -> None:
    target = os.environ.get(REPORT_ENV)
    if target:
        config.pluginmanager.register(Recorder(Path(target)), "svc-reliability-recorder")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker(MARKER) is None and any(
            ROWS[i].in_faults_suite for i in matches(item.nodeid)
        ):
            item.add_marker(MARKER)


class Recorder:
    """Collects the outcomes of the matrix's tests; writes them when the session ends."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.started = time.time()
        self.results: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if MARKER not in report.keywords and not matches(report.nodeid):
            return
        entry = self.results.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
        entry["seconds"] = round(entry["seconds"] + report.duration, 3)
        outcome = _outcome(report)
        # setup, call, teardown: the first phase that did not pass decides.
        if entry["outcome"] == "passed" and (outcome != "passed" or report.when == "call"):
            entry["outcome"] = outcome
            if outcome != "passed":
                entry["reason"] = _reason(report)
        if report.when == "call" and (measured := _measurements(report)):
            entry["measured"] = measured

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = session.config
        document = {
            "started": self.started,
            "finished": time.time(),
            "command": ["pytest", *config.invocation_params.args],
            "exit_status": int(exitstatus),
            "commit": _commit(config.rootpath),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "results": dict(sorted(self.results.items())),
        }
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome


def _reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(crash.message) if crash is not None else str(report.longrepr or "")
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _measurements(report: pytest.TestReport) -> list[dict[str, Any]]:
    """JSON objects the test printed on lines of their own (shown with ``-rP`` too)."""
    found = []
    for line in report.capstdout.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def _commit(root: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607  (git from PATH, read-only)
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"
