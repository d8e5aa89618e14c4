"""Kubernetes deployment artefacts: the Dockerfile and the kustomize tree in deploy/k8s/.

No Docker engine and no cluster run here, so nothing is built or applied. What is checked:

* Every overlay is rendered by ``deploy/k8s/render.py`` (a Python implementation of the part
  of kustomize the tree uses). When ``kubectl`` is installed, its built-in kustomize renders
  the same overlay and the two outputs must be equal, object by object (kubectl is run with a
  throw-away kubeconfig naming 127.0.0.1:9, so nothing beyond loopback is ever contacted).
* Every rendered object is validated with ``kubernetes-validate --strict`` (as a library,
  schemas bundled, offline) against Kubernetes 1.30: unknown fields and wrong types fail.
  The Prometheus Operator's PodMonitor/ServiceMonitor are CRDs with no bundled schema;
  they get a structural check here instead (fields, selectors, named ports).
* The invariants that matter at run time: the grace period exceeds the shutdown budget;
  probes hit /livez and /readyz on the health port; the securityContext; no secret value
  anywhere; collector ports and Service names agree with the collector configurations;
  replicas == SVC_SHARD_COUNT and every shard has symbols; every SVC_*/OTEL_* variable is a
  real svc/OpenTelemetry setting and the whole environment is a valid svc configuration.
* The Dockerfile, structurally: stages, non-root user, no build tools in the final stage.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import msgspec
import pytest
import yaml
from opentelemetry.sdk import environment_variables as otel_environment_variables

from svc import otel as svc_otel
from svc.config import Config, build_config
from svc.sharding import shard_of, shard_symbols

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
MONITORING = K8S / "monitoring"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.30"  # bundled by kubernetes-validate; our oldest supported cluster
SHUTDOWN_MARGIN_SECONDS = 5  # run summary, interpreter exit, kubelet timing
CRD_GROUPS = ("monitoring.coreos.com/",)
SVC_UID = 10001
BUILD_TOOLS = ("gcc", "g++", "cc ", "make", "build-essential", "clang", "python3-dev")


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def rendered(name: str) -> list[dict[str, Any]]:
    if name not in _RENDERED:
        _RENDERED[name] = render.build(K8S / "overlays" / name)
    return _RENDERED[name]


@pytest.fixture
def documents(overlay: str) -> list[dict[str, Any]]:
    return rendered(overlay)


# ------------------------------------------------------------------------ helpers
def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (d for d in documents if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet"))


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def svc_statefulset(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return find(documents, "StatefulSet", "svc")


def svc_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(svc_statefulset(documents))["containers"]
    (container,) = (c for c in containers if c["name"] == "svc")
    return dict(container)


def environment(container: dict[str, Any], documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env
    (later wins). A value from ``valueFrom`` is kept as that mapping."""
    configmaps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"only ConfigMap envFrom expected: {source}"
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def literal_environment(documents: list[dict[str, Any]]) -> dict[str, str]:
    """svc's environment without downward-API values and $(VAR) references."""
    env = environment(svc_container(documents), documents)
    return {k: v for k, v in env.items() if isinstance(v, str) and "$(" not in v}


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (number or name) -> the container's port number."""
    if isinstance(port, int):
        return port
    (number,) = (p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)
    return int(number)


def known_svc_variables() -> set[str]:
    """Every SVC_* name svc reads: SVC_<FIELD> and SVC_<SECTION>_<FIELD> (svc/config.py)."""
    names: set[str] = set()
    for field in msgspec.structs.fields(Config):
        section = field.type if isinstance(field.type, type) else None
        if section is not None and issubclass(section, msgspec.Struct):
            for inner in msgspec.structs.fields(section):
                names.add(f"SVC_{field.name}_{inner.name}".upper())
        elif field.name != "strategies":  # a list of tables: TOML only
            names.add(f"SVC_{field.name}".upper())
    return names


def collector_config(documents: list[dict[str, Any]], configmap: str) -> dict[str, Any]:
    data = find(documents, "ConfigMap", configmap)["data"]["config.yaml"]
    config: dict[str, Any] = yaml.safe_load(data)
    return config


def endpoint_port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


# ----------------------------------------------------------------- rendering itself
def test_collector_config_copies_match_the_originals() -> None:
    for original, copied in render.COLLECTOR_CONFIG_COPIES.items():
        assert copied.read_bytes() == original.read_bytes(), (
            f"{copied.relative_to(ROOT)} differs from {original.relative_to(ROOT)}: run "
            "python deploy/k8s/render.py --sync-collector-configs"
        )


def test_renderer_output_equals_kubectl_kustomize(overlay: str, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    # kubectl may try its configured server even for `kustomize`: give it one on loopback
    # where nothing listens, so no real cluster (or any other address) is ever contacted.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: none\n"
        "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: none, context: {cluster: none}}]\n",
        encoding="utf-8",
    )
    environ = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def kubectl_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - kubectl from PATH, this repository's files
            [kubectl, *args], capture_output=True, text=True, check=False, timeout=120, env=environ
        )

    if kubectl_run("kustomize", "--help").returncode != 0:
        pytest.skip("this kubectl has no built-in kustomize")
    result = kubectl_run("kustomize", str(K8S / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    expected = [d for d in yaml.safe_load_all(result.stdout) if d]
    actual = [d for d in yaml.safe_load_all(render.dump(rendered(overlay))) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in actual] == [
        (d["kind"], d["metadata"]["name"]) for d in expected
    ]
    for mine, theirs in zip(actual, expected, strict=True):
        assert mine == theirs, f"{mine['kind']}/{mine['metadata']['name']} differs"


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: x-\n", encoding="utf-8")
    with pytest.raises(render.RenderError, match="namePrefix"):
        render.build(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "generatorOptions: {disableNameSuffixHash: true}\n"
        "configMapGenerator: [{name: c, files: [../outside.yaml]}]\n",
        encoding="utf-8",
    )
    with pytest.raises(render.RenderError, match="load restrictor"):
        render.build(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "configMapGenerator: [{name: c, literals: [A=1]}]\n", encoding="utf-8"
    )
    with pytest.raises(render.RenderError, match="disableNameSuffixHash"):
        render.build(tmp_path)


def test_strategic_merge_orders_lists_like_kustomize() -> None:
    # Observed with kustomize v5: the patch's items first, in its order, then the rest.
    original = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    patch = {"env": [{"name": "C", "value": "3"}, {"name": "A", "value": None}]}
    assert render._strategic_merge(original, patch, "test") == {
        "env": [{"name": "C", "value": "3"}, {"name": "A"}, {"name": "B", "value": "2"}]
    }


def test_cli_renders_an_overlay() -> None:
    result = subprocess.run(  # noqa: S603 - our own interpreter and renderer
        [sys.executable, str(K8S / "render.py"), "dev"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert {"StatefulSet", "DaemonSet", "Deployment", "ConfigMap"} <= kinds


# ------------------------------------------------------------------ schema validation
def test_every_object_validates_strictly(documents: list[dict[str, Any]]) -> None:
    for document in documents:
        name = f"{document['kind']}/{document['metadata']['name']}"
        if document["apiVersion"].startswith(CRD_GROUPS):
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            continue  # checked structurally in test_monitoring_objects_are_well_formed
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{name}: {path}: {error.message}")


# The fields of the Prometheus Operator's monitoring.coreos.com/v1 objects used here (a
# subset of the CRDs' schemas, which kubernetes-validate does not bundle).
_MONITOR_SPEC_FIELDS = {
    "PodMonitor": {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"},
    "ServiceMonitor": {"selector", "endpoints", "namespaceSelector", "jobLabel"},
}
_MONITOR_ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "scheme"}


def _monitors() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(MONITORING.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                yield path, document


def test_monitoring_objects_are_well_formed() -> None:
    everything = rendered("prod")
    monitors = list(_monitors())
    assert {d["kind"] for _, d in monitors} == {"PodMonitor", "ServiceMonitor"}
    for path, monitor in monitors:
        where = f"{path.name}: {monitor['kind']}"
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1", where
        assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}, where
        assert monitor["metadata"].get("namespace"), f"{where}: namespace it selects in"
        spec = monitor["spec"]
        assert set(spec) <= _MONITOR_SPEC_FIELDS[monitor["kind"]], where
        wanted = spec["selector"]["matchLabels"]
        endpoints_key = "podMetricsEndpoints" if monitor["kind"] == "PodMonitor" else "endpoints"
        endpoints = spec[endpoints_key]
        assert endpoints, where
        for endpoint in endpoints:
            assert set(endpoint) <= _MONITOR_ENDPOINT_FIELDS, f"{where}: {endpoint}"
            assert re.fullmatch(r"\d+[smh]", endpoint.get("interval", "15s")), where
        # The selector finds objects in its namespace that have every named port.
        namespace = monitor["metadata"]["namespace"]
        if monitor["kind"] == "PodMonitor":
            pods = [
                w
                for w in workloads(everything)
                if w["metadata"]["namespace"] == namespace
                and wanted.items() <= w["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert pods, f"{where}: selects no pods"
            for pod in pods:
                names = {p["name"] for c in pod_spec(pod)["containers"] for p in c["ports"]}
                assert {e["port"] for e in endpoints} <= names, where
        else:
            services = [
                s
                for s in everything
                if s["kind"] == "Service"
                and s["metadata"]["namespace"] == namespace
                and wanted.items() <= s["metadata"].get("labels", {}).items()
                and any(p["name"] == endpoints[0]["port"] for p in s["spec"]["ports"])
            ]
            assert [s["metadata"]["name"] for s in services] == ["svc-metrics"], where
    # The gateway's prometheus exporter is scraped with honorLabels (job/instance from
    # service.name/service.instance.id), as deploy/prometheus/prometheus.yml does.
    (gateway,) = (m for _, m in monitors if m["metadata"]["name"] == "otel-gateway")
    (exporter,) = (e for e in gateway["spec"]["podMetricsEndpoints"] if e["port"] == "prom-svc")
    assert exporter["honorLabels"] is True


def test_only_prod_needs_the_prometheus_operator() -> None:
    assert not [d for d in rendered("dev") if d["apiVersion"].startswith(CRD_GROUPS)]
    assert [d for d in rendered("prod") if d["apiVersion"].startswith(CRD_GROUPS)]


# ------------------------------------------------------------------------- shutdown
def test_grace_period_exceeds_the_shutdown_budget(documents: list[dict[str, Any]]) -> None:
    env = literal_environment(documents)
    budget = float(env["SVC_EMERGENCY_SHUTDOWN_BUDGET_SECONDS"])
    pod = pod_spec(svc_statefulset(documents))
    grace = pod["terminationGracePeriodSeconds"]
    assert budget + SHUTDOWN_MARGIN_SECONDS <= grace, (
        f"shutdown budget {budget} s + {SHUTDOWN_MARGIN_SECONDS} s margin > grace {grace} s"
    )
    # A process shutting down after a fatal error answers /livez with 503: the kubelet must
    # not kill it before its shutdown path ends.
    liveness = svc_container(documents)["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > budget


def test_svc_is_pid_1_and_gets_sigterm() -> None:
    instructions = final_stage(dockerfile_stages())
    assert instructions["ENTRYPOINT"] == ['["svc"]']  # exec form: no shell in between
    assert instructions["STOPSIGNAL"] == ["SIGTERM"]


# --------------------------------------------------------------------------- probes
def test_probes_hit_livez_and_readyz_on_the_health_port(documents: list[dict[str, Any]]) -> None:
    container = svc_container(documents)
    env = literal_environment(documents)
    health_port = int(env["SVC_TELEMETRY_HEALTH_PORT"])
    # All interfaces: the kubelet probes the pod IP, not loopback.
    assert env["SVC_TELEMETRY_HEALTH_HOST"] == "0.0.0.0"  # noqa: S104 - a manifest value
    expected = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        action = container[probe]["httpGet"]
        assert action["path"] == path, probe
        assert container_port(container, action["port"]) == health_port, probe
    # Start-up (warm-up, reconciliation) gets far longer than liveness would allow.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_metrics_service_targets_the_health_port(documents: list[dict[str, Any]]) -> None:
    container = svc_container(documents)
    health_port = int(literal_environment(documents)["SVC_TELEMETRY_HEALTH_PORT"])
    pod_labels = svc_statefulset(documents)["spec"]["template"]["metadata"]["labels"]
    for name in ("svc", "svc-metrics"):
        service = find(documents, "Service", name)
        assert service["spec"]["selector"].items() <= pod_labels.items(), name
        (port,) = service["spec"]["ports"]
        assert container_port(container, port["targetPort"]) == health_port, name
    assert find(documents, "Service", "svc")["spec"]["clusterIP"] == "None"
    assert svc_statefulset(documents)["spec"]["serviceName"] == "svc"


def test_disruption_budget_covers_the_shards(documents: list[dict[str, Any]]) -> None:
    budget = find(documents, "PodDisruptionBudget", "svc")
    pod_labels = svc_statefulset(documents)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


# ------------------------------------------------------------------------- security
def test_every_pod_runs_restricted(documents: list[dict[str, Any]]) -> None:
    for workload in workloads(documents):
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert not pod.get("hostNetwork"), name
        assert not pod.get("hostPID"), name
        for container in pod["containers"]:
            context = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert context["runAsNonRoot"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert context.get("privileged", False) is False, where
            assert not any("hostPort" in p for p in container.get("ports", [])), where
    for namespace in (d for d in documents if d["kind"] == "Namespace"):
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_svc_pod_matches_the_image_user(documents: list[dict[str, Any]]) -> None:
    pod = pod_spec(svc_statefulset(documents))
    image_user = final_stage(dockerfile_stages())["USER"][-1]
    assert image_user == f"{SVC_UID}:{SVC_UID}"
    context = pod["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (SVC_UID,) * 3
    # Kubernetes would inject SVC_SERVICE_HOST, SVC_METRICS_PORT, ... into svc's prefix.
    assert pod["enableServiceLinks"] is False


def test_writable_paths_are_volumes(documents: list[dict[str, Any]]) -> None:
    statefulset = svc_statefulset(documents)
    container = svc_container(documents)
    env = literal_environment(documents)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    volumes = {v["name"]: v for v in pod_spec(statefulset)["volumes"]}
    # The audit journal (and the run summary) on the pod's own PersistentVolume.
    for variable in ("SVC_AUDIT_PATH", "SVC_SUMMARY_JSON"):
        directory = str(Path(env[variable]).parent)
        assert mounts.get(directory) in claims, f"{variable}={env[variable]}: not on a PVC"
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the pod's /tmp mount
    assert not env.get("SVC_LOG_FILE"), "logs go to stdout in Kubernetes"
    retention = statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def _repository_yaml() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict):
                yield path, document


def test_no_secret_values_anywhere(documents: list[dict[str, Any]]) -> None:
    for path, document in _repository_yaml():
        assert document.get("kind") != "Secret", f"{path}: Secrets are created, not committed"
    assert not [d for d in documents if d["kind"] == "Secret"]
    for workload in workloads(documents):
        for container in pod_spec(workload)["containers"]:
            env = environment(container, documents)
            for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET"):
                assert name not in env, f"{name} must come from a file (a Secret volume)"
            for name, value in env.items():
                if "KEY" in name or "SECRET" in name:
                    assert name.endswith("_FILE"), name
                    assert isinstance(value, str)
                    assert value.startswith("/run/secrets/"), name
    for document in documents:
        if document["kind"] == "ConfigMap":
            text = yaml.safe_dump(document["data"])
            assert not re.search(r"BINANCE_API_(KEY|SECRET)\s*[=:]", text), document


def test_prod_reads_keys_from_the_secret_volume() -> None:
    documents = rendered("prod")
    container = svc_container(documents)
    env = environment(container, documents)
    assert env["SVC_EXCHANGE"] == "binance"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(svc_statefulset(documents))["volumes"]}
    secret_volumes = {n: v["secret"] for n, v in volumes.items() if "secret" in v}
    assert set(secret_volumes) == {"binance-api"}
    secret = secret_volumes["binance-api"]
    assert secret["secretName"] == "svc-binance-api"
    assert secret["defaultMode"] == 0o440  # group-readable: fsGroup 10001
    mount = mounts["binance-api"]
    assert mount["readOnly"] is True
    files = {f"{mount['mountPath']}/{item['path']}" for item in secret["items"]}
    assert {env["BINANCE_API_KEY_FILE"], env["BINANCE_API_SECRET_FILE"]} == files


def test_dev_needs_no_keys() -> None:
    documents = rendered("dev")
    env = environment(svc_container(documents), documents)
    assert env["SVC_EXCHANGE"] == "sim"
    assert not [k for k in env if k.startswith("BINANCE_")]


# ------------------------------------------------------------------------ sharding
def test_replicas_equal_shard_count_and_every_shard_trades(
    documents: list[dict[str, Any]],
) -> None:
    statefulset = svc_statefulset(documents)
    env = literal_environment(documents)
    replicas = statefulset["spec"]["replicas"]
    assert int(env["SVC_SHARD_COUNT"]) == replicas, (
        f"replicas {replicas} != SVC_SHARD_COUNT {env['SVC_SHARD_COUNT']}: change both together"
    )
    assert "SVC_SHARD_INDEX" not in env, "the ordinal in HOSTNAME picks the shard"
    symbols = [s for s in env["SVC_SYMBOLS"].split(",") if s]
    name = statefulset["metadata"]["name"]
    shards = []
    for ordinal in range(replicas):
        index = shard_of(
            shard_index=-1, shard_count=replicas, environ={"HOSTNAME": f"{name}-{ordinal}"}
        )
        assert index == ordinal
        shards.append(set(shard_symbols(symbols, shard_index=index, shard_count=replicas)))
    assert all(shards), f"a shard without symbols: {shards}"
    assert set().union(*shards) == set(symbols)
    assert sum(len(s) for s in shards) == len(set(symbols)), "shards overlap"
    # Shard-deciding settings live in the pod template, not in the ConfigMap (which can
    # change under running pods without a rollout).
    configmap = find(documents, "ConfigMap", "svc-config")["data"]
    in_configmap = {"SVC_SYMBOLS", "SVC_SHARD_COUNT", "SVC_SHARD_INDEX"} & set(configmap)
    assert not in_configmap, f"{in_configmap}: belong in the StatefulSet's pod template"


def test_statefulset_rollout_settings(documents: list[dict[str, Any]]) -> None:
    spec = svc_statefulset(documents)["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"


# ---------------------------------------------------------------- configuration keys
# What svc/otel.py reads for the k8s.* resource attributes, and where the downward API
# takes each from.
_DOWNWARD_FIELDS = {
    svc_otel.ENV_POD_NAME: "metadata.name",
    svc_otel.ENV_POD_NAMESPACE: "metadata.namespace",
    svc_otel.ENV_NODE_NAME: "spec.nodeName",
}


def test_every_variable_is_a_real_setting(documents: list[dict[str, Any]]) -> None:
    known_svc = known_svc_variables()
    known_otel = {n for n in dir(otel_environment_variables) if n.startswith("OTEL_")}
    downward = set(_DOWNWARD_FIELDS)
    config_files = {"BINANCE_API_KEY_FILE", "BINANCE_API_SECRET_FILE"}
    env = environment(svc_container(documents), documents)
    for name in env:
        if name.startswith("SVC_"):
            # svc ignores an unknown SVC_ variable silently: a typo would go unnoticed.
            assert name in known_svc, f"{name} is not a field of svc.config.Config"
        elif name.startswith("OTEL_"):
            assert name in known_otel, f"{name} is not an OpenTelemetry SDK variable"
        else:
            assert name in downward | config_files, f"unexpected variable {name}"
    for name in downward:
        assert env[name] == {"fieldRef": {"fieldPath": _DOWNWARD_FIELDS[name]}}, name


def test_environment_is_a_valid_svc_configuration(documents: list[dict[str, Any]]) -> None:
    env = {k: v for k, v in literal_environment(documents).items() if k.startswith("SVC_")}
    config = build_config(environ=env)  # raises ConfigError naming the field
    assert config.exchange == env["SVC_EXCHANGE"]
    assert config.telemetry.health_port == int(env["SVC_TELEMETRY_HEALTH_PORT"])


def test_configmap_holds_only_svc_and_opentelemetry_settings(
    documents: list[dict[str, Any]],
) -> None:
    data = find(documents, "ConfigMap", "svc-config")["data"]
    assert all(k.startswith(("SVC_", "OTEL_")) for k in data), sorted(data)
    assert not [v for v in data.values() if "$(" in v], "$(VAR) is not expanded in envFrom"


# ----------------------------------------------------------------- OpenTelemetry
def _service_ports(documents: list[dict[str, Any]], name: str, namespace: str) -> set[int]:
    services = [
        d
        for d in documents
        if d["kind"] == "Service"
        and d["metadata"]["name"] == name
        and d["metadata"]["namespace"] == namespace
    ]
    assert len(services) == 1, f"no Service {namespace}/{name}"
    return {int(p["port"]) for p in services[0]["spec"]["ports"]}


def _dns_service(host: str) -> tuple[str, str]:
    """``name.namespace.svc.cluster.local`` -> (name, namespace)."""
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?", host)
    assert match, f"{host} is not a cluster Service DNS name"
    return match.group(1), match.group(2)


def _collector_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(workload)["containers"]
    return dict(container)


def test_collector_ports_match_the_collector_configurations(
    documents: list[dict[str, Any]],
) -> None:
    agent = find(documents, "DaemonSet", "otel-agent")
    gateway = find(documents, "Deployment", "otel-gateway")
    agent_config = collector_config(documents, "otel-agent-config")
    gateway_config = collector_config(documents, "otel-gateway-config")
    for workload, config in ((agent, agent_config), (gateway, gateway_config)):
        name = workload["metadata"]["name"]
        protocols = config["receivers"]["otlp"]["protocols"]
        receiver_ports = {endpoint_port(p["endpoint"]) for p in protocols.values()}
        assert receiver_ports == {4317, 4318}, name
        container = _collector_container(workload)
        ports = {p["containerPort"] for p in container["ports"]}
        # Every port the configuration listens on (all interfaces) is declared, and no
        # declared port is one the collector does not listen on.
        listening = set(receiver_ports)
        if "prometheus" in config.get("exporters", {}):
            listening.add(endpoint_port(config["exporters"]["prometheus"]["endpoint"]))
        for reader in config["service"].get("telemetry", {}).get("metrics", {}).get("readers", []):
            listening.add(int(reader["pull"]["exporter"]["prometheus"]["port"]))
        health = 13133  # health_check, moved from 127.0.0.1 to the pod IP by the args
        assert endpoint_port(config["extensions"]["health_check"]["endpoint"]) == health
        assert any("health_check::endpoint: ${env:POD_IP}:13133" in a for a in container["args"])
        assert ports == listening | {health}, name
        for probe in ("livenessProbe", "readinessProbe"):
            assert container_port(container, container[probe]["httpGet"]["port"]) == health
    # svc -> agent: the node-local Service, on the receiver port of svc's protocol.
    env = literal_environment(documents)
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname is not None
    service, namespace = _dns_service(endpoint.hostname)
    expected_port = {"grpc": 4317, "http/protobuf": 4318}[env["OTEL_EXPORTER_OTLP_PROTOCOL"]]
    assert endpoint.port == expected_port
    assert expected_port in _service_ports(documents, service, namespace)
    agent_service = find(documents, "Service", service)
    assert agent_service["spec"]["internalTrafficPolicy"] == "Local"
    agent_labels = agent["spec"]["template"]["metadata"]["labels"]
    assert agent_service["spec"]["selector"].items() <= agent_labels.items()


def test_agent_reaches_the_gateway_services(documents: list[dict[str, Any]]) -> None:
    exporters = collector_config(documents, "otel-agent-config")["exporters"]
    gateway_labels = find(documents, "Deployment", "otel-gateway")["spec"]["template"]
    resolver = exporters["loadbalancing"]["resolver"]["dns"]
    name, namespace = _dns_service(resolver["hostname"])
    assert int(resolver["port"]) in _service_ports(documents, name, namespace)
    headless = find(documents, "Service", name)
    assert headless["spec"]["clusterIP"] == "None", "the DNS resolver needs pod A records"
    host, _, port = exporters["otlp/gateway"]["endpoint"].rpartition(":")
    name, namespace = _dns_service(host)
    assert int(port) in _service_ports(documents, name, namespace)
    for service in (headless, find(documents, "Service", name)):
        selector = service["spec"]["selector"]
        assert selector.items() <= gateway_labels["metadata"]["labels"].items()


def test_jaeger_endpoint_is_configuration(documents: list[dict[str, Any]]) -> None:
    container = _collector_container(find(documents, "Deployment", "otel-gateway"))
    assert any(
        a.endswith("exporters::otlp/jaeger::endpoint: ${env:JAEGER_OTLP_ENDPOINT}")
        for a in container["args"]
    )
    env = {e["name"]: e for e in container["env"]}
    reference = env["JAEGER_OTLP_ENDPOINT"]["valueFrom"]["configMapKeyRef"]
    endpoints = find(documents, "ConfigMap", reference["name"])["data"]
    host, _, port = endpoints[reference["key"]].rpartition(":")
    assert host
    assert int(port) == 4317
    gateway_config = collector_config(documents, "otel-gateway-config")
    assert "otlp/jaeger" in gateway_config["exporters"]


# ------------------------------------------------------------------------ Dockerfile
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per stage; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, arguments.strip()))
    return stages


def final_stage(stages: list[list[tuple[str, str]]]) -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {}
    for instruction, arguments in stages[-1]:
        instructions.setdefault(instruction, []).append(arguments)
    return instructions


def test_dockerfile_is_multi_stage_slim_and_unprivileged() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder_from = stages[0][0][1]
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-\S+ AS builder", builder_from)
    final = final_stage(stages)
    (base,) = final["FROM"]
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim(-\w+)?", base), base
    arguments = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", arguments, re.MULTILINE)
    # Non-root, numerically (runAsNonRoot can only verify a numeric USER).
    user = final["USER"][-1]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), user
    # Only the virtual environment comes from the builder; no build tools, no sources.
    copies = final.get("COPY", [])
    assert copies == ["--from=builder /opt/svc /opt/svc"], copies
    for command in final.get("RUN", []):
        words = f" {command} "
        for tool in BUILD_TOOLS:
            assert f" {tool.strip()} " not in words, f"{tool} in the final stage: {command}"
        assert "apt-get install" not in command, command
        assert "pip install" not in command, command
    assert final["ENTRYPOINT"] == ['["svc"]']
    assert final["CMD"] == ['["run"]']
    assert final["EXPOSE"] == [str(Config().telemetry.health_port)]
    env_words = " ".join(final["ENV"])
    assert "PYTHONDONTWRITEBYTECODE=1" in env_words
    assert "PATH=/opt/svc/bin:$PATH" in env_words
    defaults = dict(w.split("=", 1) for w in shlex.split(env_words) if "=" in w)
    assert defaults["SVC_AUDIT_PATH"].startswith("/var/lib/svc/")
    assert final["WORKDIR"] == ["/var/lib/svc"]


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "exclude everything, then allow what the build needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "svc"}
    # Everything the Dockerfile COPYs from the context is allowed back in.
    copied = set()
    for stage in dockerfile_stages():
        for instruction, arguments in stage:
            if instruction == "COPY" and not arguments.startswith("--from"):
                copied.update(Path(a).as_posix().rstrip("/") for a in arguments.split()[:-1])
    assert copied <= allowed, copied - allowed
