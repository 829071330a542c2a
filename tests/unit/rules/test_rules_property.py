"""Property: the `temporal-compatible` profile decides like Temporal's default authorizer.

The reference below is written from Temporal's rules directly (numeric role comparison, system
role for cluster scope, system | namespace role for namespace scope), plus the project's
stricter invariants from docs/architecture.md (empty namespace denied, every reached namespace
checked, a namespace named by id needs the system role). It shares no code with the engine.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz import methods
from extauthz.claims import ClaimMapper, ClaimMapping
from extauthz.model import Method, Target
from extauthz.policy import authorize as temporal_default
from extauthz.rules.document import temporal_compatible
from extauthz.rules.engine import Engine

ENGINE = Engine(temporal_compatible())
MAPPER = ClaimMapper(ClaimMapping())
METHODS = sorted(methods.table().values(), key=lambda e: e.method.path)
NAMESPACES = ["", "default", "payroll", "Payroll", "other"]
ROLE_VALUE = {"worker": 1, "read": 2, "write": 4, "admin": 8}
REQUIRED = {"ReadOnly": 2, "Write": 4, "Admin": 8}


def reference(permissions: list[str], method: Method, namespace: str, others: list[str],
              by_id: bool) -> bool:
    """Temporal's default authorizer, straightforwardly, with the project's invariants."""
    system = 0
    per_ns: dict[str, int] = {}
    for item in permissions:
        if ":" not in item:
            continue
        ns, role = item.split(":", 1)
        value = ROLE_VALUE.get(role.lower(), 0)
        if ns == "temporal-system":
            system |= value
        else:
            per_ns[ns] = per_ns.get(ns, 0) | value
    if method.scope.value == "Health" or method.name == "GetSystemInfo":
        return True
    required = REQUIRED[method.access.value]
    if method.scope.value == "Cluster":
        return system >= required
    if not namespace and not by_id:
        return False
    if by_id and system < required:
        return False
    reached = [ns for ns in [namespace, *others] if ns]
    return all((system | per_ns.get(ns, 0)) >= required for ns in reached)


permission = st.builds(
    lambda ns, role: f"{ns}:{role}",
    st.sampled_from(["default", "payroll", "other", "temporal-system", "Payroll", "a:b"]),
    st.sampled_from(["read", "write", "worker", "admin", "READ", "Admin", "owner", ""]),
) | st.sampled_from(["default", "nocolon", ":read"])


@settings(max_examples=3000, deadline=None)
@given(
    permissions=st.lists(permission, max_size=5),
    entry=st.sampled_from(METHODS),
    namespace=st.sampled_from(NAMESPACES),
    others=st.lists(st.sampled_from(NAMESPACES), max_size=3),
    by_id=st.booleans(),
    queues=st.lists(st.sampled_from(["", "q", "billing-a"]), max_size=2),
)
def test_temporal_compatible_agrees_with_reference(
    permissions: list[str], entry: methods.MethodEntry, namespace: str, others: list[str],
    by_id: bool, queues: list[str],
) -> None:
    """For random principals and requests, the profile, the built-in authorizer and the
    reference agree on allow/deny."""
    method = entry.method
    principal = MAPPER.principal({"sub": "p", "permissions": permissions})
    target = Target(method, namespace, tuple(others), tuple(queues), by_id)
    expected = reference(permissions, method, namespace, others, by_id)
    got = ENGINE(principal, target)
    assert got.allowed is expected, (got.reason, got.message)
    assert not got.dry_run
    if method.path not in methods.ALWAYS_ALLOWED:  # the pipeline allows those before
        assert temporal_default(principal, target).allowed is expected
