"""The Dockerfile, without a container engine: its shape is checked (multi-stage, pinned slim
base, numeric non-root user, OCI labels, ENTRYPOINT), and its build stage's RUN steps are run in
a fresh virtual environment from a build context made with .dockerignore's rules, proving that
the pinned set installs, `pip check` passes, `extauthz --version` runs and the installed server
decides and serves without writing into its installation."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devkit.ports import LOOPBACK, free_port
from devkit.procs import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
VENV_IN_IMAGE = "/opt/extauthz"


@dataclass
class Stage:
    """One FROM … stage: its base, name and instructions (continuations joined)."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """The arguments of every instruction ``keyword`` (RUN, COPY, …)."""
        return [a for k, a in self.instructions if k == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (enough of the syntax for ours)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw.strip())
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base, name))
        elif keyword == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def dockerignore_context(root: Path, target: Path) -> list[str]:
    """Copy into ``target`` what a `docker build` would send with root's .dockerignore (rules in
    order, `!` re-includes, a pattern matching a directory covers its contents, ``**`` any
    depth); return the copied relative paths."""
    rules: list[tuple[bool, str]] = []
    for raw in (root / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").strip("/")))

    def matches(pattern: str, rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            tail = pattern[3:]
            return any(fnmatch.fnmatchcase(p, tail) for p in parts)
        return any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)

    copied: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() or rel.startswith(".git/"):
            continue
        excluded = False
        for negate, pattern in rules:
            if matches(pattern, rel):
                excluded = not negate
        if not excluded:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / rel)
            copied.append(rel)
    return copied


ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())


def _stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


# ---- shape -----------------------------------------------------------------------------------


def test_multi_stage_on_a_pinned_slim_python() -> None:
    """Two stages (build, runtime) on the same slim Python base pinned to a patch version; the
    runtime stage copies only the venv from the build stage."""
    assert [s.name for s in STAGES] == ["build", "runtime"]
    base = STAGES[0].base
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert STAGES[1].base == base
    assert _stage("runtime").args("COPY") == [f"--from=build {VENV_IN_IMAGE} {VENV_IN_IMAGE}"]


def test_base_python_matches_what_the_tests_install_with() -> None:
    """The image's Python minor version is the one this test installs the pinned set with, so
    the install test proves the image's set."""
    minor = re.match(r"python:(3\.\d+)", STAGES[0].base)
    assert minor is not None
    assert minor.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}", (
        f"Dockerfile uses Python {minor.group(1)} but the tests run on "
        f"{sys.version_info.major}.{sys.version_info.minor}: align them")


def test_runtime_stage_is_non_root_without_installers() -> None:
    """The runtime stage runs as a numeric non-root UID:GID, has no pip/compiler installs, sets
    the OCI labels and starts `extauthz serve`."""
    runtime = _stage("runtime")
    user = runtime.args("USER")[-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user
    for run in runtime.args("RUN"):
        assert "apt-get install" not in run and "pip install" not in run, run
    assert "pip uninstall" in " ".join(runtime.args("RUN"))
    labels = " ".join(runtime.args("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert json.loads(runtime.args("ENTRYPOINT")[-1]) == ["extauthz", "serve"]
    env = " ".join(runtime.args("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert f"PATH={VENV_IN_IMAGE}/bin" in env


def test_requirements_are_fully_pinned() -> None:
    """docker/requirements.txt pins every package to one version (name==version)."""
    lines = [line for line in (REPO / "docker" / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.\-+]+", line), line
    names = {line.split("==")[0].lower().replace("_", "-") for line in lines}
    assert {"grpcio", "xds-protos", "temporalio", "pyjwt", "uvloop"} <= names


def test_dockerignore_keeps_the_context_small(tmp_path: Path) -> None:
    """The context holds the package, pyproject, README and the pinned set, and no venv, tests,
    git data or bytecode; every COPY source of the build stage is in it."""
    copied = dockerignore_context(REPO, tmp_path)
    assert "pyproject.toml" in copied and "docker/requirements.txt" in copied
    assert "extauthz/data/temporal-api-access.csv" in copied
    assert not [p for p in copied if p.startswith((".venv/", "tests/", ".git/", "helm/"))]
    assert not [p for p in copied if "__pycache__" in p or p.endswith(".pyc")]
    for copy in _stage("build").args("COPY"):
        for source in shlex.split(copy)[:-1]:
            assert (tmp_path / source).exists(), f"COPY {source}: not in the build context"


DEV_ONLY = ("devkit/", "bench/", "fuzz/", "envoy/")
# modules of the development tooling (the dev issuer / token minter, the local stack): never shipped
DEV_MODULES = ("issuer.py", "issuer_http.py", "tokens.py", "procs.py", "stack.py", "envoyconfig.py",
               "components.py")


def test_image_copies_no_development_tooling(tmp_path: Path) -> None:
    """Only the package, its metadata and the pinned set are copied in: no ``devkit`` (the dev
    issuer and token minter, the local stack), bench, fuzz or Envoy files reach the image."""
    copied = dockerignore_context(REPO, tmp_path)
    assert not [p for p in copied if p.startswith(DEV_ONLY)]
    assert not [p for p in copied if p.startswith("extauthz/") and p.endswith(DEV_MODULES)]
    sources = [s for copy in _stage("build").args("COPY") for s in shlex.split(copy)[:-1]]
    assert sorted(sources) == ["README.md", "docker/requirements.txt", "extauthz",
                               "pyproject.toml"], sources


# ---- the install steps, for real ---------------------------------------------------------------


def _translate(run: str, context: Path, venv: Path) -> list[str]:
    """A build-stage RUN step as a command for this machine: the image's venv path becomes
    ``venv``, `python` the interpreter of this test (same minor version, see above)."""
    words = shlex.split(run.replace(VENV_IN_IMAGE, str(venv)))
    if words[0] == "python":
        words[0] = sys.executable
    return words


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage's RUN steps, in order, in a fresh venv from a .dockerignore context."""
    work = tmp_path_factory.mktemp("docker")
    context, venv = work / "src", work / "venv"
    context.mkdir()
    dockerignore_context(REPO, context)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    for instruction, value in _stage("build").instructions:
        if instruction == "ENV":
            env.update(kv.partition("=")[::2] for kv in shlex.split(value))
    runs = _stage("build").args("RUN")
    assert runs
    for run in runs:
        command = _translate(run, context, venv)
        result = subprocess.run(command, cwd=context, env=env, capture_output=True, text=True,
                                timeout=240, check=False)
        assert result.returncode == 0, f"RUN {run}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return venv


def test_pinned_set_installs_and_version_runs(installed: Path) -> None:
    """After the build steps the venv has no pip, and `extauthz --version` prints the version."""
    assert not (installed / "bin" / "pip").exists()
    result = subprocess.run([str(installed / "bin" / "extauthz"), "--version"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"extauthz \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_installed_image_has_no_token_minter(installed: Path) -> None:
    """The installed venv has the ``extauthz`` package and no ``devkit`` package or dev issuer
    module: the image cannot mint tokens."""
    site = next(installed.glob("lib/python*/site-packages"))
    assert (site / "extauthz" / "cli.py").is_file()
    assert not (site / "devkit").exists()
    assert not [p for p in (site / "extauthz").rglob("*.py") if p.name in DEV_MODULES]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_installed_server_decides_and_serves_without_writing_to_its_install(
        installed: Path, tmp_path: Path) -> None:
    """The installed package (not the source tree) decides a call offline (its data files are
    in the wheel), and `extauthz serve` becomes SERVING and stops on SIGTERM; nothing is
    written into the venv meanwhile (a read-only root filesystem holds)."""
    before = _files(installed)
    env = {"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
           "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    check = subprocess.run(
        [str(installed / "bin" / "extauthz"), "check", "--method",
         "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution",
         "--namespace", "payroll", "--claims", '{"sub": "bob", "permissions": ["payroll:read"]}'],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path)
    assert check.returncode == 1, check.stderr
    assert json.loads(check.stdout)["code"] == "permission_denied"

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f"listen: {LOOPBACK}:{port}\nworkers: 1\nissuers:\n"
        f"  - issuer: https://issuer.test\n    audiences: [temporal]\n"
        f"    jwks_uris: ['file://{tmp_path}/jwks.json']\n")
    proc = ManagedProcess("image-extauthz", [str(installed / "bin" / "extauthz"), "serve",
                                             "--config", str(tmp_path / "config.yaml")],
                          log_path=tmp_path / "serve.log", env=env, cwd=tmp_path).start()
    try:
        def serving() -> bool:
            with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        proc.wait_ready(serving, 30, "the installed server to be SERVING")
    finally:
        assert proc.stop(grace=15) == 0, proc.log_tail()
    assert _files(installed) == before, sorted(_files(installed) ^ before)


def test_otel_proto_reinstall_pins_the_same_version_as_the_requirements() -> None:
    """The build step that puts opentelemetry-proto's files back over xds-protos's old copy
    installs exactly the version docker/requirements.txt pins."""
    pins = dict(line.split("==") for line in
                (REPO / "docker" / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    runs = [run for run in _stage("build").args("RUN") if "--force-reinstall" in run]
    assert runs and runs[0].endswith(f"opentelemetry-proto=={pins['opentelemetry-proto']}")


def test_installed_image_set_can_enable_tracing(installed: Path, tmp_path: Path) -> None:
    """In the image's venv the OTLP exporter loads: `extauthz validate` accepts a config with
    tracing enabled (it refuses one when xds-protos's old opentelemetry/proto won)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tracing:\n  enabled: true\nissuers:\n  - issuer: https://issuer.test\n"
                   "    audiences: [temporal]\n")
    out = subprocess.run([str(installed / "bin" / "extauthz"), "validate", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
