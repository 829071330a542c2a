"""`check --explain`'s `rules` list: every rule considered, each with whether it applied and why,
and a deciding rule that agrees with the engine for generated policies, principals and calls."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_helpers import decide, policy, principal

from extauthz import methods
from extauthz.model import Target
from extauthz.rules.document import Policy, load_file, temporal_compatible
from extauthz.rules.engine import Engine
from extauthz.rules.explain import considered, decided_by, explain

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "policy.yaml"

# every kind of rule the engine distinguishes: dry-run deny rules, deny rules on queues with
# `unless`, cluster bindings, queue-restricted bindings (sticky, by id), cluster-read option
WIDE = """
version: 1
profile: extended
options: {temporal_permissions: true, cluster_read_for_namespace_users: true}
bindings:
  - {name: readers, match: {groups: [r]}, roles: [read], namespaces: ["*"]}
  - {name: writers, match: {groups: [w]}, roles: [write], namespaces: [default, "dev-*"]}
  - {name: q-workers, match: {groups: [q]}, roles: [worker], namespaces: [default],
     task_queues: ["billing-*"]}
  - {name: q-sticky, match: {groups: [s]}, roles: [worker], namespaces: [default, payroll],
     task_queues: [jobs], sticky_task_queues: ["jobs-sticky"], allow_by_id: true}
  - {name: ops, match: {groups: [ops]}, roles: [admin], namespaces: ["*"], cluster: true}
  - {name: ops-payroll, match: {groups: [opsp]}, roles: [read], namespaces: [payroll],
     cluster: true}
deny:
  - {name: try-deny, match: {groups: [w]}, categories: [destroys], dry_run: true}
  - {name: no-payroll, match: {anyone: true}, unless: {groups: [ops]},
     categories: [starts-workflows], namespaces: [payroll]}
  - {name: no-secret-queue, match: {groups: [q, s, w]}, methods: [StartWorkflowExecution,
     PollActivityTaskQueue], task_queues: [secret]}
"""
GLOBAL_DRY_RUN = "dry_run: true\n" + WIDE
NO_PERMISSIONS = WIDE.replace("temporal_permissions: true", "temporal_permissions: false")
POLICIES: list[Policy] = [load_file(str(EXAMPLE)), temporal_compatible(), policy(WIDE),
                          policy(GLOBAL_DRY_RUN), policy(NO_PERMISSIONS)]
ENGINES = [Engine(p) for p in POLICIES]
METHODS = sorted(methods.table().values(), key=lambda e: e.method.path)
# the methods the policies above tell apart (queues, by id, destroys, cluster-read, ...),
# drawn as often as all the others together
FOCUS = sorted((e for e in METHODS if e.method.name in {
    "StartWorkflowExecution", "PollActivityTaskQueue", "PollWorkflowTaskQueue",
    "RespondActivityTaskCompletedById", "TerminateWorkflowExecution", "DescribeNamespace",
    "ListNamespaces", "GetClusterInfo", "ShutdownWorker", "CreateNexusEndpoint",
    "DeleteNamespace", "DescribeWorkflowExecution", "SignalWithStartWorkflowExecution",
}), key=lambda e: e.method.path)
NAMESPACES = ["", "default", "payroll", "dev-x", "other"]
QUEUES = ["", "billing-a", "jobs", "jobs-sticky", "secret", "x"]

claims = st.fixed_dictionaries({
    "sub": st.sampled_from(["a", "b"]),
    "groups": st.lists(st.sampled_from(["r", "w", "q", "s", "ops", "opsp", "finance",
                                        "developers", "platform", "auditors"]), max_size=3),
    "permissions": st.lists(st.sampled_from(
        ["default:read", "default:write", "payroll:admin", "temporal-system:read",
         "temporal-system:admin", "other:worker"]), max_size=2),
}, optional={"client_id": st.sampled_from(["billing-svc", "x"]),
             "gty": st.just("client-credentials")})


@st.composite
def targets(draw: st.DrawFn) -> Target:
    """A call as the scanner could report it."""
    entry = draw(st.sampled_from(FOCUS) | st.sampled_from(METHODS))
    return Target(
        entry.method,
        namespace=draw(st.sampled_from(NAMESPACES)),
        other_namespaces=tuple(draw(st.lists(st.sampled_from(NAMESPACES), max_size=1))),
        task_queues=tuple(draw(st.lists(st.sampled_from(QUEUES), max_size=2))),
        sticky_queues=tuple(draw(st.lists(st.sampled_from(QUEUES), max_size=1))),
        terminates_existing=draw(st.booleans()),
        by_namespace_id=draw(st.sampled_from([False, False, False, True])),
    )


# 800 by default (~8 s); EXTAUTHZ_EXPLAIN_EXAMPLES=3000 (or more) for a longer search
@settings(max_examples=int(os.environ.get("EXTAUTHZ_EXPLAIN_EXAMPLES", "800")), deadline=None)
@given(which=st.integers(0, len(ENGINES) - 1), who=claims, target=targets())
def test_rewalk_agrees_with_the_engine(which: int, who: dict[str, object],
                                       target: Target) -> None:
    """The rule-by-rule re-walk decides exactly as the engine (allowed, reason, rule, dry-run),
    and the rule marked as deciding is the one the decision names."""
    engine = ENGINES[which]
    p = principal(**who)
    decision = engine(p, target)
    rules, walked = considered(engine, p, target)
    assert (walked.allowed, walked.reason, walked.rule, walked.dry_run) == (
        decision.allowed, decision.reason, decision.rule, decision.dry_run)
    deciding = decided_by(rules, walked)
    named = decision.rule is not None
    assert (deciding is not None) == named, (decision, [r.line() for r in rules])
    if deciding is not None:
        assert decision.rule is not None
        assert deciding.applies
        assert decision.rule == deciding.name or deciding.kind == "permissions"
        if deciding.kind == "deny":
            earlier = [r for r in rules if r.kind == "deny" and r.index < deciding.index]
            assert all(not r.applies or r.effect != "denies" for r in earlier)
    out = explain(engine, decision)
    assert [r["decides"] for r in out["rules"]].count(True) == (1 if named else 0)
    assert "note" not in out, out["note"]


def test_every_rule_is_listed_with_why() -> None:
    """A denial by deny rule lists each deny rule and binding in file order, with the checks
    that made each apply or not, and marks the deciding one."""
    engine = ENGINES[0]
    decision = decide(engine, {"sub": "dave", "groups": ["developers"]},
                      "StartWorkflowExecution", namespace="payroll")
    out = explain(engine, decision)
    lines = [r["line"] for r in out["rules"]]
    assert [(r["kind"], r["index"]) for r in out["rules"]] == [
        ("deny", 1), ("deny", 2), *[("binding", i) for i in range(1, 6)], ("permissions", 0)]
    first = out["rules"][0]
    assert first["decides"] and first["effect"] == "denies"
    assert first["name"] == decision.rule == "only-finance-starts-payroll"
    assert "namespaces [payroll] match" in lines[0]
    assert lines[3].startswith("binding 2 'finance-payroll': principal does not match")
    assert "namespaces [payroll] do not match [default, dev-*]" in lines[4]
    assert not any(r["decides"] for r in out["rules"][1:])


def test_allow_marks_the_granting_binding() -> None:
    """An allow marks the binding that granted it, saying which role grants the method."""
    engine = ENGINES[0]
    decision = decide(engine, {"sub": "f", "groups": ["finance"]},
                      "StartWorkflowExecution", namespace="payroll")
    out = explain(engine, decision)
    [deciding] = [r for r in out["rules"] if r["decides"]]
    assert deciding["name"] == "finance-payroll" == decision.rule
    assert deciding["line"] == (
        "binding 2 'finance-payroll': principal matches (groups in ['finance']); roles [write] "
        "grant WorkflowService/StartWorkflowExecution; namespaces [payroll] match → allows")
    exempt = out["rules"][0]
    assert not exempt["applies"] and "exempt: unless" in exempt["line"]


@pytest.mark.parametrize("method", ["grpc.health.v1.Health/Check", "StartWorkflowExecution"])
def test_calls_decided_before_any_rule_list_none(method: str) -> None:
    """A health check and a call without a namespace are decided before any rule: no rules."""
    engine = ENGINES[0]
    decision = decide(engine, {"sub": "f", "groups": ["finance"]}, method)
    assert explain(engine, decision)["rules"] == []


def test_by_id_allowed_by_the_system_role_names_it_not_a_narrow_cluster_binding() -> None:
    """A namespace named by id is allowed by the temporal-system role, not by a `cluster: true`
    binding limited to payroll: the decision and its explanation name the permissions claim."""
    engine = ENGINES[2]
    entry = methods.by_name("WorkflowService/DescribeNamespace")
    assert entry is not None
    p = principal(sub="a", groups=["opsp"], permissions=["temporal-system:read"])
    target = Target(entry.method, namespace="", by_namespace_id=True)
    decision = engine(p, target)
    assert decision.allowed
    assert decision.rule == "permissions"
    rules, walked = considered(engine, p, target)
    deciding = decided_by(rules, walked)
    assert deciding is not None
    assert deciding.kind == "permissions"
