"""Operations artefacts: collector configuration, Prometheus rules, Grafana, runbooks.

What is checked, and with what:

* Prometheus: ``promtool check config`` (deploy/prometheus/prometheus.yml), ``promtool check
  rules`` and ``promtool test rules`` (the unit tests in ``deploy/prometheus/tests/``), run as
  subprocesses. promtool reads local files only for these commands (no network). These
  tests **fail** (never skip) when promtool is missing: install Debian's ``prometheus``
  package or point ``PROMTOOL`` at a binary.
* Every alert: severity, summary, description and a ``runbook_url`` whose page exists under
  ``runbooks/`` with every section and a roadmap step from DESIGN.md's migration table.
* Every metric in ``svc/names.py`` (converted to its Prometheus name) is read by at least one
  alert, recording rule or dashboard expression.
* Grafana: every dashboard parses, every panel and target names a provisioned data source,
  and every dashboard expression is valid PromQL (checked by promtool as a recording rule).
* The OpenTelemetry Collector files: no collector binary is available here (the contrib
  distribution is a download, not a package), so these structural tests stand in for
  ``otelcol-contrib validate``: pipelines only reference defined components, memory_limiter
  comes first, debug extensions listen on loopback only.

YAML is read with PyYAML when it is installed and otherwise with ``_MiniYaml`` below, a
reader for the block-style subset these files use (the project does not depend on PyYAML).
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:  # optional: the project does not depend on PyYAML
    import yaml as _pyyaml
except ImportError:  # pragma: no cover - depends on the environment
    _pyyaml = None

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERT_RULES = PROMETHEUS / "alert-rules.yaml"
RECORDING_RULES = PROMETHEUS / "recording-rules.yaml"
PROMTOOL_TESTS = sorted((PROMETHEUS / "tests").glob("*.yaml"))
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RUNBOOKS = ROOT / "runbooks"
COLLECTOR = ROOT / "otel-collector.yaml"
COLLECTOR_AGENT = ROOT / "deploy" / "otel-collector-gateway.yaml"
NAMES = ROOT / "svc" / "names.py"

RUNBOOK_URL_PREFIX = "https://github.com/svc/svc/blob/main/"
RUNBOOK_SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Roadmap step")

# DESIGN.md, "The migration roadmap, made measurable": (phase, step) as written there.
ROADMAP_STEPS = (
    (1, "guard or remove hot-path debug logging"),
    (1, "QueueHandler + QueueListener logging"),
    (1, "websocket callback -> queue hand-off (no blocking callbacks)"),
    (1, "no imports on the hot path"),
    (2, "slotted dataclasses"),
    (2, "sync handlers via `asyncio.to_thread`"),
    (2, "audit writer off the loop"),
    (3, "performance metrics (this catalogue, GC pauses, loop lag)"),
    (3, "emergency position handling on fatal error / SIGTERM"),
    (3, "guideline updates (async patterns, migration roadmap, profiling)"),
)

# Metrics of svc/names.py that no rule or dashboard may read yet, with the reason. Empty:
# svc.order.roundtrip, svc.audit.write.duration and svc.shutdown.duration are not emitted
# yet, but rules and panels for them exist already and simply show no data until they are.
UNUSED_METRICS_ALLOWED: dict[str, str] = {}

PROVISIONED_DATASOURCE_UIDS = {"svc-prometheus", "svc-jaeger"}


# ------------------------------------------------------------------------------------ YAML
class _MiniYaml:
    """Block-style YAML: mappings, sequences (``- item``), ``|``/``>`` block scalars,
    quoted and plain scalars, one-line flow sequences of scalars, ``{}``. No anchors,
    tags, multi-line plain scalars or nested flow collections (it raises on what it cannot
    read rather than guessing)."""

    _BLOCK_STYLES = ("|", "|-", "|+", ">", ">-", ">+")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.i = 0

    def parse(self) -> Any:
        head = self._peek()
        if head is None:
            return None
        value = self._block(head[0])
        rest = self._peek()
        if rest is not None:
            raise ValueError(f"line {self.i + 1}: unexpected content {rest[1]!r}")
        return value

    def _peek(self) -> tuple[int, str] | None:
        """The next significant line as (indent, content without comment)."""
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            content = _strip_comment(raw).strip()
            if content and content != "---":
                if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                    raise ValueError(f"line {self.i + 1}: tab in indentation")
                return len(raw) - len(raw.lstrip(" ")), content
            self.i += 1
        return None

    def _block(self, indent: int) -> Any:
        head = self._peek()
        assert head is not None
        return self._sequence(indent) if _is_item(head[1]) else self._mapping(indent)

    def _sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (head := self._peek()) is not None and head[0] == indent and _is_item(head[1]):
            rest = head[1][1:]
            if not rest.strip():
                self.i += 1
                nxt = self._peek()
                items.append(self._block(nxt[0]) if nxt and nxt[0] > indent else None)
                continue
            column = indent + 1 + len(rest) - len(rest.lstrip(" "))
            rest = rest.strip()
            if _is_key_line(rest):  # "- key: value" opens a mapping at the item's column
                self.lines[self.i] = " " * column + rest
                items.append(self._mapping(column))
            else:
                self.i += 1
                items.append(_scalar(rest))
        self._no_deeper(indent)
        return items

    def _mapping(self, indent: int) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        while (head := self._peek()) is not None and head[0] == indent and not _is_item(head[1]):
            if not _is_key_line(head[1]):
                raise ValueError(f"line {self.i + 1}: expected 'key: value', got {head[1]!r}")
            key, value = _split_key(head[1])
            if key in mapping:
                raise ValueError(f"line {self.i + 1}: duplicate key {key!r}")
            self.i += 1
            if value in self._BLOCK_STYLES:
                mapping[key] = self._block_scalar(indent, value)
            elif value:
                mapping[key] = _scalar(value)
            else:
                nxt = self._peek()
                nested = nxt is not None and (
                    nxt[0] > indent or (nxt[0] == indent and _is_item(nxt[1]))
                )
                mapping[key] = self._block(nxt[0]) if nested and nxt else None
        self._no_deeper(indent)
        return mapping

    def _no_deeper(self, indent: int) -> None:
        head = self._peek()
        if head is not None and head[0] > indent:
            raise ValueError(f"line {self.i + 1}: unexpected indentation")

    def _block_scalar(self, parent_indent: int, style: str) -> str:
        body: list[str] = []
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            if raw.strip() and len(raw) - len(raw.lstrip(" ")) <= parent_indent:
                break
            body.append(raw)
            self.i += 1
        while body and not body[-1].strip():
            body.pop()
        if not body:
            return ""
        cut = min(len(line) - len(line.lstrip(" ")) for line in body if line.strip())
        lines = [line[cut:] for line in body]
        if style.startswith("|"):
            text = "\n".join(lines)
        else:  # folded: lines join with a space, blank lines become newlines
            text = re.sub(r"(?<!\n)\n(?!\n)", " ", "\n".join(lines))
            text = re.sub(r"\n\n", "\n", text)
        return text if style.endswith("-") else text + "\n"


def _strip_comment(line: str) -> str:
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _is_key_line(content: str) -> bool:
    if content[0] in "'\"":
        end = content.find(content[0], 1)
        return end > 0 and content[end + 1 :].lstrip().startswith(":")
    if content[0] in "[{":
        return False
    return ": " in content or content.endswith(":")


def _split_key(content: str) -> tuple[str, str]:
    if content[0] in "'\"":
        end = content.find(content[0], 1)
        return content[1:end], content[end + 1 :].lstrip()[1:].strip()
    at = content.find(": ")
    if at < 0:
        return content[:-1].strip(), ""
    return content[:at].strip(), content[at + 2 :].strip()


def _scalar(text: str) -> Any:
    if text.startswith('"'):
        return json.loads(text)  # YAML's double-quoted escapes match JSON's for these files
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise ValueError(f"unterminated string {text!r}")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        inner = text[1:-1].strip()
        if not text.endswith("]") or "[" in inner or "{" in inner:
            raise ValueError(f"unsupported flow sequence {text!r}")
        return [_scalar(part.strip()) for part in _split_flow(inner)] if inner else []
    if text.startswith("{"):
        if text.replace(" ", "") == "{}":
            return {}
        raise ValueError(f"flow mappings are not supported: {text!r}")
    if text.startswith(("&", "*", "!", "|", ">")):
        raise ValueError(f"unsupported YAML feature in {text!r}")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~"):
        return None
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", text):
        return float(text)
    return text


def _split_flow(inner: str) -> Iterator[str]:
    part, quote = "", ""
    for char in inner:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            yield part
            part = ""
            continue
        part += char
    yield part


def load_yaml(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if _pyyaml is not None:
        return _pyyaml.safe_load(text)
    return _MiniYaml(text).parse()


def test_mini_yaml_reads_the_subset_the_ops_files_use() -> None:
    text = """\
# comment
groups:
  - name: g   # trailing comment
    rules:
      - alert: A
        expr: |
          sum(rate(x_total[5m]))
            > 0
        labels:
          severity: "critical"
        annotations:
          summary: 'it''s "on" # not a comment'
      - record: r
        expr: up == 1
key:
- 1
- 2.5
- [a, "b, c", 3]
empty: []
nothing:
mapping: {}
folded: >-
  one
  two
"""
    assert _MiniYaml(text).parse() == {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {
                        "alert": "A",
                        "expr": "sum(rate(x_total[5m]))\n  > 0\n",
                        "labels": {"severity": "critical"},
                        "annotations": {"summary": 'it\'s "on" # not a comment'},
                    },
                    {"record": "r", "expr": "up == 1"},
                ],
            }
        ],
        "key": [1, 2.5, ["a", "b, c", 3]],
        "empty": [],
        "nothing": None,
        "mapping": {},
        "folded": "one two",
    }
    with pytest.raises(ValueError, match="indentation"):
        _MiniYaml("a:\n  b: 1\n    c: 2\n").parse()


@pytest.mark.parametrize(
    "path",
    [
        ALERT_RULES,
        RECORDING_RULES,
        COLLECTOR,
        COLLECTOR_AGENT,
        *PROMTOOL_TESTS,
        PROMETHEUS / "prometheus.yml",
        GRAFANA / "datasources.yaml",
        GRAFANA / "dashboards.yaml",
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_mini_yaml_reads_every_ops_file(path: Path) -> None:
    """The fallback reader must read every file the way PyYAML does (when it is present)."""
    mini = _MiniYaml(path.read_text(encoding="utf-8")).parse()
    assert isinstance(mini, dict)
    assert mini
    if _pyyaml is not None:
        assert mini == _pyyaml.safe_load(path.read_text(encoding="utf-8"))


# -------------------------------------------------------------------------------- promtool
def _promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.fail(
            "promtool is not installed: the Prometheus rule checks cannot run. Install it "
            "(Debian/Ubuntu: `apt-get install prometheus`, which provides /usr/bin/promtool) "
            "or set PROMTOOL=/path/to/promtool.",
            pytrace=False,
        )
    return found


def _run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A minimal environment: no proxies or credentials leak in; promtool's rule commands
    # read local files only.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(cwd)}
    return subprocess.run(  # noqa: S603 - argv is promtool and this module's own file names
        [_promtool(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_promtool_check_rules() -> None:
    result = _run_promtool("check", "rules", ALERT_RULES.name, RECORDING_RULES.name, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2, result.stdout


def test_promtool_check_config() -> None:
    """The sample Prometheus configuration, and the rule files it loads."""
    result = _run_promtool("check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    assert PROMTOOL_TESTS, "no promtool tests in deploy/prometheus/tests/"
    args = [str(p.relative_to(PROMETHEUS)) for p in PROMTOOL_TESTS]
    result = _run_promtool("test", "rules", *args, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(PROMTOOL_TESTS), result.stdout


# ---------------------------------------------------------------------------- rule content
def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules(ALERT_RULES) if "alert" in rule]


def _alert_names() -> list[str]:
    return sorted({rule["alert"] for rule in _alerts()})


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    alerts = _alerts()
    assert len(_alert_names()) >= 14
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        url = annotations["runbook_url"]
        assert url == f"{RUNBOOK_URL_PREFIX}runbooks/{name}.md", (name, url)
        assert (ROOT / url.removeprefix(RUNBOOK_URL_PREFIX)).is_file(), url


def test_every_alert_has_a_firing_promtool_test_and_every_record_is_tested() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    tested_exprs: list[str] = []
    for path in PROMTOOL_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test") or []:
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
            tested_exprs += [check["expr"] for check in case.get("promql_expr_test") or []]
    names = set(_alert_names())
    assert names - fired == set(), "alerts without a firing test case"
    assert len(quiet & names) >= 5, "a few alerts need a non-firing case too"
    records = {rule["record"] for rule in _rules(RECORDING_RULES)}
    read_by_alerts = {r for r in records if any(r in a["expr"] for a in _alerts())}
    untested = {r for r in records if not any(r in e for e in tested_exprs)} - read_by_alerts
    assert untested == set(), "recording rules without a promql_expr_test (or an alert test)"


# -------------------------------------------------------------------------------- runbooks
def _sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## +(.+?)\s*$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("alert", _alert_names())
def test_runbook_page_has_every_section_and_a_roadmap_step(alert: str) -> None:
    page = (RUNBOOKS / f"{alert}.md").read_text(encoding="utf-8")
    assert page.startswith(f"# {alert}\n")
    sections = _sections(page)
    for title in RUNBOOK_SECTIONS:
        assert sections.get(title, "").strip(), f"{alert}: section {title!r} missing or empty"
    diagnosis = sections["Diagnosis"]
    assert "```promql" in diagnosis, f"{alert}: no PromQL query"
    assert "Service `svc`, Operation `tick`, Tags" in diagnosis, f"{alert}: no Jaeger search"
    assert "py-spy dump --pid $(pgrep -f 'svc run')" in diagnosis
    assert "py-spy top" in diagnosis
    assert re.search(r"kubectl .*logs .*\| jq", diagnosis), f"{alert}: no log query"
    roadmap = sections["Roadmap step"]
    steps = [f"Phase {phase} — {step}" for phase, step in ROADMAP_STEPS]
    assert any(step in roadmap for step in steps), f"{alert}: no step of the roadmap named"


def test_runbook_index_lists_every_alert_and_no_orphan_pages() -> None:
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    alerts = set(_alert_names())
    for alert in alerts:
        assert f"[{alert}.md]({alert}.md)" in index, alert
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == alerts


# --------------------------------------------------------------------- metric coverage
def _svc_metrics() -> dict[str, tuple[str, str]]:
    """OTel name -> (kind, unit) from the constants and docstrings of svc/names.py."""
    body = ast.parse(NAMES.read_text(encoding="utf-8")).body
    metrics: dict[str, tuple[str, str]] = {}
    for statement, following in itertools.pairwise(body):
        if not isinstance(statement, ast.AnnAssign | ast.Assign):
            continue
        target = statement.target if isinstance(statement, ast.AnnAssign) else statement.targets[0]
        value = statement.value
        if not (
            isinstance(target, ast.Name)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
            and value.value.startswith("svc.")
            and not target.id.startswith("ATTR_")
        ):
            continue
        doc = following.value.value if isinstance(following, ast.Expr) else None
        assert isinstance(doc, str), f"{target.id}: metric constant without its kind docstring"
        kind = re.match(r"(histogram|counter|gauge)\b", doc)
        assert kind, f"{target.id}: docstring must start with histogram, counter or gauge"
        unit = re.match(r"(?:histogram|gauge|counter),\s*(\w+)\b", doc)
        metrics[value.value] = (kind.group(1), unit.group(1) if unit else "")
    return metrics


def _prometheus_names(name: str, kind: str, unit: str) -> list[str]:
    """The series the Prometheus exporter makes of an OTel metric (see svc/otel.py)."""
    base = name.replace(".", "_") + {"s": "_seconds"}.get(unit, "")
    if kind == "counter":
        return [f"{base}_total"]
    if kind == "gauge":
        return [base]
    return [f"{base}_bucket", f"{base}_count", f"{base}_sum"]


def _dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARDS]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for dashboard in _dashboards()
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_names_py_declares_the_catalogue() -> None:
    metrics = _svc_metrics()
    assert metrics["svc.stage.duration"] == ("histogram", "s")
    assert metrics["svc.orders"] == ("counter", "")
    assert metrics["svc.queue.depth"] == ("gauge", "")
    assert len(metrics) >= 20


def test_every_svc_metric_is_read_by_a_rule_or_a_dashboard() -> None:
    exprs = [r["expr"] for r in _rules(ALERT_RULES) + _rules(RECORDING_RULES)]
    exprs += _dashboard_exprs()
    text = "\n".join(exprs)
    unused = {}
    for name, (kind, unit) in _svc_metrics().items():
        series = _prometheus_names(name, kind, unit)
        if not any(re.search(rf"\b{re.escape(s)}\b", text) for s in series):
            unused[name] = series
    assert set(unused) == set(UNUSED_METRICS_ALLOWED), unused


# -------------------------------------------------------------------------------- Grafana
def test_datasources_are_provisioned_with_fixed_uids_and_exemplar_links() -> None:
    sources = {s["uid"]: s for s in load_yaml(GRAFANA / "datasources.yaml")["datasources"]}
    assert set(sources) == PROVISIONED_DATASOURCE_UIDS
    assert sources["svc-prometheus"]["type"] == "prometheus"
    assert sources["svc-jaeger"]["type"] == "jaeger"
    links = sources["svc-prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert {(link["name"], link["datasourceUid"]) for link in links} == {("trace_id", "svc-jaeger")}
    providers = load_yaml(GRAFANA / "dashboards.yaml")["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"]


def test_dashboards_are_valid_and_use_provisioned_datasources() -> None:
    assert {p.stem for p in DASHBOARDS} >= {
        "svc-overview",
        "svc-hot-path",
        "svc-runtime",
        "svc-feed-exchange",
        "svc-telemetry",
    }
    uids = set()
    for path, dashboard in zip(DASHBOARDS, _dashboards(), strict=True):
        assert isinstance(dashboard["schemaVersion"], int), path
        assert dashboard["uid"] not in uids, path
        assert dashboard["title"], path
        uids.add(dashboard["uid"])
        for variable in dashboard.get("templating", {}).get("list", []):
            if "datasource" in variable:
                assert variable["datasource"]["uid"] in PROVISIONED_DATASOURCE_UIDS, path
        ids = [panel["id"] for panel in _panels(dashboard["panels"])]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        queries = 0
        for panel in _panels(dashboard["panels"]):
            if panel["type"] == "row":
                continue
            where = f"{path.name}: {panel['title']}"
            assert panel["datasource"]["uid"] in PROVISIONED_DATASOURCE_UIDS, where
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                source = target.get("datasource", panel["datasource"])
                assert source["uid"] in PROVISIONED_DATASOURCE_UIDS, where
                if source["uid"] == "svc-prometheus":
                    assert target["expr"].strip(), where
                else:
                    assert target["queryType"] == "search", where
                    assert target["service"] == "svc", where
                queries += 1
        assert queries >= 3, path


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no expression checker, so each expression becomes a recording rule."""
    substitutions = {"$__rate_interval": "5m", "$instance": ".*", "$stage": ".*"}
    rules = []
    for index, raw in enumerate(_dashboard_exprs()):
        expr = raw
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown dashboard variable in {expr!r}"
        rules.append({"record": f"dashboard:expr_{index}", "expr": expr})
    (tmp_path / "dashboards.rules.json").write_text(
        json.dumps({"groups": [{"name": "dashboards", "rules": rules}]})  # JSON is YAML
    )
    result = _run_promtool("check", "rules", "dashboards.rules.json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# ------------------------------------------------------------------------ the collector
def _check_collector(config: dict[str, Any]) -> dict[str, list[str]]:
    """Structural checks both collector tiers must pass; returns the pipelines' processors."""
    service = config["service"]
    defined = {
        kind: set(config.get(kind) or {})
        for kind in ("receivers", "processors", "exporters", "extensions")
    }
    used: dict[str, set[str]] = {kind: set() for kind in defined}
    processors_by_pipeline = {}
    for name, pipeline in service["pipelines"].items():
        assert name.split("/")[0] in {"traces", "metrics", "logs"}, name
        for kind in ("receivers", "processors", "exporters"):
            components = pipeline.get(kind) or []
            assert set(components) <= defined[kind], (name, kind, components)
            used[kind] |= set(components)
        assert pipeline["receivers"], name
        assert pipeline["exporters"], name
        assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter not first"
        assert pipeline["processors"][-1] == "batch", f"{name}: batch should come last"
        processors_by_pipeline[name] = pipeline["processors"]
    used["extensions"] = set(service.get("extensions") or [])
    assert used["extensions"] <= defined["extensions"]
    for kind, components in defined.items():
        assert components == used[kind], f"defined but unused {kind}: {components - used[kind]}"
    for name, extension in config["extensions"].items():
        assert extension["endpoint"].startswith("127.0.0.1:"), f"{name} must listen on loopback"
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert set(config["extensions"]) == {"health_check", "pprof", "zpages"}
    return processors_by_pipeline


def test_collector_gateway_pipeline() -> None:
    config = load_yaml(COLLECTOR)
    processors = _check_collector(config)
    assert processors == {
        "traces": ["memory_limiter", "tail_sampling", "batch"],
        "metrics": ["memory_limiter", "batch"],
    }
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp/jaeger"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] == 5
    assert policies["probabilistic"]["probabilistic"]["sampling_percentage"] == 10
    jaeger = config["exporters"]["otlp/jaeger"]
    assert jaeger["endpoint"] == "jaeger-collector:4317"
    assert jaeger["tls"]["insecure"] is True
    prometheus = config["exporters"]["prometheus"]
    assert prometheus["endpoint"] == "0.0.0.0:8889"
    assert prometheus["resource_to_telemetry_conversion"]["enabled"] is True


def test_collector_agent_routes_traces_by_trace_id() -> None:
    config = load_yaml(COLLECTOR_AGENT)
    _check_collector(config)
    assert "tail_sampling" not in config["processors"], "sampling belongs to the gateway"
    balancer = config["exporters"]["loadbalancing"]
    assert balancer["routing_key"] == "traceID"
    assert "otlp" in balancer["protocol"]
    assert balancer["resolver"]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]
