"""Helpers for auth integration tests (imported by test modules and conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from devkit.issuer import DevIssuer
from extauthz.auth.authenticator import Authenticator
from extauthz.auth.types import AuthError, IssuerConfig
from extauthz.model import Reason


@dataclass
class FakeClock:
    """A settable wall clock (starts at the real time so minted tokens are current)."""

    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config_for(dev: DevIssuer, **overrides: Any) -> IssuerConfig:
    """An issuer config trusting ``dev`` (http on loopback), audience ``temporal``."""
    settings: dict[str, Any] = {"audiences": ("temporal",), "allow_insecure_http": True}
    settings.update(overrides)
    return IssuerConfig(dev.url, **settings)


@asynccontextmanager
async def running(
    *configs: IssuerConfig, ready: bool = True, **options: Any
) -> AsyncIterator[Authenticator]:
    """A started ``Authenticator``; waits for the keys unless ``ready=False``."""
    auth = Authenticator(configs, **options)
    await auth.start()
    try:
        if ready:
            assert await auth.wait_ready(5.0), auth.issuer_states()
        yield auth
    finally:
        await auth.close()


async def refused(auth: Authenticator, token: str, reason: Reason) -> AuthError:
    """Assert ``token`` is refused with ``reason`` and the message leaks no part of it."""
    with pytest.raises(AuthError) as caught:
        await auth.verify(token)
    error = caught.value
    assert error.reason == reason, f"{error.reason}: {error.message}"
    assert "\n" not in error.message
    for segment in token.split("."):
        if len(segment) >= 12:
            assert segment not in error.message
    return error
