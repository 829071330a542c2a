"""Who a rule is about: principal matchers over verified claims. Pure: no I/O.

A matcher is a list of alternatives (any may hold); an alternative is a mapping whose
conditions must all hold; a condition with a list of values holds when any value matches:

``anyone: true``         every authenticated principal
``groups: [a, b]``       a group claim (``claims.groups`` paths) contains a or b
``scopes: [x]``          the space-separated ``scope`` (or a ``scp`` list) contains x
``subject: [s]``         ``Principal.subject`` (the issuer's ``subject_claim``; for a token
                         with neither it nor ``sub``, a service, its client id from the
                         ``subject_fallback`` claims ``client_id``, ``azp``) is s
``client_id: [c]``       the first of ``claims.client_id`` paths (``client_id``, ``azp``) is c
``issuer: [i]``          the token's issuer is i
``kind: human|service``  the principal kind (see ``principal_kind`` in the policy)
``claims: {PATH: v}``    the claim at PATH equals v or, if it is a list, contains v
``spiffe: [pattern]``    the client certificate's SPIFFE ID matches a pattern, path segment
                         by path segment (``spiffe://cluster.local/ns/billing/sa/*``;
                         ``extauthz.peers.spiffe_glob``); never a token's claim
``x509_subject: [dn]``   the client certificate's subject DN (RFC 4514 text) is dn

Claim paths are dotted (``realm_access.roles``, ``ext.permissions``); a segment that itself
contains dots (Auth0's ``https://example.com/roles``) is written in double quotes:
``'"https://example.com/roles"'``. Paths are split once, at load, into tuples.

Values are compared as text, exactly and case-sensitively; a non-string scalar claim is
compared as its JSON text (``true``, ``1``). Objects inside claims never match.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from extauthz.model import Principal

ClaimPath = tuple[str, ...]
KINDS = ("human", "service")


class PathError(ValueError):
    """A claim path that cannot be parsed."""


def parse_path(text: str) -> ClaimPath:
    """``a.b."c.d"`` → ``("a", "b", "c.d")``; raises ``PathError``."""
    if not text:
        raise PathError("empty claim path; write a claim name such as `groups`")
    out: list[str] = []
    i = 0
    while True:
        if i < len(text) and text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise PathError(f"{text!r}: unterminated quoted segment")
            seg = text[i + 1 : end]
            i = end + 1
            if i < len(text) and text[i] != ".":
                raise PathError(f"{text!r}: expected `.` after a quoted segment")
        else:
            end = text.find(".", i)
            end = len(text) if end < 0 else end
            seg = text[i:end]
            i = end
        if not seg:
            raise PathError(f"{text!r}: empty segment (two dots, or a leading/trailing dot)")
        out.append(seg)
        if i >= len(text):
            return tuple(out)
        i += 1  # the dot
        if i >= len(text):
            raise PathError(f"{text!r}: ends with a dot")


def lookup(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    """The value at ``path`` or None."""
    value: Any = claims
    for seg in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(seg)
        if value is None:
            return None
    return value


def as_text(value: object) -> str | None:
    """A scalar as comparable text; None for objects/None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def texts(value: object) -> frozenset[str]:
    """The scalar texts in a claim value (a scalar or a list of scalars)."""
    if isinstance(value, list):
        return frozenset(t for v in value if (t := as_text(v)) is not None)
    t = as_text(value)
    return frozenset() if t is None else frozenset({t})


@dataclass(frozen=True, slots=True)
class ClaimSources:
    """Where the policy looks for groups, scopes and the client id."""

    groups: tuple[ClaimPath, ...] = (("groups",),)
    scopes: tuple[ClaimPath, ...] = (("scope",), ("scp",))
    client_id: tuple[ClaimPath, ...] = (("client_id",), ("azp",))


class Facts:
    """What matchers read about one principal, computed lazily once per decision."""

    __slots__ = ("_client_id", "_groups", "_kind", "_kind_rule", "_scopes", "principal",
                 "sources")

    def __init__(self, principal: Principal, sources: ClaimSources,
                 kind_rule: Matcher | None = None):
        self.principal = principal
        self.sources = sources
        self._kind_rule = kind_rule
        self._kind: str | None = None
        self._groups: frozenset[str] | None = None
        self._scopes: frozenset[str] | None = None
        self._client_id: str | None = None

    @property
    def kind(self) -> str:
        """``human`` or ``service``: the policy's ``principal_kind`` rule, else the built-in
        guess (``claims.principal_kind``)."""
        if self._kind is None:
            rule = self._kind_rule
            if rule is None or self.principal.by_certificate:
                # a certificate alone names a workload: `service`, whatever the claims rule
                self._kind = self.principal.kind
            else:
                self._kind_rule = None  # the rule never tests `kind` (validated)
                self._kind = "service" if rule(self) else "human"
        return self._kind

    @property
    def groups(self) -> frozenset[str]:
        if self._groups is None:
            out: set[str] = set()
            for p in self.sources.groups:
                out |= texts(lookup(self.principal.claims, p))
            self._groups = frozenset(out)
        return self._groups

    @property
    def scopes(self) -> frozenset[str]:
        if self._scopes is None:
            out: set[str] = set()
            for p in self.sources.scopes:
                v = lookup(self.principal.claims, p)
                if isinstance(v, str):
                    out.update(v.split())
                else:
                    out |= texts(v)
            self._scopes = frozenset(out)
        return self._scopes

    @property
    def client_id(self) -> str:
        if self._client_id is None:
            self._client_id = ""
            for p in self.sources.client_id:
                v = lookup(self.principal.claims, p)
                if isinstance(v, str) and v:
                    self._client_id = v
                    break
        return self._client_id


@dataclass(frozen=True, slots=True)
class Match:
    """One alternative: every condition set here must hold."""

    anyone: bool = False
    groups: frozenset[str] | None = None
    scopes: frozenset[str] | None = None
    subjects: frozenset[str] | None = None
    client_ids: frozenset[str] | None = None
    issuers: frozenset[str] | None = None
    kind: str | None = None
    claims: tuple[tuple[ClaimPath, frozenset[str]], ...] = ()
    # the client certificate (Principal.peer): SPIFFE ID patterns and their compiled test,
    # subject DNs
    spiffe: tuple[str, ...] | None = None
    spiffe_test: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)
    x509_subjects: frozenset[str] | None = None

    def __call__(self, f: Facts) -> bool:
        if self.kind is not None and f.kind != self.kind:
            return False
        p = f.principal
        if self.spiffe_test is not None and (
                p.peer is None or not p.peer.spiffe_id or not self.spiffe_test(p.peer.spiffe_id)):
            return False
        if self.x509_subjects is not None and (
                p.peer is None or p.peer.subject not in self.x509_subjects):
            return False
        if self.subjects is not None and p.subject not in self.subjects:
            return False
        if self.issuers is not None and p.issuer not in self.issuers:
            return False
        if self.client_ids is not None and f.client_id not in self.client_ids:
            return False
        if self.groups is not None and self.groups.isdisjoint(f.groups):
            return False
        if self.scopes is not None and self.scopes.isdisjoint(f.scopes):
            return False
        for path, values in self.claims:
            if values.isdisjoint(texts(lookup(p.claims, path))):
                return False
        return True

    def describe(self) -> str:
        """A short text for explain output."""
        parts: list[str] = ["anyone"] if self.anyone else []
        for name, value in (("groups", self.groups), ("scopes", self.scopes),
                            ("subject", self.subjects), ("client_id", self.client_ids),
                            ("issuer", self.issuers)):
            if value is not None:
                parts.append(f"{name} in {sorted(value)}")
        if self.kind is not None:
            parts.append(f"kind={self.kind}")
        if self.spiffe is not None:
            parts.append(f"spiffe in {list(self.spiffe)}")
        if self.x509_subjects is not None:
            parts.append(f"x509_subject in {sorted(self.x509_subjects)}")
        parts.extend(f"{'.'.join(path)} in {sorted(v)}" for path, v in self.claims)
        return " and ".join(parts)


@dataclass(frozen=True, slots=True)
class Matcher:
    """Alternatives: the matcher holds when any alternative does."""

    alternatives: tuple[Match, ...] = field(default_factory=tuple)

    def gate(self) -> frozenset[tuple[str, str]] | None:
        """Tokens of which a principal must have one for this matcher to possibly hold
        (``("g", group)``, ``("c", client_id)``, ``("s", subject)``), or None when some
        alternative needs none of them. Lets the engine skip most matchers by set lookups."""
        out: set[tuple[str, str]] = set()
        for m in self.alternatives:
            if m.groups is not None:
                out.update(("g", g) for g in m.groups)
            elif m.client_ids is not None:
                out.update(("c", c) for c in m.client_ids)
            elif m.subjects is not None:
                out.update(("s", s) for s in m.subjects)
            else:
                return None
        return frozenset(out)

    def __call__(self, f: Facts) -> bool:
        return any(m(f) for m in self.alternatives)

    def describe(self) -> str:
        """A short text for explain output."""
        return " or ".join(f"({m.describe()})" for m in self.alternatives)
