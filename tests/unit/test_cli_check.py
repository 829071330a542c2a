"""The `extauthz check` / `extauthz validate` command-line contract, run as a subprocess.

check prints exactly one JSON object ``{"allowed", "code", "reason"}`` and exits 0 (allowed),
1 (denied) or 2 (usage or config error, message on stderr and nothing on stdout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WF = "/temporal.api.workflowservice.v1.WorkflowService"
START = f"{WF}/StartWorkflowExecution"
WRITER = json.dumps({"sub": "alice", "permissions": ["default:write"]})


def _executable() -> str:
    beside = Path(sys.executable).parent / "extauthz"
    found = str(beside) if beside.exists() else shutil.which("extauthz")
    assert found, "the `extauthz` console script is not installed in this environment"
    return found


EXTAUTHZ = _executable()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with a clean, deterministic environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXTAUTHZ_", "TEMPORAL_AUTH_"))}
    return subprocess.run([EXTAUTHZ, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


def verdict(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object on stdout (and nothing else)."""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict) and set(obj) == {"allowed", "code", "reason"}
    assert isinstance(obj["allowed"], bool) and isinstance(obj["reason"], str)
    return obj


def test_allowed_prints_one_json_object_and_exits_0() -> None:
    """An allowed call prints {"allowed": true, "code": "allowed", ...} and exits 0."""
    proc = run("check", "--method", START, "--namespace", "default", "--claims", WRITER)
    assert proc.returncode == 0, proc.stderr
    obj = verdict(proc)
    assert (obj["allowed"], obj["code"]) == (True, "allowed")


def test_denied_prints_the_reason_and_exits_1() -> None:
    """A denied call prints the stable code and a reason naming subject and namespace."""
    proc = run("check", "--method", START, "--namespace", "payments", "--claims", WRITER)
    assert proc.returncode == 1, proc.stderr
    obj = verdict(proc)
    assert (obj["allowed"], obj["code"]) == (False, "permission_denied")
    assert '"alice"' in obj["reason"] and '"payments"' in obj["reason"]


def test_short_method_name_and_request_json() -> None:
    """`Service/Method` and a protobuf-JSON `--request` are accepted."""
    proc = run("check", "--method", "WorkflowService/StartWorkflowExecution",
               "--request", json.dumps({"namespace": "default", "taskQueue": {"name": "q"}}),
               "--claims", WRITER)
    assert proc.returncode == 0, proc.stderr
    assert verdict(proc)["allowed"] is True


def test_namespace_shortcut_overrides_the_request_namespace() -> None:
    """`--namespace` sets the request's namespace (over one in `--request`)."""
    proc = run("check", "--method", START, "--request", '{"namespace": "payments"}',
               "--namespace", "default", "--claims", WRITER)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_missing_namespace_is_denied() -> None:
    """Without a namespace a namespace-scoped call is denied with missing_namespace."""
    proc = run("check", "--method", START, "--claims", WRITER)
    assert proc.returncode == 1
    assert verdict(proc)["code"] == "missing_namespace"


def test_request_with_cross_namespace_commands() -> None:
    """`--request` with commands: a signal into another namespace needs a role there too."""
    request = json.dumps({"namespace": "default", "commands": [
        {"signalExternalWorkflowExecutionCommandAttributes": {"namespace": "payments",
                                                              "signalName": "s"}}]})
    method = f"{WF}/RespondWorkflowTaskCompleted"
    denied = run("check", "--method", method, "--request", request, "--claims", WRITER)
    assert denied.returncode == 1
    assert '"payments"' in verdict(denied)["reason"]
    both = json.dumps({"sub": "w", "permissions": ["default:write", "payments:write"]})
    assert run("check", "--method", method, "--request", request,
               "--claims", both).returncode == 0


def test_unknown_method_is_denied_not_a_usage_error() -> None:
    """An unknown method is a decision (exit 1, unknown_method), not a crash."""
    proc = run("check", "--method", f"{WF}/NoSuchMethod", "--claims", WRITER)
    assert proc.returncode == 1
    assert verdict(proc)["code"] == "unknown_method"


def test_health_check_is_allowed_without_permissions() -> None:
    """The health check is always allowed."""
    proc = run("check", "--method", "/grpc.health.v1.Health/Check", "--claims", "{}")
    assert proc.returncode == 0
    assert verdict(proc)["code"] == "health_check"


ADMIN_METHOD = "/temporal.server.api.adminservice.v1.AdminService/DescribeCluster"
SYSTEM_ADMIN = json.dumps({"sub": "ops", "permissions": ["temporal-system:admin"]})
NAMESPACE_ADMIN = json.dumps({"sub": "ops", "permissions": ["default:admin"]})


@pytest.mark.parametrize("path", [
    f"{WF}/NoSuchMethod",
    f"/{START}",
    f"{WF}%2FStartWorkflowExecution",
    f"{START}/",
])
@pytest.mark.parametrize("body", [["--namespace", "default"],
                                  ["--request", '{"namespace": "default", "x": 1}']])
def test_path_that_is_not_a_method_is_a_decision_whatever_the_body(path: str,
                                                                   body: list[str]) -> None:
    """An unknown method, `//`, `%2F` or a trailing slash, with --namespace or --request, is
    denied with unknown_method naming the path (exit 1), as the server does; not exit 2."""
    proc = run("check", "--method", path, *body, "--claims", WRITER)
    assert proc.returncode == 1, proc.stderr
    obj = verdict(proc)
    assert (obj["allowed"], obj["code"]) == (False, "unknown_method")
    assert json.dumps(path) in obj["reason"]


@pytest.mark.parametrize(("claims", "code", "exit_code"), [
    (SYSTEM_ADMIN, "allowed", 0),
    (NAMESPACE_ADMIN, "permission_denied", 1),
])
@pytest.mark.parametrize("method", [ADMIN_METHOD, "AdminService/DescribeCluster"])
def test_admin_service_is_decided_as_cluster_admin(claims: str, code: str, exit_code: int,
                                                   method: str) -> None:
    """An AdminService method needs the admin system role, as on the server; its body is not
    read, so --namespace changes nothing (a namespace admin is still denied)."""
    proc = run("check", "--method", method, "--namespace", "default", "--claims", claims)
    assert proc.returncode == exit_code, proc.stderr
    obj = verdict(proc)
    assert (obj["allowed"], obj["code"]) == (exit_code == 0, code)
    if exit_code:
        assert '"ops"' in obj["reason"] and "AdminService/DescribeCluster" in obj["reason"]


def test_health_check_with_a_namespace_is_allowed() -> None:
    """The health check is always allowed, --namespace or not (the server reads no body)."""
    proc = run("check", "--method", "/grpc.health.v1.Health/Check", "--namespace", "default",
               "--claims", "{}")
    assert proc.returncode == 0, proc.stderr
    assert verdict(proc)["code"] == "health_check"


@pytest.mark.parametrize("path", [ADMIN_METHOD, f"/{START}", f"{WF}/NoSuchMethod",
                                  "/grpc.health.v1.Health/Check"])
@pytest.mark.parametrize("permissions", [["temporal-system:admin"], ["default:write"]])
async def test_check_decides_as_the_server_pipeline(path: str, permissions: list[str]) -> None:
    """For paths whose body the server never reads, check's decision (given --namespace) is
    the server pipeline's for a real call with some body."""
    from extauthz.model import CheckInput
    from extauthz.offline import StaticClaims, decide_offline
    from extauthz.pipeline import Pipeline

    claims = {"sub": "ops", "permissions": permissions}
    offline = await decide_offline(path, {"namespace": "default"}, claims=claims)
    body = b"\x00\x00\x00\x00\x03\x0a\x01x"  # a one-field message the server does not read
    headers = {"content-type": "application/grpc", "authorization": "Bearer t"}
    server = await Pipeline(StaticClaims(claims, ())).check(CheckInput(path, headers, body))
    assert (offline.allowed, offline.reason, offline.message) == (
        server.allowed, server.reason, server.message)


def test_help_states_the_exit_codes_and_unknown_paths() -> None:
    """`check --help` says every path gets a decision and what exit 0, 1 and 2 mean."""
    proc = run("check", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "0 allowed, 1 denied, 2 a broken invocation" in text
    assert "unknown_method" in text and "AdminService" in text


@pytest.mark.parametrize(("args", "needle"), [
    (["--claims", "{not json"], "--claims is not valid JSON"),
    (["--claims", "[1, 2]"], "--claims must be a JSON object"),
    (["--claims", WRITER, "--request", "{bad"], "--request is not valid JSON"),
    (["--claims", WRITER, "--request", "[]"], "--request must be a JSON object"),
    (["--claims", WRITER, "--request", '{"namespace": "default", "bogusField": 1}'],
     "bogusField"),
    (["--claims", WRITER, "--request", '{"namespace": 5}'], "namespace"),
    (["--token", "abc"], "--config"),
    ([], "--claims"),
])
def test_usage_errors_exit_2_with_the_message_on_stderr(args: list[str], needle: str) -> None:
    """Bad JSON, a bad --request field or no --claims/--token: exit 2, stderr says why."""
    proc = run("check", "--method", START, *args)
    assert proc.returncode == 2, proc.stdout
    assert needle in proc.stderr
    assert proc.stdout == ""


def test_claims_and_token_are_mutually_exclusive() -> None:
    """--claims and --token together are a usage error."""
    proc = run("check", "--method", START, "--claims", WRITER, "--token", "t")
    assert proc.returncode == 2
    assert "not allowed with" in proc.stderr


def test_check_uses_the_configured_claim_mapping(tmp_path: Path) -> None:
    """With --config, the issuer's claim mapping (here a custom claim name) is applied."""
    path = tmp_path / "c.yaml"
    path.write_text("issuers:\n  - issuer: https://idp.example\n"
                    "    claims: {permissions_claim: temporal}\n", encoding="utf-8")
    claims = json.dumps({"iss": "https://idp.example", "sub": "s",
                         "temporal": ["default:write"]})
    proc = run("check", "--method", START, "--namespace", "default", "--claims", claims,
               "--config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validate_good_config_exits_0(tmp_path: Path) -> None:
    """`validate --config` on a good file prints {"valid": true, ...} and exits 0."""
    path = tmp_path / "ok.yaml"
    path.write_text("issuers:\n  - issuer: https://idp.example\n", encoding="utf-8")
    proc = run("validate", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"valid": True, "config": str(path),
                                       "issuers": ["https://idp.example"]}


def test_validate_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    """`validate --config` on a bad file exits 2 with the file and key path on stderr."""
    path = tmp_path / "bad.yaml"
    path.write_text("issuers:\n  - issuer: https://idp.example\n    leewy_seconds: 5\n",
                    encoding="utf-8")
    proc = run("validate", "--config", str(path))
    assert proc.returncode == 2
    assert f"{path}: issuers[0].leewy_seconds: unknown key" in proc.stderr
    assert proc.stdout == ""
