"""JWK Set parsing: only asymmetric signature keys of allowed algorithms survive."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from devkit.tokens import DevKey, generate_key
from extauthz.auth.keys import InvalidJwks, KeySet, parse_jwks
from extauthz.auth.types import ASYMMETRIC_ALGORITHMS


def jwk(key_alg: str, **extra: Any) -> dict[str, Any]:
    """A fresh public JWK for ``key_alg``; ``extra`` members override (``None`` removes)."""
    key = DevKey(f"kid-{key_alg}", key_alg, generate_key(key_alg), use=None)
    published = key.public_jwk()
    published.update(extra)
    return {k: v for k, v in published.items() if v is not None}


def load(*keys: Any, algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS) -> tuple[KeySet, Any]:
    return parse_jwks({"keys": list(keys)}, algorithms=algorithms, min_rsa_bits=2048)


@pytest.mark.parametrize("alg", ["RS256", "PS384", "ES256", "ES384", "ES512", "EdDSA"])
def test_signature_keys_of_each_family_load(alg: str) -> None:
    """RSA, EC and OKP public keys load and accept their algorithm."""
    keyset, skipped = load(jwk(alg))
    assert skipped == ()
    assert keyset.candidates(f"kid-{alg}")[0].algorithms == {alg}


def test_rsa_key_without_alg_accepts_every_allowed_rsa_algorithm() -> None:
    """No ``alg`` on an RSA key: any allow-listed RS*/PS* algorithm, nothing else."""
    keyset, _ = load(jwk("RS256", alg=None), algorithms=("RS256", "PS256", "ES256"))
    assert keyset.keys[0].algorithms == {"RS256", "PS256"}


def test_ec_key_without_alg_is_bound_to_its_curve() -> None:
    """A P-384 key verifies ES384 only."""
    keyset, _ = load(jwk("ES384", alg=None))
    assert keyset.keys[0].algorithms == {"ES384"}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ({"kty": "oct", "k": base64.urlsafe_b64encode(b"s" * 32).decode(), "kid": "h"},
         "symmetric_key"),
        ({"kty": "XYZ", "kid": "x"}, "unknown_kty"),
        ({"kid": "x"}, "missing_kty"),
        ("not-a-key", "not_an_object"),
        ({"kty": "OKP", "crv": "X25519", "x": "AAAA"}, "unsupported_curve"),
    ],
)
def test_non_signature_keys_are_skipped(key: Any, reason: str) -> None:
    """Symmetric, unknown or malformed entries are skipped with a reason code."""
    keyset, skipped = load(key)
    assert keyset.keys == ()
    assert [s.reason for s in skipped] == [reason]


def test_encryption_use_is_skipped() -> None:
    """``use: enc``."""
    _, skipped = load(jwk("RS256", use="enc"))
    assert skipped[0].reason == "not_signature_use"


def test_key_ops_without_verify_is_skipped() -> None:
    """``key_ops`` that does not list ``verify``."""
    _, skipped = load(jwk("ES256", key_ops=["encrypt"]))
    assert skipped[0].reason == "no_verify_operation"


def test_small_rsa_key_is_skipped() -> None:
    """RSA below ``min_rsa_bits``."""
    key = DevKey("weak", "RS256", generate_key("RS256", rsa_bits=1024)).public_jwk()
    _, skipped = load(key)
    assert skipped[0].reason == "rsa_key_too_small"


def test_published_private_key_is_skipped() -> None:
    """A JWK with private members is a leak, not a verification key."""
    _, skipped = load(jwk("ES256", d="AAAA"))
    assert skipped[0].reason == "private_key_published"


def test_alg_outside_the_allow_list_is_skipped() -> None:
    """A PS256 key at an issuer that allows RS256 only."""
    _, skipped = load(jwk("PS256"), algorithms=("RS256",))
    assert skipped[0].reason == "alg_not_allowed"


@pytest.mark.parametrize("alg", ["HS256", "ES256", "none"])
def test_alg_not_matching_the_key_type_is_skipped(alg: str) -> None:
    """An RSA key claiming HS256/ES256/none."""
    _, skipped = load(jwk("RS256", alg=alg))
    assert skipped[0].reason == "alg_kty_mismatch"


def test_ec_alg_on_the_wrong_curve_is_skipped() -> None:
    """A P-256 key published for ES384."""
    _, skipped = load(jwk("ES256", alg="ES384"))
    assert skipped[0].reason == "alg_curve_mismatch"


def test_broken_key_material_is_skipped_without_echoing_it() -> None:
    """Garbage ``n``: skipped as invalid material; the reason carries no key data."""
    _, skipped = load({"kty": "RSA", "kid": "b", "n": "!!", "e": "AQAB"})
    assert skipped[0].reason == "invalid_key_material"
    assert "!!" not in repr(skipped)


@pytest.mark.parametrize("document", [[], {"keys": "x"}, {"no": "keys"}, None])
def test_non_jwks_documents_are_invalid(document: Any) -> None:
    """Anything but an object with a ``keys`` array."""
    with pytest.raises(InvalidJwks):
        parse_jwks(document, algorithms=ASYMMETRIC_ALGORITHMS, min_rsa_bits=2048)


def test_kidless_token_considers_every_key() -> None:
    """A token without ``kid`` may match any loaded key; an unknown kid matches none."""
    keyset, _ = load(jwk("ES256"), jwk("EdDSA"))
    assert len(keyset.candidates(None)) == 2
    assert keyset.candidates("nope") == ()


def test_fingerprints_change_when_a_key_is_replaced_under_the_same_kid() -> None:
    """Same kid, new material: a different fingerprint (cached tokens get invalidated)."""
    first, _ = load(jwk("ES256"))
    second, _ = load(jwk("ES256"))
    assert first.fingerprints != second.fingerprints
    assert first.keys[0].kid == second.keys[0].kid


@pytest.mark.parametrize("configured", [512, 1024, 2047])
def test_min_rsa_bits_below_the_floor_still_skips_rsa_1024(configured: int) -> None:
    """An ``IssuerConfig`` built in code with ``min_rsa_bits`` under 2048 (the config file
    refuses it) still never loads an RSA-1024 key; a larger floor is honoured."""
    weak = DevKey("weak", "RS256", generate_key("RS256", rsa_bits=1024)).public_jwk()
    keyset, skipped = parse_jwks({"keys": [weak]}, algorithms=ASYMMETRIC_ALGORITHMS,
                                 min_rsa_bits=configured)
    assert keyset.keys == () and skipped[0].reason == "rsa_key_too_small"
    strong = DevKey("ok", "RS256", generate_key("RS256", rsa_bits=2048)).public_jwk()
    _, skipped = parse_jwks({"keys": [strong]}, algorithms=ASYMMETRIC_ALGORITHMS,
                            min_rsa_bits=3072)
    assert skipped[0].reason == "rsa_key_too_small"
