"""Command line of the development tooling: ``python -m devkit token | issuer | stack |
envoy-config`` (``./dev token``, ``./dev stack``, ``./dev envoy-config``). Not shipped: the
``extauthz`` command keeps only what a deployment needs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from extauthz.claims import ROLE_NAMES, SYSTEM_NAMESPACE

EXIT_USAGE = 2

DESCRIPTION = "Development tooling of temporal-extauthz (never for production)."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devkit", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("token", help="mint a token from the development issuer",
                       description="Mint a token from a running development issuer (the local "
                       "stack's by default) and print it.")
    t.add_argument("--sub", default="dev-user",
                   help="the subject (`sub` claim) of the token (default: dev-user)")
    t.add_argument("--permissions", nargs="*", default=[], metavar="NAMESPACE:ROLE",
                   help="Temporal permissions, e.g. default:write temporal-system:admin; roles: "
                   + ", ".join(ROLE_NAMES))
    t.add_argument("--claim", action="append", default=[], metavar="NAME=JSON",
                   help="an extra claim (value parsed as JSON, else a string)")
    t.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default: 3600)")
    t.add_argument("--issuer", default=None,
                   help="dev issuer URL (default: $EXTAUTHZ_DEV_ISSUER_URL, else the local "
                   "stack's http://127.0.0.1:8899)")

    sub.add_parser("issuer", help="serve a development OIDC issuer (python -m devkit.issuer)",
                   add_help=False)
    sub.add_parser("stack", help="run the local stack (python -m devkit.stack; --help)",
                   add_help=False)
    sub.add_parser("envoy-config", help="render envoy/envoy.yaml for other addresses "
                   "(python -m devkit.envoyconfig; --help)", add_help=False)
    return p


def unknown_permissions(permissions: Sequence[str]) -> list[str]:
    """The ``namespace:role`` entries Temporal would ignore: no colon, or a role that is not one
    of ``extauthz.claims.ROLE_NAMES`` (compared lower-cased, as Temporal does)."""
    out = []
    for item in permissions:
        _, sep, role = item.partition(":")
        if not sep or role.lower() not in ROLE_NAMES:
            out.append(item)
    return out


def _token(args: argparse.Namespace) -> int:
    from devkit import tokens

    for item in unknown_permissions(args.permissions):
        print(f"devkit token: warning: {item!r} grants nothing: Temporal knows the roles "
              f"{', '.join(ROLE_NAMES)} as NAMESPACE:ROLE (system: {SYSTEM_NAMESPACE}:ROLE)",
              file=sys.stderr)
    claims: dict[str, Any] = {"sub": args.sub, "permissions": list(args.permissions),
                              "ttl": args.ttl}
    for item in args.claim:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            print(f"devkit token: --claim {item!r}: expected NAME=VALUE", file=sys.stderr)
            return EXIT_USAGE
        claims[name] = _maybe_json(raw)
    url = args.issuer or tokens.default_url()
    try:
        print(tokens.mint(url, claims))
    except OSError as exc:
        print(f"devkit token: cannot reach the development issuer at {url}: {exc} "
              "(is the local stack running? `./dev stack`)", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devkit``: dispatch to a development command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # the delegating commands parse their own flags (and --help)
    if argv and argv[0] in ("issuer", "stack", "envoy-config"):
        command, rest = argv[0], argv[1:]
        if command == "issuer":
            from devkit import issuer

            return issuer.main(rest)
        if command == "stack":
            from devkit import stack

            return stack.main(rest)
        from devkit import envoyconfig

        return envoyconfig.main(rest)
    args = _parser().parse_args(argv)
    try:
        return _token(args)
    except KeyboardInterrupt:
        return 130
