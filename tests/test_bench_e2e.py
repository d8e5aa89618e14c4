"""The e2e, export and gc benchmarks run in --quick mode and write valid, complete JSON; the
report renders every results file into a README.

No assertion is about absolute times (benchmarks never gate CI on them): only that every
run happened, counted something, and wrote the fields the report and the README rely on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "bench" / "results"
QUICK_TIMEOUT_S = 150  # each quick run takes well under a minute on the reference machine
GENERIC_KEYS = ("name", "date", "machine", "columns", "rows")


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(  # noqa: S603  (our own interpreter and module)
        [sys.executable, "-m", "bench", *args],
        cwd=REPOSITORY,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
        check=False,
    )
    assert process.returncode == 0, f"stdout:\n{process.stdout}\nstderr:\n{process.stderr[-4000:]}"
    return process


def quick(name: str, directory: Path) -> dict[str, Any]:
    """``python -m bench <name> --quick --json DIR/<name>.json``; the parsed JSON."""
    path = directory / f"{name}.json"
    process = run_bench(name, "--quick", "--json", str(path))
    assert str(path) in process.stdout  # it says where it wrote
    report: dict[str, Any] = json.loads(path.read_text())
    for key in GENERIC_KEYS:
        assert report[key], f"{name}: {key} is missing or empty"
    assert report["name"] == name
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["python"]
    assert report["machine"]["loop"]
    assert all(len(row) == len(report["columns"]) for row in report["rows"])
    assert (directory / report["plot"]).stat().st_size > 10_000  # a PNG beside the JSON
    return report


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-results")


@pytest.mark.timeout(200)
def test_e2e_quick_measures_every_rate_end_to_end(results: Path) -> None:
    report = quick("e2e", results)
    rates = report["plan"]["rates"]
    compared = report["plan"]["compared_at_target_rate"]
    assert [run["offered_per_s"] for run in report["runs"]] == rates + [5000] * len(compared)
    assert len(report["rows"]) == len(rates) + len(compared)
    layouts = [(run["layout"]["simulator"], run["layout"]["transport"]) for run in report["runs"]]
    assert layouts[: len(rates)] == [("external", "ws")] * len(rates)  # svc's defaults
    assert ("embedded", "rest") in layouts[len(rates) :]
    for run in report["runs"]:
        # the simulator's own process worked in the external layout; none exists otherwise
        external = run["layout"]["simulator"] == "external"
        assert (run["sim_cpu_percent"] is not None) == external
        if external:
            assert run["sim_cpu_percent"] > 0
        assert run["received"] > 0
        assert run["sent_per_s"] > 0
        assert run["tick_decision"]["count"] > 0
        assert run["tick_order"]["count"] > 0  # orders reached the simulator and were acked
        assert 0 < run["tick_decision"]["p50_us"] <= run["tick_decision"]["p99_us"]
        assert run["loop_lag"]["count"] > 0
        assert set(run["tiers"]) == {"data", "signal", "order"}
        assert all(tier["dropped"] >= 0 for tier in run["tiers"].values())
    target = report["target"]
    assert target["met"] in (True, False)  # the 5k rate is in the quick plan too
    assert target["text"].startswith(("met", "not met"))


@pytest.mark.timeout(200)
def test_export_quick_covers_sampling_with_the_collector_up_and_down(results: Path) -> None:
    report = quick("export", results)
    runs = report["runs"]
    states = [(run["collector"], run["sampling"], run["trace_cap_per_s"]) for run in runs]
    assert states[0] == ("none", None, None)
    for collector in ("up", "down"):
        for ratio in (0.0, 0.01, 0.1, 1.0):
            assert (collector, ratio, None) in states
        assert any(c == collector and r == 1.0 and cap for c, r, cap in states)
    assert len(report["rows"]) == len(runs) == 11
    offered = report["plan"]["rate"]
    for run in runs:
        # the offered rate reached svc (a run at the simulator's default pace would not)
        assert run["received_per_s"] > offered / 2
        assert run["loop_lag"]["count"] > 0
        assert run["cpu_us_per_message"] > 0
    exporting = [run for run in runs if run["sampling"] is not None]
    assert all(run["exporting"] for run in exporting)
    assert not runs[0]["exporting"]
    assert runs[0]["ticks_traced"] == 0
    everything = next(
        run
        for run in runs
        if run["collector"] == "up" and run["sampling"] == 1.0 and run["trace_cap_per_s"] is None
    )
    assert everything["ticks_traced"] > 100


@pytest.mark.timeout(200)
def test_gc_quick_times_collections_per_generation(results: Path) -> None:
    report = quick("gc", results)
    configurations = {(r["load"], r["configuration"]) for r in report["results"]}
    assert configurations == {
        (load, setup)
        for load in ("svc", "naive")
        for setup in ("default", "freeze", "threshold", "freeze+threshold")
    }
    for result in report["results"]:
        assert result["messages"] > 0
        assert result["messages_per_s"] > 0
        assert result["full_collection_ms"] > 0
        assert set(result["generations"]) == {"0", "1", "2"}
        assert (result["frozen_objects"] > 0) == result["freeze"]
    collections = sum(
        g["count"] for result in report["results"] for g in result["generations"].values()
    )
    assert collections > 0
    assert len(report["configurations"]) == len(report["results"])


@pytest.mark.timeout(600)
def test_report_renders_every_results_file(results: Path) -> None:
    for name in ("e2e", "export", "gc"):
        if not (results / f"{name}.json").is_file():  # this test alone: run them here
            quick(name, results)
    for older in ("decode", "pipeline"):  # the shapes written before the generic one
        if (RESULTS / f"{older}.json").is_file():
            shutil.copy(RESULTS / f"{older}.json", results)
    (results / "other.json").write_text(json.dumps({"name": "other", "answer": 42}))
    readme = results / "README.md"
    process = run_bench("report", "--results", str(results), "--output", str(readme))
    assert str(readme) in process.stdout
    text = readme.read_text()
    for path in results.glob("*.json"):
        name = json.loads(path.read_text()).get("name") or path.stem
        assert f"## {name}" in text
    assert "- answer: 42" in text  # the key/value fallback
    assert "![e2e](e2e.png)" in text
    assert "| offered msg/s |" in text
    assert "make bench" in text
    assert "python -m bench report" in text
