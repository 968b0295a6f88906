"""The test-only kustomize renderer (tests/k8s_render.py) does exactly what kustomize does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.k8s_render import (
    RenderError,
    apply_operation,
    containers_in,
    load_documents,
    render,
    set_image,
)

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    metadata:
      annotations:
        example.com/a: "1"
    spec:
      initContainers:
        - name: init
          image: app:1.0
      containers:
        - name: app
          image: app:1.0
        - name: sidecar
          image: other:2.0
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


@pytest.mark.parametrize(
    ("image", "entry", "expected"),
    [
        ("app:1.0", {"name": "app", "newTag": "2.0"}, "app:2.0"),
        ("app", {"name": "app", "newName": "reg.io/team/app"}, "reg.io/team/app"),
        ("app:1.0", {"name": "app", "newName": "reg.io/app", "newTag": "3"}, "reg.io/app:3"),
        ("app:1.0", {"name": "app", "digest": "sha256:ab"}, "app@sha256:ab"),
        ("app:1.0@sha256:aa", {"name": "app", "newTag": "2"}, "app:2"),
        ("app:1.0", {"name": "app", "newTag": "2", "digest": "sha256:cd"}, "app:2@sha256:cd"),
        ("reg.io:5000/app:1.0", {"name": "reg.io:5000/app", "newTag": "2"}, "reg.io:5000/app:2"),
        ("apple:1.0", {"name": "app", "newTag": "2"}, "apple:1.0"),
        ("team/app:1.0", {"name": "app", "newTag": "2"}, "team/app:1.0"),
    ],
)
def test_images_follow_kustomize_rules(image: str, entry: dict[str, str], expected: str) -> None:
    """An `images` entry rewrites only exact name matches; a new tag drops the old digest."""
    assert set_image(image, entry) == expected


def test_images_reach_containers_and_init_containers_at_any_depth() -> None:
    """Every container list anywhere in a resource is visited, as kustomize's walk does."""
    doc = load_documents(DEPLOYMENT)[0]
    names = sorted(c["name"] for c in containers_in(doc))
    assert names == ["app", "init", "sidecar"]


def test_json_patch_operations() -> None:
    """add, replace, remove and test behave as RFC 6902 says, including ~1 escapes."""
    doc = load_documents(DEPLOYMENT)[0]
    apply_operation(doc, {"op": "add", "path": "/spec/replicas", "value": 3})
    apply_operation(doc, {"op": "replace", "path": "/spec/replicas", "value": 4})
    annotations = "/spec/template/metadata/annotations"
    apply_operation(doc, {"op": "add", "path": f"{annotations}/example.com~1b", "value": "2"})
    apply_operation(doc, {"op": "remove", "path": f"{annotations}/example.com~1a"})
    containers = "/spec/template/spec/containers"
    apply_operation(doc, {"op": "add", "path": f"{containers}/-", "value": {"name": "last"}})
    apply_operation(doc, {"op": "add", "path": f"{containers}/0", "value": {"name": "first"}})
    apply_operation(doc, {"op": "test", "path": f"{containers}/1/name", "value": "app"})
    spec = doc["spec"]
    assert spec["replicas"] == 4
    assert spec["template"]["metadata"]["annotations"] == {"example.com/b": "2"}
    assert [c["name"] for c in spec["template"]["spec"]["containers"]] == [
        "first", "app", "sidecar", "last",
    ]


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/spec/missing", "value": 1},
        {"op": "remove", "path": "/spec/missing"},
        {"op": "test", "path": "/kind", "value": "Service"},
        {"op": "add", "path": "/spec/template/spec/containers/9", "value": {}},
        {"op": "move", "from": "/kind", "path": "/x"},
        {"op": "add", "path": "/no/such/parent", "value": 1},
    ],
)
def test_json_patch_refuses_what_kustomize_would_refuse(op: dict[str, object]) -> None:
    """Missing paths, failed tests, out-of-range indexes and unsupported ops raise."""
    doc = load_documents(DEPLOYMENT)[0]
    with pytest.raises(RenderError):
        apply_operation(doc, op)


def test_overlay_applies_patches_then_namespace_then_images(tmp_path: Path) -> None:
    """A base plus an overlay renders with the overlay's patch, namespace and image."""
    write(tmp_path, {
        "base/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\nresources: [deployment.yaml]\n",
        "base/deployment.yaml": DEPLOYMENT,
        "prod/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\nnamespace: prod\nresources: [../base]\n"
        "images: [{name: app, newName: reg.io/app, newTag: '9'}]\n"
        "patches:\n- target: {kind: Deployment, name: app}\n"
        "  patch: '[{op: add, path: /spec/replicas, value: 2}]'\n",
    })
    [deployment] = render(tmp_path / "prod")
    assert deployment["metadata"]["namespace"] == "prod"
    assert deployment["spec"]["replicas"] == 2
    images = [c["image"] for c in containers_in(deployment)]
    assert sorted(images) == ["other:2.0", "reg.io/app:9", "reg.io/app:9"]


@pytest.mark.parametrize(
    "kustomization",
    [
        "namePrefix: x-\nresources: [d.yaml]\n",
        "resources: [d.yaml]\ncommonLabels: {a: b}\n",
        "resources: [https://github.com/example/base]\n",
        "resources: [d.yaml]\npatches:\n- target: {kind: Deployment, name: nope}\n"
        "  patch: '[{op: add, path: /spec/replicas, value: 2}]'\n",
        "resources: [d.yaml]\npatches:\n- target: {kind: Deployment, name: app}\n"
        "  patch: 'spec: {replicas: 2}'\n",
        "resources: [d.yaml, d.yaml]\n",
    ],
)
def test_unsupported_or_wrong_kustomizations_are_refused(
    tmp_path: Path, kustomization: str
) -> None:
    """Features outside the subset, remote bases, empty targets and duplicates raise."""
    write(tmp_path, {
        "kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        f"kind: Kustomization\n{kustomization}",
        "d.yaml": DEPLOYMENT,
    })
    with pytest.raises(RenderError):
        render(tmp_path)


@pytest.mark.parametrize("text", ["a: 1\na: 2\n", "enabled: yes\n", "on: push\n"])
def test_yaml_is_read_strictly(text: str) -> None:
    """Duplicate keys and YAML 1.1-only booleans are errors, not silent guesses."""
    with pytest.raises(RenderError):
        load_documents(text)
