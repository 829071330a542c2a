"""Pure token checks: structure, strict base64url, claims, with keys already at hand."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devkit.issuer import DevIssuer
from extauthz.auth.keys import KeySet, parse_jwks
from extauthz.auth.types import ASYMMETRIC_ALGORITHMS, AuthError, IssuerConfig
from extauthz.auth.verify import b64url_decode, check_claims, parse_token, verify_token
from extauthz.claims import ClaimMapping
from extauthz.model import Reason

ISS = "https://issuer.test"


@pytest.fixture(scope="module")
def dev() -> DevIssuer:
    """An EdDSA dev issuer used for signing only (never started)."""
    return DevIssuer(alg="EdDSA", issuer=ISS)


@pytest.fixture(scope="module")
def keys(dev: DevIssuer) -> dict[str, KeySet]:
    keyset, _ = parse_jwks(dev.jwks(), algorithms=ASYMMETRIC_ALGORITHMS, min_rsa_bits=2048)
    return {ISS: keyset}


ISSUERS = {ISS: IssuerConfig(ISS, audiences=("temporal",), leeway_seconds=10)}


def reason_of(token: str, keys: dict[str, KeySet], now: float | None = None) -> Reason:
    with pytest.raises(AuthError) as caught:
        verify_token(token, ISSUERS, keys, time.time() if now is None else now)
    return caught.value.reason


def test_valid_token_verifies(dev: DevIssuer, keys: dict[str, KeySet]) -> None:
    """The control: a good EdDSA token verifies, claims and subject intact."""
    verified = verify_token(dev.mint({"sub": "bob", "x": [1]}), ISSUERS, keys, time.time())
    assert (verified.subject, verified.claims["x"]) == ("bob", [1])


@given(st.binary(max_size=200))
def test_b64url_roundtrip_is_exact(data: bytes) -> None:
    """Canonical unpadded base64url decodes to the original bytes."""
    text = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert b64url_decode(text, "x") == data


@given(st.binary(min_size=1, max_size=200))
def test_every_non_canonical_twin_is_refused(data: bytes) -> None:
    """Setting unused trailing bits yields a string that is refused, never a second encoding."""
    text = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    if len(text) % 4 == 0:
        return
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = text[:-1] + alphabet[alphabet.index(text[-1]) | 1]
    if twin == text:
        return
    with pytest.raises(AuthError) as caught:
        b64url_decode(twin, "x")
    assert caught.value.reason == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize("segment", ["A", "AB==", "A+B/", "AB CD", "ABC\n"])
def test_invalid_b64url_segments_are_refused(segment: str) -> None:
    """Impossible length, padding, the standard alphabet, whitespace."""
    with pytest.raises(AuthError):
        b64url_decode(segment, "x")


def test_size_cap_applies_before_any_parsing() -> None:
    """An oversized string is refused on length, whatever it contains."""
    with pytest.raises(AuthError) as caught:
        parse_token("\xff" * 100, 50)
    assert caught.value.reason == Reason.TOKEN_TOO_LARGE


def test_non_ascii_token_is_malformed() -> None:
    """Non-ASCII characters are never base64url."""
    with pytest.raises(AuthError) as caught:
        parse_token("é.é.é", 100)
    assert caught.value.reason == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_numbers_are_malformed(
    dev: DevIssuer, keys: dict[str, KeySet], constant: str
) -> None:
    """``exp: NaN`` or ``Infinity`` (Python's json extension) is not JSON."""
    payload = f'{{"iss":"{ISS}","sub":"a","aud":"temporal","exp":{constant}}}'.encode()
    assert reason_of(dev.sign_raw(payload), keys) == Reason.MALFORMED_TOKEN


def test_payload_must_be_an_object(dev: DevIssuer, keys: dict[str, KeySet]) -> None:
    """A JSON array payload."""
    assert reason_of(dev.sign_raw(b'["iss"]'), keys) == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 1e308}, None),
        ({"exp": -1}, Reason.TOKEN_EXPIRED),
        ({"nbf": "0"}, Reason.INVALID_CLAIMS),
        ({"iat": False}, Reason.INVALID_CLAIMS),
        ({"aud": 7}, Reason.INVALID_CLAIMS),
        ({"aud": ["temporal", 7]}, Reason.INVALID_CLAIMS),
        ({"aud": []}, Reason.AUDIENCE_MISMATCH),
        ({"iss": 5}, Reason.INVALID_CLAIMS),
        ({"iss": None}, Reason.UNKNOWN_ISSUER),
    ],
)
def test_claim_types_are_checked(
    dev: DevIssuer, keys: dict[str, KeySet], claims: dict[str, Any], reason: Reason | None
) -> None:
    """Registered claims of the wrong JSON type are invalid, never ignored."""
    token = dev.mint({"sub": "a", **claims})
    if reason is None:
        verify_token(token, ISSUERS, keys, time.time())
    else:
        assert reason_of(token, keys) == reason


def test_leeway_boundaries(dev: DevIssuer, keys: dict[str, KeySet]) -> None:
    """``exp`` is accepted until exp + leeway (exclusive); ``nbf``/``iat`` up to now + leeway."""
    now = 1_000_000.0
    token = dev.mint({"sub": "a", "exp": 1000, "nbf": 1000, "iat": 1000}, now=now)
    verify_token(token, ISSUERS, keys, 1009.0)
    verify_token(token, ISSUERS, keys, 990.0)
    assert reason_of(token, keys, now=1010.0) == Reason.TOKEN_EXPIRED
    assert reason_of(token, keys, now=989.0) == Reason.TOKEN_NOT_YET_VALID


def test_issuer_mismatch_when_routed_config_differs(dev: DevIssuer) -> None:
    """``check_claims`` refuses a token whose ``iss`` is not the issuer it was checked for."""
    parsed = parse_token(dev.mint({"sub": "a"}), 16384)
    other = IssuerConfig("https://other.test")
    with pytest.raises(AuthError) as caught:
        check_claims(parsed, other, time.time())
    assert caught.value.reason == Reason.ISSUER_MISMATCH


def test_messages_never_contain_the_token(dev: DevIssuer, keys: dict[str, KeySet]) -> None:
    """Refusal messages quote no segment of the token."""
    token = dev.mint({"sub": "a", "aud": "x" * 100})
    with pytest.raises(AuthError) as caught:
        verify_token(token, ISSUERS, keys, time.time())
    for segment in token.split("."):
        assert segment not in caught.value.message
    assert len(caught.value.message) < 300


def test_header_is_checked_before_the_payload_is_decoded(keys: dict[str, KeySet]) -> None:
    """``alg: none`` is refused even when the payload is garbage."""
    head = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    assert reason_of(f"{head}.!!!.", keys) == Reason.DISALLOWED_ALGORITHM


# --- subject: configured claim, then client-credentials fallback -------------------------------

def subject_with(token: str, keys: dict[str, KeySet], **mapping: Any) -> str:
    """The verified subject of ``token`` under a ClaimMapping built from ``mapping``."""
    issuers = {ISS: IssuerConfig(ISS, audiences=("temporal",), claims=ClaimMapping(**mapping))}
    return verify_token(token, issuers, keys, time.time()).subject


def subject_refusal(token: str, keys: dict[str, KeySet], **mapping: Any) -> AuthError:
    with pytest.raises(AuthError) as caught:
        subject_with(token, keys, **mapping)
    return caught.value


@pytest.mark.parametrize(("claims", "subject"), [
    ({"sub": "alice", "client_id": "svc"}, "alice"),
    ({"client_id": "svc", "azp": "other"}, "svc"),
    ({"azp": "app"}, "app"),
    ({"client_id": "", "azp": "app"}, "app"),
    ({"client_id": 17, "azp": "app"}, "app"),
])
def test_token_without_sub_is_named_by_its_client_id(
    dev: DevIssuer, keys: dict[str, KeySet], claims: dict[str, Any], subject: str
) -> None:
    """A client-credentials token without `sub` verifies, its subject the first non-empty
    string of `client_id`, `azp` (the default `subject_fallback`)."""
    assert subject_with(dev.mint(claims), keys) == subject


@pytest.mark.parametrize("sub", ["", 42, None, ["svc"], {"id": "svc"}, True])
def test_present_but_bad_subject_is_refused_without_fallback(
    dev: DevIssuer, keys: dict[str, KeySet], sub: Any
) -> None:
    """`sub` present but not a non-empty string: INVALID_CLAIMS, even with a usable
    `client_id` (a bad subject is a bad token, not a service)."""
    payload = json.dumps({"iss": ISS, "aud": "temporal", "exp": int(time.time()) + 60,
                          "sub": sub, "client_id": "svc", "azp": "svc"}).encode()
    error = subject_refusal(dev.sign_raw(payload), keys)
    assert error.reason == Reason.INVALID_CLAIMS
    assert "'sub'" in error.message and "not a non-empty string" in error.message


def test_token_with_no_subject_and_no_client_id_is_refused(
    dev: DevIssuer, keys: dict[str, KeySet]
) -> None:
    """No `sub`, no usable fallback claim: INVALID_CLAIMS naming what was looked for."""
    error = subject_refusal(dev.mint({"client_id": "", "azp": 5}), keys)
    assert error.reason == Reason.INVALID_CLAIMS
    assert "client_id" in error.message and "azp" in error.message


def test_empty_subject_fallback_requires_the_subject_claim(
    dev: DevIssuer, keys: dict[str, KeySet]
) -> None:
    """`subject_fallback: []` restores the strict rule: no `sub`, no token."""
    error = subject_refusal(dev.mint({"client_id": "svc"}), keys, subject_fallback=())
    assert error.reason == Reason.INVALID_CLAIMS and "subject_fallback" in error.message
    assert subject_with(dev.mint({"sub": "alice"}), keys, subject_fallback=()) == "alice"


def test_configured_fallback_claims_are_tried_in_order(
    dev: DevIssuer, keys: dict[str, KeySet]
) -> None:
    """A custom list is used as given (order kept, other claims ignored)."""
    token = dev.mint({"client_id": "c", "azp": "a", "appid": "x"})
    assert subject_with(token, keys, subject_fallback=("azp", "client_id")) == "a"
    assert subject_with(token, keys, subject_fallback=("appid",)) == "x"
    assert subject_refusal(dev.mint({"azp": "a"}), keys,
                           subject_fallback=("client_id",)).reason == Reason.INVALID_CLAIMS


def test_human_without_configured_subject_claim_gets_no_fallback(
    dev: DevIssuer, keys: dict[str, KeySet]
) -> None:
    """`subject_claim: email` and a token with `sub` but no `email`: refused, never named
    after the app (`azp`) the human logged in through."""
    error = subject_refusal(dev.mint({"sub": "u-1", "azp": "temporal-ui"}), keys,
                            subject_claim="email")
    assert error.reason == Reason.INVALID_CLAIMS and "'email'" in error.message
    assert subject_with(dev.mint({"azp": "svc"}), keys, subject_claim="email") == "svc"
