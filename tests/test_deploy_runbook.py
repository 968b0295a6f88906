"""deploy/README.md (the operator runbook) stays true to the manifests and the code."""

from __future__ import annotations

import importlib
import re
import shlex

from reconcile.events import HANDLED_TYPES
from reconcile.webhook_metrics import WebhookMetrics
from tests.k8s_render import REPO, Resource, rendered, secret_template, workloads
from tests.test_deploy_crosschecks import resolve

RUNBOOK = (REPO / "deploy" / "README.md").read_text()
SECTIONS = (
    "First deployment, step by step",
    "Exit codes and the CronJob",
    "Reading a drift report",
    "Scaling",
    "Rolling the webhook secret",
    "Recovering after receiver downtime",
    "Upgrades and rollbacks",
    "Metrics and alerts",
)


def code_blocks(language: str = "bash") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", RUNBOOK, re.DOTALL)


def shell_lines() -> list[list[str]]:
    """Every command line of the bash blocks, continuations joined, as shell words."""
    lines = []
    for block in code_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(words)
    return lines


def reconcile_invocations() -> list[list[str]]:
    """The arguments of every `reconcile` the runbook tells an operator to run."""
    found = []
    for words in shell_lines():
        if words[0] == "reconcile":
            found.append(words[1:])
        elif words[0] == "oneoff" and len(words) > 2:
            found.append(words[2:])
        elif "--" in words and words[words.index("--") + 1:][:1] == ["reconcile"]:
            found.append(words[words.index("--") + 2:])
    for span in re.findall(r"`(reconcile [^`]+)`", RUNBOOK):
        if not re.search(r"\.\.\.|\[|[A-Z]{3,}", span):
            found.append(shlex.split(span)[1:])
    for span in re.findall(r"`oneoff ([^`]+)`", RUNBOOK):
        found.append(shlex.split(span)[1:])
    return found


def test_runbook_covers_every_topic() -> None:
    """The runbook has a section for each topic the issue asks for."""
    headings = re.findall(r"^## (.+)$", RUNBOOK, re.MULTILINE)
    assert [s for s in SECTIONS if s not in headings] == []
    assert "docker build" in RUNBOOK and "Not verified here" in RUNBOOK


def test_every_exit_code_is_explained() -> None:
    """Each exit code 0-5 has a row in the runbook's exit code table."""
    for code in range(6):
        assert re.search(rf"^\| {code} \| .+ \| .+ \| .+ \|$", RUNBOOK, re.MULTILINE), code


def test_runbook_commands_exist_in_the_cli() -> None:
    """Every `reconcile ...` line (direct, via oneoff, via exec) parses with the real CLI."""
    invocations = reconcile_invocations()
    assert len(invocations) >= 10
    problems = []
    for args in invocations:
        try:
            resolve(args)
        except Exception as exc:  # collect them all: one failure should not hide the rest
            problems.append(f"reconcile {' '.join(args)}: {exc}")
    assert problems == []


def test_runbook_mentions_replay_and_dry_runs() -> None:
    """Downtime recovery uses replay-events; the first deployment starts with a dry run."""
    commands = [" ".join(args) for args in reconcile_invocations()]
    assert any(c.startswith("replay-events --since") for c in commands)
    assert any(c.startswith("run --dry-run") for c in commands)


def test_kubectl_references_name_real_resources() -> None:
    """Every kind/name the runbook's kubectl lines use exists in the production render."""
    resources: list[Resource] = [*rendered("production"), secret_template()]
    names = {(r["kind"].lower(), r["metadata"]["name"]) for r in resources}
    aliases = {"deploy": "deployment"}
    referenced = set()
    for words in shell_lines():
        if words[0] != "kubectl":
            continue
        for word in words:
            match = re.fullmatch(r"(?:--from=)?(deploy|deployment|cronjob|job)/([a-z0-9-]+)", word)
            if match:
                referenced.add((aliases.get(match.group(1), match.group(1)), match.group(2)))
        plain = [w for w in words if not w.startswith("-") and w != "billing"]
        if plain[1] in ("patch", "delete") and "/" not in plain[2]:
            referenced.add((plain[2], plain[3]))
    assert len(referenced) >= 5, referenced
    assert sorted(referenced - names) == []


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Evaluate a kubectl label selector of `k=v` and `k in (a,b)` terms."""
    for term in re.split(r",(?![^(]*\))", selector):
        term = term.strip()
        if match := re.fullmatch(r"([\w./-]+)\s+in\s+\(([^)]*)\)", term):
            values = {v.strip() for v in match.group(2).split(",")}
            if labels.get(match.group(1)) not in values:
                return False
        elif match := re.fullmatch(r"([\w./-]+)==?([\w.-]+)", term):
            if labels.get(match.group(1)) != match.group(2):
                return False
        else:
            raise ValueError(f"selector term {term!r} is not understood")
    return True


def test_phased_applies_select_what_the_runbook_says() -> None:
    """Pre-deploy phase: config + migration Job, no workload; drift-check phase: one CronJob."""
    resources = rendered("production")
    selectors = {
        words[words.index("-l") + 1] for words in shell_lines()
        if words[:2] == ["kubectl", "apply"] and "-l" in words
    }
    assert len(selectors) == 2, selectors
    for selector in selectors:
        chosen = [r for r in resources if selector_matches(selector, r["metadata"]["labels"])]
        running = [(r["kind"], r["metadata"]["name"]) for r in workloads(chosen)]
        if "migrate" in selector:
            assert running == [("Job", "stripe-reconcile-db-upgrade")]
            assert {r["kind"] for r in chosen} >= {"ConfigMap", "ServiceAccount", "NetworkPolicy"}
        else:
            assert running == [("CronJob", "stripe-reconcile-drift-check")]


def test_webhook_events_to_register_are_the_handled_ones() -> None:
    """The endpoint registration step lists exactly the event types the receiver applies."""
    step = RUNBOOK[RUNBOOK.index("Register the webhook endpoint"):]
    step = step[: step.index("\n6. ")]
    listed = set(re.findall(r"`((?:customer\.subscription|invoice)\.[a-z_]+)`", step))
    assert listed == set(HANDLED_TYPES)


def test_metric_names_exist() -> None:
    """Every stripe_webhook_* / reconcile_batch_* metric in the runbook is exported."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {
        family.name + suffix
        for family in WebhookMetrics.create().registry.collect()
        for suffix in suffixes[family.type]
    }
    batch = batch_metric_names()
    mentioned = set(re.findall(r"\b(stripe_webhook_[a-z_]+|reconcile_batch_[a-z_]+)", RUNBOOK))
    assert len(mentioned) >= 5
    for name in sorted(mentioned):
        if name.endswith("_"):
            continue  # a prefix such as `reconcile_batch_*`
        if name.startswith("reconcile_batch_"):
            assert batch is not None, "reconcile.metrics is gone; update the runbook"
            assert name in batch, name
        else:
            assert name in exported, name


def batch_metric_names() -> set[str] | None:
    """Names of the batch gauges reconcile.metrics publishes (None if it does not exist)."""
    try:
        metrics = importlib.import_module("reconcile.metrics")
    except ModuleNotFoundError:
        return None
    counts = metrics.Counts(
        objects_listed=1, stripe_requests=1, rate_limited=0, changed_rows=0,
        drift={"status": 1}, corrections={"updated": 1}, emails={"sent": 1},
        charge_candidates=0, charges={"paid": 0},
    )
    registry = metrics.build_registry(metrics.BatchFigures("run", True, 1.0, 2.0, counts))
    names = {m.name for m in registry.collect()}
    assert any(n.endswith("last_success_timestamp_seconds") for n in names)
    return {n if n.startswith("reconcile_batch_") else f"reconcile_batch_{n}" for n in names}


def test_python_snippets_compile_and_import_real_names() -> None:
    """The runbook's `python -c` snippets compile and name functions that exist."""
    snippets = [
        words[words.index("-c") + 1] for words in shell_lines()
        if "python" in words and "-c" in words
    ]
    assert snippets
    for snippet in snippets:
        compile(snippet, "<runbook>", "exec")
        for module, names in re.findall(r"from ([\w.]+) import ([\w, ]+)", snippet):
            imported = importlib.import_module(module)
            for name in names.split(","):
                assert hasattr(imported, name.strip()), f"{module}.{name.strip()}"
