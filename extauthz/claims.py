"""Claims to a Principal, exactly like Temporal's default JWT claim mapper. Pure: no I/O.

Temporal (``common/authorization/default_jwt_claim_mapper.go``): the ``permissions`` claim is an
array of ``"<namespace>:<role>"`` strings; the namespace is case-sensitive, the role is
lower-cased and one of read, write, worker, admin; the namespace ``temporal-system`` stands for
the system (cluster) role; anything else is ignored. An optional regex with named groups
``namespace`` and ``role`` replaces the split at the first colon.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from extauthz.auth.types import ClaimMapping
from extauthz.model import Principal, Role

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

    __slots__ = ("_mapping", "_regex")

    def __init__(self, mapping: ClaimMapping):
        self._mapping = mapping
        self._regex = re.compile(mapping.permissions_regex) if mapping.permissions_regex else None

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
        match = self._regex.search(item)  # unanchored, like Go's FindStringSubmatch
        if match is None:
            return None
        ns, rl = match.group("namespace"), match.group("role")
        if not isinstance(ns, str) or not isinstance(rl, str):
            return None
        return ns, rl


def subject_of(claims: Mapping[str, Any], mapping: ClaimMapping = _DEFAULT_MAPPING) -> str:
    """The subject for logs and identity headers, exactly as verification reads it.

    ``mapping.subject_claim``; for a token with neither it nor ``sub``, the first
    ``mapping.subject_fallback`` claim (``client_id``, ``azp``): a service principal's subject
    is its client id. ``""`` when the token has no subject (verification refuses such tokens).
    """
    found = mapping.subject_from(claims)
    return found[0] if found is not None else ""


def principal_kind(claims: Mapping[str, Any]) -> str:
    """``service`` for client-credentials tokens (a client id and no distinct human subject)."""
    client = claims.get("client_id") or claims.get("azp")
    sub = claims.get("sub")
    if claims.get("gty") == "client-credentials":
        return "service"
    if isinstance(client, str) and client and (not sub or sub == client):
        return "service"
    return "human"


def validate_regex(pattern: str) -> str | None:
    """An error message if ``pattern`` is not usable as a permissions regex, else None."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    missing = {"namespace", "role"} - set(compiled.groupindex)
    if missing:
        return f"needs named groups (?P<namespace>...) and (?P<role>...); missing {sorted(missing)}"
    return None
