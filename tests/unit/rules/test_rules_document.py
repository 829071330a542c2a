"""Policy validation: unknown keys, roles, methods and impossible patterns are rejected with
the file, the key path and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_helpers import policy

from extauthz.rules import categories
from extauthz.rules.document import PolicyError, load_file

BASE = """
version: 1
bindings:
  - name: b
    match: {groups: [g]}
    roles: [read]
    namespaces: [default]
"""


@pytest.mark.parametrize(
    ("text", "where", "advice"),
    [
        ("version: 2", "test.yaml: version", "reads 1"),
        ("profile: strict", "profile", "temporal-compatible"),
        ("colour: blue", "colour", "known keys"),
        ("options: {cluster_read: true}", "options.cluster_read", "known keys"),
        ("bindings: [{name: b, match: {groups: [g]}, roles: [writer], namespaces: [x]}]",
         "bindings[0].roles[0]", "unknown role 'writer'"),
        ("bindings: [{name: b, match: {groups: [g]}, roles: [read]}]",
         "bindings[0].namespaces", "cluster: true"),
        ("bindings: [{name: b, match: {groups: [g]}, roles: [read], namespaces: ['pay roll']}]",
         "bindings[0].namespaces[0]", "namespace"),
        ("bindings: [{name: b, match: {groups: [g]}, roles: [read],"
         " namespaces: [temporal-system]}]",
         "bindings[0].namespaces[0]", "cluster: true"),
        ("bindings: [{name: b, match: {groups: [g]}, roles: [read], namespaces: [x],"
         " task_queues: ['a**']}]", "bindings[0].task_queues[0]", "single `*`"),
        ("bindings: [{name: b, match: {groups: [g]}, roles: [read], namespaces: [x], colour: 1}]",
         "bindings[0].colour", "unknown key"),
        ("bindings: [{name: b, match: {group: [g]}, roles: [read], namespaces: [x]}]",
         "bindings[0].match.group", "unknown key"),
        ("bindings: [{name: b, match: {kind: robot}, roles: [read], namespaces: [x]}]",
         "bindings[0].match.kind", "human or service"),
        ("bindings: [{name: b, match: {groups: []}, roles: [read], namespaces: [x]}]",
         "bindings[0].match.groups", "matches nothing"),
        ("roles: {dev: {methods: [StartWorkflow]}}", "roles.dev.methods[0]",
         "did you mean StartWorkflowExecution"),
        ("roles: {dev: {categories: [reads]}}", "roles.dev.categories[0]", "known: read"),
        ("deny: [{name: d, match: {groups: [g]}, categories: [starts-workflow]}]",
         "deny[0].categories[0]", "cluster, starts-workflows, destroys"),
        ("roles: {read: {categories: [read]}}", "roles.read", "built-in"),
        ("roles: {dev: {description: x}}", "roles.dev", "grants no method"),
        ("deny: [{name: d, match: {groups: [g]}}]", "deny[0].methods", "categories"),
        ("deny: [{name: d, match: {groups: [g]}, methods: [Nope]}]", "deny[0].methods[0]",
         "unknown method"),
        ("bindings: [{name: x, match: {groups: [g]}, roles: [read], namespaces: [a]}]\n"
         "deny: [{name: x, match: {groups: [g]}, methods: [QueryWorkflow]}]",
         "deny[0].name", "used twice"),
        ("claims: {groups: ['a..b']}", "claims.groups[0]", "empty segment"),
        ("dry_run: yes please", "dry_run", "true or false"),
    ],
)
def test_validation_errors(text: str, where: str, advice: str) -> None:
    """Each mistake is reported at its key path with advice."""
    with pytest.raises(PolicyError) as info:
        policy(text)
    message = str(info.value)
    assert message.startswith("test.yaml: "), message
    assert where in message, message
    assert advice in message, message


def test_load_file_names_the_file(tmp_path: Path) -> None:
    """Errors from a file name the file; YAML syntax errors too."""
    f = tmp_path / "p.yaml"
    f.write_text("bindings: [")
    with pytest.raises(PolicyError, match=r"p\.yaml: not valid YAML"):
        load_file(f)
    with pytest.raises(PolicyError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_valid_policy_compiles() -> None:
    """A small valid policy compiles into frozen, precompiled bindings."""
    p = policy(BASE)
    b = p.bindings[0]
    assert "default" in b.namespaces  # type: ignore[operator]
    assert b.methods == categories.builtin_roles("extended")["read"]
    assert b.task_queues is None


def test_custom_role_with_except_and_builtin() -> None:
    """Custom roles combine built-in roles, categories and methods, minus exceptions."""
    p = policy("""
        roles:
          operator:
            roles: [write]
            except: {methods: [TerminateWorkflowExecution]}
    """)
    ops = p.roles["operator"].methods
    term = "/temporal.api.workflowservice.v1.WorkflowService/TerminateWorkflowExecution"
    start = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution"
    assert term not in ops
    assert start in ops


def test_bare_method_name_means_every_service() -> None:
    """`DeleteWorkflowExecution` covers WorkflowService and AdminService; qualified picks one."""
    assert len(categories.resolve_method("DeleteWorkflowExecution")) == 2
    assert len(categories.resolve_method("WorkflowService/DeleteWorkflowExecution")) == 1


def test_example_policy_is_valid(repo_root: Path) -> None:
    """examples/policy.yaml loads."""
    p = load_file(repo_root / "examples" / "policy.yaml")
    assert {b.name for b in p.bindings} >= {"finance-payroll", "billing-worker"}


def test_categories_partition_namespace_methods() -> None:
    """read/write/admin partition every namespace-scoped method; worker is within read + write."""
    c = categories.categories()
    assert not (c["read"] & c["write"]) and not (c["write"] & c["admin"])
    assert c["worker"] <= c["read"] | c["write"]
    assert len(c["cluster-read"]) == 3
    start = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution"
    assert start not in c["worker"]
