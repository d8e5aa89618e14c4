"""What exporting traces costs the running service: loop lag and throughput by sampling ratio,
with the collector up and down.

Every configuration is one run of the real ``Service`` with its embedded simulator at a fixed
offered rate, in a fresh child process (``bench.e2e.run_service``: same strategies, same
warm-up, same measurement window). Only the child's environment differs; the parent's own
``os.environ`` is never touched, so nothing leaks from one run into the next:

* ``no exporter``: no ``OTEL_EXPORTER_OTLP_ENDPOINT``; svc builds no span processor and
  samples nothing (the reference row);
* ``up``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` is a real OpenTelemetry collector, ``rotel-agent``
  (from the ``rotel`` wheel) on 127.0.0.1 with the blackhole exporter: it decodes every OTLP
  request and drops the data;
* ``down``: the endpoint is a loopback port that is bound by this process but never listens,
  so every connection is refused at once and the gRPC exporter backs off and retries;

and for ``up`` and ``down``: ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` with
``OTEL_TRACES_SAMPLER_ARG`` 0, 0.01, 0.1 and 1 (svc's ``TickTracer`` samples whole ticks at
that ratio; slow ticks above ``telemetry.slow_tick_ms`` are traced at any ratio). svc caps
ratio-sampled ticks at ``telemetry.max_traces_per_second`` (20 by default), which would make
every ratio above ~1% look alike; these runs lift the cap (0) so that the ratio means what it
says, and one more run per collector state shows 100% with svc's default cap. OTLP over gRPC
(svc's default protocol); metrics are exported too, every ``OTEL_METRIC_EXPORT_INTERVAL`` = 5 s,
the same in every exporting run.

Measured in the window: messages received per second (of a fixed offered rate: a run that
cannot keep up receives less), process CPU (all threads, the export thread included) and CPU
per received message, event-loop lag p99/p99.9/max (``svc.loop.lag`` sampled every 10 ms),
tick -> decision p99, ticks traced and held back by the cap, and spans the export queue
dropped. After the window the service is stopped as SIGTERM would; "stop -> exit" is the time
from ``request_stop`` until the process ended (with the collector down, telemetry's flush and
the exporters' retries dominate it). Quick mode gives the shutdown a 2 s budget and kills a
process still alive 2 s after its run, so that it stays under a minute.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.decode import write_json
from bench.e2e import Layout, format_table, run_service, service_overrides, stop_note
from bench.machine import describe, save_figure, summary_line
from svc.config import TelemetrySection

EMBEDDED = Layout("embedded", "ws")
RESULTS = Path(__file__).resolve().parent / "results"
LOOPBACK = "127.0.0.1"
SAMPLING = (0.0, 0.01, 0.1, 1.0)
METRIC_EXPORT_INTERVAL_MS = 5000
DEFAULT_TRACE_CAP = TelemetrySection().max_traces_per_second


@dataclass(frozen=True, slots=True)
class Plan:
    rate: int
    """Offered messages per second in every run."""
    settle_s: float
    window_s: float
    shutdown_budget_s: float | None
    """``emergency.shutdown_budget_seconds`` of the runs (None: svc's default)."""
    exit_grace_s: float
    """How long a child may live on after its run before it is killed (and that recorded)."""


QUICK = Plan(rate=2000, settle_s=0.5, window_s=2.0, shutdown_budget_s=2.0, exit_grace_s=2.0)
FULL = Plan(rate=5000, settle_s=2.0, window_s=15.0, shutdown_budget_s=None, exit_grace_s=20.0)


@dataclass(frozen=True, slots=True)
class Configuration:
    collector: str
    """``none`` (no exporter), ``up`` or ``down``."""
    ratio: float | None
    capped: bool = False
    """True: svc's default cap on traced ticks per second; False: no cap, so the ratio rules."""

    @property
    def label(self) -> str:
        if self.ratio is None:
            return "no exporter"
        cap = ", svc cap" if self.capped else ""
        return f"collector {self.collector}, {self.ratio:>4.0%}{cap}"

    @property
    def directory(self) -> str:
        return f"{self.collector}-{self.ratio}-{'capped' if self.capped else 'uncapped'}"


def configurations(collector: str) -> list[Configuration]:
    return [
        *(Configuration(collector, ratio) for ratio in SAMPLING),
        Configuration(collector, 1.0, capped=True),
    ]


COLUMNS = [
    "collector",
    "sampling",
    "trace cap",
    "received msg/s",
    "CPU %",
    "CPU µs/msg",
    "loop lag p99 µs",
    "loop lag p99.9 µs",
    "loop lag max µs",
    "decision p99 µs",
    "ticks traced",
    "rate-limited",
    "spans dropped",
    "stop -> exit",
]

# ---------------------------------------------------------------- the collector


def rotel_agent() -> Path:
    """The collector binary shipped in the ``rotel`` wheel (a dev dependency)."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        raise SystemExit("the rotel package is not installed; install the dev extra")
    agent = Path(spec.origin).parent / "rotel-agent"
    if not agent.is_file():
        raise SystemExit(f"rotel-agent not found at {agent}")
    return agent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.2).close()
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"rotel-agent is not listening on {LOOPBACK}:{port}") from None
            time.sleep(0.05)
        else:
            return


@contextmanager
def collector(workdir: Path) -> Iterator[str]:
    """rotel-agent on loopback (blackhole exporter); yields its OTLP/gRPC endpoint."""
    grpc_port, http_port = free_port(), free_port()
    # fmt: off
    command = [
        str(rotel_agent()), "start",
        "--otlp-grpc-endpoint", f"{LOOPBACK}:{grpc_port}",
        "--otlp-http-endpoint", f"{LOOPBACK}:{http_port}",
        "--exporter", "blackhole",
        "--pid-file", str(workdir / "rotel.pid"),
        "--log-file", str(workdir / "rotel.log"),
    ]
    # fmt: on
    with (workdir / "rotel.out").open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_listening(grpc_port, 15.0)
        yield f"http://{LOOPBACK}:{grpc_port}"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@contextmanager
def refusing_endpoint() -> Iterator[str]:
    """A loopback port bound here but never listening: every connection is refused.

    Holding the port (instead of picking a free one and closing it) keeps anyone else from
    taking it while the runs point at it.
    """
    with socket.socket() as bound:
        bound.bind((LOOPBACK, 0))
        yield f"http://{LOOPBACK}:{bound.getsockname()[1]}"


# ---------------------------------------------------------------- runs


def environment(endpoint: str, ratio: float) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}",
        "OTEL_METRIC_EXPORT_INTERVAL": str(METRIC_EXPORT_INTERVAL_MS),
    }


def one_run(
    plan: Plan, workdir: Path, configuration: Configuration, endpoint: str = ""
) -> dict[str, Any]:
    directory = workdir / configuration.directory
    # The simulator embedded: its rate follows the plan, and runs need no second process.
    overrides = service_overrides(offered=plan.rate, workdir=directory, layout=EMBEDDED)
    if not configuration.capped:
        overrides["telemetry"]["max_traces_per_second"] = 0
    if plan.shutdown_budget_s is not None:
        overrides["emergency"] = {"shutdown_budget_seconds": plan.shutdown_budget_s}
    ratio = configuration.ratio
    measured = run_service(
        label=configuration.label,
        overrides=overrides,
        settle_s=plan.settle_s,
        window_s=plan.window_s,
        workdir=directory,
        environ={} if ratio is None else environment(endpoint, ratio),
        exit_grace_s=plan.exit_grace_s,
    )
    measured["collector"] = configuration.collector
    measured["sampling"] = ratio
    measured["trace_cap_per_s"] = DEFAULT_TRACE_CAP if configuration.capped else None
    measured["cpu_us_per_message"] = (
        measured["cpu_percent"] / 100 * measured["window_s"] / max(measured["received"], 1) * 1e6
    )
    traced = measured["tracing"].get("sampled", 0) + measured["tracing"].get("forced", 0)
    measured["ticks_traced"] = traced
    sys.stderr.write(
        f" {measured['received_per_s']:>7,.0f} msg/s, CPU {measured['cpu_percent']:.0f}%, "
        f"loop lag p99.9 {measured['loop_lag']['p999_us']:,.0f} µs, traced {traced:,}, "
        f"spans dropped {measured['spans_dropped']:,}\n"
    )
    return measured


def run(plan: Plan, workdir: Path) -> list[dict[str, Any]]:
    count = 1 + 2 * len(configurations("up"))
    sys.stderr.write(
        f"export: {plan.rate:,} msg/s offered, {plan.window_s:g} s window per configuration, "
        f"{count} configurations, one child process each\n"
    )
    runs = [one_run(plan, workdir, Configuration("none", None))]
    with collector(workdir) as endpoint:
        sys.stderr.write(f"  rotel-agent up at {endpoint}\n")
        runs += [one_run(plan, workdir, c, endpoint) for c in configurations("up")]
    with refusing_endpoint() as endpoint:
        sys.stderr.write(f"  collector down: {endpoint} refuses connections\n")
        runs += [one_run(plan, workdir, c, endpoint) for c in configurations("down")]
    return runs


def row(run: dict[str, Any]) -> list[Any]:
    lag = run["loop_lag"]
    ratio = run["sampling"]
    cap = run["trace_cap_per_s"]
    return [
        "no exporter" if ratio is None else run["collector"],
        "–" if ratio is None else f"{ratio:.0%}",
        "–" if ratio is None else ("none" if cap is None else f"{cap:g}/s"),
        round(run["received_per_s"]),
        round(run["cpu_percent"]),
        round(run["cpu_us_per_message"], 1),
        round(lag["p99_us"]),
        round(lag["p999_us"]),
        round(lag["max_us"]),
        round(run["tick_decision"]["p99_us"], 1),
        run["ticks_traced"],
        run["tracing"].get("rate_limited", 0),
        run["spans_dropped"],
        _exit(run),
    ]


def _exit(run: dict[str, Any]) -> str:
    """How long the process lived on after ``Service.run`` returned (``svc run``'s exit)."""
    if not run["stopped"]:
        return f"stuck > {run['stop_s']:.0f} s"
    linger = run["exit_after_result_s"]
    if linger is None:
        return f"> {run['stop_s'] + run['exit_grace_s']:.0f} s"
    return f"{run['stop_s'] + linger:.1f} s"


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (optional, heavy: only when a chart is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    runs = report["runs"]
    baseline = next(r for r in runs if r["sampling"] is None)
    figure, (lag, cpu) = plt.subplots(1, 2, figsize=(13, 5))
    x = np.arange(len(SAMPLING) + 1)
    labels = [f"{ratio:.0%}" for ratio in SAMPLING] + [f"100%\ncap {DEFAULT_TRACE_CAP:g}/s"]
    colours = {"up": "tab:blue", "down": "tab:red"}
    for offset, state in ((-0.2, "up"), (0.2, "down")):
        mine = [
            next(
                r
                for r in runs
                if r["collector"] == state
                and r["sampling"] == s
                and (r["trace_cap_per_s"] is not None) == capped
            )
            for s, capped in [*((s, False) for s in SAMPLING), (1.0, True)]
        ]
        lag.bar(
            x + offset,
            [r["loop_lag"]["p999_us"] / 1000 for r in mine],
            0.4,
            color=colours[state],
            label=f"collector {state}: p99.9",
        )
        lag.scatter(
            x + offset,
            [r["loop_lag"]["p99_us"] / 1000 for r in mine],
            color="black",
            marker="_",
            s=200,
            zorder=3,
            label="p99" if state == "up" else None,
        )
        cpu.bar(
            x + offset,
            [r["cpu_us_per_message"] for r in mine],
            0.4,
            color=colours[state],
            label=f"collector {state}",
        )
    lag.axhline(
        baseline["loop_lag"]["p999_us"] / 1000,
        color="grey",
        linestyle="--",
        linewidth=1,
        label="no exporter: p99.9",
    )
    cpu.axhline(
        baseline["cpu_us_per_message"],
        color="grey",
        linestyle="--",
        linewidth=1,
        label="no exporter",
    )
    lag.set_xticks(x, labels)
    lag.set_xlabel("trace sampling ratio (OTEL_TRACES_SAMPLER_ARG)")
    lag.set_ylabel("event-loop lag, ms")
    lag.set_title("event-loop lag p99.9 (bars) and p99 (ticks)", fontsize=10)
    lag.legend(fontsize=8)
    cpu.set_xticks(x, labels)
    cpu.set_xlabel("trace sampling ratio (OTEL_TRACES_SAMPLER_ARG)")
    cpu.set_ylabel("process CPU µs per received message")
    cpu.set_title(f"cost per message at {report['plan']['rate']:,} msg/s offered", fontsize=10)
    cpu.legend(fontsize=8)
    figure.suptitle(
        f"export: svc end to end while exporting traces over OTLP/gRPC, "
        f"{report['plan']['window_s']:g} s per configuration — {summary_line(report['machine'])}",
        fontsize=10,
    )
    save_figure(figure, path)


def main(*, quick: bool = False, json_path: Path | None = None) -> int:
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    info = describe(
        "uvloop", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc", "grpcio", "rotel"
    )
    with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
        runs = run(plan, Path(scratch))
    rows = [row(r) for r in runs]
    json_out = json_path or RESULTS / "export.json"
    plot = json_out.with_suffix(".png")
    report = {
        "name": "export",
        "benchmark": "export",
        "title": "loop lag and throughput while exporting traces, collector up and down",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": info,
        "plan": {
            "rate": plan.rate,
            "settle_s": plan.settle_s,
            "window_s": plan.window_s,
            "sampling": list(SAMPLING),
            "protocol": "grpc",
            "metric_export_interval_ms": METRIC_EXPORT_INTERVAL_MS,
        },
        "unit": "µs; CPU % of one core (all threads of the service process)",
        "columns": COLUMNS,
        "rows": rows,
        "notes": [
            f"{plan.rate:,} msg/s offered in every run: a run that cannot keep up receives less",
            (
                "collector up: rotel-agent with the blackhole exporter on 127.0.0.1; "
                "down: a bound loopback port that refuses connections"
            ),
            "ticks traced: sampled by ratio plus slow ticks forced at any ratio",
            *filter(None, [stop_note(runs)]),
        ],
        "plot": plot.name,
        "runs": runs,
    }
    print(f"\nmachine: {summary_line(info)}")
    print(
        f"plan: {plan.rate:,} msg/s offered, {plan.window_s:g} s window per configuration; "
        "OTLP/gRPC, parentbased_traceidratio\n"
    )
    print(format_table(COLUMNS, rows))
    if note := stop_note(runs):
        print(f"note: {note}")
    write_json(report, json_out)
    write_chart(report, plot)
    print(f"\nwrote {json_out} and {plot} in {time.perf_counter() - started:.1f} s")
    return 0
