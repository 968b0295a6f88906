"""A small, exact renderer for the kustomize subset that deploy/k8s uses (tests only).

`kubectl kustomize` is the source of truth. This module produces the same resources for the
features below and refuses everything else, so a manifest that starts using another feature
fails loudly here instead of being rendered wrongly:

- `resources`: YAML files (one or more documents) and directories holding a
  kustomization.yaml; no remote bases.
- `namespace`: set as metadata.namespace on every resource (every kind allowed here is
  namespaced, and none of them carries namespace references kustomize would also rewrite).
- `images`: name, newName, newTag, digest, applied to the `image` of every element of any
  `containers` or `initContainers` list, as kustomize's image transformer does.
- `patches`: JSON 6902 only (ops add, remove, replace, test), inline or from a file, with a
  target of kind and name (and optionally group and version). Unlike kustomize, a target that
  matches nothing is an error.

Transformers run in kustomize's order for these fields: patches, then namespace, then images.
YAML is read strictly: duplicate keys and YAML 1.1-only booleans (yes, no, on, off) are
errors, since the Go YAML parser kubectl uses would read them differently. The output is in
resource order (kustomize sorts by kind; nothing in the tests depends on order).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_FIELDS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
)
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# Namespaced kinds without namespace references of their own (no RoleBinding subjects...).
ALLOWED_KINDS = frozenset({
    "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "Job", "CronJob",
    "PodDisruptionBudget", "NetworkPolicy", "Ingress",
})
IMAGE_FIELDS = frozenset({"name", "newName", "newTag", "digest"})
PATCH_FIELDS = frozenset({"path", "patch", "target"})
TARGET_FIELDS = frozenset({"group", "version", "kind", "name"})
PLAIN_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
# kustomize's IsImageMatched: the name, then an optional tag, then an optional digest.
TAG_AND_DIGEST = r"(:[a-zA-Z0-9_.{}-]*)?(@sha256:[a-zA-Z0-9_.{}-]*)?"


class RenderError(Exception):
    """The kustomization uses something this renderer does not reproduce exactly."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and YAML 1.1-only booleans."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise RenderError(f"duplicate key {key!r} at {key_node.start_mark}")
        result[key] = loader.construct_object(value_node, deep=True)
    return result


def _construct_bool(loader: StrictLoader, node: yaml.ScalarNode) -> bool:
    value = loader.construct_scalar(node)
    if value.lower() not in ("true", "false"):
        raise RenderError(f"ambiguous boolean {value!r} at {node.start_mark}; quote it")
    return value.lower() == "true"


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def load_documents(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream, read strictly."""
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]


def render(directory: Path) -> list[Resource]:
    """Render the kustomization in `directory`, like `kubectl kustomize directory`."""
    return _render(directory.resolve(), stack=())


def _kustomization_file(directory: Path) -> Path:
    found = [directory / name for name in KUSTOMIZATION_NAMES if (directory / name).is_file()]
    if len(found) != 1:
        raise RenderError(f"{directory}: expected exactly one kustomization file, found {found}")
    return found[0]


def _render(directory: Path, stack: tuple[Path, ...]) -> list[Resource]:
    if directory in stack:
        raise RenderError(f"cycle through {directory}")
    path = _kustomization_file(directory)
    docs = load_documents(path.read_text())
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError(f"{path}: must hold one mapping")
    kustomization: dict[str, Any] = docs[0]
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise RenderError(f"{path}: fields this renderer does not reproduce: {sorted(unknown)}")
    if (kustomization.get("apiVersion"), kustomization.get("kind")) != (
        "kustomize.config.k8s.io/v1beta1", "Kustomization"
    ):
        raise RenderError(f"{path}: not a kustomize.config.k8s.io/v1beta1 Kustomization")

    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        if not isinstance(entry, str) or "://" in entry or entry.startswith("github.com"):
            raise RenderError(f"{path}: only local resources are supported, not {entry!r}")
        target = (directory / entry).resolve()
        if target.is_dir():
            resources.extend(_render(target, (*stack, directory)))
        elif target.is_file():
            resources.extend(_load_resources(target))
        else:
            raise RenderError(f"{path}: resource {entry!r} does not exist")
    _check_unique(resources, path)

    for patch in kustomization.get("patches", []):
        _apply_patch(resources, patch, directory)
    namespace = kustomization.get("namespace")
    if namespace is not None:
        for resource in resources:
            resource.setdefault("metadata", {})["namespace"] = namespace
    for image in kustomization.get("images", []):
        _apply_image(resources, image, path)
    _check_unique(resources, path)
    return resources


def _load_resources(path: Path) -> list[Resource]:
    resources = []
    for doc in load_documents(path.read_text()):
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= set(doc):
            raise RenderError(f"{path}: every document needs apiVersion, kind and metadata")
        if doc["kind"] not in ALLOWED_KINDS:
            raise RenderError(f"{path}: kind {doc['kind']} is not one this renderer handles")
        resources.append(doc)
    return resources


def _identity(resource: Resource) -> tuple[str, str, str, str]:
    meta = resource["metadata"]
    return (resource["apiVersion"], resource["kind"], meta.get("namespace", ""), meta["name"])


def _check_unique(resources: list[Resource], path: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for resource in resources:
        ident = _identity(resource)
        if ident in seen:
            raise RenderError(f"{path}: resource {ident} appears twice")
        seen.add(ident)


# ---- patches (JSON 6902) ----

def _apply_patch(resources: list[Resource], entry: dict[str, Any], directory: Path) -> None:
    if not isinstance(entry, dict) or set(entry) - PATCH_FIELDS or "target" not in entry:
        raise RenderError(f"patch {entry!r}: only path/patch with a target is supported")
    if ("path" in entry) == ("patch" in entry):
        raise RenderError(f"patch {entry!r}: give exactly one of path and patch")
    text = entry["patch"] if "patch" in entry else (directory / entry["path"]).read_text()
    docs = load_documents(text)
    if len(docs) != 1 or not isinstance(docs[0], list):
        raise RenderError(f"patch {entry!r}: only JSON 6902 patches (a list of ops) are supported")
    target = entry["target"]
    if set(target) - TARGET_FIELDS or not {"kind", "name"} <= set(target):
        raise RenderError(f"patch target {target!r}: give kind and name (group, version)")
    if not PLAIN_NAME.fullmatch(target["name"]):
        # kustomize reads target names as anchored regular expressions; a plain name is
        # the one case where that equals an exact match.
        raise RenderError(f"patch target name {target['name']!r} must be a plain name")
    matched = [r for r in resources if _selects(target, r)]
    if not matched:
        raise RenderError(f"patch target {target!r} matches no resource")
    for resource in matched:
        for op in docs[0]:
            apply_operation(resource, op)


def _selects(target: dict[str, str], resource: Resource) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    return (
        target["kind"] == resource["kind"]
        and target["name"] == resource["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise RenderError(f"{token!r} is not an array index")
    index = int(token)
    if index > len(container) - (0 if allow_end else 1):
        raise RenderError(f"array index {index} out of range")
    return index


def _parent(document: Any, tokens: list[str]) -> Any:
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise RenderError(f"path member {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise RenderError(f"cannot descend into {node!r} at {token!r}")
    return node


def apply_operation(document: Resource, op: dict[str, Any]) -> None:
    """Apply one RFC 6902 operation (add, remove, replace, test) to `document` in place."""
    kind = op.get("op")
    if kind not in ("add", "remove", "replace", "test"):
        raise RenderError(f"JSON patch op {kind!r} is not supported")
    expected = {"op", "path"} | ({"value"} if kind != "remove" else set())
    if set(op) != expected:
        raise RenderError(f"JSON patch op {op!r} must have exactly {sorted(expected)}")
    tokens = _pointer(op["path"])
    parent = _parent(document, tokens)
    last = tokens[-1]
    value = copy.deepcopy(op.get("value"))
    if isinstance(parent, dict):
        if kind != "add" and last not in parent:
            raise RenderError(f"{kind}: {op['path']} does not exist")
        if kind in ("add", "replace"):
            parent[last] = value
        elif kind == "remove":
            del parent[last]
        elif parent[last] != value:
            raise RenderError(f"test failed at {op['path']}: {parent[last]!r} != {value!r}")
    elif isinstance(parent, list):
        index = _index(parent, last, allow_end=kind == "add")
        if kind == "add":
            parent.insert(index, value)
        elif kind == "replace":
            parent[index] = value
        elif kind == "remove":
            del parent[index]
        elif parent[index] != value:
            raise RenderError(f"test failed at {op['path']}: {parent[index]!r} != {value!r}")
    else:
        raise RenderError(f"{op['path']}: parent is not an object or array")


# ---- images ----

def _apply_image(resources: list[Resource], image: dict[str, str], path: Path) -> None:
    if not isinstance(image, dict) or set(image) - IMAGE_FIELDS or "name" not in image:
        raise RenderError(f"{path}: images entry {image!r} is not supported")
    for resource in resources:
        for container in containers_in(resource):
            if "image" in container:
                container["image"] = set_image(container["image"], image)


def containers_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every element of every `containers` / `initContainers` list anywhere in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from containers_in(value)
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (item for item in value if isinstance(item, dict))
    elif isinstance(node, list):
        for item in node:
            yield from containers_in(item)


def split_image(value: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; tag and digest without their separator."""
    rest, _, digest = value.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1:], digest
    return rest, "", digest


def set_image(value: str, image: dict[str, str]) -> str:
    """The image reference after one kustomize `images` entry (unchanged if it does not match)."""
    if not re.fullmatch(re.escape(image["name"]) + TAG_AND_DIGEST, value):
        return value
    name, tag, digest = split_image(value)
    name = image.get("newName") or name
    new_tag, new_digest = image.get("newTag", ""), image.get("digest", "")
    if new_tag and new_digest:
        tag, digest = new_tag, new_digest
    elif new_tag:
        tag, digest = new_tag, ""
    elif new_digest:
        tag, digest = "", new_digest
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# ---- helpers for the tests ----

def pod_template(resource: Resource) -> dict[str, Any] | None:
    """The pod template of a Deployment, Job or CronJob; None for other kinds."""
    kind = resource["kind"]
    if kind in ("Deployment", "Job"):
        template: dict[str, Any] = resource["spec"]["template"]
        return template
    if kind == "CronJob":
        template = resource["spec"]["jobTemplate"]["spec"]["template"]
        return template
    return None


def workloads(resources: list[Resource]) -> list[Resource]:
    """The resources that run pods."""
    return [r for r in resources if pod_template(r) is not None]


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    """The one resource of this kind and name."""
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"{kind}/{name}: found {len(found)}")
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects these labels."""
    return all(labels.get(key) == value for key, value in selector.items())


# ---- this repository's manifests ----

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = {"base": K8S / "base", "production": K8S / "overlays" / "production"}
SECRET_TEMPLATE = K8S / "base" / "secret.example.yaml"


def rendered(overlay: str) -> list[Resource]:
    """A fresh rendering of one of this repository's kustomizations (`base`, `production`)."""
    return render(OVERLAYS[overlay])


def secret_template() -> Resource:
    """The placeholder Secret the manifests read their secrets from."""
    [secret] = load_documents(SECRET_TEMPLATE.read_text())
    assert isinstance(secret, dict)
    return secret
