"""The chart's policy schema (exported by extauthz.rules.schema) and the server's loader agree
on shape: a generated policy the loader accepts always passes the schema (the schema must
never block a valid `helm upgrade`), and a misspelt key anywhere fails both."""

from __future__ import annotations

from typing import Any

import jsonschema
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from extauthz.rules.categories import BUILTIN_ROLE_NAMES, CATEGORY_NAMES
from extauthz.rules.document import PolicyError, compile_policy
from extauthz.rules.schema import policy_schema

VALIDATOR = jsonschema.Draft7Validator(policy_schema())
METHODS = ["StartWorkflowExecution", "WorkflowService/DescribeNamespace",
           "/temporal.api.workflowservice.v1.WorkflowService/TerminateWorkflowExecution"]
NAMES = st.sampled_from(["default", "payroll", "team-*", "*"])


def _one_or_many(values: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(values, st.lists(values, min_size=1, max_size=3))


def _condition(allow_kind: bool) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "groups": _one_or_many(st.sampled_from(["finance", "dev", "ops"])),
        "scopes": _one_or_many(st.sampled_from(["temporal:read", "temporal:write"])),
        "subject": _one_or_many(st.sampled_from(["alice", "svc-billing"])),
        "client_id": _one_or_many(st.sampled_from(["billing", "ui"])),
        "issuer": _one_or_many(st.just("https://login.example.com")),
        "claims": st.dictionaries(st.sampled_from(["tenant", "realm_access.roles", "amr"]),
                                  st.one_of(st.sampled_from(["a", "b"]), st.integers(0, 3),
                                            st.booleans(),
                                            st.lists(st.sampled_from(["x", "y"]), min_size=1)),
                                  min_size=1, max_size=2),
    }
    if allow_kind:
        fields["kind"] = st.sampled_from(["human", "service"])
    keys = st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True)
    return st.one_of(st.just({"anyone": True}), keys.flatmap(
        lambda ks: st.fixed_dictionaries({k: fields[k] for k in ks})))


def _matcher(allow_kind: bool = True) -> st.SearchStrategy[Any]:
    one = _condition(allow_kind)
    return st.one_of(one, st.lists(one, min_size=1, max_size=2))


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields))
    return keys.flatmap(lambda ks: st.fixed_dictionaries({k: fields[k] for k in ks}))


ROLE = _optional(
    categories=_one_or_many(st.sampled_from(["read", "write", "worker", "admin"])),
    methods=_one_or_many(st.sampled_from(METHODS)),
    roles=_one_or_many(st.sampled_from(BUILTIN_ROLE_NAMES)),
    description=st.just("a role"),
)


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    """Policies with every top-level key optional and every value in its accepted forms."""
    roles = draw(st.dictionaries(st.sampled_from(["ops", "auditor"]), ROLE, max_size=2))
    role_names = list(BUILTIN_ROLE_NAMES) + list(roles)
    bindings = [
        {"name": f"b{i}", "match": draw(_matcher()),
         "roles": draw(_one_or_many(st.sampled_from(role_names))),
         **draw(st.one_of(
             st.fixed_dictionaries({"namespaces": _one_or_many(NAMES)}),
             st.just({"cluster": True}))),
         **draw(_optional(description=st.just("why"),
                          task_queues=_one_or_many(st.sampled_from(["q1", "q-*"]))))}
        for i in range(draw(st.integers(0, 2)))]
    deny = [
        {"name": f"d{i}", "match": draw(_matcher()),
         "methods": draw(_one_or_many(st.sampled_from(METHODS))),
         **draw(_optional(unless=_matcher(), namespaces=_one_or_many(NAMES),
                          categories=_one_or_many(st.sampled_from(CATEGORY_NAMES[:4])),
                          task_queues=_one_or_many(st.just("q1")), dry_run=st.booleans(),
                          message=st.just("no"), description=st.just("why")))}
        for i in range(draw(st.integers(0, 2)))]
    doc = draw(_optional(
        version=st.just(1),
        profile=st.sampled_from(["extended", "temporal-compatible"]),
        dry_run=st.booleans(),
        options=_optional(temporal_permissions=st.booleans(),
                          cluster_read_for_namespace_users=st.booleans()),
        claims=_optional(groups=_one_or_many(st.sampled_from(["groups", "roles"])),
                         scopes=_one_or_many(st.just("scp")),
                         client_id=_one_or_many(st.sampled_from(["azp", "client_id"]))),
        principal_kind=st.fixed_dictionaries({"service": _matcher(allow_kind=False)}),
    ))
    if roles:
        doc["roles"] = roles
    if bindings:
        doc["bindings"] = bindings
    if deny:
        doc["deny"] = deny
    return doc


def _loads(doc: dict[str, Any]) -> bool:
    try:
        compile_policy(doc, "generated.yaml")
    except PolicyError:
        return False
    return True


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_what_the_loader_accepts_the_schema_accepts(doc: dict[str, Any]) -> None:
    """No policy the server would load is refused by the chart's schema (hypothesis fails the
    test as unsatisfiable if the generator stops producing loadable policies)."""
    assume(_loads(doc))
    errors = [e.message for e in VALIDATOR.iter_errors(doc)]
    assert not errors, (doc, errors)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.data())
def test_a_misspelt_key_fails_both(doc: dict[str, Any], data: st.DataObject) -> None:
    """An unknown key added to the document, a binding or a deny rule fails the schema and
    the loader alike."""
    targets: list[dict[str, Any]] = [doc, *doc.get("bindings", []), *doc.get("deny", [])]
    target = data.draw(st.sampled_from(targets))
    target["namespace_"] = "default"
    assert list(VALIDATOR.iter_errors(doc))
    assert not _loads(doc)
