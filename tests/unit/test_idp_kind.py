"""Service detection by each IdP's real signal, both ways: a client-credentials token is a
`service`, a person's token through the same client is `human`; Entra groups overage."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from extauthz.claims import (
    ClaimMapper,
    ClaimMapping,
    dex_subject,
    groups_overage,
    overage_note,
    principal_kind,
)


def dex_sub(user: str, conn: str) -> str:
    raw = b"\x0a" + bytes([len(user)]) + user.encode()
    if conn:
        raw += b"\x12" + bytes([len(conn)]) + conn.encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


CASES: list[tuple[str, dict[str, Any], str]] = [
    # Okta: cid names the client; the client's own token has sub == cid
    ("okta client credentials", {"cid": "0oa1w", "sub": "0oa1w", "scp": ["x"]}, "service"),
    ("okta user through the same app", {"cid": "0oa1w", "sub": "a@x.com", "uid": "00u1"},
     "human"),
    ("okta user with azp too", {"cid": "0oa1w", "sub": "a@x.com", "azp": "a@x.com"}, "human"),
    # a user whose login equals the client id (non-email login formats allow it): Okta still
    # gives a user's token its uid, which a client-credentials token never has
    ("okta user whose login is the client id", {"cid": "0oa1w", "sub": "0oa1w", "uid": "00u1"},
     "human"),
    # Entra: idtyp decides; without it, no scp and oid == sub
    ("entra app token", {"tid": "t", "idtyp": "app", "azp": "app1", "sub": "o1", "oid": "o1"},
     "service"),
    ("entra app token without idtyp", {"tid": "t", "azp": "app1", "sub": "o1", "oid": "o1",
                                       "roles": ["R"]}, "service"),
    ("entra user token", {"tid": "t", "azp": "app1", "sub": "s", "oid": "o", "scp": "a"},
     "human"),
    ("entra idtyp user wins over azp == sub", {"idtyp": "user", "azp": "x", "sub": "x"},
     "human"),
    ("entra user with oid == sub but scp", {"tid": "t", "sub": "o", "oid": "o", "scp": "a"},
     "human"),
    # Keycloak: service-account-<client> with the client id claim
    ("keycloak service account", {"sub": "uuid-1", "azp": "orders-worker",
                                  "client_id": "orders-worker",
                                  "preferred_username": "service-account-orders-worker"},
     "service"),
    ("keycloak service account before 20 (clientId)", {
        "sub": "uuid-1", "azp": "Orders", "clientId": "Orders",
        "preferred_username": "service-account-orders"}, "service"),
    ("keycloak user through the worker client", {"sub": "uuid-2", "azp": "orders-worker",
                                                 "preferred_username": "alice"}, "human"),
    ("keycloak user named like a service account, no client id claim", {
        "sub": "uuid-3", "azp": "orders-worker",
        "preferred_username": "service-account-orders-worker"}, "human"),
    ("keycloak prefix for another client", {
        "sub": "uuid-4", "azp": "a", "client_id": "a",
        "preferred_username": "service-account-b"}, "human"),
    # Auth0: gty
    ("auth0 client credentials", {"sub": "abc@clients", "azp": "abc",
                                  "gty": "client-credentials"}, "service"),
    ("auth0 user", {"sub": "auth0|1", "azp": "abc"}, "human"),
    ("auth0 password grant", {"sub": "auth0|1", "azp": "abc", "gty": "password"}, "human"),
    # Dex: sub encodes (client id, no connector)
    ("dex client credentials", {"sub": dex_sub("orders-worker", ""), "aud": "orders-worker"},
     "service"),
    ("dex client credentials, cross-client", {"sub": dex_sub("w", ""), "aud": ["peer"],
                                              "azp": "w"}, "service"),
    ("dex user through a connector", {"sub": dex_sub("orders-worker", "github"),
                                      "aud": "orders-worker"}, "human"),
    ("dex client id of another client", {"sub": dex_sub("w", ""), "aud": "other"}, "human"),
    # Google / RFC 9068: client id and no distinct subject
    ("google service account", {"sub": "1122", "azp": "1122",
                                "email": "w@p.iam.gserviceaccount.com"}, "service"),
    ("google user", {"sub": "1082", "azp": "123-x.apps.googleusercontent.com"}, "human"),
    ("rfc 9068 client token", {"sub": "c1", "client_id": "c1"}, "service"),
    ("rfc 9068 user token", {"sub": "u1", "client_id": "c1"}, "human"),
    ("nothing", {}, "human"),
]


@pytest.mark.parametrize(("name", "claims", "kind"), CASES, ids=[c[0] for c in CASES])
def test_kind_by_each_idps_signal(name: str, claims: dict[str, Any], kind: str) -> None:
    """Each IdP's client-credentials shape is a service; its human shape is human."""
    assert principal_kind(claims) == kind
    assert ClaimMapper(ClaimMapping()).principal(claims).kind == kind


@pytest.mark.parametrize("sub", ["alice", "", "!!!", "Cg", dex_sub("x", "c") + "A",
                                 base64.urlsafe_b64encode(b"\x0a\xff\xff").decode(),
                                 base64.urlsafe_b64encode(b"\x0a\x05ab").decode(),
                                 base64.urlsafe_b64encode(b"\x1a\x01a").decode(), "A" * 2000,
                                 "Cg1vcmRlcnMtd29y@a2Vy", "Cg1vcmRlcnMtd29ya2Vy=="])
def test_dex_subject_refuses_what_is_not_one(sub: str) -> None:
    """A sub that is not Dex's encoding decodes to nothing (and never raises)."""
    assert dex_subject(sub) is None


def test_dex_subject_decodes() -> None:
    """Dex's encoding decodes to (user id, connector id)."""
    assert dex_subject(dex_sub("4821097", "github")) == ("4821097", "github")
    assert dex_subject("Cg1vcmRlcnMtd29ya2Vy") == ("orders-worker", "")


@pytest.mark.parametrize(("claims", "overage"), [
    ({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "x"}}}, True),
    ({"hasgroups": True}, True),
    ({"hasgroups": "true"}, False),
    ({"groups": ["g"], "_claim_names": {"groups": "src1"}}, False),
    ({"_claim_names": {"roles": "src1"}}, False),
    ({"_claim_names": "groups"}, False),
    ({"groups": []}, False),
    ({}, False),
])
def test_groups_overage(claims: dict[str, Any], overage: bool) -> None:
    """Only Entra's overage markers, on a token without a groups claim, are overage."""
    assert groups_overage(claims) is overage
    assert bool(overage_note(claims)) is overage
