"""The ``issuers`` entries of the config file: one trusted token issuer each."""

from __future__ import annotations

from pathlib import Path

from extauthz.auth.fetch import CAFileError, load_ca_file
from extauthz.auth.keys import MAX_RSA_BITS, MIN_RSA_BITS
from extauthz.auth.types import ASYMMETRIC_ALGORITHMS, IssuerConfig
from extauthz.claims import ClaimMapping, validate_regex
from extauthz.yamlread import Reader


def _claims(r: Reader) -> ClaimMapping:
    c = r.child("claims")
    regex = c.get("permissions_regex", str, "") or None
    if regex is not None and (problem := validate_regex(regex)):
        raise c.error("permissions_regex", problem)
    d = ClaimMapping()
    subject_claim = c.get("subject_claim", str, d.subject_claim)
    if not subject_claim:
        raise c.error("subject_claim", "must name a claim (default sub)")
    fallback = c.strings("subject_fallback", d.subject_fallback)
    for i, name in enumerate(fallback):
        if not name:
            raise c.error(f"subject_fallback[{i}]", "must name a claim, e.g. client_id or azp "
                          "(use [] to require the subject claim)")
    mapping = ClaimMapping(
        permissions_claim=c.get("permissions_claim", str, d.permissions_claim),
        permissions_regex=regex,
        subject_claim=subject_claim,
        subject_fallback=fallback,
    )
    c.done()
    return mapping


def read_issuer(r: Reader, base_dir: Path | None = None) -> IssuerConfig:
    """One issuer from its mapping (``r``); messages name the key path. ``base_dir`` resolves
    a relative ``ca_file`` (the config file's directory)."""
    d = IssuerConfig(issuer="")
    issuer = r.get("issuer", str, "")
    if not issuer:
        raise r.error("issuer", "required: the issuer URL exactly as tokens carry it in `iss`")
    insecure = r.get("allow_insecure_http", bool, False)
    _check_url(r, "issuer", issuer, insecure, allow_file=False)
    jwks = r.strings("jwks_uris", ())
    for i, uri in enumerate(jwks):
        _check_url(r, f"jwks_uris[{i}]", uri, insecure, allow_file=True)
    algorithms = r.strings("algorithms", d.algorithms)
    for alg in algorithms:
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise r.error("algorithms", f"{alg!r} is not allowed; use some of "
                          f"{', '.join(ASYMMETRIC_ALGORITHMS)} (never none or HS*)")
    refresh = r.positive("refresh_interval_seconds", float, d.refresh_interval_seconds)
    cfg = IssuerConfig(
        issuer=issuer,
        audiences=r.strings("audiences", ()),
        jwks_uris=jwks,
        algorithms=algorithms,
        leeway_seconds=r.get("leeway_seconds", float, d.leeway_seconds),
        max_token_bytes=r.positive("max_token_bytes", int, d.max_token_bytes),
        required_typ=r.get("required_typ", str, "") or None,
        refresh_interval_seconds=refresh,
        # an unset bound follows a refresh interval set outside the default bounds
        min_refresh_interval_seconds=r.positive(
            "min_refresh_interval_seconds", float, min(d.min_refresh_interval_seconds, refresh)),
        max_refresh_interval_seconds=r.positive(
            "max_refresh_interval_seconds", float, max(d.max_refresh_interval_seconds, refresh)),
        unknown_kid_refetch_seconds=r.positive(
            "unknown_kid_refetch_seconds", float, d.unknown_kid_refetch_seconds),
        fetch_timeout_seconds=r.positive("fetch_timeout_seconds", float, d.fetch_timeout_seconds),
        max_fetch_bytes=r.positive("max_fetch_bytes", int, d.max_fetch_bytes),
        max_stale_seconds=r.positive("max_stale_seconds", float, d.max_stale_seconds),
        min_rsa_bits=r.get("min_rsa_bits", int, d.min_rsa_bits),
        claims=_claims(r),
        allow_insecure_http=insecure,
        ca_file=_ca_file(r, base_dir),
    )
    if cfg.leeway_seconds < 0:
        raise r.error("leeway_seconds", "must be 0 or more")
    _check_refresh_bounds(r, cfg)
    if not MIN_RSA_BITS <= cfg.min_rsa_bits <= MAX_RSA_BITS:
        raise r.error("min_rsa_bits", f"must be between {MIN_RSA_BITS} and {MAX_RSA_BITS}, got "
                      f"{cfg.min_rsa_bits}; RSA keys under {MIN_RSA_BITS} bits are never "
                      "accepted (NIST SP 800-131A), whatever the configuration")
    r.done()
    return cfg


def _ca_file(r: Reader, base_dir: Path | None) -> str:
    """``ca_file``, resolved and checked now: a file of PEM certificates that loads."""
    path = r.get("ca_file", str, "")
    if not path:
        return ""
    if base_dir is not None and not Path(path).is_absolute():
        path = str(base_dir / path)
    try:
        load_ca_file(path)
    except CAFileError as exc:
        raise r.error("ca_file", str(exc)) from None
    return path


def _check_refresh_bounds(r: Reader, cfg: IssuerConfig) -> None:
    """``min_refresh_interval_seconds <= refresh_interval_seconds <= max_...``.

    Only bounds set in the file can conflict (unset ones follow the interval); the error names
    the bound that was set.
    """
    low, mid, high = (cfg.min_refresh_interval_seconds, cfg.refresh_interval_seconds,
                      cfg.max_refresh_interval_seconds)
    if low > high:
        raise r.error("min_refresh_interval_seconds",
                      f"{low:g} is more than max_refresh_interval_seconds {high:g}")
    if mid < low:
        raise r.error("min_refresh_interval_seconds",
                      f"{low:g} is more than refresh_interval_seconds {mid:g}; the refresh "
                      f"interval must lie between min_refresh_interval_seconds and "
                      f"max_refresh_interval_seconds ({high:g})")
    if mid > high:
        raise r.error("max_refresh_interval_seconds",
                      f"{high:g} is less than refresh_interval_seconds {mid:g}; the refresh "
                      f"interval must lie between min_refresh_interval_seconds ({low:g}) and "
                      "max_refresh_interval_seconds")


def _check_url(r: Reader, key: str, url: str, insecure: bool, allow_file: bool) -> None:
    if url.startswith("https://") or (allow_file and url.startswith("file://")):
        return
    if url.startswith("http://") and insecure:
        return
    hint = "https:// (or file:// for a local JWKS)" if allow_file else "https://"
    raise r.error(key, f"{url!r} must start with {hint}; plain http:// needs "
                  "allow_insecure_http: true (development only)")
