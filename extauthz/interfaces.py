"""The seams between layers, as typing Protocols and callable types. No behaviour here.

Each says what one side needs of the other, so the caller depends on this module and not on
the implementation: the pipeline on a token verifier (``extauthz.auth.Authenticator``) and an
authorizer (``extauthz.policy.authorize`` or a policy engine), the adapters on a checker
(``extauthz.pipeline.Pipeline``) and an observer (``extauthz.obs.observer.Telemetry``), the
metrics on the authenticator's counters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from extauthz.model import CheckInput, Decision, Principal, Target

if TYPE_CHECKING:
    from extauthz.auth.types import VerifiedToken

# who may do what: ``extauthz.policy.authorize`` (Temporal's default) or a policy engine
Authorizer = Callable[[Principal, Target], Decision]
# ``Authenticator.verify_extras``: the display identity of the Web UI's ID token
ExtrasVerifier = Callable[..., Awaitable[Mapping[str, str]]]


class TokenVerifier(Protocol):
    """What the pipeline needs from the authentication layer."""

    async def verify(self, token: str) -> VerifiedToken:
        """Verify a token or raise ``AuthError``."""
        ...


class Checker(Protocol):
    """What a transport adapter needs from the decision core (``Pipeline``)."""

    async def check(self, req: CheckInput) -> Decision:
        """Decide one request; never raises."""
        ...


class Observer(Protocol):
    """Receives every decision with its latency and the request it was made for."""

    def check_started(self) -> None:
        """A check began (for the in-flight gauge)."""

    def checked(self, req: CheckInput | None, decision: Decision, seconds: float) -> None:
        """A check finished. ``req`` is None when the request could not be read."""


class IssuerSource(Protocol):
    """What the metrics' ``sync_auth`` reads from the authenticator."""

    @property
    def stats(self) -> Any:
        """Cache counters: ``hits``, ``misses``, ``negative_hits``."""

    @property
    def cache_size(self) -> int:
        """Entries in the positive token cache."""

    def issuer_states(self) -> Mapping[str, Mapping[str, Any]]:
        """Per-issuer key state."""
