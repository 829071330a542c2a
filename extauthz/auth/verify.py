"""Verification of one compact JWS against one issuer's keys. Pure: no I/O, no clock.

The steps, in the order a token meets them:

1. ``parse_token``: size cap, three segments (a five-segment compact JWE is refused), strict
   base64url (no padding, no non-canonical trailing bits), JSON objects without duplicate
   members, and header rules that hold for every issuer (``alg`` present and asymmetric, no
   ``crit``, no nested JWT, ``kid`` a string). ``jku``, ``x5u``, ``jwk`` and ``x5c`` are never
   read: keys come only from the issuer's configured JWK Set.
2. ``route``: the unverified ``iss`` picks the issuer configuration (exact match).
3. ``check_header``: the issuer's algorithm allow-list and its required ``typ``.
4. ``check_signature``: the keys the caller found for the ``kid``.
5. ``check_claims``: ``exp`` (required), ``nbf``, ``iat``, ``iss``, ``aud`` and the subject.

Every refusal is an ``AuthError`` with a stable ``Reason`` and a one-line message that never
contains the token, a segment of it, or a signature.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from extauthz.auth.keys import ALG_KTY, KeyEntry, KeySet
from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken
from extauthz.model import Reason

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALGORITHMS: Mapping[str, Algorithm] = {
    name: alg for name, alg in get_default_algorithms().items() if name in ALG_KTY
}


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A structurally valid, not yet verified, token."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str | None

    @property
    def issuer(self) -> Any:
        """The unverified ``iss`` claim (any JSON type)."""
        return self.claims.get("iss")


def safe(value: object, limit: int = 80) -> str:
    """A short, single-line, quoted rendering of an attacker-controlled value for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _malformed(message: str) -> AuthError:
    return AuthError(Reason.MALFORMED_TOKEN, message)


# -- 1. structure -------------------------------------------------------------------------------


def parse_token(token: str, max_bytes: int) -> ParsedToken:
    """Check the structure of a compact JWS and decode its header and claims.

    Raises:
        AuthError: TOKEN_TOO_LARGE, MALFORMED_TOKEN, DISALLOWED_ALGORITHM or
            UNSUPPORTED_CRITICAL_HEADER.
    """
    if len(token) > max_bytes:
        raise AuthError(
            Reason.TOKEN_TOO_LARGE,
            f"token is {len(token)} bytes, more than the {max_bytes} accepted",
        )
    if not token.isascii():
        raise _malformed("token contains non-ASCII characters")
    parts = token.split(".")
    if len(parts) == 5:
        raise _malformed("token is a compact JWE (5 segments); only signed JWTs are accepted")
    if len(parts) != 3:
        raise _malformed(f"token has {len(parts)} segments; a signed JWT has 3")
    header = _json_object(b64url_decode(parts[0], "header"), "header")
    alg, kid = _check_common_header(header)
    claims = _json_object(b64url_decode(parts[1], "payload"), "payload")
    signature = b64url_decode(parts[2], "signature")
    signing_input = token[: len(parts[0]) + len(parts[1]) + 1].encode("ascii")
    return ParsedToken(MappingProxyType(header), MappingProxyType(claims), signing_input,
                       signature, alg, kid)


def b64url_decode(segment: str, what: str) -> bytes:
    """Strict base64url (RFC 7515 §2): alphabet only, no padding, canonical trailing bits."""
    remainder = len(segment) % 4
    if remainder == 1 or not _B64URL.fullmatch(segment):
        raise _malformed(f"token {what} is not valid unpadded base64url")
    if remainder:
        unused_bits = 0b1111 if remainder == 2 else 0b11
        if _B64_ALPHABET.index(segment[-1]) & unused_bits:
            raise _malformed(f"token {what} is non-canonical base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-remainder % 4))
    except (binascii.Error, ValueError):
        raise _malformed(f"token {what} is not valid base64url") from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Decode UTF-8 JSON that must be an object, refusing duplicate members and NaN/Infinity."""
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = "duplicate member names" if "duplicate" in str(exc) else "invalid JSON"
        raise _malformed(f"token {what} is not a valid JSON object ({detail})") from None
    if not isinstance(value, dict):
        raise _malformed(f"token {what} is not a JSON object")
    return value


def _check_common_header(header: Mapping[str, Any]) -> tuple[str, str | None]:
    """Header rules that hold whatever the issuer. Returns ``(alg, kid)``."""
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise AuthError(Reason.DISALLOWED_ALGORITHM, "token header has no 'alg'")
    if alg.lower() == "none" or alg.upper().startswith("HS") or alg not in ALG_KTY:
        raise AuthError(
            Reason.DISALLOWED_ALGORITHM,
            f"token algorithm {safe(alg, 24)} is not accepted; only asymmetric signatures are",
        )
    if "crit" in header:
        raise AuthError(
            Reason.UNSUPPORTED_CRITICAL_HEADER,
            f"token marks header parameters {safe(header['crit'], 60)} as critical; "
            "none are supported",
        )
    if "b64" in header:
        raise _malformed("token uses the 'b64' header (unencoded payload); not supported")
    cty = header.get("cty")
    if isinstance(cty, str) and cty.upper() in ("JWT", "APPLICATION/JWT"):
        raise _malformed("token is a nested JWT (cty JWT); not supported")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _malformed("token header 'kid' is not a string")
    return alg, kid


# -- 2. routing ---------------------------------------------------------------------------------


def route(parsed: ParsedToken, issuers: Mapping[str, IssuerConfig]) -> IssuerConfig:
    """The issuer configuration whose ``issuer`` equals the token's ``iss`` exactly."""
    iss = parsed.issuer
    if iss is None:
        raise AuthError(Reason.UNKNOWN_ISSUER, "token has no 'iss' claim")
    if not isinstance(iss, str):
        raise AuthError(Reason.INVALID_CLAIMS, "token 'iss' claim is not a string")
    issuer = issuers.get(iss)
    if issuer is None:
        raise AuthError(Reason.UNKNOWN_ISSUER, f"token issuer {safe(iss)} is not trusted")
    return issuer


# -- 3. issuer-specific header rules ------------------------------------------------------------


def check_header(parsed: ParsedToken, issuer: IssuerConfig, *, typ: bool = True) -> None:
    """The issuer's algorithm allow-list and required ``typ`` (RFC 8725 §3.11).

    ``typ=False`` skips the type check (display-only ID tokens are ``JWT``, not ``at+jwt``).
    """
    if parsed.alg not in issuer.algorithms:
        raise AuthError(
            Reason.DISALLOWED_ALGORITHM,
            f"token algorithm {parsed.alg} is not allowed for issuer {issuer.issuer}",
        )
    if typ and issuer.required_typ is not None:
        value = parsed.header.get("typ")
        wanted = issuer.required_typ.lower()
        if not isinstance(value, str) or value.lower() not in (wanted, "application/" + wanted):
            raise AuthError(
                Reason.UNSUPPORTED_TOKEN_TYPE,
                f"token type {safe(value, 40)} is not {issuer.required_typ!r} "
                f"required by issuer {issuer.issuer}",
            )


# -- 4. signature -------------------------------------------------------------------------------


def check_signature(parsed: ParsedToken, candidates: Sequence[KeyEntry]) -> KeyEntry:
    """Verify the signature with the first candidate key that accepts the token's ``alg``.

    Returns:
        The key that verified the signature.

    Raises:
        AuthError: DISALLOWED_ALGORITHM when no candidate may verify ``alg``, BAD_SIGNATURE when
            none verifies the signature.
    """
    usable = [entry for entry in candidates if parsed.alg in entry.algorithms]
    if not usable:
        raise AuthError(
            Reason.DISALLOWED_ALGORITHM,
            f"key {safe(parsed.kid, 60)} does not accept algorithm {parsed.alg}",
        )
    algorithm = _ALGORITHMS[parsed.alg]
    for entry in usable:
        try:
            if algorithm.verify(parsed.signing_input, entry.key, parsed.signature):
                return entry
        except Exception:  # noqa: S112 - any crypto error is a bad signature
            continue
    raise AuthError(
        Reason.BAD_SIGNATURE,
        f"token signature does not verify with key {safe(parsed.kid, 60)} ({parsed.alg})",
    )


# -- 5. claims ----------------------------------------------------------------------------------


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim as a float, ``None`` if absent; a non-number is INVALID_CLAIMS."""
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(Reason.INVALID_CLAIMS, f"token '{name}' claim is not a number")
    return float(value)


def check_times(claims: Mapping[str, Any], issuer: IssuerConfig, now: float) -> float:
    """``exp`` (required), ``nbf`` and ``iat`` against ``now`` with the issuer's leeway.

    Returns:
        ``exp``.
    """
    leeway = issuer.leeway_seconds
    exp = _numeric(claims, "exp")
    if exp is None:
        raise AuthError(Reason.INVALID_CLAIMS, "token has no 'exp' claim; it is required")
    if now >= exp + leeway:
        raise AuthError(
            Reason.TOKEN_EXPIRED, f"token expired {now - exp:.0f} s ago; get a new token"
        )
    nbf = _numeric(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise AuthError(
            Reason.TOKEN_NOT_YET_VALID,
            f"token is not valid for another {nbf - now:.0f} s (nbf); check clocks",
        )
    iat = _numeric(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise AuthError(
            Reason.TOKEN_ISSUED_IN_FUTURE,
            f"token was issued {iat - now:.0f} s in the future (iat); check clocks",
        )
    return exp


def check_audience(claims: Mapping[str, Any], issuer: IssuerConfig) -> None:
    """``aud`` (a string or an array of strings) must name one of the issuer's audiences."""
    aud = claims.get("aud")
    if aud is None and "aud" not in claims:
        if issuer.audiences:
            raise AuthError(
                Reason.AUDIENCE_MISMATCH,
                f"token has no 'aud'; issuer {issuer.issuer} requires one of "
                f"{list(issuer.audiences)}",
            )
        return
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise AuthError(Reason.INVALID_CLAIMS, "token 'aud' is not a string or array of strings")
    if issuer.audiences and not set(values) & set(issuer.audiences):
        raise AuthError(
            Reason.AUDIENCE_MISMATCH,
            f"token audience {safe(values)} has none of {list(issuer.audiences)} "
            f"accepted for issuer {issuer.issuer}",
        )


def subject_of(claims: Mapping[str, Any], issuer: IssuerConfig) -> str:
    """The token's subject (``ClaimMapping.subject_from``), a non-empty string.

    The configured subject claim; when the token has neither it nor ``sub``, the first
    ``subject_fallback`` claim (``client_id``, ``azp``) that is a non-empty string.

    Raises:
        AuthError: INVALID_CLAIMS when the subject claim is present but not a non-empty string
            (no fallback then), or when the token has no subject at all.
    """
    mapping = issuer.claims
    found = mapping.subject_from(claims)
    if found is not None:
        return found[0]
    name = mapping.subject_claim
    if name in claims:
        problem = f"token subject claim {name!r} is not a non-empty string"
    elif "sub" in claims:
        problem = f"token has no subject claim {name!r}"
    elif mapping.subject_fallback:
        problem = (f"token has no subject claim {name!r} and none of "
                   f"{list(mapping.subject_fallback)} is a non-empty string")
    else:
        problem = f"token has no subject claim {name!r} (subject_fallback is empty)"
    raise AuthError(Reason.INVALID_CLAIMS, problem)


def check_claims(
    parsed: ParsedToken, issuer: IssuerConfig, now: float, *, audience: bool = True
) -> VerifiedToken:
    """Registered claims and the subject; returns the verified token.

    Args:
        parsed: a token whose signature was already verified.
        issuer: the issuer configuration the token was routed to.
        now: seconds since the epoch.
        audience: check ``aud`` (``False`` only for display-only ID tokens).
    """
    claims = parsed.claims
    exp = check_times(claims, issuer, now)
    if claims.get("iss") != issuer.issuer:
        raise AuthError(
            Reason.ISSUER_MISMATCH,
            f"token issuer {safe(claims.get('iss'))} is not {issuer.issuer!r}",
        )
    if audience:
        check_audience(claims, issuer)
    subject = subject_of(claims, issuer)
    return VerifiedToken(issuer=issuer, claims=claims, expires_at=exp, subject=subject)


def verify_token(
    token: str, issuers: Mapping[str, IssuerConfig], keys: Mapping[str, KeySet], now: float
) -> VerifiedToken:
    """All the steps with keys already at hand (tests and offline checks; no refetch).

    Raises:
        AuthError: the token is refused; UNKNOWN_KEY when no key has the token's ``kid``.
    """
    max_bytes = max((i.max_token_bytes for i in issuers.values()), default=0)
    parsed = parse_token(token, max_bytes)
    issuer = route(parsed, issuers)
    if len(token) > issuer.max_token_bytes:
        raise AuthError(Reason.TOKEN_TOO_LARGE, f"token is larger than issuer {issuer.issuer} "
                        f"accepts ({issuer.max_token_bytes} bytes)")
    check_header(parsed, issuer)
    keyset = keys.get(issuer.issuer, KeySet())
    candidates = keyset.candidates(parsed.kid)
    if not candidates:
        raise AuthError(Reason.UNKNOWN_KEY, unknown_key_message(parsed, issuer))
    check_signature(parsed, candidates)
    return check_claims(parsed, issuer, now)


def unknown_key_message(parsed: ParsedToken, issuer: IssuerConfig) -> str:
    """The UNKNOWN_KEY message for a token."""
    return f"no key {safe(parsed.kid, 60)} in the JWK Set of issuer {issuer.issuer}"
