"""Types shared by the authentication layer and its callers. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extauthz.claims import ClaimMapping
from extauthz.model import STATUS_UNAUTHENTICATED, Reason

# Every asymmetric JWS algorithm PyJWT supports. Never "none", never HS*.
ASYMMETRIC_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES256K", "ES384", "ES512",
    "EdDSA",
)


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted token issuer."""

    issuer: str  # exact `iss`; discovery at <issuer>/.well-known/openid-configuration
    audiences: tuple[str, ...] = ()  # any-of; empty means `aud` is not checked
    jwks_uris: tuple[str, ...] = ()  # explicit JWKS (https:// or file://); skips discovery
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    leeway_seconds: float = 60.0
    max_token_bytes: int = 16 * 1024
    required_typ: str | None = None  # e.g. "at+jwt" (RFC 9068)
    refresh_interval_seconds: float = 300.0
    min_refresh_interval_seconds: float = 30.0
    max_refresh_interval_seconds: float = 3600.0
    unknown_kid_refetch_seconds: float = 10.0
    fetch_timeout_seconds: float = 5.0
    max_fetch_bytes: int = 1024 * 1024
    max_stale_seconds: float = 3600.0
    min_rsa_bits: int = 2048
    claims: ClaimMapping = field(default_factory=ClaimMapping)
    # allow http:// URLs (the development issuer on loopback only)
    allow_insecure_http: bool = False
    # PEM bundle of the CAs trusted for this issuer's discovery and JWKS fetches (a private
    # CA); "" = the system's trust store
    ca_file: str = ""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature and registered claims were checked."""

    issuer: IssuerConfig
    claims: Mapping[str, Any]
    expires_at: float  # the token's `exp`, seconds since the epoch
    extras: Mapping[str, Any] = field(default_factory=dict)  # display-only identity (ID token)
    # the issuer's configured subject claim (``claims.subject_claim``), a non-empty string,
    # or for a token without any human subject its client id (``ClaimMapping.subject_from``)
    subject: str = ""


class AuthError(Exception):
    """A token was refused. ``reason`` is stable; ``message`` is safe to show (no token)."""

    def __init__(self, reason: Reason, message: str, status: int = STATUS_UNAUTHENTICATED):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
