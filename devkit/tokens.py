"""Keys, signing and minting of the development issuer (``devkit.issuer``): DEVELOPMENT ONLY.

Key generation for every JWS algorithm the verifier allows, compact JWS signing (tests craft
odd tokens with ``sign``), the default claim set, and minting through a running dev issuer
(``mint``) or from its saved state without a server (``mint_offline``).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

STATE_FILE = "devissuer.json"
DEFAULT_PORT = 8899
URL_ENV = "EXTAUTHZ_DEV_ISSUER_URL"
_ALGS = get_default_algorithms()
_EC_CURVES: Mapping[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1, "ES256K": ec.SECP256K1,
}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_key(alg: str, rsa_bits: int = 2048) -> PrivateKey:
    """A fresh private key for a JWS algorithm."""
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if alg in _EC_CURVES:
        return ec.generate_private_key(_EC_CURVES[alg]())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg!r}")


@dataclass(slots=True)
class DevKey:
    """A signing key of the dev issuer."""

    kid: str
    alg: str
    private: PrivateKey
    use: str | None = "sig"
    published: bool = True

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK as published."""
        jwk: dict[str, Any] = dict(_ALGS[self.alg].to_jwk(self.private.public_key(), as_dict=True))
        jwk.update(kid=self.kid, alg=self.alg)
        if self.use is not None:
            jwk["use"] = self.use
        return jwk

    def to_state(self) -> dict[str, Any]:
        """Serializable form (private key in clear PEM: development only)."""
        pem = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return {"kid": self.kid, "alg": self.alg, "use": self.use, "published": self.published,
                "pem": pem}

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> DevKey:
        """Inverse of ``to_state``."""
        private = serialization.load_pem_private_key(data["pem"].encode("ascii"), None)
        if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                          | ed25519.Ed25519PrivateKey):
            raise ValueError("unsupported key type in dev issuer state")
        return cls(data["kid"], data["alg"], private, data.get("use"), data.get("published", True))


def sign(key: DevKey, header: Mapping[str, Any], payload: bytes) -> str:
    """A compact JWS over raw ``payload`` bytes with exactly ``header`` (tests craft odd tokens)."""
    head = b64url(json.dumps(dict(header), separators=(",", ":")).encode())
    signing_input = f"{head}.{b64url(payload)}"
    signature = _ALGS[key.alg].sign(signing_input.encode("ascii"), key.private)
    return f"{signing_input}.{b64url(signature)}"


def build_claims(
    issuer: str, claims: Mapping[str, Any], *, ttl: float, audience: str, now: float
) -> dict[str, Any]:
    """Default ``iss``, ``iat``, ``exp``, ``aud``; given claims win; ``None`` removes a claim."""
    merged: dict[str, Any] = {"iss": issuer, "aud": audience, "iat": int(now),
                              "exp": int(now + ttl)}
    merged.update(claims)
    return {name: value for name, value in merged.items() if value is not None}


def default_url() -> str:
    """The dev issuer ``./dev token`` (``python -m devkit token``) talks to:
    ``$EXTAUTHZ_DEV_ISSUER_URL`` or ``http://127.0.0.1:8899``."""
    return os.environ.get(URL_ENV) or f"http://127.0.0.1:{DEFAULT_PORT}"


def mint(issuer_url: str, claims: Mapping[str, Any], timeout: float = 10.0) -> str:
    """Ask a running dev issuer to mint a token (``POST <issuer>/dev/mint``)."""
    request = urllib.request.Request(  # noqa: S310 - the caller's dev issuer URL
        issuer_url.rstrip("/") + "/dev/mint",
        data=json.dumps(dict(claims)).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        token: str = json.loads(response.read())["token"]
    return token


def mint_offline(
    state_dir: str | Path, claims: Mapping[str, Any], *, ttl: float = 3600.0,
    issuer: str | None = None,
) -> str:
    """Sign a token with the keys a dev issuer saved in ``state_dir`` (no server needed)."""
    data = json.loads((Path(state_dir) / STATE_FILE).read_text())
    keys = {k["kid"]: DevKey.from_state(k) for k in data["keys"]}
    payload = build_claims(issuer or data["issuer"], claims, ttl=ttl,
                           audience=data.get("audience", "temporal"), now=time.time())
    key = keys[data["current"]]
    return sign(key, {"alg": key.alg, "typ": "JWT", "kid": key.kid},
                json.dumps(payload).encode())
