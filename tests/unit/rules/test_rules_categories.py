"""Intent categories (`starts-workflows`, `destroys`): a method-by-method review recorded as
data, kept in step with the installed temporalio, the docs and the example test table."""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from rules_helpers import engine, principal, target

from extauthz import methods
from extauthz.model import Access, Method, Scope
from extauthz.rules import categories
from extauthz.rules.document import PolicyError
from extauthz.rules.tabletest import case_method

REPO = Path(__file__).resolve().parents[3]
STARTS, DESTROYS = "starts-workflows", "destroys"


def _path(short: str) -> str:
    entry = methods.by_name(short)
    assert entry is not None, short
    return entry.method.path


def test_every_method_of_the_table_is_reviewed() -> None:
    """Every method of the installed temporalio (and the rest of the table) is placed in or out
    of the intent categories in INTENT_REVIEW; the failure names the unreviewed methods."""
    missing = categories.unreviewed()
    assert not missing, (
        "methods nobody reviewed for the intent categories (add each to INTENT_REVIEW in "
        f"extauthz/rules/categories.py, in or out, and to docs/policy.md): {', '.join(missing)}"
    )


def test_a_method_nobody_reviewed_is_named_and_blocks_intent_policies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A method a newer temporalio adds is reported by name, and a policy naming an intent
    category refuses to load (it might belong there); other policies still load."""
    new = Method(methods.WORKFLOW_SERVICE, "StartWorkflowTomorrow", Scope.NAMESPACE,
                 Access.WRITE)
    table = {**methods.table(), new.path: methods.MethodEntry(new, methods.MessagePlan())}
    # the process-wide sets are built (cached) from the real table first, as at start-up
    categories.categories(), categories.builtin_roles("extended")
    categories.builtin_cluster_roles()
    monkeypatch.setattr(methods, "table", lambda: table)
    assert categories.unreviewed() == ("WorkflowService/StartWorkflowTomorrow",)
    deny = """
        deny: [{name: d, match: {anyone: true}, categories: [read, %s], namespaces: [p]}]
    """
    with pytest.raises(PolicyError, match=r"deny\[0\]\.categories\[1\]: .*"
                       "WorkflowService/StartWorkflowTomorrow.*INTENT_REVIEW"):
        engine(deny % STARTS)
    engine("deny: [{name: d, match: {anyone: true}, categories: [write]}]")


def test_review_names_only_known_methods() -> None:
    """INTENT_REVIEW names no method that Temporal's access table does not know (no typos),
    and only category names it defines."""
    facts = {f"/{s}/{m}" for s, m in methods._access_facts()} | set(methods.table())
    for path, cats in categories.intent_review().items():
        assert path in facts, path
        assert cats <= set(categories.INTENT_NAMES), path


def test_intent_categories_hold_only_namespace_scoped_methods() -> None:
    """A deny rule with `namespaces` can match every member: cluster-scoped methods belong to
    `cluster`, never to an intent category."""
    c = categories.categories()
    for name in categories.INTENT_NAMES:
        assert c[name], name
        for path in c[name]:
            assert methods.table()[path].method.scope is Scope.NAMESPACE, path


def test_starts_workflows_covers_every_way_to_make_a_run() -> None:
    """`starts-workflows` holds the reviewer's PatchSchedule, reset and batch besides the
    starts, and no worker method (a deny rule on it must not stop workers)."""
    c = categories.categories()
    for short in ("WorkflowService/StartWorkflowExecution",
                  "WorkflowService/SignalWithStartWorkflowExecution",
                  "WorkflowService/ExecuteMultiOperation", "WorkflowService/CreateSchedule",
                  "WorkflowService/UpdateSchedule", "WorkflowService/PatchSchedule",
                  "WorkflowService/ResetWorkflowExecution",
                  "WorkflowService/StartBatchOperation"):
        assert _path(short) in c[STARTS], short
    assert _path("WorkflowService/RespondWorkflowTaskCompleted") not in c[STARTS]
    assert not c[STARTS] & c["worker"]
    assert c[STARTS] <= c["write"]


def test_destroys_covers_the_old_rule_and_every_namespace_deletion() -> None:
    """`destroys` holds terminate, cancel, reset, delete and batch (the example's old list)
    and every namespace-scoped Delete method; it grants nothing a worker needs."""
    c = categories.categories()
    old = ("TerminateWorkflowExecution", "RequestCancelWorkflowExecution",
           "ResetWorkflowExecution", "DeleteWorkflowExecution", "StartBatchOperation")
    for name in old:
        assert _path(f"WorkflowService/{name}") in c[DESTROYS], name
    deletes = {p for p, e in methods.table().items()
               if e.method.scope is Scope.NAMESPACE and e.method.name.startswith("Delete")}
    assert deletes <= c[DESTROYS]
    assert not c[DESTROYS] & c["worker"]


def test_deny_rule_by_intent_category() -> None:
    """`categories: [starts-workflows]` in a deny rule refuses PatchSchedule in its namespace
    to non-exempt principals; a worker's RespondWorkflowTaskCompleted passes."""
    e = engine("""
        bindings: [{name: all, match: {anyone: true}, roles: [admin], namespaces: ["*"]}]
        deny:
          - {name: starts, match: {anyone: true}, unless: {groups: [finance]},
             categories: [starts-workflows], namespaces: [payroll]}
    """)
    pat = principal(sub="pat", groups=["platform"])
    patch = target("PatchSchedule", namespace="payroll", scheduleId="s",
                   patch={"triggerImmediately": {}})
    denied = e.decide(pat, patch)
    assert not denied.allowed and denied.rule == "starts"
    assert str(denied.reason) == "explicit_deny"
    assert e.decide(principal(sub="fi", groups=["finance"]), patch).allowed
    assert e.decide(pat, target("PatchSchedule", namespace="default")).allowed
    assert e.decide(pat, target("RespondWorkflowTaskCompleted", namespace="payroll")).allowed


def test_role_by_intent_category() -> None:
    """A custom role can grant or except an intent category."""
    e = engine("""
        roles:
          cleaner: {categories: [destroys]}
          operator: {roles: [write], except: {categories: [destroys]}}
        bindings:
          - {name: c, match: {groups: [c]}, roles: [cleaner], namespaces: [x]}
          - {name: o, match: {groups: [o]}, roles: [operator], namespaces: [x]}
    """)
    cleaner, operator = principal(sub="c", groups=["c"]), principal(sub="o", groups=["o"])
    delete = target("DeleteSchedule", namespace="x")
    assert e.decide(cleaner, delete).allowed
    assert not e.decide(cleaner, target("StartWorkflowExecution", namespace="x")).allowed
    assert not e.decide(operator, delete).allowed
    assert e.decide(operator, target("PatchSchedule", namespace="x")).allowed


# ---- the docs and the example table follow the code ---------------------------------------


def _display_names() -> Mapping[str, str]:
    """Path → the name docs/policy.md uses: bare when unique in the table, else Service/Method."""
    table = methods.table()
    count = collections.Counter(e.method.name for e in table.values())
    return {p: e.method.name if count[e.method.name] == 1 else e.method.short
            for p, e in table.items()}


def _documented_members() -> dict[str, list[str]]:
    text = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    section = text.split("<!-- category-members:begin -->", 1)[1]
    section = section.split("<!-- category-members:end -->", 1)[0]
    out: dict[str, list[str]] = {}
    for block in re.split(r"^#### ", section, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        name = heading.strip().strip("`")
        members = body.strip().split("\n\n", 1)[0]  # the first paragraph; notes follow
        out[name] = re.findall(r"`([^`]+)`", members)
    return out


def test_docs_list_each_category_exactly() -> None:
    """docs/policy.md lists every category, each with exactly the code's methods."""
    documented = _documented_members()
    assert list(documented) == list(categories.CATEGORY_NAMES)
    names = _display_names()
    for name, paths in categories.categories().items():
        want = sorted(names[p] for p in paths)
        assert documented[name] == want, name


def _table_cases() -> list[dict[str, object]]:
    data = yaml.safe_load((REPO / "examples" / "policy.tests.yaml").read_text())
    cases: list[dict[str, object]] = data["cases"]
    return cases


@pytest.mark.parametrize(("category", "rule"), [(STARTS, "only-finance-starts-payroll"),
                                                (DESTROYS, "developers-never-destroy")])
def test_example_table_covers_every_member(category: str, rule: str) -> None:
    """examples/policy.tests.yaml has a denied row by the category's rule for each member of
    the category (a new member without a row fails, named)."""
    covered = {case_method(str(c["method"])).method.path for c in _table_cases()
               if c.get("expect") == "deny" and c.get("rule") == rule}
    missing = categories.categories()[category] - covered
    names = _display_names()
    assert not missing, f"add a row for: {', '.join(sorted(names[p] for p in missing))}"
