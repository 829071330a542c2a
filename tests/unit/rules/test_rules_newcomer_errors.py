"""Mistakes a newcomer makes first are reported at the key they wrote, not as a missing key."""

from __future__ import annotations

import pytest
from rules_helpers import policy

from extauthz.rules.document import PolicyError


def _error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        policy(text)
    return str(info.value)


def test_binding_with_namespace_instead_of_namespaces_names_the_unknown_key() -> None:
    """`namespace:` in a binding is an unknown key (with the file), as in a deny rule."""
    message = _error("""
        bindings:
          - {name: b, match: {groups: [g]}, roles: [read], namespace: [default]}
    """)
    assert message.startswith("test.yaml: bindings[0].namespace: unknown key; known keys "
                              "here: allow_by_id, cluster, description, match, name, "
                              "namespaces,"), message
    assert "required" not in message
    deny = _error("deny: [{name: d, match: {groups: [g]}, methods: [QueryWorkflow], "
                  "namespace: [default]}]")
    assert deny.startswith("test.yaml: deny[0].namespace: unknown key; known keys here: "), deny


@pytest.mark.parametrize(("match", "where"), [
    ("{}", "test.yaml: bindings[0].match: empty: say who"),
    ("[{groups: [g]}, {}]", "test.yaml: bindings[0].match[1]: empty: say who"),
])
def test_empty_match_error_names_the_match_key(match: str, where: str) -> None:
    """An empty `match` is reported at `bindings[0].match`, not `bindings[0].match.`."""
    message = _error(f"bindings: [{{name: b, match: {match}, roles: [read], "
                     "namespaces: [default]}]")
    assert message.startswith(where), message
    assert ".:" not in message


def test_role_granting_nothing_names_the_role_key() -> None:
    """A role that grants nothing is reported at `roles.dev`, not `roles.dev.`."""
    assert _error("roles: {dev: {description: x}}").startswith(
        "test.yaml: roles.dev: grants no method")
