"""deploy/k8s: every rendered manifest is valid Kubernetes and follows the deployment rules.

Rendering goes through tests/k8s_render.py (the kustomize subset the manifests use);
schemas come from the `kubernetes-validate` package, offline, in strict mode (unknown
fields are errors).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
from apscheduler.triggers.cron import CronTrigger

from config import parsers
from tests.k8s_render import (
    OVERLAYS,
    REPO,
    Resource,
    containers_in,
    find,
    pod_template,
    rendered,
    selects,
    workloads,
)

# The oldest Kubernetes we support and the newest the schema package ships; both pinned.
K8S_VERSIONS = ("1.30", "1.37")
APP = "stripe-reconcile"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
WEBHOOK = ("Deployment", "stripe-reconcile-webhook")
WORKER = ("Deployment", "stripe-reconcile-worker")
RUN = ("CronJob", "stripe-reconcile-run")
DRIFT = ("CronJob", "stripe-reconcile-drift-check")
MIGRATE = ("Job", "stripe-reconcile-db-upgrade")


@functools.cache
def resources(overlay: str) -> list[Resource]:
    """The rendered overlay, shared by the tests of this module (read only)."""
    return rendered(overlay)


def pod_spec(resource: Resource) -> dict[str, Any]:
    template = pod_template(resource)
    assert template is not None, f"{resource['kind']} has no pod template"
    spec: dict[str, Any] = template["spec"]
    return spec


def pod_labels(resource: Resource) -> dict[str, str]:
    template = pod_template(resource)
    assert template is not None
    labels: dict[str, str] = template["metadata"]["labels"]
    return labels


def job_spec(resource: Resource) -> dict[str, Any]:
    spec: dict[str, Any] = (
        resource["spec"]["jobTemplate"]["spec"] if resource["kind"] == "CronJob"
        else resource["spec"]
    )
    return spec


overlays = pytest.mark.parametrize("overlay", sorted(OVERLAYS))


def test_pinned_kubernetes_versions_are_shipped() -> None:
    """The schema package ships schemas for each pinned Kubernetes version."""
    shipped = {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}
    assert set(K8S_VERSIONS) <= shipped


@overlays
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(
    overlay: str, version: str
) -> None:
    """Each rendered resource passes the strict JSON schema of the pinned versions."""
    rendered_resources = resources(overlay)
    assert len(rendered_resources) >= 12
    for resource in rendered_resources:
        kubernetes_validate.validate(resource, version, strict=True)


def test_strict_schema_catches_a_misspelt_field() -> None:
    """Strict validation really rejects unknown fields (so the test above means something)."""
    bad = rendered("base")
    webhook = find(bad, *WEBHOOK)
    pod_spec(webhook)["containers"][0]["readinesProProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(webhook, K8S_VERSIONS[0], strict=True)


def test_the_base_holds_every_required_workload() -> None:
    """Base: run and drift CronJobs, webhook and worker Deployments, migration Job, etc."""
    kinds = {(r["kind"], r["metadata"]["name"]) for r in resources("base")}
    assert {WEBHOOK, WORKER, RUN, DRIFT, MIGRATE} <= kinds
    assert {
        ("Service", "stripe-reconcile-webhook"),
        ("PodDisruptionBudget", "stripe-reconcile-webhook"),
        ("ConfigMap", "stripe-reconcile-config"),
        ("ServiceAccount", "stripe-reconcile"),
        ("NetworkPolicy", "stripe-reconcile-default-deny"),
    } <= kinds
    assert not [r for r in resources("base") if r["kind"] == "Secret"], (
        "the placeholder Secret must never be part of a kustomization"
    )


def test_production_overlay_changes_what_it_says() -> None:
    """Production: namespace billing, registry image, more replicas, drift check on."""
    prod = resources("production")
    assert {r["metadata"].get("namespace") for r in prod} == {"billing"}
    assert find(prod, *WEBHOOK)["spec"]["replicas"] == 3
    assert find(prod, *WORKER)["spec"]["replicas"] == 2
    assert find(prod, *DRIFT)["spec"]["suspend"] is False
    assert find(resources("base"), *DRIFT)["spec"]["suspend"] is True
    images = {c["image"] for r in prod for c in containers_in(r)}
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert images == {f"registry.example.com/billing/stripe-reconcile:{version}"}
    assert not [r for r in prod if r["kind"] == "Secret"]


@overlays
def test_every_resource_is_labelled(overlay: str) -> None:
    """Each resource and pod carries the app name and a component label."""
    for resource in resources(overlay):
        labels = resource["metadata"]["labels"]
        assert labels[NAME_LABEL] == APP and labels[COMPONENT_LABEL], resource["metadata"]
    for workload in workloads(resources(overlay)):
        assert pod_labels(workload)[NAME_LABEL] == APP
        assert pod_labels(workload)[COMPONENT_LABEL] == workload["metadata"]["labels"][
            COMPONENT_LABEL
        ]


@overlays
def test_pod_security(overlay: str) -> None:
    """Every pod: non-root, no escalation, no capabilities, read-only root, /tmp emptyDir."""
    for workload in workloads(resources(overlay)):
        spec = pod_spec(workload)
        where = workload["metadata"]["name"]
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["runAsUser"] > 0 and context["runAsGroup"] > 0, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] == APP, where
        assert spec["enableServiceLinks"] is False, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security.get("privileged", False) is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], where
            assert container["imagePullPolicy"] == "IfNotPresent", where


@overlays
def test_resources_are_requested_and_limited(overlay: str) -> None:
    """Every container requests cpu and memory and has a memory limit at least the request."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}

    def size(quantity: str) -> int:
        return int(quantity[:-2]) * units[quantity[-2:]]

    for workload in workloads(resources(overlay)):
        for container in pod_spec(workload)["containers"]:
            res = container["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), workload["metadata"]["name"]
            assert size(res["limits"]["memory"]) >= size(res["requests"]["memory"])


@overlays
def test_one_image_for_every_container(overlay: str) -> None:
    """All workloads run the same image, pinned to a version (never latest or untagged)."""
    images = {c["image"] for r in resources(overlay) for c in containers_in(r)}
    assert len(images) == 1
    [image] = images
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest" and "/" not in tag


@overlays
def test_selectors_select_exactly_their_own_pods(overlay: str) -> None:
    """Deployment, Service and PDB selectors match their pods and no other workload's."""
    rs = resources(overlay)
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(rs)}
    webhook_pods = {"stripe-reconcile-webhook"}
    for kind, name in (WEBHOOK, WORKER):
        selector = find(rs, kind, name)["spec"]["selector"]["matchLabels"]
        assert {n for n, labels in pods.items() if selects(selector, labels)} == {name}
    service = find(rs, "Service", "stripe-reconcile-webhook")["spec"]["selector"]
    assert {n for n, labels in pods.items() if selects(service, labels)} == webhook_pods
    pdb = find(rs, "PodDisruptionBudget", "stripe-reconcile-webhook")["spec"]
    assert {n for n, lb in pods.items() if selects(pdb["selector"]["matchLabels"], lb)} == (
        webhook_pods
    )
    spread = pod_spec(find(rs, *WEBHOOK))["topologySpreadConstraints"][0]["labelSelector"]
    assert selects(spread["matchLabels"], pods["stripe-reconcile-webhook"])


@overlays
def test_webhook_deployment_is_highly_available(overlay: str) -> None:
    """At least 2 replicas, no unavailable pod during a rollout, one disruption at a time."""
    rs = resources(overlay)
    webhook = find(rs, *WEBHOOK)
    assert webhook["spec"]["replicas"] >= 2
    assert webhook["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = find(rs, "PodDisruptionBudget", "stripe-reconcile-webhook")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert webhook["spec"]["replicas"] - pdb["maxUnavailable"] >= 1
    assert find(resources("base"), *WEBHOOK)["spec"]["replicas"] == 2


@overlays
def test_webhook_probes_and_ports_line_up(overlay: str) -> None:
    """Readiness on /readyz, liveness on /healthz, via the named port the Service targets."""
    rs = resources(overlay)
    [container] = pod_spec(find(rs, *WEBHOOK))["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["port"] in ports
    service = find(rs, "Service", "stripe-reconcile-webhook")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    template = pod_template(find(rs, *WEBHOOK))
    assert template is not None
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) in ports.values()


@overlays
def test_only_the_webhook_exposes_a_port(overlay: str) -> None:
    """Jobs and the worker listen on nothing and have no probes to fail."""
    for workload in workloads(resources(overlay)):
        if (workload["kind"], workload["metadata"]["name"]) == WEBHOOK:
            continue
        for container in pod_spec(workload)["containers"]:
            assert "ports" not in container and "livenessProbe" not in container


@overlays
@pytest.mark.parametrize("cronjob", [RUN, DRIFT])
def test_cronjobs_run_one_at_a_time_and_end_before_the_next(
    overlay: str, cronjob: tuple[str, str]
) -> None:
    """Forbid overlap, bound start delay and run time, keep history, retry within the hour."""
    resource = find(resources(overlay), *cronjob)
    spec = resource["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert parsers.cron(spec["schedule"]) == spec["schedule"]
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = job_spec(resource)
    assert job["backoffLimit"] >= 1
    assert pod_spec(resource)["restartPolicy"] == "Never"
    gap = shortest_gap(spec["schedule"], spec["timeZone"])
    assert spec["startingDeadlineSeconds"] + job["activeDeadlineSeconds"] <= gap.total_seconds()


def test_drift_check_never_starts_with_the_real_run() -> None:
    """The monitor and the real run are scheduled at different times."""
    rs = resources("base")
    run, drift = (find(rs, *c)["spec"] for c in (RUN, DRIFT))
    assert not fire_times(run["schedule"], run["timeZone"]) & fire_times(
        drift["schedule"], drift["timeZone"]
    )


@overlays
def test_exit_codes_decide_retries(overlay: str) -> None:
    """Run: 2, 4, 5 fail the Job at once, 1 is retried. Drift check: 2, 3 fail, 1, 4 retry."""
    rs = resources(overlay)
    expected = {RUN: {2, 4, 5}, DRIFT: {2, 3}, MIGRATE: {2}}
    for ident, codes in expected.items():
        resource = find(rs, *ident)
        rules = job_spec(resource)["podFailurePolicy"]["rules"]
        fail = [r for r in rules if r["action"] == "FailJob"]
        assert len(fail) == 1
        on_exit = fail[0]["onExitCodes"]
        assert on_exit["operator"] == "In" and set(on_exit["values"]) == codes
        [container] = pod_spec(resource)["containers"]
        assert on_exit["containerName"] == container["name"]
        assert pod_spec(resource)["restartPolicy"] == "Never"
        ignored = [r for r in rules if r["action"] == "Ignore"]
        assert ignored[0]["onPodConditions"][0]["type"] == "DisruptionTarget"


@overlays
def test_network_policies_default_deny_and_open_only_what_is_needed(overlay: str) -> None:
    """Every pod is denied by default; egress is DNS, 5432, 443; only the webhook has ingress."""
    rs = resources(overlay)
    policies = [r for r in rs if r["kind"] == "NetworkPolicy"]
    deny = find(rs, "NetworkPolicy", "stripe-reconcile-default-deny")["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(rs)}
    assert all(selects(deny["podSelector"]["matchLabels"], labels) for labels in pods.values())
    egress = find(rs, "NetworkPolicy", "stripe-reconcile-egress")["spec"]
    assert all(selects(egress["podSelector"]["matchLabels"], lb) for lb in pods.values())
    ports = {(p["protocol"], p["port"]) for rule in egress["egress"] for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 443)}
    https = next(r for r in egress["egress"] if r["ports"] == [{"protocol": "TCP", "port": 443}])
    metadata_ip = ipaddress.ip_address("169.254.169.254")
    for peer in https["to"]:
        block = peer["ipBlock"]
        network = ipaddress.ip_network(block["cidr"])
        if network.version == 4:
            assert any(metadata_ip in ipaddress.ip_network(e) for e in block["except"])
    with_ingress = [p for p in policies if "ingress" in p["spec"]]
    assert [p["metadata"]["name"] for p in with_ingress] == ["stripe-reconcile-webhook-ingress"]
    selector = with_ingress[0]["spec"]["podSelector"]["matchLabels"]
    assert {n for n, labels in pods.items() if selects(selector, labels)} == {
        "stripe-reconcile-webhook"
    }
    [container] = pod_spec(find(rs, *WEBHOOK))["containers"]
    allowed = {p["port"] for rule in with_ingress[0]["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {p["containerPort"] for p in container["ports"]}


def test_production_narrows_postgres_egress() -> None:
    """The production overlay replaces the base's private ranges with one subnet."""
    egress = find(resources("production"), "NetworkPolicy", "stripe-reconcile-egress")
    [postgres] = [r for r in egress["spec"]["egress"] if r["ports"][0]["port"] == 5432]
    assert postgres["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]


def test_migration_runs_before_the_workloads() -> None:
    """The pre-deploy phase (shared + migrate) has all the Job needs and no workload."""
    rs = resources("production")
    pre = [r for r in rs if r["metadata"]["labels"][COMPONENT_LABEL] in ("shared", "migrate")]
    kinds = {(r["kind"], r["metadata"]["name"]) for r in pre}
    assert [w for w in workloads(pre)] == [find(rs, *MIGRATE)]
    job = find(rs, *MIGRATE)
    spec = pod_spec(job)
    assert ("ServiceAccount", spec["serviceAccountName"]) in kinds
    for container in spec["containers"]:
        for source in container.get("envFrom", []):
            assert ("ConfigMap", source["configMapRef"]["name"]) in kinds
    labels = pod_labels(job)
    needed = [
        r["metadata"]["name"] for r in rs
        if r["kind"] == "NetworkPolicy" and selects(r["spec"]["podSelector"]["matchLabels"], labels)
    ]
    assert needed and all(("NetworkPolicy", name) in kinds for name in needed)
    assert job["spec"]["activeDeadlineSeconds"] > 0 and job["spec"]["backoffLimit"] >= 1


def fire_times(schedule: str, zone: str, days: int = 8) -> set[datetime]:
    """Every start time of a cron schedule over `days` days."""
    trigger = CronTrigger.from_crontab(schedule, timezone=ZoneInfo(zone))
    start = datetime(2026, 1, 5, tzinfo=UTC)
    times: set[datetime] = set()
    previous = None
    now = start
    while now < start + timedelta(days=days):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.add(fire)
        previous, now = fire, fire + timedelta(seconds=1)
    return times


def shortest_gap(schedule: str, zone: str) -> timedelta:
    """The shortest time between two starts of a cron schedule."""
    times = sorted(fire_times(schedule, zone))
    assert len(times) >= 2
    return min(b - a for a, b in itertools.pairwise(times))
