"""Claims to a Principal, the way Temporal's default JWT claim mapper does it."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.claims import ClaimMapper, ClaimMapping, principal_kind, subject_of, validate_regex
from extauthz.model import Role


def principal(claims: dict[str, Any], **mapping: Any):  # type: ignore[no-untyped-def]
    """Map claims with a ClaimMapping built from ``mapping``."""
    return ClaimMapper(ClaimMapping(**mapping)).principal(claims, "https://issuer")


def test_permissions_map_to_namespace_roles() -> None:
    """`permissions: ["ns:role", ...]` gives each namespace its role."""
    p = principal({"sub": "u", "permissions": ["default:read", "orders:write", "ops:admin",
                                                "w:worker"]})
    assert dict(p.namespaces) == {"default": Role.READER, "orders": Role.WRITER,
                                  "ops": Role.ADMIN, "w": Role.WORKER}
    assert p.system == Role.NONE
    assert p.issuer == "https://issuer"


def test_roles_for_one_namespace_are_ored() -> None:
    """Several permissions on one namespace combine as bit flags."""
    p = principal({"permissions": ["ns:worker", "ns:read", "ns:read"]})
    assert p.namespaces["ns"] == Role.WORKER | Role.READER


def test_split_at_the_first_colon() -> None:
    """`a:b:read` is namespace `a` with role `b:read`: not a known role, so ignored."""
    p = principal({"permissions": ["a:b:read", "c:", ":admin", "noseparator"]})
    assert "a" not in p.namespaces and "a:b" not in p.namespaces
    assert "c" not in p.namespaces and "noseparator" not in p.namespaces
    # an empty namespace name is a namespace like any other (no request can name it)
    assert p.namespaces == {"": Role.ADMIN}


def test_namespace_is_case_sensitive() -> None:
    """`Default:write` grants nothing on `default`."""
    p = principal({"permissions": ["Default:write"]})
    assert p.role_in("default") == Role.NONE
    assert p.role_in("Default") == Role.WRITER


@pytest.mark.parametrize(("raw", "role"), [
    ("READ", Role.READER), ("Write", Role.WRITER), ("ADMIN", Role.ADMIN), ("WoRkEr", Role.WORKER),
])
def test_role_is_lower_cased(raw: str, role: Role) -> None:
    """Roles are case-insensitive: `ns:READ` is read."""
    assert principal({"permissions": [f"ns:{raw}"]}).namespaces == {"ns": role}


@pytest.mark.parametrize("raw", ["reader", "writer", "owner", "", " read", "read ", "*"])
def test_unknown_role_is_ignored(raw: str) -> None:
    """A role other than read/write/worker/admin grants nothing (no trimming, no synonyms)."""
    assert principal({"permissions": [f"ns:{raw}", "other:read"]}).namespaces == {
        "other": Role.READER}


def test_non_string_entries_are_ignored() -> None:
    """Numbers, objects, lists and nulls in `permissions` are skipped; strings still count."""
    p = principal({"permissions": [1, None, {"ns": "admin"}, ["ns:admin"], True, "ns:read"]})
    assert p.namespaces == {"ns": Role.READER}


@pytest.mark.parametrize("value", ["ns:admin", {"ns": "admin"}, 1, None, True, ("ns:admin",)])
def test_non_array_claim_is_ignored(value: object) -> None:
    """A `permissions` claim that is not a JSON array grants nothing (even a single string)."""
    p = principal({"permissions": value})
    assert (p.system, dict(p.namespaces)) == (Role.NONE, {})


def test_temporal_system_is_the_system_role() -> None:
    """`temporal-system:admin` sets the system role, not a namespace role."""
    p = principal({"permissions": ["temporal-system:admin", "temporal-system:read"]})
    assert p.system == Role.ADMIN | Role.READER
    assert "temporal-system" not in p.namespaces
    assert p.role_in("anything") == Role.ADMIN | Role.READER


def test_temporal_system_is_case_sensitive() -> None:
    """`Temporal-System:admin` is an ordinary namespace, not the system role."""
    p = principal({"permissions": ["Temporal-System:admin"]})
    assert p.system == Role.NONE
    assert p.namespaces == {"Temporal-System": Role.ADMIN}


def test_custom_permissions_claim() -> None:
    """A configured claim name is read instead of `permissions`."""
    claims = {"permissions": ["ns:admin"], "temporal_roles": ["ns:read"]}
    assert principal(claims, permissions_claim="temporal_roles").namespaces == {"ns": Role.READER}


def test_regex_with_named_groups() -> None:
    """A permissions regex extracts namespace and role from each entry."""
    p = principal({"permissions": ["temporal.ns.orders.WRITE", "temporal.ns.x", "junk"]},
                  permissions_regex=r"temporal\.ns\.(?P<namespace>[^.]+)\.(?P<role>\w+)")
    assert p.namespaces == {"orders": Role.WRITER}


def test_regex_search_is_unanchored_like_go() -> None:
    """The regex may match anywhere in the entry (Go's FindStringSubmatch), not only at 0."""
    p = principal({"permissions": ["prefix/ns=billing;role=read/suffix"]},
                  permissions_regex=r"ns=(?P<namespace>\w+);role=(?P<role>\w+)")
    assert p.namespaces == {"billing": Role.READER}


def test_regex_replaces_the_colon_split() -> None:
    """With a regex configured, a plain `ns:role` entry that does not match is ignored."""
    p = principal({"permissions": ["ns:admin"]},
                  permissions_regex=r"^(?P<namespace>\w+)/(?P<role>\w+)$")
    assert p.namespaces == {}


def test_regex_optional_group_not_matching_is_ignored() -> None:
    """A match in which a named group did not participate grants nothing."""
    p = principal({"permissions": ["ns"]},
                  permissions_regex=r"(?P<namespace>\w+)(:(?P<role>\w+))?")
    assert p.namespaces == {}


def test_regex_system_namespace() -> None:
    """A regex-extracted `temporal-system` is the system role."""
    p = principal({"permissions": ["temporal-system|admin"]},
                  permissions_regex=r"(?P<namespace>[\w-]+)\|(?P<role>\w+)")
    assert p.system == Role.ADMIN


@pytest.mark.parametrize(("claims", "subject"), [
    ({"sub": "alice", "client_id": "c", "azp": "a"}, "alice"),
    ({"client_id": "svc", "azp": "a"}, "svc"),
    ({"azp": "app"}, "app"),
    ({"client_id": "", "azp": "app"}, "app"),
    ({"client_id": 7, "azp": "app"}, "app"),
    ({}, ""),
])
def test_subject_falls_back_from_sub_to_client_id_to_azp(claims: dict[str, Any],
                                                         subject: str) -> None:
    """The subject is `sub`; without `sub`, `client_id`, else `azp` (first non-empty string)."""
    assert subject_of(claims) == subject
    assert principal(claims).subject == subject


@pytest.mark.parametrize("claims", [
    {"sub": "", "client_id": "svc"},
    {"sub": 42, "azp": "app"},
    {"sub": None, "client_id": "svc"},
    {"sub": ["svc"], "client_id": "svc"},
])
def test_present_but_bad_sub_never_falls_back(claims: dict[str, Any]) -> None:
    """A `sub` that is there but not a non-empty string is no subject, never the client id
    (verification refuses such a token; the mapper agrees)."""
    assert subject_of(claims) == ""
    assert principal(claims).subject == ""


def test_configured_subject_claim_comes_first() -> None:
    """A configured subject claim wins over `sub`."""
    email = ClaimMapping(subject_claim="email")
    assert subject_of({"email": "a@x", "sub": "s"}, email) == "a@x"
    assert principal({"email": "a@x", "sub": "s"}, subject_claim="email").subject == "a@x"


def test_human_without_the_configured_subject_claim_is_not_named_by_its_client() -> None:
    """`subject_claim: email`, a token with `sub` but no `email`: no subject (refused at
    verification), never the `azp` of the app the human logged in through."""
    email = ClaimMapping(subject_claim="email")
    claims = {"sub": "u-1", "azp": "temporal-ui"}
    assert subject_of(claims, email) == ""
    assert principal(claims, subject_claim="email").subject == ""


def test_empty_fallback_list_requires_the_subject_claim() -> None:
    """`subject_fallback: []`: a token without `sub` has no subject, client id or not."""
    strict = ClaimMapping(subject_fallback=())
    assert subject_of({"client_id": "svc"}, strict) == ""
    assert principal({"client_id": "svc"}, subject_fallback=()).subject == ""


def test_configured_fallback_order_is_kept() -> None:
    """`subject_fallback: [azp, client_id]` tries `azp` first; other claims are never used."""
    mapping = ClaimMapping(subject_fallback=("azp", "client_id"))
    assert subject_of({"client_id": "c", "azp": "a"}, mapping) == "a"
    assert subject_of({"appid": "x"}, ClaimMapping(subject_fallback=("client_id",))) == ""
    assert subject_of({"appid": "x"}, ClaimMapping(subject_fallback=("appid",))) == "x"


@pytest.mark.parametrize("fallback", [("client_id", "azp"), ("appid",)])
def test_principal_named_by_a_fallback_claim_is_a_service(fallback: tuple[str, ...]) -> None:
    """A token without a human subject, named by its client id, is a `service` principal
    whatever the fallback claim is called (Azure's `appid` too)."""
    claims = {"client_id": "svc", "appid": "svc", "permissions": ["default:write"]}
    p = principal(claims, subject_fallback=fallback)
    assert (p.subject, p.kind, p.namespaces) == ("svc", "service", {"default": Role.WRITER})


def test_human_sub_is_never_made_a_service_by_the_fallback() -> None:
    """With `sub` present the fallback is never consulted: a human stays human."""
    p = principal({"sub": "alice", "appid": "ui"}, subject_fallback=("appid",))
    assert (p.subject, p.kind) == ("alice", "human")


@pytest.mark.parametrize(("claims", "kind"), [
    ({"sub": "alice"}, "human"),
    ({"sub": "alice", "azp": "webui"}, "human"),
    ({"client_id": "svc"}, "service"),
    ({"sub": "svc", "client_id": "svc"}, "service"),
    ({"sub": "svc", "azp": "svc"}, "service"),
    ({"sub": "alice", "gty": "client-credentials"}, "service"),
    ({}, "human"),
])
def test_principal_kind(claims: dict[str, Any], kind: str) -> None:
    """Client-credentials tokens (client id, no distinct human `sub`) are services."""
    assert principal_kind(claims) == kind
    assert principal(claims).kind == kind


def test_principal_keeps_the_claims() -> None:
    """The Principal carries the verified claims for later rules and logs."""
    claims = {"sub": "u", "permissions": ["ns:read"], "email": "u@x"}
    assert principal(claims).claims == claims


@pytest.mark.parametrize(("pattern", "ok"), [
    (r"(?P<namespace>\w+):(?P<role>\w+)", True),
    (r"(?P<namespace>\w+)", False),
    (r"(\w+):(\w+)", False),
    (r"(?P<namespace>\w+:(?P<role>", False),
])
def test_validate_regex(pattern: str, ok: bool) -> None:
    """A regex must compile and have both named groups; the error says what is wrong."""
    problem = validate_regex(pattern)
    assert (problem is None) is ok
    if not ok:
        assert problem
