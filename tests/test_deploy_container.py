"""deploy/Dockerfile and .dockerignore follow the image rules (no docker engine needed).

A real `docker build` cannot run on the CI machines; these tests read the files instead:
multi-stage, pinned base, non-root numeric USER, exec-form ENTRYPOINT, no HEALTHCHECK, no
secrets, tests or dev tools, and a build context that holds only what the wheel needs. The
wheel itself must contain every package and data file, or the image would break at import.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import setuptools

from config import SPECS
from tests.k8s_render import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# What the build stage may copy from the context: the wheel's inputs and nothing else.
BUILD_INPUTS = {"pyproject.toml", "README.md", "reconcile", "cli", "config"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    result = []
    stage = -1
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(keyword, arguments.strip(), stage))
    return result


INSTRUCTIONS = instructions(DOCKERFILE.read_text())


def wheel_packages() -> set[str]:
    """The packages setuptools puts in the wheel, found the way setuptools finds them."""
    config = PYPROJECT["tool"]["setuptools"]["packages"]
    if isinstance(config, list):
        return set(config)
    find = config["find"]
    finder = (
        setuptools.find_namespace_packages if find.get("namespaces", True)
        else setuptools.find_packages
    )
    found: set[str] = set()
    for where in find.get("where", ["."]):
        found |= set(finder(
            where=str(REPO / where), include=find.get("include", ["*"]),
            exclude=find.get("exclude", ()),
        ))
    return found


def stage_of(number: int) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.stage == number]


def final_stage() -> list[Instruction]:
    return stage_of(max(i.stage for i in INSTRUCTIONS))


def global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines may use)."""
    found = {}
    for inst in INSTRUCTIONS:
        if inst.stage >= 0:
            break
        if inst.keyword == "ARG":
            name, _, default = inst.arguments.partition("=")
            found[name] = default
    return found


def base_images() -> list[tuple[str, str]]:
    """(image, stage name) of every FROM, with ${ARG} defaults substituted."""
    args = global_args()
    images = []
    for inst in INSTRUCTIONS:
        if inst.keyword != "FROM":
            continue
        parts = inst.arguments.split()
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0])
        name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
        images.append((image, name))
    return images


def test_dockerfile_parses_into_instructions() -> None:
    """The parser sees every instruction (so the checks below read the real file)."""
    keywords = [i.keyword for i in INSTRUCTIONS]
    assert keywords.count("FROM") >= 2 and "ENTRYPOINT" in keywords and "USER" in keywords
    assert all(re.fullmatch(r"[A-Z]+", k) for k in keywords)


def test_multi_stage_build_copies_only_the_venv_into_the_runtime_image() -> None:
    """The wheel is built in one stage; the runtime stage takes /opt/venv from it."""
    images = base_images()
    stage_names = [name for _, name in images]
    assert len(images) >= 2 and all(stage_names)
    runtime_copies = [i for i in final_stage() if i.keyword in ("COPY", "ADD")]
    assert runtime_copies, "the runtime stage copies the venv from the build stage"
    for inst in runtime_copies:
        assert inst.keyword == "COPY"
        assert re.match(rf"--from=({'|'.join(stage_names[:-1])})\s", inst.arguments), inst
    build_runs = " ".join(i.arguments for i in stage_of(0) if i.keyword == "RUN")
    assert "pip wheel" in build_runs and "/opt/venv" in build_runs
    runtime_runs = " ".join(i.arguments for i in final_stage() if i.keyword == "RUN")
    assert not re.search(r"pip\S* install|apt-get install", runtime_runs), "build stage only"


def test_base_image_is_pinned_by_version() -> None:
    """Every FROM is python:3.11.<patch>-slim-<debian>, optionally by digest; never latest."""
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    for image, _ in base_images():
        match = re.fullmatch(
            r"python:(\d+\.\d+)\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image
        )
        assert match, f"{image} is not pinned to a full Python version"
        assert match.group(1) == minimum


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    """The last USER of the runtime stage is a numeric uid:gid other than 0."""
    users = [i.arguments for i in final_stage() if i.keyword == "USER"]
    assert users, "no USER in the runtime stage"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, "a numeric USER lets Kubernetes verify runAsNonRoot"
    assert int(match.group(1)) != 0 and int(match.group(2) or 1) != 0
    last_user = max(n for n, i in enumerate(INSTRUCTIONS) if i.keyword == "USER")
    after = [i.keyword for i in INSTRUCTIONS[last_user:]]
    assert "RUN" not in after, "nothing runs as root after switching user"


def test_entrypoint_is_the_reconcile_console_script() -> None:
    """ENTRYPOINT is exec form ["reconcile"], the console script pyproject.toml installs."""
    [entrypoint] = [i for i in INSTRUCTIONS if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint.arguments) == ["reconcile"]
    assert "reconcile" in PYPROJECT["project"]["scripts"]
    env = " ".join(i.arguments for i in final_stage() if i.keyword == "ENV")
    assert "PATH=/opt/venv/bin:" in env


def test_no_healthcheck_in_the_image() -> None:
    """Kubernetes probes do health checking; the image declares none."""
    assert not [i for i in INSTRUCTIONS if i.keyword == "HEALTHCHECK"]


def test_build_copies_only_the_wheel_inputs() -> None:
    """COPY from the context takes sources only: no tests, no .env, no whole-context copy."""
    copied: set[str] = set()
    for inst in INSTRUCTIONS:
        if inst.keyword == "ADD":
            pytest.fail(f"use COPY, not ADD: {inst.arguments}")
        if inst.keyword != "COPY" or inst.arguments.startswith("--from="):
            continue
        *sources, _ = inst.arguments.split()
        assert not [s for s in sources if s.startswith("--")], "no COPY flags expected"
        copied |= {s.rstrip("/") for s in sources}
    assert copied <= BUILD_INPUTS, copied - BUILD_INPUTS
    packages = {p.split(".")[0] for p in wheel_packages()}
    assert packages and packages | {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied


def test_no_secrets_settings_or_dev_tools_in_the_image() -> None:
    """No setting baked in with ENV/ARG, no key-shaped strings, no test or dev extras."""
    text = DOCKERFILE.read_text()
    settings = {spec.env for spec in SPECS}
    for inst in INSTRUCTIONS:
        if inst.keyword in ("ENV", "ARG"):
            names = set(re.findall(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", inst.arguments))
            names |= {inst.arguments.split("=")[0]} if inst.keyword == "ARG" else set()
            assert not names & settings, f"settings come from Kubernetes, not the image: {inst}"
    assert not re.search(r"\b(sk|rk)_(live|test)_|whsec_|SG\.\w", text)
    installs = " ".join(i.arguments for i in INSTRUCTIONS if i.keyword == "RUN")
    for tool in ("[test", "[dev", "pytest", "ruff", "mypy", "pip install -e", "--editable"):
        assert tool not in installs, tool
    runtime = " ".join(i.arguments for i in final_stage() if i.keyword == "RUN")
    assert re.search(r"pip uninstall --yes .*\bpip\b", runtime), "remove pip from the runtime"


# ---- .dockerignore ----

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher's translation of one .dockerignore pattern to a regex."""
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch in ".+()|{}$":
            out += "\\" + ch
        else:
            out += ch
        i += 1
    return re.compile(out + "$")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per line, cleaned the way the docker CLI cleans them."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = str(Path(line.lstrip("!").strip())).lstrip("/")  # filepath.Clean
        rules.append((exclude, _pattern_regex(pattern)))
    return rules


def excluded(path: str) -> bool:
    """Whether the build context leaves `path` out: last matching rule wins, and a rule
    matching a parent directory matches everything below it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for exclude, regex in dockerignore_rules():
        if any(regex.match(c) for c in candidates):
            result = exclude
    return result


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_cli.py", "tests/fixtures/objects/invoice.json", ".env", "config/.env",
        ".env.production", ".git/HEAD", ".venv/bin/python", "deploy/Dockerfile",
        "deploy/k8s/base/secret.example.yaml", "bench/bench_diff.py", ".ci/run",
        "reconcile/__pycache__/engine.cpython-311.pyc", "stripe_reconcile.egg-info/PKG-INFO",
        "outbox-mail/1.eml", ".pytest_cache/README.md",
    ],
)
def test_context_leaves_out(path: str) -> None:
    """Tests, secrets, VCS, venvs, deploy files and caches never reach the build."""
    assert excluded(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml", "README.md", "reconcile/engine.py", "reconcile/py.typed",
        "reconcile/migrations/versions/0001_initial.py", "reconcile/migrations/script.py.mako",
        "cli/__init__.py", "config/example.env", "config/spec.py",
    ],
)
def test_context_keeps(path: str) -> None:
    """Everything the wheel is built from is in the build context."""
    assert not excluded(path)


def test_every_package_and_data_file_gets_into_the_wheel() -> None:
    """Each source directory is a wheel package and each data file matches package-data."""
    # `pip install -e .` hides a missing entry (the source tree is on the path); the image
    # installs a wheel, where a missing package or template is an error at runtime.
    packages = wheel_packages()
    package_data: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    missing_packages = []
    data_files = set()
    for top in sorted({p.split(".")[0] for p in packages}):
        for directory in [REPO / top, *sorted((REPO / top).rglob("*"))]:
            if not directory.is_dir() or "__pycache__" in directory.parts:
                continue
            dotted = ".".join(directory.relative_to(REPO).parts)
            if any(directory.glob("*.py")) and dotted not in packages:
                missing_packages.append(dotted)
            data_files |= {
                f for f in directory.iterdir()
                if f.is_file() and f.suffix not in (".py", ".pyc")
                and not excluded(str(f.relative_to(REPO)))
            }
    covered = set()
    for key, patterns in package_data.items():
        for package in sorted(packages) if key == "*" else [key]:
            base = REPO.joinpath(*package.split("."))
            for pattern in patterns:
                covered |= set(base.glob(pattern))
    assert missing_packages == [], "these directories would be missing from the wheel"
    uncovered = sorted(str(f.relative_to(REPO)) for f in data_files - covered)
    assert uncovered == [], "add these to [tool.setuptools.package-data]"
