"""The pipeline and decode benchmarks run in --quick mode and write valid, complete JSON.

No assertion is about absolute times or about the ratios' values (benchmarks never gate CI on
them): only that every mode ran every message, that svc's own histograms counted each one,
and that the paired ratios are computed from the repetitions the JSON holds.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.test_bench_e2e import run_bench

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_pipeline_quick_runs_every_mode_and_pairs_the_ratios(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.json"
    process = run_bench("pipeline", "--quick", "--json", str(path))
    assert str(path) in process.stdout
    assert "paired ratios" in process.stdout
    report = json.loads(path.read_text())
    assert (tmp_path / "pipeline.png").stat().st_size > 10_000  # the plot beside the JSON
    plan = report["plan"]
    assert report["machine"]["cores"] >= 1
    assert set(report["modes"]) == {"off", "svc", "naive"}
    for mode, result in report["modes"].items():
        repetitions = result["repetitions"]
        assert len(repetitions) == plan["repetitions"], mode
        assert all(r["messages"] == plan["messages"] for r in repetitions), mode
        assert all(0 < r["p50_us"] <= r["p99_us"] <= r["p999_us"] for r in repetitions), mode
    for repetition in report["modes"]["svc"]["repetitions"]:
        # every stage the feed times saw every message; the ticks split them by outcome
        assert repetition["stages"]["parse"]["count"] == plan["messages"]
        ticks = sum(
            s["count"] for name, s in repetition["stages"].items() if name.startswith("tick.")
        )
        assert ticks == plan["messages"]
    off = report["modes"]["off"]["repetitions"]
    for mode in ("svc", "naive"):
        mine = report["modes"][mode]["repetitions"]
        expected = [a["p99_us"] / b["p99_us"] for a, b in zip(mine, off, strict=True)]
        paired = report["paired_ratios_vs_off"][mode]["p99"]
        assert paired["median"] == pytest.approx(statistics.median(expected))
        assert paired["min"] <= paired["median"] <= paired["max"]
    target = report["target"]
    svc = report["paired_ratios_vs_off"]["svc"]
    assert target["throughput_ratio"] == svc["throughput"]["median"]
    assert target["p99_ratio"] == svc["p99"]["median"]
    assert target["met"] == (target["throughput_ratio"] >= 0.85 and target["p99_ratio"] <= 1.3)


@pytest.mark.timeout(300)
def test_decode_quick_writes_its_table(tmp_path: Path) -> None:
    path = tmp_path / "decode.json"
    process = run_bench("decode", "--quick", "--json", str(path))
    assert str(path) in process.stdout
    report = json.loads(path.read_text())
    assert (tmp_path / "decode.png").stat().st_size > 10_000
    assert report["machine"]["python"]
    target = report["target"]
    assert target["met"] == (target["measured_us"] <= target["limit_us"])
    decoders = {row["decoder"] for row in report["results"]}
    assert "svc" in decoders
    assert len(decoders) > 1  # svc's decoder beside the ones it is compared with
    assert all(row["median_us"] > 0 for row in report["results"])
