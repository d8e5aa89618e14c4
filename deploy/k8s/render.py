"""Render a kustomization under deploy/k8s/ as ``kustomize build`` would, without kustomize.

    python deploy/k8s/render.py dev > dev.yaml        # or prod, or a directory
    python deploy/k8s/render.py --sync-collector-configs

The kustomizations stay valid for real kustomize (``kubectl apply -k``, ``kubectl kustomize``);
this renderer implements only the part of kustomize they use, and refuses anything else
rather than guessing:

* ``resources``: YAML files (several documents each) and directories with a kustomization;
* ``configMapGenerator`` with ``literals``, ``files`` (``key=path`` or ``path``) and ``envs``,
  ``behavior`` create/merge/replace, and ``generatorOptions.disableNameSuffixHash: true``
  (required: the renderer computes no hash suffix, so names match kustomize's exactly);
* ``patches`` (file ``path`` or inline ``patch``, ``target`` by group/version/kind/name/
  namespace, names matched exactly, not as regular expressions): a YAML list is a JSON 6902
  patch (add, remove, replace), a mapping a strategic-merge patch (maps merge, ``null``
  deletes, lists of containers/env/volumes/volumeMounts/... merge by their Kubernetes merge
  key with the patch's items first, other lists are replaced; ``$patch`` directives and
  ``ports`` lists are refused);
* ``namespace``, ``labels`` (``pairs`` on ``metadata.labels`` only: no selectors, no
  templates), ``images`` (``newName``, ``newTag``, ``digest``);
* transformers in kustomize's order (patches, namespace, labels, images) and its "legacy"
  output order (Namespace, ServiceAccount, ConfigMap, Service, ..., then other kinds).

Files are read only from inside the kustomization's directory, like kustomize's default load
restrictor; other kustomization directories may be anywhere. tests/test_k8s.py compares the
output with ``kubectl kustomize`` when kubectl is installed.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]
OVERLAYS = HERE / "overlays"

# The collector configurations are copied next to their kustomization (see
# base/otel/kustomization.yaml): original in the repository -> copy.
COLLECTOR_CONFIG_COPIES: dict[Path, Path] = {
    REPOSITORY / "otel-collector.yaml": HERE / "base" / "otel" / "otel-collector.yaml",
    REPOSITORY / "deploy" / "otel-collector-gateway.yaml": (
        HERE / "base" / "otel" / "otel-collector-gateway.yaml"
    ),
}

Document = dict[str, Any]

_KUSTOMIZATION_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "labels",
        "images",
        "configMapGenerator",
        "generatorOptions",
        "patches",
    }
)
_GENERATOR_KEYS = frozenset({"name", "namespace", "behavior", "literals", "files", "envs"})
_PATCH_KEYS = frozenset({"path", "patch", "target"})
_TARGET_KEYS = frozenset({"group", "version", "kind", "name", "namespace"})
_IMAGE_KEYS = frozenset({"name", "newName", "newTag", "digest"})

# kustomize's legacy resource order (api/resid/gvk.go): these kinds first, in this order,
# the two webhook kinds last, every other kind in between; ties by group_version_kind,
# then namespace, then name.
_ORDER_FIRST = (
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
)
_ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")

# Kinds without a namespace: the namespace transformer leaves them alone.
_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "APIService",
        "IngressClass",
        "RuntimeClass",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
)

# Strategic merge: lists merged element by element on this key (the Kubernetes API's
# patchMergeKey); any other list is replaced by the patch's. "ports" is deliberately
# absent: its merge key depends on where it is (containerPort in a container, port in a
# Service), which this renderer does not track, so a patch that touches ports is refused.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
}
_REFUSED_LISTS = frozenset({"ports"})


class RenderError(Exception):
    """The kustomization uses something this renderer does not implement, or is wrong."""


# --------------------------------------------------------------------------- loading
def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RenderError(f"{path}: cannot read: {error.strerror}") from None


def _load_documents(path: Path) -> list[Document]:
    documents = []
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if document is None:
            continue
        if not isinstance(document, dict) or "kind" not in document:
            raise RenderError(f"{path}: every document must be a Kubernetes object")
        documents.append(document)
    return documents


def _inside(root: Path, relative: str) -> Path:
    """``root/relative``, refused outside ``root`` as kustomize's load restrictor does."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise RenderError(
            f"{root}: {relative!r} is outside the kustomization's directory; kustomize's "
            "load restrictor refuses it (copy the file in, see base/otel/kustomization.yaml)"
        )
    return path


def _kustomization(directory: Path) -> dict[str, Any]:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    spec = _load_yaml(path) or {}
    unknown = set(spec) - _KUSTOMIZATION_KEYS
    if unknown:
        raise RenderError(f"{path}: not implemented by this renderer: {sorted(unknown)}")
    if spec.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{path}: kind {spec['kind']!r} is not implemented")
    return dict(spec)


# ---------------------------------------------------------------------------- build
def build(directory: Path) -> list[Document]:
    """The objects ``kustomize build directory`` prints, in its order."""
    return sorted(_build(directory.resolve()), key=_legacy_order)


def _build(directory: Path) -> list[Document]:
    spec = _kustomization(directory)
    documents: list[Document] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            documents.extend(_build(target))
        else:
            documents.extend(_load_documents(_inside(directory, entry)))
    _generate_configmaps(directory, spec, documents)
    for patch in spec.get("patches", []):
        _apply_patch(directory, patch, documents)
    if "namespace" in spec:
        for document in documents:
            if document["kind"] not in _CLUSTER_SCOPED:
                document.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for labels in spec.get("labels", []):
        _add_labels(labels, documents)
    for image in spec.get("images", []):
        _set_image(image, documents)
    _check_unique(directory, documents)
    return documents


def _check_unique(directory: Path, documents: list[Document]) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for document in documents:
        key = _identity(document)
        if key in seen:
            raise RenderError(f"{directory}: {key} is defined twice")
        seen.add(key)


def _identity(document: Document) -> tuple[str, str, str, str]:
    metadata = document.get("metadata", {})
    return (
        document.get("apiVersion", ""),
        document["kind"],
        metadata.get("namespace", ""),
        metadata.get("name", ""),
    )


def _legacy_order(document: Document) -> tuple[int, str, str, str]:
    kind = document["kind"]
    if kind in _ORDER_FIRST:
        priority = _ORDER_FIRST.index(kind) - len(_ORDER_FIRST)
    elif kind in _ORDER_LAST:
        priority = 1 + _ORDER_LAST.index(kind)
    else:
        priority = 0
    api_version = document.get("apiVersion", "")
    group, _, version = api_version.rpartition("/")
    gvk = "_".join((group or "~G", version or "~V", kind))
    metadata = document.get("metadata", {})
    return priority, gvk, metadata.get("namespace", ""), metadata.get("name", "")


# ----------------------------------------------------------------------- generators
def _generate_configmaps(directory: Path, spec: dict[str, Any], documents: list[Document]) -> None:
    generators = spec.get("configMapGenerator", [])
    if not generators:
        return
    options = spec.get("generatorOptions", {})
    if options != {"disableNameSuffixHash": True}:
        raise RenderError(
            f"{directory}: configMapGenerator needs generatorOptions exactly "
            "{disableNameSuffixHash: true} (this renderer computes no name hash)"
        )
    for generator in generators:
        unknown = set(generator) - _GENERATOR_KEYS
        if unknown:
            raise RenderError(f"{directory}: configMapGenerator: not implemented: {unknown}")
        data = dict(_generator_data(directory, generator))
        name = generator["name"]
        behavior = generator.get("behavior", "create")
        existing = [
            d
            for d in documents
            if d["kind"] == "ConfigMap"
            and d["metadata"]["name"] == name
            and (
                "namespace" not in generator
                or d["metadata"].get("namespace") == generator["namespace"]
            )
        ]
        if behavior == "create":
            if existing:
                raise RenderError(f"{directory}: ConfigMap {name} exists; use behavior: merge")
            metadata: dict[str, Any] = {"name": name}
            if "namespace" in generator:
                metadata["namespace"] = generator["namespace"]
            documents.append(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
            )
        elif behavior in ("merge", "replace"):
            if len(existing) != 1:
                raise RenderError(f"{directory}: behavior {behavior}: no single ConfigMap {name}")
            merged = dict(existing[0].get("data", {})) if behavior == "merge" else {}
            merged.update(data)
            existing[0]["data"] = merged
        else:
            raise RenderError(f"{directory}: ConfigMap {name}: unknown behavior {behavior!r}")
    for document in documents:
        if document["kind"] == "ConfigMap" and "data" in document:
            document["data"] = dict(sorted(document["data"].items()))


def _generator_data(directory: Path, generator: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for literal in generator.get("literals", []):
        key, separator, value = str(literal).partition("=")
        if not separator:
            raise RenderError(f"{directory}: literal {literal!r} is not KEY=VALUE")
        # kustomize strips one pair of matching quotes around a literal's value.
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        yield key, value
    for entry in generator.get("files", []):
        key, separator, relative = str(entry).partition("=")
        if not separator:
            key, relative = Path(entry).name, entry
        yield key, _inside(directory, relative).read_text(encoding="utf-8")
    for relative in generator.get("envs", []):
        yield from _env_file(_inside(directory, relative))


def _env_file(path: Path) -> Iterator[tuple[str, str]]:
    """KEY=value lines; blank lines and ``#`` comments skipped; values taken verbatim."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, separator, value = line.lstrip().partition("=")
        if not separator:
            # kustomize would take the value from its own environment: never wanted here.
            raise RenderError(f"{path}:{number}: expected KEY=value")
        yield key, value


# -------------------------------------------------------------------------- patches
def _apply_patch(directory: Path, entry: dict[str, Any], documents: list[Document]) -> None:
    unknown = set(entry) - _PATCH_KEYS
    if unknown or ("path" in entry) == ("patch" in entry):
        raise RenderError(f"{directory}: a patch needs exactly one of path/patch, and: {unknown}")
    if "path" in entry:
        source = str(entry["path"])
        patch = _load_yaml(_inside(directory, source))
    else:
        source = "inline patch"
        patch = yaml.safe_load(entry["patch"])
    target = entry.get("target")
    if target is None:
        if not isinstance(patch, dict):
            raise RenderError(f"{directory}: {source}: a JSON 6902 patch needs a target")
        target = {
            "kind": patch["kind"],
            "name": patch["metadata"]["name"],
            **(
                {"namespace": patch["metadata"]["namespace"]}
                if "namespace" in patch.get("metadata", {})
                else {}
            ),
        }
    unknown = set(target) - _TARGET_KEYS
    if unknown:
        raise RenderError(f"{directory}: {source}: target selectors not implemented: {unknown}")
    matched = [d for d in documents if _matches(d, target)]
    if not matched:
        raise RenderError(f"{directory}: {source}: no object matches {target}")
    for document in matched:
        if isinstance(patch, list):
            _json6902(document, patch, source)
        elif isinstance(patch, dict):
            merged = _strategic_merge(document, _patch_body(patch), source)
            document.clear()
            document.update(merged)
        else:
            raise RenderError(f"{directory}: {source}: neither a mapping nor a list of operations")


def _patch_body(patch: dict[str, Any]) -> dict[str, Any]:
    """The patch without its identity (kustomize applies it to the target's identity)."""
    body = copy.deepcopy(patch)
    body.pop("apiVersion", None)
    body.pop("kind", None)
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("name", None)
        metadata.pop("namespace", None)
        if not metadata:
            del body["metadata"]
    return body


def _matches(document: Document, target: dict[str, Any]) -> bool:
    group, _, version = document.get("apiVersion", "").rpartition("/")
    metadata = document.get("metadata", {})
    actual = {
        "group": group,
        "version": version,
        "kind": document["kind"],
        "name": metadata.get("name", ""),
        "namespace": metadata.get("namespace", ""),
    }
    return all(actual[key] == value for key, value in target.items())


def _strategic_merge(original: Any, patch: Any, where: str) -> Any:
    if not isinstance(patch, dict) or not isinstance(original, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(original)
    for key, value in patch.items():
        if key.startswith("$"):
            raise RenderError(f"{where}: directive {key} is not implemented")
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, list) and key in _REFUSED_LISTS:
            raise RenderError(f"{where}: patching {key!r} lists is not implemented")
        elif isinstance(value, list) and key in _MERGE_KEYS:
            merged[key] = _merge_list(merged.get(key) or [], value, _MERGE_KEYS[key], where)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _strategic_merge(merged[key], value, f"{where}: {key}")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_list(
    original: list[Any], patch: list[Any], merge_key: str, where: str
) -> list[dict[str, Any]]:
    """The patch's items in its order (merged with the original item of the same key),
    then the original items the patch does not mention, as kustomize orders them."""
    by_key = {item[merge_key]: item for item in original}
    merged, mentioned = [], set()
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise RenderError(f"{where}: every item needs its merge key {merge_key!r}")
        key = item[merge_key]
        mentioned.add(key)
        merged.append(_strategic_merge(by_key.get(key, {}), item, f"{where}: {key}"))
    merged.extend(copy.deepcopy(item) for item in original if item[merge_key] not in mentioned)
    return merged


def _json6902(document: Document, operations: list[dict[str, Any]], where: str) -> None:
    for operation in operations:
        op, path = operation.get("op"), operation.get("path", "")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if not parts:
            raise RenderError(f"{where}: {op} on the whole document is not implemented")
        parent: Any = document
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        try:
            if op in ("add", "replace") and isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op == "add":
                    parent.insert(index, copy.deepcopy(operation["value"]))
                else:
                    parent[index] = copy.deepcopy(operation["value"])
            elif op == "add":
                parent[last] = copy.deepcopy(operation["value"])
            elif op == "replace":
                if last not in parent:
                    raise KeyError(last)
                parent[last] = copy.deepcopy(operation["value"])
            elif op == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            else:
                raise RenderError(f"{where}: JSON 6902 op {op!r} is not implemented")
        except (KeyError, IndexError, ValueError) as error:
            raise RenderError(f"{where}: {op} {path}: no such location ({error})") from None


# ------------------------------------------------------------------- transformers
def _add_labels(spec: dict[str, Any], documents: list[Document]) -> None:
    if (
        set(spec) - {"pairs", "includeSelectors", "includeTemplates"}
        or spec.get("includeSelectors")
        or spec.get("includeTemplates")
    ):
        raise RenderError(f"labels: only pairs on metadata.labels are implemented, got {spec}")
    for document in documents:
        labels = document.setdefault("metadata", {}).setdefault("labels", {})
        labels.update({str(k): str(v) for k, v in spec["pairs"].items()})


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _split_image(image: str) -> tuple[str, str]:
    """``registry:5000/name:tag@digest`` -> (name, ``:tag@digest``)."""
    name, at, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon:] + at + digest
    return name, at + digest


def _set_image(spec: dict[str, Any], documents: list[Document]) -> None:
    unknown = set(spec) - _IMAGE_KEYS
    if unknown:
        raise RenderError(f"images: not implemented: {unknown}")
    for document in documents:
        for container in _containers(document.get("spec")):
            name, suffix = _split_image(str(container.get("image", "")))
            if name != spec["name"]:
                continue
            if "digest" in spec:
                suffix = "@" + str(spec["digest"])
            elif "newTag" in spec:
                suffix = ":" + str(spec["newTag"])
            container["image"] = str(spec.get("newName", name)) + suffix


# ------------------------------------------------------------------------- output
class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (the collector configurations) as ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def dump(documents: Iterable[Document]) -> str:
    text: str = yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000
    )
    return text


def overlay_path(name: str) -> Path:
    """An overlay's name (dev, prod) or any directory with a kustomization.yaml."""
    candidate = OVERLAYS / name
    return candidate if candidate.is_dir() else Path(name)


def sync_collector_configs() -> list[Path]:
    """Copy the collector configurations next to their kustomization; the changed copies."""
    changed = []
    for original, copied in COLLECTOR_CONFIG_COPIES.items():
        if not copied.is_file() or copied.read_bytes() != original.read_bytes():
            shutil.copyfile(original, copied)
            changed.append(copied)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", nargs="?", help="dev, prod, or a kustomization directory")
    parser.add_argument(
        "--sync-collector-configs",
        action="store_true",
        help="copy otel-collector.yaml and deploy/otel-collector-gateway.yaml into base/otel/",
    )
    args = parser.parse_args(argv)
    if args.sync_collector_configs:
        for path in sync_collector_configs():
            print(f"updated {path.relative_to(REPOSITORY)}", file=sys.stderr)
        if args.overlay is None:
            return 0
    if args.overlay is None:
        parser.error("name an overlay (dev, prod) or a kustomization directory")
    try:
        sys.stdout.write(dump(build(overlay_path(args.overlay))))
    except RenderError as error:
        print(f"render: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
