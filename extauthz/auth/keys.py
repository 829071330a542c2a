"""JWK Set parsing: which published keys may verify which algorithms. Pure: no I/O.

Only asymmetric signature keys survive. Every skipped key is reported with a short reason code
(for logs); key material never appears in a reason, a log or an exception message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# JWS algorithm -> the JWK key type that can verify it.
ALG_KTY: Mapping[str, str] = {
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "EC", "ES256K": "EC", "ES384": "EC", "ES512": "EC",
    "EdDSA": "OKP",
}
# EC curve -> the only algorithm a key on that curve may verify (RFC 7518 3.4).
EC_CURVE_ALG: Mapping[str, str] = {
    "P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K",
}
OKP_SIGNATURE_CURVES = frozenset({"Ed25519", "Ed448"})
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_RSA_BITS = 16384
# the floor under any configured ``min_rsa_bits``: smaller RSA keys are never loaded
MIN_RSA_BITS = 2048
MAX_KEYS = 64


class InvalidJwks(ValueError):
    """The document is not a JWK Set at all (not an object with a ``keys`` array)."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One usable public key."""

    kid: str | None
    kty: str
    algorithms: frozenset[str]  # algorithms this key may verify (already allow-listed)
    key: Any = field(repr=False)  # a ``cryptography`` public key object
    fingerprint: str = field(repr=False)  # kid + public members: detects removal/replacement


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A published key that was not loaded, and why (a reason code, never key material)."""

    index: int
    kid: str | None
    kty: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one issuer, indexed by ``kid``."""

    keys: tuple[KeyEntry, ...] = ()
    by_kid: Mapping[str, tuple[KeyEntry, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Iterable[KeyEntry]) -> KeySet:
        """Index ``keys`` by kid (several keys may share one kid, e.g. RSA and EC)."""
        entries = tuple(keys)
        by_kid: dict[str, tuple[KeyEntry, ...]] = {}
        for entry in entries:
            if entry.kid is not None:
                by_kid[entry.kid] = (*by_kid.get(entry.kid, ()), entry)
        return cls(entries, by_kid)

    def candidates(self, kid: str | None) -> tuple[KeyEntry, ...]:
        """Keys that may have signed a token with this ``kid`` (all keys when it has none)."""
        if kid is None:
            return self.keys
        return self.by_kid.get(kid, ())

    @property
    def fingerprints(self) -> frozenset[str]:
        """Identity of every key, to tell whether a refresh removed or replaced one."""
        return frozenset(entry.fingerprint for entry in self.keys)


def parse_jwks(
    document: Any, *, algorithms: Sequence[str], min_rsa_bits: int
) -> tuple[KeySet, tuple[SkippedKey, ...]]:
    """Load the signature keys of a JWK Set.

    Args:
        document: the decoded JSON document.
        algorithms: the issuer's allowed algorithms.
        min_rsa_bits: RSA keys with a smaller modulus are skipped (never below
            ``MIN_RSA_BITS``, whatever the value).

    Returns:
        The usable keys and the skipped ones with a reason code each.

    Raises:
        InvalidJwks: the document is not an object with a ``keys`` array.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidJwks("not a JWK Set: expected an object with a 'keys' array")
    allowed = frozenset(algorithms) & ALG_KTY.keys()
    loaded: list[KeyEntry] = []
    skipped: list[SkippedKey] = []
    for index, jwk in enumerate(document["keys"]):
        if index >= MAX_KEYS:
            skipped.append(SkippedKey(index, None, None, "too_many_keys"))
            continue
        result = _load_key(jwk, allowed, min_rsa_bits)
        if isinstance(result, str):
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            kty = jwk.get("kty") if isinstance(jwk, dict) else None
            skipped.append(SkippedKey(
                index,
                kid if isinstance(kid, str) else None,
                kty if isinstance(kty, str) else None,
                result,
            ))
        else:
            loaded.append(result)
    return KeySet.of(loaded), tuple(skipped)


def _load_key(jwk: Any, allowed: frozenset[str], min_rsa_bits: int) -> KeyEntry | str:
    """One JWK -> a ``KeyEntry``, or the reason code it is skipped."""
    reason = _shape_problem(jwk)
    if reason:
        return reason
    kty: str = jwk["kty"]
    algs = _algorithms_for(jwk, allowed)
    if isinstance(algs, str):
        return algs
    try:
        key = jwt.PyJWK(jwk, algorithm=min(algs)).key
    except Exception:  # PyJWT's messages embed the JWK: report a code, never the message
        return "invalid_key_material"
    reason = _strength_problem(key, min_rsa_bits)
    if reason:
        return reason
    kid = jwk.get("kid")
    return KeyEntry(kid, kty, algs, key, _fingerprint(jwk))


def _shape_problem(jwk: Any) -> str:
    """The reason a JWK is not a public signature key, or ``""``."""
    if not isinstance(jwk, dict):
        return "not_an_object"
    kty = jwk.get("kty")
    if not isinstance(kty, str):
        return "missing_kty"
    if kty == "oct":
        return "symmetric_key"
    if kty not in ("RSA", "EC", "OKP"):
        return "unknown_kty"
    if "use" in jwk and jwk["use"] != "sig":
        return "not_signature_use"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "no_verify_operation"
    if PRIVATE_MEMBERS & jwk.keys():
        return "private_key_published"
    if "kid" in jwk and not isinstance(jwk["kid"], str):
        return "invalid_kid"
    return ""


def _algorithms_for(jwk: Mapping[str, Any], allowed: frozenset[str]) -> frozenset[str] | str:
    """The allowed algorithms a key may verify, or the reason code it may verify none."""
    kty, alg, crv = jwk["kty"], jwk.get("alg"), jwk.get("crv")
    if kty == "EC":
        curve_alg = EC_CURVE_ALG.get(crv) if isinstance(crv, str) else None
        if curve_alg is None:
            return "unsupported_curve"
        if alg is not None and alg != curve_alg:
            return "alg_curve_mismatch"
        candidates = frozenset({curve_alg})
    elif kty == "OKP":
        if crv not in OKP_SIGNATURE_CURVES:
            return "unsupported_curve"
        candidates = frozenset({"EdDSA"})
    else:
        candidates = frozenset(a for a, t in ALG_KTY.items() if t == "RSA")
    if alg is not None:
        if not isinstance(alg, str) or alg not in candidates:
            return "alg_kty_mismatch"
        candidates = frozenset({alg})
    usable = candidates & allowed
    return usable or "alg_not_allowed"


def _strength_problem(key: Any, min_rsa_bits: int) -> str:
    """The reason a loaded key is too weak (or absurdly large) to trust, or ``""``."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < max(min_rsa_bits, MIN_RSA_BITS):
            return "rsa_key_too_small"
        if key.key_size > MAX_RSA_BITS:
            return "rsa_key_too_large"
    elif isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return "private_key_published"
    return ""


def _fingerprint(jwk: Mapping[str, Any]) -> str:
    """A stable identity of the public key (public members only)."""
    members = ("kty", "kid", "crv", "n", "e", "x", "y")
    return "|".join(str(jwk.get(name, "")) for name in members)
