"""deploy/k8s agrees with the code: CLI commands and options, settings, routes, image.

These run against the real click group, settings spec and Starlette app: a manifest that
calls a command or option the CLI lacks, sets a variable that is not a setting, forgets a
required one, or probes a path the app does not serve fails here, not in the cluster.
"""

from __future__ import annotations

import functools
import re
import sys
import tomllib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import sqlalchemy
from click.testing import CliRunner

import config
import config.loader
from cli import main
from config import SPECS, load_settings
from config.spec import SPECS_BY_ENV
from tests.k8s_render import (
    OVERLAYS,
    REPO,
    Resource,
    find,
    pod_template,
    rendered,
    secret_template,
    workloads,
)

WEBHOOK = ("Deployment", "stripe-reconcile-webhook")
# What each workload must be able to do, by the settings groups of config.GROUPS. The
# groups each command actually asks for are read from the code below; this table is the
# floor the issue sets, so a command that stops asking for one is noticed too.
MINIMUM_GROUPS = {
    ("CronJob", "stripe-reconcile-run"): {"database", "stripe"},
    ("CronJob", "stripe-reconcile-drift-check"): {"database", "stripe"},
    ("Deployment", "stripe-reconcile-webhook"): {"database", "stripe", "webhook"},
    ("Deployment", "stripe-reconcile-worker"): {"database", "email"},
    ("Job", "stripe-reconcile-db-upgrade"): {"database"},
}
EXPECTED_COMMANDS = {
    ("CronJob", "stripe-reconcile-run"): ("run",),
    ("CronJob", "stripe-reconcile-drift-check"): ("run",),
    ("Deployment", "stripe-reconcile-webhook"): ("serve",),
    ("Deployment", "stripe-reconcile-worker"): ("worker",),
    ("Job", "stripe-reconcile-db-upgrade"): ("db", "upgrade"),
}
overlays = pytest.mark.parametrize("overlay", sorted(OVERLAYS))


@functools.cache
def resources(overlay: str) -> list[Resource]:
    """The rendered overlay, shared by the tests of this module (read only)."""
    return rendered(overlay)


def containers(resource: Resource) -> list[dict[str, Any]]:
    template = pod_template(resource)
    assert template is not None
    spec = template["spec"]
    return [*spec["containers"], *spec.get("initContainers", [])]


def ident(resource: Resource) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


# ---- the CLI ----

def resolve(args: list[str]) -> tuple[tuple[str, ...], click.Context]:
    """Parse `reconcile ARGS` as the CLI would, without running it.

    Returns the subcommand path and the parsed context; raises click.UsageError (or
    LookupError for an unknown command) exactly where the real CLI would refuse the line.
    """
    command: click.Command = main
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            raise LookupError(
                f"`reconcile {' '.join([*path, rest[0]])}` is not a command; the CLI has "
                f"{sorted(command.list_commands(click.Context(command)))}"
            )
        path.append(rest.pop(0))
        command = sub
    if isinstance(command, click.Group) and path:
        raise LookupError(f"`reconcile {' '.join(path)}` needs a subcommand")
    ctx = command.make_context(" ".join(["reconcile", *path]), rest)
    return tuple(path), ctx


class _SettingsRequested(Exception):
    def __init__(self, groups: frozenset[str]) -> None:
        super().__init__(sorted(groups))
        self.groups = groups


def requested_groups(args: list[str], monkeypatch: pytest.MonkeyPatch) -> frozenset[str]:
    """The settings groups `reconcile ARGS` asks for, stopping it before it does anything.

    Every `settings_for` / `load_settings` the CLI modules can reach is replaced by one that
    records the groups and raises, so no database, Stripe or loop is ever touched.
    """

    def settings_for(*groups: str, **_: object) -> None:
        raise _SettingsRequested(frozenset(groups))

    def fake_load_settings(*_: object, require: Any = (), **__: object) -> None:
        raise _SettingsRequested(frozenset(require))

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("cli", "reconcile", "config"):
            continue
        if hasattr(module, "settings_for"):
            monkeypatch.setattr(module, "settings_for", settings_for)
        if hasattr(module, "load_settings"):
            monkeypatch.setattr(module, "load_settings", fake_load_settings)
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, _SettingsRequested), (
        f"`reconcile {' '.join(args)}` did not ask for settings the known way "
        f"(exit {result.exit_code}): {result.output}"
    )
    return result.exception.groups


def manifest_commands(overlay: str) -> Iterator[tuple[Resource, dict[str, Any]]]:
    for workload in workloads(resources(overlay)):
        for container in containers(workload):
            yield workload, container


@overlays
def test_every_manifest_command_exists_with_those_options(overlay: str) -> None:
    """Each container's args parse as a `reconcile` subcommand with valid options."""
    seen = {}
    for workload, container in manifest_commands(overlay):
        assert "command" not in container, "args go to the image's ENTRYPOINT (reconcile)"
        path, _ = resolve(container["args"])
        seen[ident(workload)] = path
    assert seen == EXPECTED_COMMANDS


@overlays
def test_manifest_option_values(overlay: str) -> None:
    """Options mean what the manifests intend: JSON reports, dry run, listening on the pod IP."""
    rs = resources(overlay)
    _, run = resolve(containers(find(rs, "CronJob", "stripe-reconcile-run"))[0]["args"])
    assert run.params["fmt"] == "json" and not run.params["dry_run"]
    assert not run.params["force"]
    _, drift = resolve(containers(find(rs, "CronJob", "stripe-reconcile-drift-check"))[0]["args"])
    assert drift.params["dry_run"] and drift.params["exit_code"]
    [webhook] = containers(find(rs, *WEBHOOK))
    _, serve = resolve(webhook["args"])
    assert serve.params["host"] == "0.0.0.0", "the default 127.0.0.1 is unreachable in a pod"
    assert serve.params["port"] == webhook["ports"][0]["containerPort"]
    assert serve.params["workers"] == 1, "scale the receiver with replicas, not workers"


def test_resolve_refuses_unknown_commands_and_options() -> None:
    """The CLI check is not a rubber stamp: bad commands and options are refused."""
    with pytest.raises(LookupError):
        resolve(["no-such-command"])
    with pytest.raises(click.UsageError):
        resolve(["run", "--no-such-option"])
    with pytest.raises(click.UsageError):
        resolve(["run", "--format", "yaml"])


@pytest.mark.parametrize(("workload", "minimum"), sorted(MINIMUM_GROUPS.items()))
def test_commands_ask_for_at_least_the_documented_settings(
    workload: tuple[str, str], minimum: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each workload's command requires (at least) the settings groups the issue lists."""
    [container] = containers(find(resources("base"), *workload))
    assert requested_groups(container["args"], monkeypatch) >= minimum


# ---- settings ----

def workload_environment(resource: Resource, overlay: str) -> tuple[dict[str, str], set[str]]:
    """The variables a workload's container gets (placeholders for secrets), and which
    of them come from the Secret."""
    rs = resources(overlay)
    secret = secret_template()
    assert secret["kind"] == "Secret"
    secret_values: dict[str, str] = secret["stringData"]
    environ: dict[str, str] = {}
    from_secret: set[str] = set()
    [container] = containers(resource)
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "secrets are given key by key, not envFrom"
        configmap = find(rs, "ConfigMap", source["configMapRef"]["name"])
        assert not source["configMapRef"].get("optional", False)
        environ.update(configmap["data"])
    for var in container.get("env", []):
        if "value" in var:
            environ[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] == var["name"], "a Secret key is the setting it holds"
        from_secret.add(var["name"])
        if ref["key"] in secret_values:
            environ[var["name"]] = secret_values[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{ref['key']} is missing from the Secret"
    return environ, from_secret


@overlays
def test_every_variable_is_a_real_setting(overlay: str) -> None:
    """ConfigMap keys, env names and Secret keys are all settings of config/spec.py."""
    rs = resources(overlay)
    names = set(secret_template()["stringData"])
    for configmap in (r for r in rs if r["kind"] == "ConfigMap"):
        names |= set(configmap["data"])
    for _, container in manifest_commands(overlay):
        names |= {var["name"] for var in container.get("env", [])}
        names |= {var["valueFrom"]["secretKeyRef"]["key"] for var in container.get("env", [])
                  if "valueFrom" in var}
    unknown = sorted(names - set(SPECS_BY_ENV))
    assert unknown == []
    assert config.loader.find_typos([], names) == []


@overlays
def test_secrets_only_come_from_the_secret(overlay: str) -> None:
    """Secret settings (and DATABASE_URL, which holds a password) never sit in a ConfigMap."""
    secret_names = {spec.env for spec in SPECS if spec.secret} | {"DATABASE_URL"}
    for configmap in (r for r in resources(overlay) if r["kind"] == "ConfigMap"):
        assert not secret_names & set(configmap["data"])
    for workload, container in manifest_commands(overlay):
        _, from_secret = workload_environment(workload, overlay)
        literal = {var["name"] for var in container.get("env", []) if "value" in var}
        assert not secret_names & literal
        assert secret_names & {var["name"] for var in container.get("env", [])} <= from_secret


@overlays
@pytest.mark.parametrize("workload", sorted(MINIMUM_GROUPS))
def test_each_workload_gets_every_setting_its_command_requires(
    overlay: str, workload: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real settings loader accepts each workload's environment for its command's groups."""
    resource = find(resources(overlay), *workload)
    environ, _ = workload_environment(resource, overlay)
    [container] = containers(resource)
    with monkeypatch.context() as patch:
        groups = requested_groups(container["args"], patch)
    settings = load_settings(environ, env_file=None, require=groups)
    assert settings.log_format == "json"


@overlays
@pytest.mark.parametrize("workload", sorted(MINIMUM_GROUPS))
def test_each_workload_gets_no_secret_it_does_not_need(
    overlay: str, workload: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Least privilege: a pod's required secrets are those of its command's groups."""
    resource = find(resources(overlay), *workload)
    [container] = containers(resource)
    groups = requested_groups(container["args"], monkeypatch)
    for var in container.get("env", []):
        if "valueFrom" not in var:
            continue
        spec = SPECS_BY_ENV[var["name"]]
        if var["valueFrom"]["secretKeyRef"].get("optional"):
            assert not spec.required_for, f"{spec.env} is required somewhere; do not mark optional"
        else:
            assert spec.required_for & groups, f"{workload[1]} does not need {spec.env}"


def test_secret_template_holds_placeholders_only() -> None:
    """Every value in the Secret template is an obvious placeholder, never a real secret."""
    secret = secret_template()
    assert set(secret) == {"apiVersion", "kind", "metadata", "type", "stringData"}
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, key


# ---- the receiver's routes ----

@functools.cache
def app_routes() -> frozenset[tuple[str, str]]:
    """(method, path) of every route of the real receiver app, built without any I/O."""
    from reconcile import webhook

    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://user:pw@127.0.0.1:1/none",
            "STRIPE_API_KEY": "sk_test_routes",
            "STRIPE_WEBHOOK_SECRET": "whsec_routes",
            "WEBHOOK_REFETCH": "never",
        },
        env_file=None,
        require=webhook.REQUIRED_SETTINGS,
    )
    assert settings.database_url is not None
    engine = sqlalchemy.create_engine(settings.database_url)  # lazy: never connects here
    try:
        app = webhook.create_app(settings, engine, None)
        return frozenset(
            (method, route.path) for route in app.routes for method in (route.methods or ())
        )
    finally:
        engine.dispose()


@overlays
def test_probe_and_metrics_paths_exist_in_the_app(overlay: str) -> None:
    """Readiness, liveness, startup and scrape paths are GET routes of the receiver."""
    webhook = find(resources(overlay), *WEBHOOK)
    [container] = containers(webhook)
    probes = [container[p]["httpGet"]["path"] for p in
              ("readinessProbe", "livenessProbe", "startupProbe")]
    template = pod_template(webhook)
    assert template is not None
    scrape = template["metadata"]["annotations"]["prometheus.io/path"]
    routes = app_routes()
    for path in [*probes, scrape]:
        assert ("GET", path) in routes, path
    assert probes[0] == "/readyz" and probes[1] == "/healthz" and scrape == "/metrics"


def test_ingress_exposes_only_the_webhook_endpoint() -> None:
    """Production Ingress: one exact path, the app's POST route, to the webhook Service."""
    from reconcile.webhook import WEBHOOK_PATH

    rs = resources("production")
    ingresses = [r for r in rs if r["kind"] == "Ingress"]
    assert len(ingresses) == 1
    [rule] = ingresses[0]["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert path["path"] == WEBHOOK_PATH and path["pathType"] == "Exact"
    assert ("POST", WEBHOOK_PATH) in app_routes()
    service = find(rs, "Service", path["backend"]["service"]["name"])
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert path["backend"]["service"]["port"]["name"] in port_names
    assert rule["host"] in ingresses[0]["spec"]["tls"][0]["hosts"]
    public = find(rs, "ConfigMap", "stripe-reconcile-config")["data"]["WEBHOOK_PUBLIC_URL"]
    url = urlsplit(public)
    assert (url.scheme, url.hostname, url.path) == ("https", rule["host"], WEBHOOK_PATH)


@overlays
def test_termination_grace_outlasts_draining(overlay: str) -> None:
    """preStop sleep + uvicorn's graceful shutdown fit inside the termination grace period."""
    from cli.serve import GRACEFUL_SHUTDOWN_S

    webhook = find(resources(overlay), *WEBHOOK)
    [container] = containers(webhook)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    template = pod_template(webhook)
    assert template is not None
    grace = template["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(command[1]) + GRACEFUL_SHUTDOWN_S + 5


# ---- the image ----

def test_pods_run_as_the_image_user_and_entrypoint_is_the_console_script() -> None:
    """runAsUser is the Dockerfile's USER; ENTRYPOINT is pyproject's `reconcile` script."""
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", dockerfile, re.MULTILINE)
    assert users, "the Dockerfile needs a numeric USER"
    uid, gid = users[-1]
    for workload in workloads(resources("base")):
        template = pod_template(workload)
        assert template is not None
        context = template["spec"]["securityContext"]
        assert str(context["runAsUser"]) == uid
        assert str(context["runAsGroup"]) == (gid or uid)
    entrypoints = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.MULTILINE)
    assert entrypoints == ['["reconcile"]']
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["reconcile"] == "cli:main"
    assert isinstance(main, click.Group)


def test_base_image_tag_is_the_project_version() -> None:
    """The base manifests deploy the version pyproject.toml builds (bump them together)."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for workload in workloads(resources("base")):
        for container in containers(workload):
            assert container["image"] == f"stripe-reconcile:{version}"
