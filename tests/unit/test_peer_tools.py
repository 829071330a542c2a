"""`extauthz check` and `extauthz test` with a certificate identity, and `extauthz validate
--envoy`: the offline tools decide certificate callers as the server does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from extauthz.rules.tabletest import report, run_file

POLICY = """\
bindings:
  - name: billing
    match: {spiffe: ["spiffe://cluster.local/ns/billing/sa/*"]}
    roles: [write]
    namespaces: [default]
    task_queues: ["billing-*"]
  - name: legacy
    match: {x509_subject: ["CN=legacy,O=acme"]}
    roles: [read]
    namespaces: [default]
  - name: ops
    match: {groups: [ops], spiffe: ["spiffe://cluster.local/ns/ops/**"]}
    roles: [write]
    namespaces: [default]
"""

TABLE = """\
policy: policy.yaml
principals:
  olga: {sub: olga, groups: [ops]}
cases:
  - name: a billing workload starts on its queue
    certificate: {spiffe: "spiffe://cluster.local/ns/billing/sa/w"}
    method: StartWorkflowExecution
    namespace: default
    request: {taskQueue: {name: billing-1}}
    expect: allow
    rule: billing
  - name: not on another queue
    certificate: {spiffe: "spiffe://cluster.local/ns/billing/sa/w"}
    method: StartWorkflowExecution
    namespace: default
    request: {taskQueue: {name: other}}
    expect: deny
    code: task_queue_denied
  - name: a subject DN reads
    certificate: {subject: "CN=legacy,O=acme"}
    method: DescribeNamespace
    namespace: default
    expect: allow
  - name: ops token with the ops tool's certificate
    principal: olga
    certificate: {spiffe: "spiffe://cluster.local/ns/ops/sa/tool"}
    method: StartWorkflowExecution
    namespace: default
    expect: allow
  - name: ops token alone
    principal: olga
    method: StartWorkflowExecution
    namespace: default
    expect: deny
"""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extauthz", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60, check=False)


def test_table_cases_take_a_certificate_alone_or_beside_claims(tmp_path: Path) -> None:
    """`extauthz test` runs certificate-only, subject-DN and token+certificate cases."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "t.yaml").write_text(TABLE)
    policy, results = run_file(tmp_path / "t.yaml")
    text, ok = report(policy, results)
    assert ok, text
    assert len(results) == 5


def test_table_certificate_errors_name_the_case(tmp_path: Path) -> None:
    """A bad certificate in a case is a table error naming the case's key."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "t.yaml").write_text(
        "policy: policy.yaml\ncases:\n  - {certificate: {spiffe: 'http://x'}, "
        "method: DescribeNamespace, namespace: default, expect: deny}\n")
    out = _run("test", "t.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert "cases[0].certificate.spiffe" in out.stderr


def test_check_decides_a_certificate_caller_like_the_server(tmp_path: Path) -> None:
    """`extauthz check --spiffe` allows the billing workload on its queue, refuses another
    queue, and with a config refuses a trust domain it does not list (untrusted_peer)."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    start = ["check", "--policy", "policy.yaml", "--method", "StartWorkflowExecution"]
    ok = _run(*start, "--request", '{"namespace":"default","taskQueue":{"name":"billing-1"}}',
              "--spiffe", "spiffe://cluster.local/ns/billing/sa/w", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["allowed"] is True
    other = _run(*start, "--request", '{"namespace":"default","taskQueue":{"name":"x"}}',
                 "--spiffe", "spiffe://cluster.local/ns/billing/sa/w", cwd=tmp_path)
    assert json.loads(other.stdout)["code"] == "task_queue_denied"
    (tmp_path / "c.yaml").write_text(
        "policy_file: policy.yaml\n"
        "peer_identity: {enabled: true, trust_domains: [cluster.local]}\n")
    revoked = _run("check", "--config", "c.yaml", "--method", "DescribeNamespace",
                   "--namespace", "default", "--spiffe", "spiffe://gone.example/ns/billing/sa/w",
                   cwd=tmp_path)
    assert revoked.returncode == 1
    assert json.loads(revoked.stdout)["code"] == "untrusted_peer"
    nobody = _run("check", "--policy", "policy.yaml", "--method", "DescribeNamespace",
                  cwd=tmp_path)
    assert nobody.returncode == 2 and "--spiffe" in nobody.stderr


def test_validate_refuses_peer_identity_behind_an_envoy_that_is_not_the_terminator(
        tmp_path: Path, repo_root: Path) -> None:
    """With peer_identity on, `validate --envoy envoy.yaml` (plain h2c) fails naming the
    listener; the mTLS variant passes; without --envoy a warning says what to check."""
    (tmp_path / "c.yaml").write_text(
        "peer_identity: {enabled: true, trust_domains: [cluster.local]}\n")
    plain = _run("validate", "--config", "c.yaml", "--envoy",
                 str(repo_root / "envoy/envoy.yaml"), cwd=tmp_path)
    assert plain.returncode == 2
    assert "does not terminate the client's TLS" in plain.stderr
    mtls = _run("validate", "--config", "c.yaml", "--envoy",
                str(repo_root / "envoy/envoy-mtls.yaml"), cwd=tmp_path)
    assert mtls.returncode == 0, mtls.stderr
    unchecked = _run("validate", "--config", "c.yaml", cwd=tmp_path)
    assert unchecked.returncode == 0 and "--envoy" in unchecked.stderr


def test_the_mesh_example_policy_passes_its_table(repo_root: Path) -> None:
    """examples/mesh-policy.yaml (humans by token, workers by SPIFFE ID, both at once) decides
    every case of examples/mesh-policy.tests.yaml as written."""
    policy, results = run_file(repo_root / "examples" / "mesh-policy.tests.yaml")
    text, ok = report(policy, results)
    assert ok, text
    assert len(results) >= 12
