"""Principal matchers: groups, scopes, subject, client id, claim paths, kind."""

from __future__ import annotations

from typing import Any

import pytest
from rules_helpers import policy, principal

from extauthz.rules.document import PolicyError
from extauthz.rules.matchers import ClaimSources, Facts, PathError, parse_path


def _matches(match: Any, claims: dict[str, Any], extra: str = "") -> bool:
    p = policy(f"""
        version: 1
        {extra}
        bindings:
          - name: b
            match: {match}
            roles: [read]
            namespaces: ["*"]
    """)
    from extauthz.rules.engine import Engine

    e = Engine(p)
    return p.bindings[0].matcher(e.facts(principal(**claims)))


@pytest.mark.parametrize(
    ("match", "claims", "expected"),
    [
        ("{groups: [finance]}", {"sub": "a", "groups": ["finance", "x"]}, True),
        ("{groups: [finance]}", {"sub": "a", "groups": ["Finance"]}, False),
        ("{groups: [finance]}", {"sub": "a", "groups": "finance"}, True),
        ("{groups: [finance]}", {"sub": "a"}, False),
        ("{groups: [temporal-dev]}", {"sub": "a", "realm_access": {"roles": ["temporal-dev"]}},
         True),
        ("{scopes: [temporal.write]}", {"sub": "a", "scope": "openid temporal.write"}, True),
        ("{scopes: [temporal.write]}", {"sub": "a", "scope": "openid temporal.writer"}, False),
        ("{scopes: [temporal.write]}", {"sub": "a", "scp": ["temporal.write"]}, True),
        ("{subject: [alice]}", {"sub": "alice"}, True),
        ("{subject: [alice]}", {"sub": "alice2"}, False),
        ("{client_id: [svc]}", {"sub": "x", "azp": "svc"}, True),
        ("{client_id: [svc]}", {"sub": "x", "client_id": "svc", "azp": "other"}, True),
        ("{claims: {ext.permissions: billing}}", {"sub": "a", "ext": {"permissions": ["billing"]}},
         True),
        ("{claims: {ext.permissions: billing}}", {"sub": "a", "ext": "billing"}, False),
        ("{claims: {'\"https://ex.com/roles\"': ops}}",
         {"sub": "a", "https://ex.com/roles": ["ops"]}, True),
        ("{claims: {email_verified: true}}", {"sub": "a", "email_verified": True}, True),
        ("{claims: {email_verified: true}}", {"sub": "a", "email_verified": "yes"}, False),
        ("{kind: service}", {"sub": "svc", "client_id": "svc"}, True),
        ("{kind: service}", {"sub": "alice", "client_id": "ui"}, False),
        ("{groups: [a], subject: [alice]}", {"sub": "alice", "groups": ["a"]}, True),
        ("{groups: [a], subject: [alice]}", {"sub": "bob", "groups": ["a"]}, False),
        ("[{groups: [a]}, {subject: [bob]}]", {"sub": "bob"}, True),
        ("{anyone: true}", {"sub": "x"}, True),
    ],
)
def test_matcher_table(match: str, claims: dict[str, Any], expected: bool) -> None:
    """Each matcher construct holds exactly for the claims the table says."""
    assert _matches(match, claims, "claims: {groups: [groups, realm_access.roles]}") is expected


def test_principal_kind_rule() -> None:
    """A principal_kind rule overrides the built-in human/service guess."""
    extra = "principal_kind: {service: {claims: {gty: client-credentials}}}"
    assert _matches("{kind: service}", {"sub": "x", "gty": "client-credentials"}, extra)
    assert not _matches("{kind: service}", {"sub": "svc", "client_id": "svc"}, extra)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("groups", ("groups",)),
        ("realm_access.roles", ("realm_access", "roles")),
        ('"https://ex.com/roles"', ("https://ex.com/roles",)),
        ('ext."a.b".c', ("ext", "a.b", "c")),
    ],
)
def test_parse_path(text: str, expected: tuple[str, ...]) -> None:
    """Dotted paths split into tuples; quoted segments keep their dots."""
    assert parse_path(text) == expected


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", '"open', '"a"b'])
def test_parse_path_rejects(bad: str) -> None:
    """Malformed paths are rejected."""
    with pytest.raises(PathError):
        parse_path(bad)


def test_empty_match_rejected() -> None:
    """`match: {}` is an error that tells the author to write `anyone: true`."""
    with pytest.raises(PolicyError, match="anyone: true"):
        _matches("{}", {"sub": "a"})


def test_facts_are_lazy_and_cached() -> None:
    """Groups are computed once per decision."""
    f = Facts(principal(sub="a", groups=["g"]), ClaimSources())
    assert f.groups is f.groups
