"""The seam between the decision path and observability (metrics, audit log, tracing).

Adapters call ``observer.checked(...)`` once per check, after the decision. The default
``NullObserver`` costs one method call.
"""

from __future__ import annotations

from typing import Protocol

from extauthz.model import Decision
from extauthz.pipeline import CheckInput


class Observer(Protocol):
    """Receives every decision with its latency and the request it was made for."""

    def check_started(self) -> None:
        """A check began (for the in-flight gauge)."""

    def checked(self, req: CheckInput | None, decision: Decision, seconds: float) -> None:
        """A check finished. ``req`` is None when the request could not be read."""


class NullObserver:
    """Observes nothing."""

    def check_started(self) -> None:
        """Nothing."""

    def checked(self, req: CheckInput | None, decision: Decision, seconds: float) -> None:
        """Nothing."""
