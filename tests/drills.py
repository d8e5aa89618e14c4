"""The incident-drill harness: ``svc run`` with one fault, a real Prometheus, the shipped rules.

A drill (``tests/test_drills.py``, ``docs/drills.md``) starts

* ``svc run`` on the embedded simulator, its health server on a free loopback port
  (``SVC_TELEMETRY_HEALTH_PORT``), logs and status lines into files of the drill's directory;
* Prometheus from Debian's ``prometheus`` package on another free loopback port, scraping
  svc's ``/metrics`` every second and evaluating **drill copies** of
  ``deploy/prometheus/*-rules.yaml`` every second,

injects one fault (``POST /_sim/faults`` on the simulator, or a ``drill-*`` strategy from
``svc.drill`` in the configuration) and polls ``/api/v1/alerts`` until the expected alerts
fire. Both processes are stopped on the way out, whatever happened.

**The drill copies** differ from the shipped files in durations only: every duration
literal - ``for:``, a group's ``interval:`` and every range selector ``[...]`` - is divided
by ``TIME_SCALE`` (20), with a floor of one second (``for: 5m`` -> ``for: 15s``, ``[5m]`` ->
``[15s]``, ``[1h]`` -> ``[3m]``, ``interval: 30s`` -> ``interval: 1500ms``). Expressions,
thresholds, labels and annotations are byte-for-byte the shipped ones, so a firing drill
proves the shipped expression against the metric names svc really exposes.

``python -m tests.drills run ARGS...`` is ``svc run ARGS...`` with the ``drill-*`` strategy
kinds registered, for as long as ``svc.strategy`` does not register them itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = ("recording-rules.yaml", "alert-rules.yaml")
LOOPBACK = "127.0.0.1"
TIME_SCALE = 20
"""Every duration in the drill copies of the rule files is this many times shorter."""
FIRING_TIMEOUT = 60.0
"""Seconds from the fault to the expected alert's ``firing`` state."""
DRILL_KINDS = ("drill-slow", "drill-gc", "drill-signal")


class DrillError(AssertionError):
    """A drill could not run or its expectation failed; the message carries the evidence."""


# ------------------------------------------------------------------------ the rule rewrite
_UNIT_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}
_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_PART = re.compile(r"(\d+)(ms|[smhdwy])")
_RANGE = re.compile(rf"\[({_DURATION})(?::({_DURATION})?)?\]")
_SETTING = re.compile(rf"^(\s*(?:for|interval):\s*)({_DURATION})(\s*(?:#.*)?)$", re.MULTILINE)


def shorten(duration: str, scale: int = TIME_SCALE) -> str:
    """A Prometheus duration divided by ``scale``, at least 1 s: ``"5m"`` -> ``"15s"``."""
    if not re.fullmatch(_DURATION, duration):
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    total_ms = sum(int(number) * _UNIT_MS[unit] for number, unit in _PART.findall(duration))
    short_ms = max(1000, total_ms // scale)
    for unit in ("h", "m", "s"):
        if short_ms % _UNIT_MS[unit] == 0:
            return f"{short_ms // _UNIT_MS[unit]}{unit}"
    return f"{short_ms}ms"


def drill_rules(text: str, scale: int = TIME_SCALE) -> str:
    """The rule file ``text`` with every ``for:``, ``interval:`` and ``[range]`` shortened."""

    def range_selector(match: re.Match[str]) -> str:
        window, step = match.group(1), match.group(2)
        if ":" not in match.group(0):
            return f"[{shorten(window, scale)}]"
        return f"[{shorten(window, scale)}:{shorten(step, scale) if step else ''}]"

    text = _SETTING.sub(lambda m: m.group(1) + shorten(m.group(2), scale) + m.group(3), text)
    return _RANGE.sub(range_selector, text)


def write_drill_rules(directory: Path) -> list[Path]:
    """Drill copies of the shipped rule files in ``directory``; returns their paths."""
    written = []
    for name in RULE_FILES:
        path = directory / name
        path.write_text(drill_rules((RULES_DIR / name).read_text(encoding="utf-8")))
        written.append(path)
    return written


def critical_alerts() -> set[str]:
    """Names of the shipped alerts with a ``severity: critical`` rule."""
    groups = yaml.safe_load((RULES_DIR / "alert-rules.yaml").read_text())["groups"]
    return {
        rule["alert"]
        for group in groups
        for rule in group["rules"]
        if "alert" in rule and rule.get("labels", {}).get("severity") == "critical"
    }


# ------------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def http_json(
    url: str, *, body: Mapping[str, Any] | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """GET (or POST ``body`` as JSON) a loopback URL; (status, decoded JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")  # noqa: S310 - loopback URLs built by this module
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - idem
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL; always reaps the process."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(10)


def _clean_environment() -> dict[str, str]:
    """The caller's environment without svc, OpenTelemetry or Binance settings."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SVC_", "OTEL_", "BINANCE_"))
    }


def prometheus_binary() -> str:
    found = os.environ.get("PROMETHEUS") or shutil.which("prometheus")
    if not found:
        raise DrillError(
            "prometheus is not installed: the drills need it (Debian/Ubuntu: `apt-get install "
            "prometheus`, which provides /usr/bin/prometheus) or PROMETHEUS=/path/to/prometheus"
        )
    return found


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, answer = http_json(f"{self.url}/api/v1/{path}{query}")
        if status != 200 or not isinstance(answer, dict) or answer.get("status") != "success":
            raise DrillError(f"Prometheus {path} answered {status}: {answer}")
        return answer["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing)."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        """The first sample of an instant query, ``None`` when it returns nothing."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@contextlib.contextmanager
def prometheus(directory: Path, *, target: str) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port scraping ``target`` with the drill rules."""
    directory.mkdir(parents=True, exist_ok=True)
    write_drill_rules(directory)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": list(RULE_FILES),
        "scrape_configs": [{"job_name": "svc", "static_configs": [{"targets": [target]}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = directory / "prometheus.log"
    # fmt: off
    command = [
        prometheus_binary(),
        "--config.file", str(directory / "prometheus.yml"),
        "--storage.tsdb.path", str(directory / "data"),
        "--web.listen-address", f"{LOOPBACK}:{port}",
        "--log.level", "warn",
    ]
    # fmt: on
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - the prometheus binary and our own files
            command, stdout=sink, stderr=subprocess.STDOUT, env=_clean_environment()
        )
    running = Prometheus(f"http://{LOOPBACK}:{port}", process, log)
    try:
        deadline = time.monotonic() + 20.0
        while True:
            with contextlib.suppress(OSError):
                if http_json(f"{running.url}/-/ready", timeout=1.0)[0] == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise DrillError(f"Prometheus did not become ready:\n{_tail(log)}")
            time.sleep(0.1)
        yield running
    finally:
        _stop(process, grace=10.0)


def drill_kinds_registered() -> bool:
    """Whether ``svc run`` itself knows the ``drill-*`` strategy kinds."""
    from svc.strategy import STRATEGY_KINDS  # noqa: PLC0415 - only the harness needs it

    return all(kind in STRATEGY_KINDS for kind in DRILL_KINDS)


def svc_command(config: Path) -> list[str]:
    """``svc run --config FILE``; through this module's runner until the kinds are wired."""
    entry_point = Path(sys.executable).with_name("svc")
    if drill_kinds_registered() and entry_point.is_file():
        return [str(entry_point), "run", "--config", str(config)]
    return [sys.executable, "-m", "tests.drills", "run", "--config", str(config)]


@dataclass
class Service:
    """A running ``svc run``: its health port, embedded simulator and log files."""

    process: subprocess.Popen[bytes]
    health_url: str
    stdout: Path
    stderr: Path
    sim_url: str = ""
    ready_at: float = 0.0
    """``time.monotonic()`` when ``/readyz`` first answered 200."""

    def evidence(self) -> str:
        return (
            f"--- svc stderr (status lines) ---\n{_tail(self.stderr, 15)}\n"
            f"--- svc stdout (logs) ---\n{_tail(self.stdout, 25)}"
        )

    def set_faults(self, **changes: Any) -> None:
        status, answer = http_json(f"{self.sim_url}/_sim/faults", body=changes)
        if status != 200:
            raise DrillError(f"the simulator refused faults {changes}: {status} {answer}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the log names the embedded simulator and ``/readyz`` answers 200."""
        deadline = time.monotonic() + timeout
        while not self.sim_url or not self.ready_at:
            if self.process.poll() is not None:
                raise DrillError(f"svc exited with {self.process.returncode}\n{self.evidence()}")
            if time.monotonic() > deadline:
                raise DrillError(f"svc was not ready within {timeout:.0f} s\n{self.evidence()}")
            if not self.sim_url:
                self.sim_url = _simulator_url(self.stdout)
            elif not self.ready_at:
                with contextlib.suppress(OSError):
                    if http_json(f"{self.health_url}/readyz", timeout=1.0)[0] == 200:
                        self.ready_at = time.monotonic()
            time.sleep(0.1)


def _simulator_url(log: Path) -> str:
    """The embedded simulator's URL from svc's JSON log lines, ``""`` until it is logged."""
    if not log.exists():
        return ""
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            message = str(json.loads(line).get("message", ""))
            if message.startswith("embedded simulator on "):
                return message.removeprefix("embedded simulator on ").strip()
    return ""


@contextlib.contextmanager
def service(
    directory: Path, *, config: str, health_port: int, environment: Mapping[str, str]
) -> Iterator[Service]:
    """``svc run --config`` with ``config`` (TOML text) until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "drill.toml"
    config_path.write_text(config)
    env = {
        **_clean_environment(),
        "SVC_TELEMETRY_HEALTH_HOST": LOOPBACK,
        "SVC_TELEMETRY_HEALTH_PORT": str(health_port),
        **environment,
    }
    stdout, stderr = directory / "svc.stdout.jsonl", directory / "svc.stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter or svc entry point
            svc_command(config_path), stdout=out, stderr=err, env=env, cwd=ROOT
        )
    running = Service(process, f"http://{LOOPBACK}:{health_port}", stdout, stderr)
    try:
        yield running
    finally:
        _stop(process, grace=20.0)


# ------------------------------------------------------------------------------ watching
@dataclass
class AlertWatch:
    """What Prometheus reported while a drill ran; times in seconds after the fault."""

    fault_at: float
    pending: dict[str, float] = field(default_factory=dict)
    firing: dict[str, float] = field(default_factory=dict)
    """First ``firing`` per ``alertname/severity``."""
    last: list[dict[str, Any]] = field(default_factory=list)

    def fired(self, alert: str) -> float | None:
        times = [t for key, t in self.firing.items() if key.split("/")[0] == alert]
        return min(times) if times else None

    def observe(self, alerts: Sequence[dict[str, Any]], now: float) -> None:
        self.last = list(alerts)
        for alert in alerts:
            labels = alert["labels"]
            key = f"{labels['alertname']}/{labels.get('severity', '')}"
            seen = self.firing if alert["state"] == "firing" else self.pending
            seen.setdefault(key, round(now - self.fault_at, 1))

    def summary(self) -> str:
        active = sorted(
            f"{a['labels']['alertname']}({a['labels'].get('severity')}) {a['state']} "
            f"value={a.get('value')}"
            for a in self.last
        )
        return f"firing (s after fault): {self.firing}; pending: {self.pending}; now: {active}"


def watch_alerts(
    prom: Prometheus,
    *,
    expected: Sequence[str],
    forbidden: set[str],
    fault_at: float,
    timeout: float = FIRING_TIMEOUT,
) -> AlertWatch:
    """Poll ``/api/v1/alerts`` until every ``expected`` alert fires (or ``timeout`` passes).

    Raises at once when a critical alert named in ``forbidden`` fires.
    """
    watch = AlertWatch(fault_at)
    while True:
        now = time.monotonic()
        watch.observe(prom.alerts(), now)
        unrelated = {
            key for key in watch.firing if key.endswith("/critical") and key[:-9] in forbidden
        }
        if unrelated:
            raise DrillError(f"unrelated critical alerts fired: {unrelated}; {watch.summary()}")
        if all(watch.fired(name) is not None for name in expected):
            return watch
        if now - fault_at > timeout:
            return watch
        time.sleep(0.5)


def wait_for_series(prom: Prometheus, expr: str, *, seconds: float, timeout: float = 30.0) -> None:
    """Until ``expr`` has had samples for ``seconds`` (``count_over_time`` of ``up`` style)."""
    deadline = time.monotonic() + timeout
    wanted = int(seconds)
    while True:
        count = prom.scalar(f"count_over_time(({expr})[{wanted + 1}s:1s])")
        if count is not None and count >= wanted:
            return
        if time.monotonic() > deadline:
            raise DrillError(f"{expr} did not have {wanted} s of samples within {timeout:.0f} s")
        time.sleep(0.5)


# ------------------------------------------------------------------------------ the runner
def register_drill_kinds() -> None:
    """Add ``svc.drill``'s kinds to ``svc.strategy.STRATEGY_KINDS`` unless they are there."""
    from svc import strategy  # noqa: PLC0415
    from svc.drill import DRILL_KINDS as KINDS  # noqa: PLC0415

    registry = strategy.STRATEGY_KINDS
    if not isinstance(registry, dict):
        raise TypeError("svc.strategy.STRATEGY_KINDS is not a dict; cannot register drill kinds")
    for name, kind in KINDS.items():
        # DrillKind has the fields of strategy._Kind (build, required, defaults).
        registry.setdefault(name, kind)


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] != "run":
        sys.stderr.write("usage: python -m tests.drills run [svc run options]\n")
        return 2
    register_drill_kinds()
    from svc.cli import main as svc_main  # noqa: PLC0415

    return svc_main(list(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
