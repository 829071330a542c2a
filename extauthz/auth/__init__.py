"""Token verification: OIDC discovery, JWKS lifecycle, JWT checks and the token cache.

This package is the only network client of the project. Its public surface:

- ``IssuerConfig``: settings of one trusted issuer (built by ``extauthz.config``).
- ``AuthError``: raised by ``Authenticator.verify`` with a stable ``Reason`` and an HTTP status
  (401 for a bad token, 503 when keys are unavailable).
- ``VerifiedToken``: the verified claims and the issuer they came from.
- ``Authenticator``: ``await start()``, ``ready()``, ``await verify(token)``, ``await close()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken

if TYPE_CHECKING:
    from extauthz.auth.authenticator import Authenticator

__all__ = ["AuthError", "Authenticator", "IssuerConfig", "VerifiedToken"]


def __getattr__(name: str) -> Any:
    """Import ``Authenticator`` lazily: ``extauthz.auth.types`` stays free of network imports."""
    if name == "Authenticator":
        from extauthz.auth.authenticator import Authenticator

        return Authenticator
    raise AttributeError(name)
