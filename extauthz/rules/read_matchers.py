"""Reading matchers (``match``, ``unless``, ``principal_kind``) and the ``claims`` sources."""

from __future__ import annotations

from extauthz.peers import GlobError, any_glob
from extauthz.rules.compiled import PolicyError
from extauthz.rules.matchers import (
    KINDS,
    ClaimPath,
    ClaimSources,
    Match,
    Matcher,
    PathError,
    as_text,
    parse_path,
)
from extauthz.rules.reading import flag, reader, strings, text
from extauthz.yamlread import Reader


def _paths(r: Reader, name: str, default: tuple[ClaimPath, ...]) -> tuple[ClaimPath, ...]:
    values = strings(r, name)
    if values is None:
        return default
    out: list[ClaimPath] = []
    for i, v in enumerate(values):
        try:
            out.append(parse_path(v))
        except PathError as exc:
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: {exc}") from None
    return tuple(out)


def claim_sources(r: Reader) -> ClaimSources:
    """The ``claims`` block: where groups, scopes and the client id are read."""
    c = reader(r.raw("claims") or {}, "claims", r.source)
    d = ClaimSources()
    sources = ClaimSources(
        groups=_paths(c, "groups", d.groups),
        scopes=_paths(c, "scopes", d.scopes),
        client_id=_paths(c, "client_id", d.client_id),
    )
    c.done()
    return sources


def matcher(data: object, path: str, source: str, *, allow_kind: bool = True) -> Matcher:
    """A matcher: one mapping of conditions, or a list of alternatives."""
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PolicyError(f"{source}: {path}: an empty list matches no one; give at least one "
                          "alternative (e.g. `groups: [team]`)")
    alts = []
    for i, item in enumerate(items):
        alts.append(_match(item, f"{path}[{i}]" if isinstance(data, list) else path, source,
                           allow_kind))
    return Matcher(tuple(alts))


def _match(data: object, path: str, source: str, allow_kind: bool) -> Match:
    m = reader(data, path, source, "a mapping of conditions (groups, scopes, subject, "
               "client_id, issuer, kind, claims, spiffe, x509_subject, anyone)")
    if not m.data:
        raise m.error("", "empty: say who; write `anyone: true` to match every authenticated "
                      "principal")

    def fs(name: str) -> frozenset[str] | None:
        v = strings(m, name)
        return None if v is None else frozenset(v)

    anyone = flag(m, "anyone", False)
    if m.has("anyone") and not anyone:
        raise m.error("anyone", "`anyone: false` means nothing; remove it")
    kind = text(m, "kind", "") or None
    if kind is not None:
        if not allow_kind:
            raise m.error("kind", "the principal_kind rule cannot itself test `kind`")
        if kind not in KINDS:
            raise m.error("kind", f"{kind!r}: use human or service")
    claims: list[tuple[ClaimPath, frozenset[str]]] = []
    if m.has("claims"):
        c = reader(m.raw("claims"), m.key("claims"), source, "a mapping of claim path → value(s)")
        for key, value in c.data.items():
            c.used.add(key)
            kp = c.key(str(key))
            if not isinstance(key, str):
                raise PolicyError(f"{source}: {kp}: claim paths are strings")
            try:
                cp = parse_path(key)
            except PathError as exc:
                raise PolicyError(f"{source}: {kp}: {exc}") from None
            values = value if isinstance(value, list) else [value]
            texts = [as_text(v) for v in values]
            if not values or any(t is None for t in texts):
                raise PolicyError(f"{source}: {kp}: expected a value or a list of values "
                                  "(strings, numbers, true/false)")
            claims.append((cp, frozenset(t for t in texts if t is not None)))
        if not claims:
            raise m.error("claims", "empty; name at least one claim path")
    spiffe = strings(m, "spiffe")
    spiffe_test = None
    if spiffe is not None:
        if not spiffe:
            raise m.error("spiffe", "empty; give at least one spiffe:// pattern")
        try:
            spiffe_test = any_glob(spiffe)
        except GlobError as exc:
            raise m.error("spiffe", str(exc)) from None
    out = Match(
        spiffe=None if spiffe is None else tuple(spiffe),
        spiffe_test=spiffe_test,
        x509_subjects=fs("x509_subject"),
        anyone=anyone,
        groups=fs("groups"),
        scopes=fs("scopes"),
        subjects=fs("subject"),
        client_ids=fs("client_id"),
        issuers=fs("issuer"),
        kind=kind,
        claims=tuple(claims),
    )
    m.done()
    if anyone and len(m.data) > 1:
        raise m.error("anyone", "`anyone: true` with other conditions is ambiguous; drop `anyone`")
    return out
