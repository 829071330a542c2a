"""Phase 5, respond: the transport-neutral shaping of a decision. Pure: no I/O.

A check that raised becomes a retryable denial (fail closed); a decision gets the display
label of the Web UI's ID token without changing anything else. The adapters turn the result
into gRPC or HTTP responses (``extauthz.server.responses``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from extauthz.model import STATUS_UNAVAILABLE, Decision, Reason


def internal_error(exc: Exception) -> Decision:
    """The denial of a check that failed unexpectedly: 503, so the call may be retried."""
    return Decision.deny(
        Reason.INTERNAL_ERROR,
        f"internal error while checking the request ({type(exc).__name__}); "
        "the call was refused and may be retried",
        status=STATUS_UNAVAILABLE,
    )


def with_display(decision: Decision, display: Mapping[str, str] | None) -> Decision:
    """``decision`` labelled with a display identity (email, name); unchanged without one."""
    return replace(decision, display=display) if display else decision
