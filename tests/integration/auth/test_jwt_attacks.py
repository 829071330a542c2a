"""The JWT attack catalog: each forged or malformed token is refused with the right reason.

Keys come from a real dev issuer over loopback (OIDC discovery + JWKS); nothing is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator, Mapping

import pytest
from cryptography.hazmat.primitives import serialization
from support_auth import config_for, refused, running

from devkit.issuer import DevIssuer
from devkit.tokens import b64url
from extauthz.model import Reason


def forge(
    header: Mapping[str, object], claims: Mapping[str, object], signature: bytes = b""
) -> str:
    """An unsigned token with exactly this header, claims and signature bytes."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def good_claims(dev: DevIssuer) -> dict[str, object]:
    now = int(time.time())
    return {"iss": dev.url, "sub": "alice", "aud": "temporal", "iat": now, "exp": now + 600}


@pytest.fixture(scope="module")
def attacker() -> Iterator[DevIssuer]:
    """A second loopback issuer that is NOT trusted; it counts every request it gets."""
    with DevIssuer() as issuer:
        yield issuer


async def test_valid_token_is_accepted(dev: DevIssuer) -> None:
    """The control: a well-formed token of the trusted issuer verifies."""
    async with running(config_for(dev)) as auth:
        verified = await auth.verify(dev.mint({"sub": "alice"}))
    assert verified.subject == "alice"
    assert verified.issuer.issuer == dev.url


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_in_any_casing_is_refused(dev: DevIssuer, alg: str) -> None:
    """``alg: none`` (any casing) with an empty signature is a disallowed algorithm."""
    async with running(config_for(dev)) as auth:
        await refused(auth, forge({"alg": alg, "typ": "JWT"}, good_claims(dev)),
                      Reason.DISALLOWED_ALGORITHM)


async def test_empty_signature_is_refused(dev: DevIssuer) -> None:
    """A real RS256 header and claims with the signature stripped is a bad signature."""
    head, body, _ = dev.mint({"sub": "alice"}).split(".")
    async with running(config_for(dev)) as auth:
        await refused(auth, f"{head}.{body}.", Reason.BAD_SIGNATURE)


async def test_rs256_to_hs256_with_public_key_as_secret_is_refused(dev: DevIssuer) -> None:
    """Key confusion: HS256 signed with the issuer's public key PEM as the HMAC secret."""
    pem = dev.key().private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": dev.current_kid}
    signing_input = forge(header, good_claims(dev)).rsplit(".", 1)[0]
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    async with running(config_for(dev)) as auth:
        await refused(auth, f"{signing_input}.{b64url(mac)}", Reason.DISALLOWED_ALGORITHM)


@pytest.mark.parametrize("kid", ["../../../../etc/passwd", "' OR '1'='1' --", "/dev/null",
                                 "kid\x00", ""])
async def test_hostile_kid_is_an_unknown_key(dev: DevIssuer, kid: str) -> None:
    """Path-traversal or SQL-ish kids are plain unknown kids (a dict lookup, nothing else)."""
    async with running(config_for(dev)) as auth:
        error = await refused(auth, dev.mint({"sub": "alice"}, headers={"kid": kid}),
                              Reason.UNKNOWN_KEY)
    assert "\x00" not in error.message


@pytest.mark.parametrize("param", ["jku", "x5u"])
async def test_key_url_headers_are_never_fetched(
    dev: DevIssuer, attacker: DevIssuer, param: str
) -> None:
    """``jku``/``x5u`` pointing at another server: refused, and that server sees no request."""
    before = attacker.requests
    token = attacker.mint({"iss": dev.url, "sub": "alice"},
                          headers={param: f"{attacker.url}/jwks.json"})
    forged_kid = attacker.mint({"iss": dev.url, "sub": "alice"},
                               headers={param: f"{attacker.url}/jwks.json",
                                        "kid": dev.current_kid})
    async with running(config_for(dev, unknown_kid_refetch_seconds=0.0)) as auth:
        await refused(auth, token, Reason.UNKNOWN_KEY)
        await refused(auth, forged_kid, Reason.BAD_SIGNATURE)
    assert attacker.requests == before


async def test_embedded_jwk_and_x5c_are_ignored(dev: DevIssuer, attacker: DevIssuer) -> None:
    """A token carrying its own key (``jwk``/``x5c``) is checked against the JWKS only."""
    before = attacker.requests
    attacker_jwk = attacker.key().public_jwk()
    token = attacker.mint({"iss": dev.url, "sub": "alice"},
                          headers={"jwk": attacker_jwk, "x5c": ["MIIB"],
                                   "kid": dev.current_kid})
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.BAD_SIGNATURE)
    assert attacker.requests == before


async def test_unknown_crit_header_is_refused(dev: DevIssuer) -> None:
    """A ``crit`` extension we do not understand refuses the token."""
    token = dev.mint({"sub": "alice"}, headers={"crit": ["exp"], "exp": 1})
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.UNSUPPORTED_CRITICAL_HEADER)


async def test_expired_token_is_refused(dev: DevIssuer) -> None:
    """``exp`` in the past, beyond the leeway."""
    token = dev.mint({"sub": "alice", "exp": int(time.time()) - 3600})
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.TOKEN_EXPIRED)


async def test_expired_within_leeway_is_accepted(dev: DevIssuer) -> None:
    """``exp`` a few seconds ago is inside the configured leeway."""
    token = dev.mint({"sub": "alice", "exp": int(time.time()) - 5})
    async with running(config_for(dev, leeway_seconds=30)) as auth:
        assert (await auth.verify(token)).subject == "alice"


async def test_not_yet_valid_token_is_refused(dev: DevIssuer) -> None:
    """``nbf`` an hour ahead."""
    token = dev.mint({"sub": "alice", "nbf": int(time.time()) + 3600})
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.TOKEN_NOT_YET_VALID)


async def test_issued_in_the_future_is_refused(dev: DevIssuer) -> None:
    """``iat`` an hour ahead."""
    token = dev.mint({"sub": "alice", "iat": int(time.time()) + 3600})
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.TOKEN_ISSUED_IN_FUTURE)


@pytest.mark.parametrize("exp", ["9999999999", True, None, [1], {"t": 1}])
async def test_non_numeric_exp_is_invalid(dev: DevIssuer, exp: object) -> None:
    """``exp`` as a string, boolean, null, array or object is invalid, never "no expiry"."""
    payload = {**good_claims(dev), "exp": exp}
    token = dev.sign_raw(json.dumps(payload).encode())
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.INVALID_CLAIMS)


async def test_missing_exp_is_invalid(dev: DevIssuer) -> None:
    """A token without ``exp`` would never expire: refused."""
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.mint({"sub": "alice", "exp": None}), Reason.INVALID_CLAIMS)


async def test_wrong_issuer_is_unknown(dev: DevIssuer) -> None:
    """An ``iss`` nobody configured."""
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.mint({"sub": "a", "iss": "https://evil.example"}),
                      Reason.UNKNOWN_ISSUER)


@pytest.mark.parametrize("variant", ["prefix", "suffix", "slash", "host", "case"])
async def test_issuer_prefix_or_substring_is_unknown(dev: DevIssuer, variant: str) -> None:
    """``iss`` must equal the configured issuer exactly: near misses are unknown issuers."""
    iss = {"prefix": dev.url[:-1], "suffix": dev.url + "0", "slash": dev.url + "/",
           "host": "http://127.0.0.1", "case": dev.url.upper()}[variant]
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.mint({"sub": "a", "iss": iss}), Reason.UNKNOWN_ISSUER)


async def test_wrong_audience_is_refused(dev: DevIssuer) -> None:
    """``aud`` is another API."""
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.mint({"sub": "a", "aud": "billing"}), Reason.AUDIENCE_MISMATCH)


async def test_audience_array_without_ours_is_refused(dev: DevIssuer) -> None:
    """An ``aud`` array that does not contain ours."""
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.mint({"sub": "a", "aud": ["billing", "temporal-x"]}),
                      Reason.AUDIENCE_MISMATCH)


async def test_audience_array_with_ours_is_accepted(dev: DevIssuer) -> None:
    """Any-of: an array containing one accepted audience verifies."""
    async with running(config_for(dev)) as auth:
        await auth.verify(dev.mint({"sub": "a", "aud": ["billing", "temporal"]}))


async def test_missing_audience_is_refused(dev: DevIssuer) -> None:
    """An issuer with audiences configured requires ``aud``."""
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.mint({"sub": "a", "aud": None}), Reason.AUDIENCE_MISMATCH)


async def test_token_signed_by_another_issuers_key_is_refused(
    dev: DevIssuer, attacker: DevIssuer
) -> None:
    """Claims of the trusted issuer signed with another issuer's key: unknown kid, or a bad
    signature when the forger copies the trusted kid."""
    async with running(config_for(dev, unknown_kid_refetch_seconds=0.0)) as auth:
        await refused(auth, attacker.mint({"iss": dev.url, "sub": "a"}), Reason.UNKNOWN_KEY)
        await refused(auth, attacker.mint({"iss": dev.url, "sub": "a"},
                                          headers={"kid": dev.current_kid}),
                      Reason.BAD_SIGNATURE)


async def test_rsa_1024_key_in_jwks_is_skipped(fresh_dev: DevIssuer) -> None:
    """A published 1024-bit RSA key is never loaded; tokens it signs are refused."""
    weak = fresh_dev.add_key("RS256", rsa_bits=1024)
    async with running(config_for(fresh_dev)) as auth:
        assert auth.stores[fresh_dev.url].keys_loaded == 1
        await refused(auth, fresh_dev.mint({"sub": "a"}, kid=weak), Reason.UNKNOWN_KEY)


async def test_oct_key_in_jwks_is_skipped(fresh_dev: DevIssuer) -> None:
    """A symmetric JWK is never loaded: HS256 with its secret and RS256 naming it both fail."""
    secret = b"s" * 32
    fresh_dev.publish_raw_jwk({"kty": "oct", "kid": "hmac", "alg": "HS256",
                               "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()})
    header = {"alg": "HS256", "typ": "JWT", "kid": "hmac"}
    signing_input = forge(header, good_claims(fresh_dev)).rsplit(".", 1)[0]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    async with running(config_for(fresh_dev)) as auth:
        assert auth.stores[fresh_dev.url].keys_loaded == 1
        await refused(auth, f"{signing_input}.{b64url(mac)}", Reason.DISALLOWED_ALGORITHM)
        await refused(auth, fresh_dev.mint({"sub": "a"}, headers={"kid": "hmac"}),
                      Reason.UNKNOWN_KEY)


async def test_encryption_key_in_jwks_is_skipped(fresh_dev: DevIssuer) -> None:
    """A ``use: enc`` key is not a signature key, even if a token is signed with it."""
    enc = fresh_dev.add_key("RS256", use="enc")
    async with running(config_for(fresh_dev)) as auth:
        assert auth.stores[fresh_dev.url].keys_loaded == 1
        await refused(auth, fresh_dev.mint({"sub": "a"}, kid=enc), Reason.UNKNOWN_KEY)


async def test_ecdsa_all_zero_signature_is_refused() -> None:
    """The "psychic signature" (r = s = 0) never verifies."""
    with DevIssuer(alg="ES256") as es:
        head, body, _ = es.mint({"sub": "alice"}).split(".")
        async with running(config_for(es)) as auth:
            await auth.verify(es.mint({"sub": "alice"}))  # the key itself works
            await refused(auth, f"{head}.{body}.{b64url(bytes(64))}", Reason.BAD_SIGNATURE)


@pytest.mark.parametrize("where", [0, 1, 2])
async def test_malformed_base64_is_refused(dev: DevIssuer, where: int) -> None:
    """A segment with characters outside base64url."""
    parts = dev.mint({"sub": "alice"}).split(".")
    parts[where] = parts[where][:10] + "+/!" + parts[where][13:]
    async with running(config_for(dev)) as auth:
        await refused(auth, ".".join(parts), Reason.MALFORMED_TOKEN)


@pytest.mark.parametrize("where", [0, 1, 2])
async def test_padded_base64_is_refused(dev: DevIssuer, where: int) -> None:
    """Base64 padding (``=``) is not allowed in a JWS segment."""
    parts = dev.mint({"sub": "alice"}).split(".")
    parts[where] += "=" * (-len(parts[where]) % 4 or 4)
    async with running(config_for(dev)) as auth:
        await refused(auth, ".".join(parts), Reason.MALFORMED_TOKEN)


async def test_non_canonical_base64_is_refused(dev: DevIssuer) -> None:
    """The same signature bytes with non-zero unused trailing bits (a second encoding)."""
    token = dev.mint({"sub": "alice"})
    head, body, sig = token.split(".")
    assert len(sig) % 4 == 2  # a 2048-bit RSA signature leaves 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = sig[:-1] + alphabet[alphabet.index(sig[-1]) | 1]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(sig + "==")
    async with running(config_for(dev)) as auth:
        await auth.verify(token)
        await refused(auth, f"{head}.{body}.{twin}", Reason.MALFORMED_TOKEN)


async def test_duplicate_claims_are_refused(dev: DevIssuer) -> None:
    """JSON with a duplicate member (``sub`` twice) is ambiguous: refused even if signed."""
    now = int(time.time())
    payload = (f'{{"iss":"{dev.url}","aud":"temporal","exp":{now + 600},'
               f'"sub":"alice","sub":"admin"}}').encode()
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.sign_raw(payload), Reason.MALFORMED_TOKEN)


async def test_duplicate_header_members_are_refused(dev: DevIssuer) -> None:
    """A header with ``alg`` twice."""
    head = b64url(b'{"alg":"RS256","alg":"none","kid":"x"}')
    _, body, sig = dev.mint({"sub": "alice"}).split(".")
    async with running(config_for(dev)) as auth:
        await refused(auth, f"{head}.{body}.{sig}", Reason.MALFORMED_TOKEN)


async def test_compact_jwe_is_refused(dev: DevIssuer) -> None:
    """Five segments (a JWE) are not a signed JWT."""
    jwe = ".".join([b64url(b'{"alg":"RSA-OAEP","enc":"A256GCM"}'), "abc", "def", "ghi", "jkl"])
    async with running(config_for(dev)) as auth:
        await refused(auth, jwe, Reason.MALFORMED_TOKEN)


@pytest.mark.parametrize("cty", ["JWT", None])
async def test_nested_jwt_is_refused(dev: DevIssuer, cty: str | None) -> None:
    """A signed token whose payload is another JWT (with or without ``cty``)."""
    inner = dev.mint({"sub": "admin"})
    token = dev.sign_raw(inner.encode(), headers={"cty": cty})
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.MALFORMED_TOKEN)


async def test_oversized_token_is_refused_before_parsing(dev: DevIssuer) -> None:
    """Bigger than ``max_token_bytes``: refused on length alone (even if garbage)."""
    async with running(config_for(dev, max_token_bytes=4096)) as auth:
        await refused(auth, dev.mint({"sub": "a", "pad": "x" * 5000}), Reason.TOKEN_TOO_LARGE)
        await refused(auth, "!" * 5000, Reason.TOKEN_TOO_LARGE)


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "....", "a b.c.d"])
async def test_structurally_broken_tokens_are_malformed(dev: DevIssuer, token: str) -> None:
    """Anything that is not three base64url segments of JSON."""
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.MALFORMED_TOKEN)


async def test_algorithm_outside_the_issuer_allow_list_is_refused() -> None:
    """An issuer limited to ES256 refuses a token signed with its own RS256 key."""
    with DevIssuer() as rs:
        rs.add_key("ES256")
        config = config_for(rs, algorithms=("ES256",))
        async with running(config) as auth:
            await refused(auth, rs.mint({"sub": "a"}), Reason.DISALLOWED_ALGORITHM)


async def test_alg_not_matching_the_key_is_refused(dev: DevIssuer) -> None:
    """``PS256`` in the header with the kid of a key published for ``RS256``."""
    token = dev.mint({"sub": "a"}, headers={"alg": "PS256"})
    async with running(config_for(dev)) as auth:
        await refused(auth, token, Reason.DISALLOWED_ALGORITHM)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
async def test_required_typ_accepts_its_spellings(dev: DevIssuer, typ: str) -> None:
    """``typ`` matches case-insensitively, with or without ``application/`` (RFC 8725)."""
    async with running(config_for(dev, required_typ="at+jwt")) as auth:
        await auth.verify(dev.mint({"sub": "a"}, headers={"typ": typ}))


@pytest.mark.parametrize("typ", ["JWT", None, "application/jwt"])
async def test_required_typ_refuses_other_types(dev: DevIssuer, typ: str | None) -> None:
    """An ID token (``typ: JWT``) or an untyped token is not an access token."""
    async with running(config_for(dev, required_typ="at+jwt")) as auth:
        await refused(auth, dev.mint({"sub": "a"}, headers={"typ": typ}),
                      Reason.UNSUPPORTED_TOKEN_TYPE)


@pytest.mark.parametrize("sub", [None, 42, "", ["alice"]])
async def test_subject_must_be_a_non_empty_string(dev: DevIssuer, sub: object) -> None:
    """A `sub` that is present (JSON null included) but not a non-empty string is invalid;
    there is no fallback to the client id then."""
    claims = {**good_claims(dev), "sub": sub, "client_id": "worker", "azp": "worker"}
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.sign_raw(json.dumps(claims).encode()), Reason.INVALID_CLAIMS)


async def test_no_subject_and_no_client_id_is_invalid(dev: DevIssuer) -> None:
    """No `sub` and no `client_id`/`azp` string: nobody to name, INVALID_CLAIMS."""
    async with running(config_for(dev)) as auth:
        await refused(auth, dev.mint({"client_id": "", "azp": 7}), Reason.INVALID_CLAIMS)


async def test_configured_subject_claim_is_used(dev: DevIssuer) -> None:
    """``claims.subject_claim`` picks the subject (e.g. ``client_id``)."""
    from extauthz.claims import ClaimMapping

    config = config_for(dev, claims=ClaimMapping(subject_claim="client_id"))
    async with running(config) as auth:
        verified = await auth.verify(dev.mint({"sub": "svc-uuid", "client_id": "worker"}))
    assert verified.subject == "worker"
