"""Development tooling of temporal-extauthz: the dev OIDC issuer and token minter, the local
stack, Envoy config rendering and the component starters the tests and the bench share.

Not part of the shipped package (the wheel and the image carry only ``extauthz``); it is used
from a source checkout: ``python -m devkit ...`` from the repository root, or ``./dev``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def plain(doc: str | None) -> str:
    """A docstring as argparse help text: without reStructuredText's ``literal`` markup
    (argparse prints descriptions as they are)."""
    return (doc or "").replace("``", "")
