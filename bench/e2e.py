"""End to end over loopback sockets: simulator -> python-binance -> svc -> order -> simulator ack.

Each run starts the real ``svc.app.Service`` in a fresh child process, the way ``svc run``
starts it (``svc.logs.setup_logging``, a uvloop ``asyncio.Runner``), against the simulator in
one of two layouts (``Layout``):

* ``external`` (the rate sweep and the target): ``svc sim`` runs in its own process on a free
  127.0.0.1 port and svc connects to it with ``sim.url``, as it would to an exchange. Orders go
  over the WebSocket API (``order_transport = "ws"``, svc's default): one signed JSON message
  on the connection that also carries the user-data subscription; the answer is the ack.
* ``embedded``: the simulator runs inside svc's process and event loop, so its work -
  generating the market, encoding frames, matching orders - shares the loop and the CPU with
  svc. Orders over ``ws`` or ``rest`` (signed HTTP through aiohttp).

At the target rate the other three combinations run as well, so the table shows what the
layout and the transport each cost. In every layout the simulator serves combined streams
over a real websocket on 127.0.0.1; python-binance reads them; svc's feed decodes, publishes
on the data tier, runs the strategies, checks risk, and submits orders.

What a run measures, between a warm-up and the stop (so start-up and shutdown are left out):
the child waits until the feed has warmed up, lets the service settle, resets svc's own
histograms (``Service.recorder``, ``Service.loop_lag``, the tiers' queue waits, GC pauses),
takes a snapshot of every counter, waits ``window_s`` seconds and reads it all again.

* tick -> decision: ``svc.tick.duration`` for the ``no_signal`` and ``signal`` outcomes
  merged: from the feed's receive stamp (``ts_init``, taken when python-binance hands over
  the frame) to the strategies' decision.
* tick -> order ack: ``svc.tick.duration{outcome=order}``: from the same receive stamp to the
  simulator's answer to the order that tick caused (WebSocket API or REST).
* received vs offered: offered is ``rate`` x 3 streams (``btcusdt@kline_1m``, ``@aggTrade``,
  ``@bookTicker``: one frame each per simulator tick); sent is what the simulator queued to
  the socket in the window; received is what svc's feed decoded. A backlog between the two
  shows up as feed lag (``ts_init`` - the simulator's event time ``E``, ms resolution).
* write-ahead: ``svc.stage.duration{stage=audit}``, each order's wait for its ``order.new``
  record to reach the journal file (a hand-off to the audit writer thread and back); submit:
  ``stage=submit``, that wait plus the exchange's round trip (send to answer).
* drops per tier: ``dropped`` of the data, signal and order tiers in the window (only the data
  tier may drop; signal and order apply back-pressure, counted as waits).
* loop lag: ``svc.loop.lag`` sampled every ``LOOP_LAG_INTERVAL_S`` (svc's default is 50 ms;
  10 ms here gives p99.9 enough samples).

CPU is reported for svc's process and, when external, for the simulator's (``/proc``): both
share the machine's cores. Strategies trade far
more often than the defaults, so that the window holds order acks: a trade-flow strategy with
a window of 10 trades, threshold 0.2 and a 50 ms cooldown, next to the EMA crossover; risk
allows 6000 orders per minute so that it never caps the rate. No OTLP endpoint is set: spans
are not exported (``python -m bench export`` measures that).

Values come from svc's log-linear histograms: percentiles are bucket upper bounds, at most
12.5% above the exact value. The target (tick -> ack p99 <= 1 ms at 5k messages/s with zero
order-tier drops) is reported as met or not met, never enforced.

``python -m bench.e2e --child SPEC`` is the child entry point (``SPEC`` is a JSON file naming
the configuration, the timings, where to write the result and the plan).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.decode import write_json
from bench.machine import describe, save_figure, summary_line
from svc.latency import HistogramSnapshot, LatencyHistogram, summarize

RESULTS = Path(__file__).resolve().parent / "results"
REPOSITORY = Path(__file__).resolve().parents[1]

SYMBOL = "BTCUSDT"
INTERVAL = "1m"
STREAMS_PER_TICK = 3
"""``market_streams`` of one symbol and one interval: the kline, aggTrade and bookTicker."""
SIM_SPEED = 60.0
"""Market time per wall time: a 1m kline closes every second, so the EMA strategy trades too."""
LOOP_LAG_INTERVAL_S = 0.01
STRATEGIES: tuple[dict[str, Any], ...] = (
    {
        "kind": "trade_flow",
        "symbol": SYMBOL,
        "window": 10,
        "threshold": 0.2,
        "quantity": 0.001,
        "cooldown_ns": 50_000_000,
    },
    {
        "kind": "ema_crossover",
        "symbol": SYMBOL,
        "interval": INTERVAL,
        "fast": 3,
        "slow": 8,
        "quantity": 0.001,
    },
)
MAX_ORDERS_PER_MINUTE = 6000
STOP_TIMEOUT_S = 12.0
"""How long the child waits for ``Service.run`` to return after ``request_stop`` (a normal stop
takes well under a second; flushing telemetry to a collector that is down, up to 5 s)."""
SVC_TASKS = frozenset(
    {"bus", "feed.market", "feed.user", "status", "runtime.gc", "runtime.loop_lag", "service"}
)
"""Names of the service's own supervised tasks (the rest are library and simulator tasks)."""
CHILD_ENV_PREFIXES = ("OTEL_", "SVC_")
"""The caller's own settings of these are not passed on: each run sets exactly what it needs."""

TARGET_RATE = 5000
TARGET_ACK_P99_US = 1000.0
TARGET = (
    f"tick -> order ack p99 <= {TARGET_ACK_P99_US / 1000:g} ms at {TARGET_RATE:,} msg/s "
    "with zero order-tier drops"
)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the simulator runs and how orders travel to it."""

    simulator: str
    """``external``: ``svc sim`` in its own process (``sim.url``), as an exchange would be;
    ``embedded``: inside svc's process and event loop (``exchange = "sim"`` alone)."""
    transport: str
    """svc's ``order_transport``: ``ws`` (WebSocket API) or ``rest``."""

    @property
    def label(self) -> str:
        return f"{self.simulator} sim, {self.transport}"


MAIN = Layout("external", "ws")
"""The layout of the rate sweep and of the target: svc's defaults, the exchange elsewhere."""
COMPARED = (Layout("external", "rest"), Layout("embedded", "ws"), Layout("embedded", "rest"))
"""Measured at ``TARGET_RATE`` only, beside ``MAIN``: what each choice costs."""


@dataclass(frozen=True, slots=True)
class Plan:
    rates: tuple[int, ...]
    """Offered messages per second, one run each (``MAIN`` layout)."""
    settle_s: float
    """Seconds between the end of the feed's warm-up and the start of the window."""
    window_s: float
    compared: tuple[Layout, ...] = COMPARED
    """Layouts also run at ``TARGET_RATE``."""


QUICK = Plan(rates=(1000, 5000), settle_s=1.0, window_s=3.0, compared=(Layout("embedded", "rest"),))
FULL = Plan(rates=(1000, 5000, 10_000, 20_000), settle_s=2.0, window_s=20.0)

COLUMNS = [
    "layout",
    "offered msg/s",
    "sent msg/s",
    "received msg/s",
    "decision p50 µs",
    "decision p99 µs",
    "decision p99.9 µs",
    "orders",
    "ack p50 µs",
    "ack p99 µs",
    "ack p99.9 µs",
    "write-ahead p50/p99 µs",
    "submit p50/p99 µs",
    "feed lag p99 ms",
    "dropped data/signal/order",
    "loop lag p99 µs",
    "CPU % svc",
    "CPU % sim",
]

# ---------------------------------------------------------------- configuration


def service_overrides(
    *, offered: float, workdir: Path, layout: Layout, sim_url: str = ""
) -> dict[str, Any]:
    """``build_config`` overrides of one run (see the module docstring for the why)."""
    sim: dict[str, Any] = {"rate": offered / STREAMS_PER_TICK, "speed": SIM_SPEED}
    if layout.simulator == "external":
        if not sim_url:
            raise ValueError("an external simulator's URL is needed (external_simulator())")
        sim = {"url": sim_url}
    return {
        "exchange": "sim",
        "order_transport": layout.transport,
        "symbols": [SYMBOL],
        "intervals": [INTERVAL],
        "strategies": [dict(spec) for spec in STRATEGIES],
        "sim": sim,
        "risk": {"max_orders_per_minute": MAX_ORDERS_PER_MINUTE},
        "audit": {"path": str(workdir / "audit.jsonl")},
        "telemetry": {"health_port": -1, "loop_lag_interval": LOOP_LAG_INTERVAL_S},
    }


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without ``OTEL_*``/``SVC_*``, plus ``extra``.

    The parent's ``os.environ`` is never changed: every run gets its own copy.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(CHILD_ENV_PREFIXES)}
    return {**base, **extra}


# ---------------------------------------------------------------- the child: one service run


def _summarize(snapshot: HistogramSnapshot) -> dict[str, float]:
    return dict(summarize(snapshot))


def _quantile_points(snapshot: HistogramSnapshot) -> dict[str, list[float]]:
    """Quantiles of a histogram snapshot, dense in the tail, for percentile plots (µs)."""
    if snapshot.count == 0:
        return {"quantile": [], "us": []}
    body = [i / 100 for i in range(99)]
    tail = [1 - 10 ** (-2 - i / 20) for i in range(61)]  # 0.99 .. 0.99999
    quantiles = [q for q in (*body, *tail) if q * snapshot.count <= snapshot.count - 1] + [1.0]
    return {
        "quantile": quantiles,
        "us": [snapshot.percentile(q * 100) / 1000 for q in quantiles],
    }


class Window:
    """Counters of a running ``Service`` at the start of the window; ``close`` gives deltas.

    Opening it resets svc's own histograms, which svc itself never does (its metric bridge
    publishes them as cumulative series): a benchmark child exports nothing anyone reads.
    """

    def __init__(self, service: Any, sim_stats: dict[str, int], sim_pid: int | None) -> None:
        self.service = service
        self.sim_pid = sim_pid
        self.sim_cpu = _process_cpu_s(sim_pid)
        service.recorder.reset()
        service.loop_lag.histogram.reset()
        service.gc_pauses.drain()
        for histogram in service.gc_pauses.histograms.values():
            histogram.reset()
        self.tiers = {}
        for tier in (service.bus.data, service.bus.signal, service.bus.order):
            tier.queue_wait.reset()
            self.tiers[tier.name] = tier.statistics()
        self.messages = sum(service.feed.statistics.messages.values())
        self.reconnects = dict(service.feed.statistics.reconnects)
        self.sim = sim_stats
        self.tracing = service.tracer.statistics()
        self.spans_dropped = service.telemetry.dropped_spans()
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.loop_cpu = time.thread_time()

    def close(self, sim_stats: dict[str, int]) -> dict[str, Any]:
        service = self.service
        elapsed = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        sim_cpu = _process_cpu_s(self.sim_pid) - self.sim_cpu
        loop_cpu = time.thread_time() - self.loop_cpu
        recorder = service.recorder
        decision = LatencyHistogram()
        decision.merge(recorder.tick_no_signal)
        decision.merge(recorder.tick_signal)
        decision_snapshot = decision.snapshot()
        order_snapshot = recorder.tick_order.snapshot()
        loop_lag = service.loop_lag.histogram.snapshot()
        service.gc_pauses.drain()
        tiers = {}
        for tier in (service.bus.data, service.bus.signal, service.bus.order):
            now, then = tier.statistics(), self.tiers[tier.name]
            tiers[tier.name] = {
                "put": now.put - then.put,
                "dropped": now.dropped - then.dropped,
                "waits": now.waits - then.waits,
                "blocked_at_end": now.blocked,
                "high_water_whole_run": now.high_water,
                "queue_wait": _summarize(tier.queue_wait.snapshot()),
            }
        received = sum(service.feed.statistics.messages.values()) - self.messages
        sim = {k: v - self.sim.get(k, 0) for k, v in sim_stats.items()}
        reconnects = {
            reason: count - self.reconnects.get(reason, 0)
            for reason, count in service.feed.statistics.reconnects.items()
            if count - self.reconnects.get(reason, 0)
        }
        tracing = {k: v - self.tracing.get(k, 0) for k, v in service.tracer.statistics().items()}
        return {
            "window_s": elapsed,
            "sent_per_s": sim.get("frames_queued", 0) / elapsed,
            "received": received,
            "received_per_s": received / elapsed,
            "tick_decision": _summarize(decision_snapshot),
            "tick_order": _summarize(order_snapshot),
            "stages": {
                name: summary
                for name, summary in recorder.summary().items()
                if summary["count"] and not name.startswith("tick.")
            },
            "feed_lag": _summarize(recorder.feed_lag.snapshot()),
            "loop_lag": _summarize(loop_lag),
            "tiers": tiers,
            "reconnects": reconnects,
            "simulator": sim,
            "gc": {
                str(generation): {"count": h.count, "max_ms": h.max / 1e6}
                for generation, h in service.gc_pauses.histograms.items()
            },
            "cpu_percent": 100 * cpu / elapsed,
            "sim_cpu_percent": 100 * sim_cpu / elapsed if self.sim_pid is not None else None,
            "loop_thread_cpu_percent": 100 * loop_cpu / elapsed,
            "tracing": tracing,
            "spans_dropped": service.telemetry.dropped_spans() - self.spans_dropped,
            "exporting": bool(service.telemetry.exporting),
            "quantiles": {
                "tick_decision": _quantile_points(decision_snapshot),
                "tick_order": _quantile_points(order_snapshot),
            },
        }


def _process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``); 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _sim_stats(service: Any, sim_url: str) -> dict[str, int]:
    """The simulator's counters: read directly when embedded, from ``/_sim/state`` if not."""
    if service.sim is not None:
        return dict(service.sim.stats)
    import aiohttp  # noqa: PLC0415

    async with aiohttp.ClientSession() as session, session.get(f"{sim_url}/_sim/state") as answer:
        state = await answer.json()
    return {str(k): int(v) for k, v in state["stats"].items()}


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one ``Service``; measure the window after its warm-up (see the module docstring)."""
    from svc.app import Service  # noqa: PLC0415
    from svc.config import build_config  # noqa: PLC0415

    config = build_config(environ={}, overrides=spec["overrides"])
    service = Service(config, status=sys.stderr, log_dropped=spec.get("log_dropped"))
    running = asyncio.create_task(service.run(), name="service")
    deadline = time.monotonic() + spec["startup_timeout_s"]
    while service.feed is None or not service.feed.warmed_up.is_set():
        if running.done():
            result = running.result()
            raise SystemExit(f"svc stopped before warming up: {result.exit_reason}")
        if time.monotonic() > deadline:
            service.request_stop("benchmark: no warm-up")
            await running
            raise SystemExit("svc did not warm up in time")
        await asyncio.sleep(0.05)
    await asyncio.sleep(spec["settle_s"])
    sim_url = spec["overrides"]["sim"].get("url", "")
    window = Window(service, await _sim_stats(service, sim_url), spec.get("sim_pid"))
    await asyncio.sleep(spec["window_s"])
    measured = window.close(await _sim_stats(service, sim_url))
    service.request_stop("benchmark window over")
    stopping = time.monotonic()
    done, _ = await asyncio.wait([running], timeout=spec["stop_timeout_s"])
    measured["stop_s"] = time.monotonic() - stopping
    measured["stopped"] = bool(done)
    if not done:
        # The window is measured already; a service that does not stop is a finding, not a
        # failed measurement. Its tasks go to the log, the child exits without waiting.
        measured["stop_pending_tasks"] = _dump_tasks(
            f"svc did not stop within {spec['stop_timeout_s']:g} s"
        )
        return measured
    result = running.result()
    measured["exit_code"] = result.exit_code
    measured["exit_reason"] = result.exit_reason
    measured["orders_by_state"] = result.summary.get("orders", {}).get("orders_by_state", {})
    measured["risk_rejections"] = result.summary.get("risk_rejections", {})
    return measured


def _dump_tasks(why: str) -> list[str]:
    """Every task's stack on stderr: what a service that does not stop is waiting for."""
    sys.stderr.write(f"=== {why}; pending tasks:\n")
    names = []
    for task in asyncio.all_tasks():
        names.append(task.get_name())
        sys.stderr.write(f"--- {task.get_name()}\n")
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()
    return sorted(names)


def child(argv: list[str]) -> int:
    """``python -m bench.e2e --child SPEC``: one service run, like ``svc run`` starts one."""
    import uvloop  # noqa: PLC0415

    from svc.logs import setup_logging  # noqa: PLC0415

    spec = json.loads(Path(argv[argv.index("--child") + 1]).read_text())
    handle = setup_logging(level=spec.get("log_level", "INFO"))
    spec["log_dropped"] = lambda: handle.dropped
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    measured = runner.run(measure(spec))
    measured["log_records_dropped"] = handle.dropped
    write_json(measured, Path(spec["result_path"]))
    if not measured["stopped"]:
        # Closing the runner would wait for the stuck tasks again.
        sys.stderr.flush()
        os._exit(0)
    runner.close()
    handle.stop()
    return 0


# ---------------------------------------------------------------- the parent


def run_service(
    *,
    label: str,
    overrides: dict[str, Any],
    settle_s: float,
    window_s: float,
    workdir: Path,
    environ: Mapping[str, str] | None = None,
    exit_grace_s: float = 5.0,
    sim_pid: int | None = None,
) -> dict[str, Any]:
    """One service run in a child process; prints a dot per second while it runs.

    The child writes its result once ``Service.run`` has returned (or did not return within
    ``STOP_TIMEOUT_S``); a child still alive ``exit_grace_s`` later is killed and the linger
    recorded (``exit_after_result_s`` is then ``None``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = (
        workdir / "spec.json",
        workdir / "result.json",
        workdir / "child.log",
    )
    spec = {
        "overrides": overrides,
        "settle_s": settle_s,
        "window_s": window_s,
        "startup_timeout_s": 30.0,
        "stop_timeout_s": STOP_TIMEOUT_S,
        "result_path": str(result_path),
        "sim_pid": sim_pid,
    }
    spec_path.write_text(json.dumps(spec))
    sys.stderr.write(f"  {label:<28}")
    sys.stderr.flush()
    started = time.monotonic()
    timeout = settle_s + window_s + 90.0
    written: float | None = None  # when the child wrote its result
    lingered = False
    command = [sys.executable, "-m", "bench.e2e", "--child", str(spec_path)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
            command,
            cwd=REPOSITORY,
            env=child_environment(environ or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        ticks = 0
        while process.poll() is None:
            now = time.monotonic()
            if written is None and result_path.is_file():
                written = now
            lingered = written is not None and now - written > exit_grace_s
            if lingered or now - started > timeout:
                process.kill()
                process.wait()
                break
            time.sleep(0.1)
            ticks += 1
            if ticks % 10 == 0:
                sys.stderr.write(".")
                sys.stderr.flush()
    if not result_path.is_file() or (process.returncode != 0 and not lingered):
        tail = log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"\n{label}: the service run failed (exit {process.returncode}):\n{tail}")
    measured: dict[str, Any] = json.loads(result_path.read_text())
    measured["child_seconds"] = time.monotonic() - started
    if lingered:
        measured["exit_after_result_s"] = None
    elif written is None:  # it exited between two polls (0.1 s apart) of the result file
        measured["exit_after_result_s"] = 0.0
    else:
        measured["exit_after_result_s"] = time.monotonic() - written
    measured["exit_grace_s"] = exit_grace_s
    if lingered:
        sys.stderr.write(f" [process still alive {exit_grace_s:g} s after the run: killed]")
    if not measured["stopped"]:
        sys.stderr.write(f" [svc did not stop within {STOP_TIMEOUT_S:g} s]")
    return measured


def stop_note(runs: list[dict[str, Any]]) -> str | None:
    """A note when ``Service.run`` did not return after ``request_stop`` in some runs."""
    stuck = [r for r in runs if not r["stopped"]]
    if not stuck:
        return None
    tasks = sorted({t for r in stuck for t in r.get("stop_pending_tasks", [])} & SVC_TASKS)
    return (
        f"svc did not stop within {STOP_TIMEOUT_S:g} s after the window in {len(stuck)} of "
        f"{len(runs)} runs (still pending: {', '.join(tasks) or 'unnamed tasks'}); the "
        "windows were measured before the stop and are valid"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def external_simulator(*, offered: float, workdir: Path) -> Iterator[tuple[str, int]]:
    """``svc sim`` in its own process on a free loopback port; yields its URL and pid."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "svc.cli",
        "sim",
        "--port",
        str(port),
        "--symbols",
        SYMBOL,
        "--intervals",
        INTERVAL,
        "--speed",
        str(SIM_SPEED),
        "--rate",
        str(offered / STREAMS_PER_TICK),
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "sim.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
            command, cwd=REPOSITORY, env=child_environment({}), stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 30.0
            while not _answers(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (workdir / "sim.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"svc sim did not start (exit {process.poll()}):\n{tail}")
                time.sleep(0.1)
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v3/ping", timeout=1.0) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except OSError:
        return False


def run_layout(layout: Layout, rate: int, plan: Plan, directory: Path) -> dict[str, Any]:
    """One window of ``layout`` at ``rate`` offered messages/s."""
    label = f"{rate:>6,} msg/s, {layout.label}"
    with contextlib.ExitStack() as stack:
        sim_url, sim_pid = "", None
        if layout.simulator == "external":
            sim_url, sim_pid = stack.enter_context(
                external_simulator(offered=rate, workdir=directory)
            )
        measured = run_service(
            label=f"{label:<34}",
            overrides=service_overrides(
                offered=rate, workdir=directory, layout=layout, sim_url=sim_url
            ),
            settle_s=plan.settle_s,
            window_s=plan.window_s,
            workdir=directory,
            sim_pid=sim_pid,
        )
    measured["offered_per_s"] = rate
    measured["layout"] = {"simulator": layout.simulator, "transport": layout.transport}
    return measured


def run(plan: Plan, workdir: Path) -> list[dict[str, Any]]:
    runs = []
    sys.stderr.write(
        f"e2e: {len(plan.rates)} rates ({MAIN.label}) and {len(plan.compared)} other layouts "
        f"at {TARGET_RATE:,} msg/s, {plan.window_s:g} s window each "
        f"(+ start, {plan.settle_s:g} s settle, stop), one child process each\n"
    )
    jobs = [(MAIN, rate) for rate in plan.rates] + [(other, TARGET_RATE) for other in plan.compared]
    for layout, rate in jobs:
        directory = workdir / f"{layout.simulator}-{layout.transport}-{rate}"
        measured = run_layout(layout, rate, plan, directory)
        sys.stderr.write(
            f" received {measured['received_per_s']:>7,.0f}/s, decision p99 "
            f"{measured['tick_decision']['p99_us']:,.0f} µs, ack p99 "
            f"{measured['tick_order']['p99_us']:,.0f} µs (n={measured['tick_order']['count']}), "
            f"loop lag p99 {measured['loop_lag']['p99_us']:,.0f} µs\n"
        )
        runs.append(measured)
    return runs


def _p50_p99(stage: dict[str, Any] | None) -> str:
    return "-" if not stage else f"{stage['p50_us']:,.0f}/{stage['p99_us']:,.0f}"


def layout_of(run: dict[str, Any]) -> Layout:
    """A run's layout; runs saved before layouts existed were embedded, REST."""
    found = run.get("layout") or {"simulator": "embedded", "transport": "rest"}
    return Layout(found["simulator"], found["transport"])


def row(run: dict[str, Any]) -> list[Any]:
    tiers = run["tiers"]
    dropped = "/".join(str(tiers[t]["dropped"]) for t in ("data", "signal", "order"))
    decision, order = run["tick_decision"], run["tick_order"]
    sim_cpu = run.get("sim_cpu_percent")
    return [
        layout_of(run).label,
        run["offered_per_s"],
        round(run["sent_per_s"]),
        round(run["received_per_s"]),
        round(decision["p50_us"], 1),
        round(decision["p99_us"], 1),
        round(decision["p999_us"], 1),
        order["count"],
        round(order["p50_us"]),
        round(order["p99_us"]),
        round(order["p999_us"]),
        _p50_p99(run["stages"].get("audit")),
        _p50_p99(run["stages"].get("submit")),
        round(run["feed_lag"]["p99_us"] / 1000, 2),
        dropped,
        round(run["loop_lag"]["p99_us"]),
        round(run["cpu_percent"]),
        "-" if sim_cpu is None else round(sim_cpu),
    ]


def verdict(runs: list[dict[str, Any]]) -> dict[str, Any]:
    at = next((r for r in runs if r["offered_per_s"] == TARGET_RATE and layout_of(r) == MAIN), None)
    if at is None:
        return {"description": TARGET, "met": None, "text": "not measured (no 5k run)"}
    order = at["tick_order"]
    dropped = at["tiers"]["order"]["dropped"]
    met = order["count"] > 0 and order["p99_us"] <= TARGET_ACK_P99_US and dropped == 0
    measured = (
        f"p99 {order['p99_us'] / 1000:.2f} ms over {order['count']} orders, "
        f"order-tier drops {dropped}"
        if order["count"]
        else "no order was acknowledged in the window"
    )
    return {
        "description": TARGET,
        "layout": MAIN.label,
        "ack_p99_us": order["p99_us"],
        "orders": order["count"],
        "order_tier_dropped": dropped,
        "met": met,
        "text": f"{'met' if met else 'not met'} ({measured})",
    }


def format_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A fixed-width table: numbers right-aligned with thousands separators."""

    def cell(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return "-" if value is None else str(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    header = "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
    lines = [header, "-" * len(header)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _short(run: dict[str, Any]) -> str:
    """``5k`` for the main layout, ``5k embedded rest`` for the others."""
    rate = f"{run['offered_per_s'] // 1000}k"
    layout = layout_of(run)
    return rate if layout == MAIN else f"{rate} {layout.simulator} {layout.transport}"


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (optional, heavy: only when a chart is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    runs = report["runs"]
    figure, (latency, rates, lag) = plt.subplots(
        1, 3, figsize=(15, 5), gridspec_kw={"width_ratios": [2.2, 1.2, 1]}
    )
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(runs)))

    def nines(quantiles: list[float]) -> np.ndarray:
        return -np.log10(np.maximum(1.0 - np.asarray(quantiles), 1e-5))

    for colour, run in zip(colours, runs, strict=True):
        for key, style, what in (("tick_decision", "-", "decision"), ("tick_order", "--", "ack")):
            points = run["quantiles"][key]
            if points["quantile"]:
                latency.step(
                    nines(points["quantile"]),
                    points["us"],
                    where="post",
                    linestyle=style,
                    color=colour,
                    label=f"{_short(run)} {what}",
                )
    latency.axhline(TARGET_ACK_P99_US, color="grey", linestyle=":", linewidth=1)
    latency.text(0.02, TARGET_ACK_P99_US * 1.08, "1 ms (ack p99 target)", fontsize=8)
    ticks = [0.5, 0.9, 0.99, 0.999, 0.9999]
    latency.set_xticks(nines(ticks), ["p50", "p90", "p99", "p99.9", "p99.99"])
    latency.set_xlim(0, nines([0.99995])[0])
    latency.set_yscale("log")
    latency.set_ylabel("µs from receive (log)")
    latency.set_title("tick -> decision (solid), tick -> order ack (dashed)", fontsize=10)
    latency.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=7, ncol=2, loc="upper left")

    labels = [_short(r).replace(" ", "\n", 1) for r in runs]
    x = np.arange(len(runs))
    width = 0.27
    rates.bar(x - width, [r["offered_per_s"] for r in runs], width, label="offered", color="0.75")
    rates.bar(x, [r["sent_per_s"] for r in runs], width, label="sent (simulator)", color="tab:blue")
    rates.bar(
        x + width,
        [r["received_per_s"] for r in runs],
        width,
        label="received (svc)",
        color="tab:green",
    )
    rates.set_xticks(x, labels)
    rates.set_xlabel(f"offered messages/s ({MAIN.label} unless named)")
    rates.set_ylabel("messages/s in the window")
    rates.set_title("throughput", fontsize=10)
    rates.legend(fontsize=8)

    lag.bar(x - 0.2, [r["loop_lag"]["p99_us"] / 1000 for r in runs], 0.4, label="p99")
    lag.bar(x + 0.2, [r["loop_lag"]["p999_us"] / 1000 for r in runs], 0.4, label="p99.9")
    lag.set_xticks(x, labels)
    lag.set_xlabel("offered messages/s")
    lag.set_ylabel("ms")
    lag.set_title("event-loop lag", fontsize=10)
    lag.legend(fontsize=8)
    figure.suptitle(
        f"e2e: simulator -> python-binance -> svc -> order -> ack over loopback, "
        f"{report['plan']['window_s']:g} s per rate — {summary_line(report['machine'])}",
        fontsize=10,
    )
    save_figure(figure, path)


def main(*, quick: bool = False, json_path: Path | None = None) -> int:
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    info = describe("uvloop", "python-binance", "aiohttp", "websockets", "msgspec")
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as scratch:
        runs = run(plan, Path(scratch))
    rows = [row(r) for r in runs]
    target = verdict(runs)
    json_out = json_path or RESULTS / "e2e.json"
    plot = json_out.with_suffix(".png")
    report = {
        "name": "e2e",
        "benchmark": "e2e",
        "title": "simulator -> python-binance -> svc -> order -> simulator ack, loopback",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": info,
        "plan": {
            "rates": list(plan.rates),
            "settle_s": plan.settle_s,
            "window_s": plan.window_s,
            "symbol": SYMBOL,
            "streams": STREAMS_PER_TICK,
            "strategies": list(STRATEGIES),
            "layout": MAIN.label,
            "compared_at_target_rate": [layout.label for layout in plan.compared],
            "loop_lag_interval_s": LOOP_LAG_INTERVAL_S,
        },
        "unit": "µs from svc's receive stamp; percentiles are histogram bucket bounds (<= +12.5%)",
        "columns": COLUMNS,
        "rows": rows,
        "target": target,
        "notes": [
            (
                f"rate sweep and target: {MAIN.label} (svc sim in its own process, orders over "
                "the WebSocket API); other layouts at the target rate only"
            ),
            "embedded: the simulator shares svc's event loop and CPU (exchange = sim alone)",
            "decision = tick outcomes no_signal + signal; ack = outcome order",
            "sent = frames the simulator queued to the websocket in the window",
            *filter(None, [stop_note(runs)]),
        ],
        "plot": plot.name,
        "runs": runs,
    }
    print(f"\nmachine: {summary_line(info)}")
    print(
        f"plan: {', '.join(f'{r:,}' for r in plan.rates)} msg/s offered, "
        f"{plan.window_s:g} s window each; µs from svc's receive stamp\n"
    )
    print(format_table(COLUMNS, rows))
    print(f"\ntarget {TARGET}: {target['text']}")
    if note := stop_note(runs):
        print(f"note: {note}")
    write_json(report, json_out)
    write_chart(report, plot)
    print(f"wrote {json_out} and {plot} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    if "--child" not in sys.argv:
        raise SystemExit("usage: python -m bench.e2e --child SPEC (run: python -m bench e2e)")
    raise SystemExit(child(sys.argv[1:]))
