"""Incident drills: one fault each, a real Prometheus, the shipped alert rules (docs/drills.md).

The ``drills`` marker selects the drills themselves (``make drills``; each takes 20-70 s).
The other tests here are fast: the rule rewrite the drills rely on, the simulator faults and
the ``drill-*`` strategy kinds.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from svc.config import Config, default_strategies
from svc.drill import DRILL_KINDS, GcStorm, SignalEveryTick, SlowHandler
from svc.errors import ConfigError
from svc.model import Quote, Trade
from svc.sim.server import SimConfig, SimExchange
from tests import drills
from tests.simclient import binance_client

REPORT_ENV = "SVC_DRILL_REPORT"
"""When set, every drill appends its outcome as one JSON line to this file."""


# ------------------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Scenario:
    """One drill: a fault and the alerts it must raise.

    ``faults`` go to ``POST /_sim/faults`` after a baseline in which no critical alert may
    fire; without them the fault is in the configuration (a ``drill-*`` strategy, an
    environment variable) and acts from the start, so time counts from svc's readiness.
    ``allowed`` names critical alerts that are consequences of this fault, not unrelated.
    """

    name: str
    expected: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    faults: Mapping[str, Any] = field(default_factory=dict)
    strategies: tuple[Mapping[str, Any], ...] = ()
    """Added to svc's default strategies."""
    risk: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    known_gap: str = ""
    """Why the shipped rules cannot catch this fault yet (the drill then expects that)."""
    evidence: str = ""
    """PromQL that must be true while the fault acts, known gap or not: the fault is real."""
    measure: tuple[str, ...] = ()
    """PromQL whose values at the end of the drill go into its report."""


CLOSED_PORT = drills.free_port()  # nothing listens here: the collector is "down"
GEN2_P99 = (
    'histogram_quantile(0.99, sum by (le) (rate(svc_gc_pause_seconds_bucket{generation="2"}[15s])))'
)
"""The p99 of full-collection pauses alone, over the drill's 5m-equivalent window."""

SCENARIOS = (
    Scenario(
        name="feed_silence",
        expected=("SvcFeedStale",),
        faults={"silent": True},
        measure=("sum by (stream) (increase(svc_feed_messages_total[6s]))",),
    ),
    Scenario(
        name="slow_handler",
        expected=("SvcEventLoopLag",),
        # A tick is timed from receive: frames that waited in the socket while the loop was
        # blocked are not late by that measure, so the tick SLO burns only in worse stalls.
        allowed=("SvcTickLatencyBudgetBurn",),
        strategies=({"kind": "drill-slow", "symbol": "BTCUSDT", "block_ms": 100, "every": 20},),
        measure=(
            "svc:loop_lag_seconds:p99_rate5m",
            "svc:tick_over_budget:ratio_rate5m",
            "max(svc:feed_lag_seconds:p99_rate5m)",
        ),
    ),
    Scenario(
        name="order_backpressure",
        expected=("SvcOrderTierBackpressure",),
        # The blocked order tier stalls the signal tier, then the data tier: ticks wait.
        allowed=("SvcTickLatencyBudgetBurn",),
        faults={"order_latency_ms": 2000},
        # 5 orders/s: the order tier (50) fills in ~11 s once each order takes 2 s. Not
        # faster: order ticks include the REST round trip and count against the 1 ms tick
        # budget, so at 20 orders/s the baseline alone nearly burns it (docs/drills.md).
        strategies=({"kind": "drill-signal", "symbol": "BTCUSDT", "quantity": 0.001, "every": 4},),
        risk={"max_orders_per_minute": 1_000_000},
        measure=('max(svc_queue_depth{tier="order"})', "svc:tick_over_budget:ratio_rate5m"),
    ),
    Scenario(
        name="gc_storm",
        expected=("SvcGcPause",),
        allowed=("SvcTickLatencyBudgetBurn",),
        strategies=({"kind": "drill-gc", "symbol": "BTCUSDT"},),
        evidence=f"{GEN2_P99} > 0.010",
        measure=(
            "svc:gc_pause_seconds:p99_rate5m",
            GEN2_P99,
            "sum by (generation) (increase(svc_gc_pause_seconds_count[15s]))",
            "sum(rate(svc_gc_pause_seconds_sum[15s]))",
        ),
    ),
    Scenario(
        name="collector_down",
        expected=("SvcTelemetrySpansDropped",),
        environment={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{drills.LOOPBACK}:{CLOSED_PORT}",
            "OTEL_TRACES_SAMPLER_ARG": "1.0",
            # 512 spans instead of 2048: the queue overflows in seconds instead of ~30 s.
            "OTEL_BSP_MAX_QUEUE_SIZE": "512",
        },
        measure=("svc_telemetry_spans_dropped_total",),
    ),
    Scenario(
        name="rate_limit_storm",
        expected=("SvcRateLimitNearLimit", "SvcExchangeRateLimited"),
        faults={"extra_weight": 6000},
        strategies=({"kind": "drill-signal", "symbol": "BTCUSDT", "quantity": 0.001, "every": 20},),
        measure=("svc_exchange_rate_limit_used",),
    ),
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def drill_config(scenario: Scenario, directory: Path) -> str:
    """The scenario's ``drill.toml``: defaults plus its strategies and risk settings."""
    config = Config()
    lines = [
        f"# svc drill {scenario.name!r} (tests/test_drills.py)",
        f"symbols = {_toml_value(list(config.symbols))}",
        f"intervals = {_toml_value(list(config.intervals))}",
        f"summary_json = {_toml_value(str(directory / 'summary.json'))}",
    ]
    if scenario.risk:
        lines.append("\n[risk]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in scenario.risk.items()]
    lines += ["\n[audit]", f"path = {_toml_value(str(directory / 'audit.jsonl'))}"]
    if scenario.strategies:
        for spec in (*default_strategies(config), *scenario.strategies):
            lines.append("\n[[strategies]]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in spec.items()]
    return "\n".join(lines) + "\n"


def _report(
    scenario: Scenario, watch: drills.AlertWatch, outcome: str, prom: drills.Prometheus
) -> None:
    line = {
        "scenario": scenario.name,
        "outcome": outcome,
        "seconds_to_firing": {name: watch.fired(name) for name in scenario.expected},
        "firing": watch.firing,
        "pending": watch.pending,
        "measured": {
            expr: [(r["metric"], r["value"][1]) for r in prom.query(expr)]
            for expr in scenario.measure
        },
    }
    print(json.dumps(line))  # shown with -rP: the measurement docs/drills.md records
    target = os.environ.get(REPORT_ENV)
    if target:
        with Path(target).open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(line) + "\n")


@pytest.mark.drills
@pytest.mark.timeout(180)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_drill(scenario: Scenario, tmp_path: Path) -> None:
    forbidden = drills.critical_alerts() - set(scenario.expected) - set(scenario.allowed)
    health_port = drills.free_port()
    with (
        drills.service(
            tmp_path / "svc",
            config=drill_config(scenario, tmp_path / "svc"),
            health_port=health_port,
            environment=scenario.environment,
        ) as svc,
        drills.prometheus(
            tmp_path / "prometheus", target=f"{drills.LOOPBACK}:{health_port}"
        ) as prom,
    ):
        svc.wait_ready()
        fault_at = svc.ready_at
        if scenario.faults:
            # Baseline: a few seconds of scrapes with the healthy service, nothing critical.
            drills.wait_for_series(prom, 'up{job="svc"} == 1', seconds=5)
            baseline = drills.watch_alerts(
                prom, expected=(), forbidden=drills.critical_alerts(), fault_at=time.monotonic()
            )
            assert not baseline.firing, f"alerts before the fault: {baseline.summary()}"
            svc.set_faults(**scenario.faults)
            fault_at = time.monotonic()
        try:
            watch = drills.watch_alerts(
                prom, expected=scenario.expected, forbidden=forbidden, fault_at=fault_at
            )
        except drills.DrillError as error:
            raise drills.DrillError(f"{error}\n{svc.evidence()}") from None
        missing = [name for name in scenario.expected if watch.fired(name) is None]
        if scenario.evidence:
            shown = prom.query(scenario.evidence)
            assert shown, f"the fault did not show: {scenario.evidence} is empty\n{svc.evidence()}"
        if scenario.known_gap and missing:
            _report(scenario, watch, "known gap", prom)
            pytest.xfail(f"{missing} did not fire: {scenario.known_gap}")
        _report(scenario, watch, "fired" if not missing else "missed", prom)
        assert not missing, (
            f"{missing} not firing {drills.FIRING_TIMEOUT:.0f} s after the fault; "
            f"{watch.summary()}\n{svc.evidence()}"
        )


# ---------------------------------------------------------------- the rewrite of the rules
def _strip_durations(text: str) -> str:
    text = re.sub(r"\[[0-9smhdwy:]+\]", "[]", text)
    return re.sub(r"^(\s*(?:for|interval):).*$", r"\1", text, flags=re.MULTILINE)


@pytest.mark.parametrize("name", drills.RULE_FILES)
def test_drill_rules_differ_from_the_shipped_rules_in_durations_only(name: str) -> None:
    shipped = (drills.RULES_DIR / name).read_text()
    rewritten = drills.drill_rules(shipped)
    assert rewritten != shipped
    assert _strip_durations(rewritten) == _strip_durations(shipped)
    before, after = yaml.safe_load(shipped), yaml.safe_load(rewritten)
    for group_before, group_after in zip(before["groups"], after["groups"], strict=True):
        for rule_before, rule_after in zip(
            group_before["rules"], group_after["rules"], strict=True
        ):
            for key in ("alert", "record", "labels", "annotations"):
                assert rule_before.get(key) == rule_after.get(key)


def test_drill_rules_shorten_every_duration_twentyfold() -> None:
    assert drills.shorten("5m") == "15s"
    assert drills.shorten("1h") == "3m"
    assert drills.shorten("30s") == "1500ms"
    assert drills.shorten("10s") == "1s"  # floor: Prometheus evaluates once a second
    text = (
        "    interval: 30s\n        expr: rate(x[5m]) > max_over_time(y[1h:5m])\n        for: 2m\n"
    )
    assert drills.drill_rules(text) == (
        "    interval: 1500ms\n        expr: rate(x[15s]) > max_over_time(y[3m:15s])\n"
        "        for: 6s\n"
    )
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        drills.shorten("5 minutes")


def test_drill_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = os.environ.get("PROMTOOL") or "promtool"
    paths = drills.write_drill_rules(tmp_path)
    import subprocess  # noqa: PLC0415 - only this test runs a subprocess directly

    result = subprocess.run(  # noqa: S603 - promtool on files this test wrote
        [promtool, "check", "rules", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_drill_scenario_names_shipped_alerts() -> None:
    shipped = {
        rule["alert"]
        for group in yaml.safe_load((drills.RULES_DIR / "alert-rules.yaml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    for scenario in SCENARIOS:
        assert set(scenario.expected) <= shipped, scenario.name
        assert set(scenario.allowed) <= drills.critical_alerts(), scenario.name
    assert len([s for s in SCENARIOS if not s.known_gap]) >= 6


def test_drill_config_is_valid(tmp_path: Path) -> None:
    from svc.config import build_config  # noqa: PLC0415

    for scenario in SCENARIOS:
        path = tmp_path / f"{scenario.name}.toml"
        path.write_text(drill_config(scenario, tmp_path))
        config = build_config(file=path, environ={})
        kinds = [spec["kind"] for spec in config.strategies]
        assert [s["kind"] for s in scenario.strategies] == kinds[
            len(kinds) - len(scenario.strategies) :
        ]


# --------------------------------------------------------------------- the drill strategies
def test_the_drill_toml_in_the_docs_builds() -> None:
    text = (drills.ROOT / "docs" / "drills.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/drills.md has no toml block"
    specs = tomllib.loads(block.group(1))["strategies"]
    assert all(spec["symbol"] in Config().symbols for spec in specs)
    for index, spec in enumerate(specs):
        kind = DRILL_KINDS[spec["kind"]]
        values = {**kind.defaults, **{k: v for k, v in spec.items() if k != "kind"}}
        assert kind.build(f"strategies[{index}]", values).state()["kind"] == spec["kind"]


def test_drill_strategies_import_only_the_model_and_the_errors() -> None:
    """The layering rule for strategies (STYLE.md rule 1), and no cycle with svc.strategy."""
    tree = ast.parse((drills.ROOT / "svc" / "drill.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    ours = {m for m in modules if m.split(".")[0] == "svc"}
    assert ours <= {"svc.model", "svc.errors"}, ours
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in modules - ours), modules


def _trade(symbol: str = "BTCUSDT", price: float = 100.0) -> Trade:
    return Trade(
        symbol=symbol,
        trade_id=1,
        price=price,
        quantity=0.5,
        buyer_is_maker=False,
        aggregated=True,
        ts_event=1_000,
        ts_init=2_000,
    )


def test_drill_kinds_build_with_defaults_and_name_bad_fields() -> None:
    for name, kind in DRILL_KINDS.items():
        values = {**kind.defaults, "symbol": "BTCUSDT", "quantity": 0.001}
        strategy = kind.build(
            "strategies[0]", {k: values[k] for k in (*kind.defaults, *kind.required)}
        )
        assert strategy.state()["kind"] == name
        assert strategy.state()["symbol"] == "BTCUSDT"
    slow = DRILL_KINDS["drill-slow"]
    with pytest.raises(ConfigError, match=r"strategies\[2\]\.every"):
        slow.build("strategies[2]", {**slow.defaults, "symbol": "BTCUSDT", "every": 0})
    with pytest.raises(ConfigError, match=r"strategies\[2\]\.block_ms"):
        slow.build("strategies[2]", {**slow.defaults, "symbol": "BTCUSDT", "block_ms": -1})


def test_slow_handler_blocks_every_nth_event_of_its_symbol() -> None:
    strategy = SlowHandler(symbol="BTCUSDT", block_ms=20, every=2)
    started = time.perf_counter()
    for _ in range(4):
        assert strategy.on_event(_trade()) is None
    assert strategy.on_event(_trade("ETHUSDT")) is None
    assert time.perf_counter() - started >= 0.04
    assert strategy.state()["blocked"] == 2


def test_gc_storm_leaves_cyclic_garbage_for_the_collector() -> None:
    strategy = GcStorm(symbol="BTCUSDT", retain=100, allocate=50)
    for _ in range(4):
        strategy.on_event(_trade())
    assert strategy.state()["live_cycles"] == 100
    gc.collect()
    strategy.on_event(_trade())  # evicts 50 cycles nothing else references
    assert gc.collect() >= 100  # two lists per cycle


def test_signal_every_tick_alternates_sides_on_trades_only() -> None:
    strategy = SignalEveryTick(symbol="BTCUSDT", quantity=0.001, every=2)
    quote = Quote(
        symbol="BTCUSDT",
        update_id=1,
        bid_price=1.0,
        bid_size=1.0,
        ask_price=2.0,
        ask_size=1.0,
        ts_event=1,
        ts_init=1,
    )
    assert strategy.on_event(quote) is None
    signals = [strategy.on_event(_trade()) for _ in range(6)]
    sides = [s.side for s in signals if s is not None]
    assert sides == ["BUY", "SELL", "BUY"]
    assert all(s is None or (s.ts_event, s.ts_init) == (1_000, 2_000) for s in signals)


# ------------------------------------------------------------------- the simulator faults
@pytest.mark.integration
async def test_sim_extra_weight_answers_429_with_the_used_weight() -> None:
    async with SimExchange(SimConfig(port=0)) as sim, aiohttp.ClientSession() as session:
        async with session.get(f"{sim.http_url}/api/v3/ping") as response:
            assert response.status == 200
            assert int(response.headers["X-MBX-USED-WEIGHT-1M"]) == 1
        sim.set_faults(extra_weight=4900)
        async with session.get(f"{sim.http_url}/api/v3/ping") as response:
            assert response.status == 200
            assert int(response.headers["X-MBX-USED-WEIGHT-1M"]) == 4902
        sim.set_faults(extra_weight=6000)
        async with session.get(f"{sim.http_url}/api/v3/ping") as response:
            assert response.status == 429
            assert int(response.headers["X-MBX-USED-WEIGHT-1M"]) >= 6000
            assert int(response.headers["Retry-After"]) >= 1
        sim.set_faults(extra_weight=0)
        async with session.get(f"{sim.http_url}/api/v3/ping") as response:
            assert response.status == 200


@pytest.mark.integration
async def test_sim_order_latency_delays_new_orders_only() -> None:
    async with SimExchange(SimConfig(port=0)) as sim, binance_client(sim) as (client, _):
        sim.set_faults(order_latency_ms=300)
        started = time.perf_counter()
        await client.get_server_time()
        assert time.perf_counter() - started < 0.25
        started = time.perf_counter()
        await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
        assert time.perf_counter() - started >= 0.3
