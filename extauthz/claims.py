"""Claims to a Principal, exactly like Temporal's default JWT claim mapper. Pure: no I/O.

Temporal (``common/authorization/default_jwt_claim_mapper.go``): the ``permissions`` claim is an
array of ``"<namespace>:<role>"`` strings; the namespace is case-sensitive, the role is
lower-cased and one of read, write, worker, admin; the namespace ``temporal-system`` stands for
the system (cluster) role; anything else is ignored. An optional regex with named groups
``namespace`` and ``role`` replaces the split at the first colon; Temporal compiles it with Go's
``regexp`` and so does this module (``extauthz.goregexp``: RE2 with Go's semantics), so the same
pattern gives the same roles.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extauthz.goregexp import GoRegexp, GoRegexpError
from extauthz.model import Principal, Role


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    """How verified claims become Temporal roles (Temporal's default claim mapper shape)."""

    permissions_claim: str = "permissions"
    # optional regex with named groups `namespace` and `role`, matched against each permission
    permissions_regex: str | None = None
    subject_claim: str = "sub"
    # claims that name the subject of a token without a human subject (client-credentials
    # tokens: the client id); () requires ``subject_claim``. See ``subject_from``.
    subject_fallback: tuple[str, ...] = ("client_id", "azp")

    def subject_from(self, claims: Mapping[str, Any]) -> tuple[str, str] | None:
        """The token's subject and the claim it was read from; ``None`` if it has none.

        The configured ``subject_claim`` when the token has it; it must then be a non-empty
        string, or the token has no subject (never a fallback: a present but bad subject is a
        bad token). When the token has neither that claim nor ``sub`` (no human subject), the
        first ``subject_fallback`` claim that is a non-empty string: a client-credentials
        token's client id. A token that has ``sub`` but lacks a different configured subject
        claim (e.g. ``email``) is a human without that claim, never the client it logged in
        through, so it gets no fallback either.
        """
        name = self.subject_claim
        if name in claims:
            value = claims[name]
            return (value, name) if isinstance(value, str) and value else None
        if "sub" in claims:
            return None
        for fallback in self.subject_fallback:
            value = claims.get(fallback)
            if isinstance(value, str) and value:
                return value, fallback
        return None


SYSTEM_NAMESPACE = "temporal-system"
_DEFAULT_MAPPING = ClaimMapping()
ROLE_NAMES: Mapping[str, Role] = {
    "read": Role.READER,
    "write": Role.WRITER,
    "worker": Role.WORKER,
    "admin": Role.ADMIN,
}


class ClaimMapper:
    """Maps verified claims to a Principal; compile once, call per token."""

    __slots__ = ("_mapping", "_namespace_group", "_regex", "_role_group")

    def __init__(self, mapping: ClaimMapping):
        self._mapping = mapping
        self._regex: GoRegexp | None = None
        self._namespace_group = self._role_group = 0
        if mapping.permissions_regex:
            self._regex = compile_regex(mapping.permissions_regex)
            self._namespace_group = self._regex.subexp_index("namespace")
            self._role_group = self._regex.subexp_index("role")

    def principal(self, claims: Mapping[str, Any], issuer: str = "") -> Principal:
        """The Principal for a token's claims."""
        system = Role.NONE
        namespaces: dict[str, Role] = {}
        for namespace, role in self._permissions(claims.get(self._mapping.permissions_claim)):
            if namespace == SYSTEM_NAMESPACE:
                system |= role
            else:
                namespaces[namespace] = namespaces.get(namespace, Role.NONE) | role
        found = self._mapping.subject_from(claims)
        # a subject read from a fallback claim (a client id: no human subject) is a service
        from_fallback = found is not None and found[1] != self._mapping.subject_claim
        return Principal(
            subject=found[0] if found is not None else "",
            issuer=issuer,
            kind="service" if from_fallback else principal_kind(claims),
            system=system,
            namespaces=namespaces,
            claims=claims,
        )

    def _permissions(self, value: object) -> list[tuple[str, Role]]:
        if not isinstance(value, list):
            return []
        out: list[tuple[str, Role]] = []
        for item in value:
            if not isinstance(item, str):
                continue
            parsed = self._split(item)
            if parsed is None:
                continue
            role = ROLE_NAMES.get(parsed[1].lower())
            if role is not None:
                out.append((parsed[0], role))
        return out

    def _split(self, item: str) -> tuple[str, str] | None:
        if self._regex is None:
            namespace, sep, role = item.partition(":")
            return (namespace, role) if sep else None
        # unanchored; a group that took no part is "" (an empty namespace or no role), as in Go
        match = self._regex.find_string_submatch(item)
        if match is None:
            return None
        return match[self._namespace_group], match[self._role_group]


def subject_of(claims: Mapping[str, Any], mapping: ClaimMapping = _DEFAULT_MAPPING) -> str:
    """The subject for logs and identity headers, exactly as verification reads it.

    ``mapping.subject_claim``; for a token with neither it nor ``sub``, the first
    ``mapping.subject_fallback`` claim (``client_id``, ``azp``): a service principal's subject
    is its client id. ``""`` when the token has no subject (verification refuses such tokens).
    """
    found = mapping.subject_from(claims)
    return found[0] if found is not None else ""


def principal_kind(claims: Mapping[str, Any]) -> str:
    """``service`` for a client-credentials token, by the signal its IdP really issues.

    A human's token carries the client it logged in through too (``azp``, ``cid``,
    ``client_id``), so a client id alone never makes a service. In order:

    - Auth0: ``gty: client-credentials`` (a human's is absent, ``password`` or ``refresh_token``);
    - Entra ID: ``idtyp`` (``app`` or ``user``, the optional claim) decides when present;
      without it, an app-only token is the one with no ``scp`` whose ``sub`` is its ``oid``;
    - Okta: ``cid`` names the client; the token is the client's own when ``sub`` equals it
      and it has no ``uid`` (a human's ``sub`` is their login, always with a ``uid``);
    - Keycloak: a service account's ``preferred_username`` is ``service-account-<client id>``
      and its token carries the client id (``client_id``, or ``clientId`` before Keycloak 20);
    - Dex: ``sub`` is an encoded (user id, connector id); its own client_credentials grant
      encodes (client id, no connector), where a user always came through a connector;
    - any other issuer (RFC 9068, Google): a client id (``client_id``, ``azp``) and no
      distinct human subject (``sub`` absent or equal to it).
    """
    if claims.get("gty") == "client-credentials":
        return "service"
    idtyp = claims.get("idtyp")
    if idtyp == "app":
        return "service"
    if idtyp == "user":
        return "human"
    sub = claims.get("sub")
    if "tid" in claims and "scp" not in claims and sub and sub == claims.get("oid"):
        return "service"  # Entra without idtyp: app-only tokens have no scp; oid is sub
    cid = claims.get("cid")
    if isinstance(cid, str) and cid:
        # a user's token always carries uid (their Okta id), even when their login (sub) was
        # chosen equal to the client id; the client's own token never does
        return "service" if sub == cid and "uid" not in claims else "human"
    if _keycloak_service_account(claims) or _dex_client_subject(claims):
        return "service"
    client = claims.get("client_id") or claims.get("azp")
    if isinstance(client, str) and client and (not sub or sub == client):
        return "service"
    return "human"


def _keycloak_service_account(claims: Mapping[str, Any]) -> bool:
    username = claims.get("preferred_username")
    client = claims.get("client_id") or claims.get("clientId")
    return (isinstance(username, str) and isinstance(client, str) and bool(client)
            and username == KEYCLOAK_SERVICE_ACCOUNT_PREFIX + client.lower())


KEYCLOAK_SERVICE_ACCOUNT_PREFIX = "service-account-"


def _dex_client_subject(claims: Mapping[str, Any]) -> bool:
    """Dex's client_credentials ``sub``: base64url of the protobuf ``IDTokenSubject``
    {1: user_id = the client id, 2: conn_id = ""}; the client is ``azp`` or the one ``aud``."""
    sub = claims.get("sub")
    client = claims.get("azp") or claims.get("aud")
    if isinstance(client, list) and len(client) == 1:
        client = client[0]
    if not isinstance(sub, str) or not isinstance(client, str) or not client:
        return False
    decoded = dex_subject(sub)
    return decoded is not None and decoded == (client, "")


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def dex_subject(sub: str) -> tuple[str, str] | None:
    """Dex's ``sub`` decoded to (user id, connector id), or None if it is not one."""
    if len(sub) > 1024 or not _BASE64URL.fullmatch(sub):
        return None  # strictly base64url: nothing is skipped on the way to a decode
    try:
        raw = base64.urlsafe_b64decode(sub + "=" * (-len(sub) % 4))
    except (ValueError, binascii.Error):
        return None
    fields = {1: "", 2: ""}
    i = 0
    while i < len(raw):
        tag = raw[i]
        if tag not in (0x0A, 0x12):
            return None
        length, i = _varint(raw, i + 1)
        if length < 0 or i + length > len(raw):
            return None
        try:
            fields[tag >> 3] = raw[i:i + length].decode("utf-8")
        except UnicodeDecodeError:
            return None
        i += length
    return (fields[1], fields[2]) if fields[1] else None


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(raw) and shift < 28:
        byte = raw[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7
    return -1, i


def groups_overage(claims: Mapping[str, Any], groups_claim: str = "groups") -> bool:
    """Whether the IdP left ``groups_claim`` out because the user has too many groups.

    Entra ID: over 200 groups in a JWT (150 in SAML, 6 in the implicit flow) it drops
    ``groups`` and names a Graph call instead, in ``_claim_names`` (``{"groups": "src1"}``)
    with ``_claim_sources``, or sets ``hasgroups: true`` (implicit flow). A token that still
    carries the claim is not in overage.
    """
    if groups_claim in claims:
        return False
    names = claims.get("_claim_names")
    if isinstance(names, Mapping) and groups_claim in names:
        return True
    return claims.get("hasgroups") is True


GROUPS_OVERAGE_NOTE = (
    "; the token carries no groups: Entra ID groups overage (`_claim_names.groups` or "
    "`hasgroups`: the user is in more groups than a token holds), so no group rule can "
    "match. Grant by app roles (the `roles` claim) or emit only the groups assigned to the "
    "application (groupMembershipClaims: ApplicationGroup); see docs/idp.md#entra-id"
)


def overage_note(claims: Mapping[str, Any]) -> str:
    """The text a denial appends when the token is in groups overage, else ``""``."""
    return GROUPS_OVERAGE_NOTE if groups_overage(claims) else ""


def compile_regex(pattern: str) -> GoRegexp:
    """``pattern`` compiled as a permissions regex, or ValueError saying what is wrong.

    Go's syntax (RE2): what Go's ``regexp.Compile`` refuses is refused here, at start-up."""
    try:
        compiled = GoRegexp(pattern)
    except GoRegexpError as exc:
        raise ValueError(f"not a valid Go (RE2) regular expression: {exc}") from None
    missing = {"namespace", "role"} - set(compiled.names)
    if missing:
        raise ValueError("needs named groups (?P<namespace>...) and (?P<role>...); "
                         f"missing {sorted(missing)}")
    return compiled


def validate_regex(pattern: str) -> str | None:
    """An error message if ``pattern`` is not usable as a permissions regex, else None."""
    try:
        compile_regex(pattern)
    except ValueError as exc:
        return str(exc)
    return None
