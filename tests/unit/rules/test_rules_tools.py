"""`extauthz test`, `check --explain`, `validate --policy`: the policy author's tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extauthz.cli import main

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "policy.yaml"
TABLE = REPO / "examples" / "policy.tests.yaml"


def test_example_table_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/policy.tests.yaml passes against examples/policy.yaml."""
    assert main(["test", str(TABLE)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "FAIL" not in out


def test_wrong_expectation_fails_usefully(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    """A wrong expectation exits 1 and shows what came out, the rule and the message."""
    table = tmp_path / "t.yaml"
    table.write_text(f"""
policy: {EXAMPLE}
cases:
  - name: developer may terminate (wrong)
    claims: {{sub: dave, groups: [developers]}}
    method: TerminateWorkflowExecution
    namespace: default
    expect: allow
  - name: right one
    claims: {{sub: dave, groups: [developers]}}
    method: QueryWorkflow
    namespace: default
    expect: allow
    code: allowed
""")
    assert main(["test", str(table)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  developer may terminate (wrong)" in out
    assert "expected allow" in out
    assert "got      deny (explicit_deny) by developers-never-destroy" in out
    assert "PASS  right one" in out
    assert "1 passed, 1 failed" in out


def test_broken_table_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    """A malformed case exits 2 with where it is."""
    table = tmp_path / "t.yaml"
    table.write_text(f"policy: {EXAMPLE}\ncases: [{{claims: {{sub: a}}, method: Nope,"
                     " expect: allow}]\n")
    assert main(["test", str(table)]) == 2
    assert "cases[0]" in capsys.readouterr().err


def test_check_explain_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """`check --explain` keeps the contract and adds which rule decided."""
    code = main(["check", "--method", "StartWorkflowExecution", "--namespace", "payroll",
                 "--claims", json.dumps({"sub": "dave", "groups": ["developers"]}),
                 "--policy", str(EXAMPLE), "--explain"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"allowed", "code", "reason", "explain"}
    assert out["code"] == "explicit_deny"
    assert out["explain"]["decision"]["rule"] == "only-finance-starts-payroll"
    assert out["explain"]["principal"]["groups"] == ["developers"]
    assert out["explain"]["steps"][0]["kind"] == "deny-rule"


def test_check_without_explain_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --explain the output has exactly allowed, code, reason."""
    code = main(["check", "--method", "QueryWorkflow", "--namespace", "default",
                 "--claims", json.dumps({"sub": "dave", "groups": ["developers"]}),
                 "--policy", str(EXAMPLE)])
    assert code == 0
    assert set(json.loads(capsys.readouterr().out)) == {"allowed", "code", "reason"}


def test_check_uses_the_config_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    """A config naming a policy_file (relative to the config) makes check use the policy."""
    (tmp_path / "policy.yaml").write_text(EXAMPLE.read_text())
    cfg = tmp_path / "config.yaml"
    cfg.write_text("policy_file: policy.yaml\n")
    code = main(["check", "--method", "TerminateWorkflowExecution", "--namespace", "default",
                 "--claims", json.dumps({"sub": "d", "groups": ["developers"]}),
                 "--config", str(cfg)])
    assert code == 1
    assert json.loads(capsys.readouterr().out)["code"] == "explicit_deny"


def test_explain_without_policy_uses_temporal_semantics(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """With no policy, --explain explains Temporal's default authorizer."""
    code = main(["check", "--method", "StartWorkflowExecution", "--namespace", "default",
                 "--claims", json.dumps({"sub": "a", "permissions": ["default:read"]}),
                 "--explain"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["explain"]["profile"] == "temporal-compatible"
    assert out["explain"]["principal"]["permissions"] == {"default": "read"}
    assert "note" not in out["explain"]


def test_validate_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`validate --policy` reports a valid policy, and a bad one with its key path (exit 2)."""
    assert main(["validate", "--policy", str(EXAMPLE)]) == 0
    assert json.loads(capsys.readouterr().out)["policy"]["bindings"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("bindings: [{name: b, match: {groups: [g]}, roles: [owner], "
                   "namespaces: [x]}]\n")
    assert main(["validate", "--policy", str(bad)]) == 2
    assert "bindings[0].roles[0]: unknown role 'owner'" in capsys.readouterr().err


def test_config_policy_env(tmp_path: Path) -> None:
    """EXTAUTHZ_POLICY_FILE overrides the config's policy_file."""
    from extauthz import config

    s = config.load(None, env={"EXTAUTHZ_POLICY_FILE": "/etc/p.yaml"})
    assert s.policy_file == "/etc/p.yaml"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("policy_file: p.yaml\npolicy_poll_seconds: 0.5\n")
    s = config.load(cfg, env={})
    assert s.policy_file == str(tmp_path / "p.yaml")
    assert s.policy_poll_seconds == 0.5
