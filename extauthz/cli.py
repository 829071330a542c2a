"""Command line: ``extauthz serve | check | validate | token | stack | envoy-config``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from extauthz import __version__
from extauthz.config import ConfigError

EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments: exit 2 with the message on stderr."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="extauthz", description=__doc__)
    p.add_argument("--version", action="version", version=f"extauthz {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the Envoy ext_authz Check server")
    s.add_argument("--config", help="YAML config file (environment variables apply on top)")

    c = sub.add_parser("check", help="decide one call offline, exactly as the server would")
    c.add_argument("--method", required=True, help="full method path, e.g. "
                   "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution")
    c.add_argument("--namespace", help="shortcut for --request '{\"namespace\": NS}'")
    c.add_argument("--request", help="the request message in protobuf JSON form")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--claims", help="verified claims as JSON (no signature is checked)")
    who.add_argument("--token", help="a JWT, verified against the configured issuers")
    c.add_argument("--config", help="YAML config file")

    v = sub.add_parser("validate", help="validate a config file")
    v.add_argument("--config", required=True)

    t = sub.add_parser("token", help="mint a token from the development issuer (dev only)")
    t.add_argument("--sub", default="dev-user")
    t.add_argument("--permissions", nargs="*", default=[],
                   help="Temporal permissions, e.g. default:write temporal-system:admin")
    t.add_argument("--claim", action="append", default=[], metavar="NAME=JSON",
                   help="an extra claim (value parsed as JSON, else a string)")
    t.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    t.add_argument("--issuer", default=None, help="dev issuer URL (default: the local stack's)")

    st = sub.add_parser("stack", help="run the local development stack (Temporal, Envoy, ...)")
    st.add_argument("--transport", choices=["grpc"], default="grpc")

    e = sub.add_parser("envoy-config", help="render envoy/envoy.yaml for other addresses")
    e.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``extauthz`` console script."""
    args = _parser().parse_args(argv)
    try:
        handler = _COMMANDS[args.command]
        return int(handler(args))
    except (ConfigError, UsageError) as exc:
        print(f"extauthz {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace) -> int:
    from extauthz import config
    from extauthz.obs.logs import configure_logging
    from extauthz.server.app import serve

    settings = config.load(args.config)
    config.require_issuers(settings)
    configure_logging()
    return serve(settings)


def _validate(args: argparse.Namespace) -> int:
    from extauthz import config

    settings = config.load(args.config, env={})
    print(json.dumps({"valid": True, "config": str(args.config),
                      "issuers": [i.issuer for i in settings.issuers]}))
    return 0


def _check(args: argparse.Namespace) -> int:
    from extauthz.offline import decide_offline

    request = _json_arg(args.request, "--request") if args.request else {}
    if not isinstance(request, dict):
        raise UsageError("--request must be a JSON object")
    if args.namespace is not None:
        request["namespace"] = args.namespace
    claims = _json_arg(args.claims, "--claims") if args.claims is not None else None
    if claims is not None and not isinstance(claims, dict):
        raise UsageError("--claims must be a JSON object")
    try:
        decision = asyncio.run(decide_offline(
            args.method, request, claims=claims, token=args.token, config_path=args.config))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps({"allowed": decision.allowed, "code": str(decision.reason),
                      "reason": decision.message}))
    return EXIT_ALLOWED if decision.allowed else EXIT_DENIED


def _token(args: argparse.Namespace) -> int:
    from extauthz import devissuer

    claims: dict[str, Any] = {"sub": args.sub, "permissions": list(args.permissions),
                              "ttl": args.ttl}
    for item in args.claim:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--claim {item!r}: expected NAME=VALUE")
        claims[name] = _maybe_json(raw)
    url = args.issuer or devissuer.default_url()
    try:
        print(devissuer.mint(url, claims))
    except OSError as exc:
        print(f"extauthz token: cannot reach the development issuer at {url}: {exc} "
              "(is the local stack running? `./dev stack`)", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _stack(args: argparse.Namespace) -> int:
    from extauthz import stack

    return int(stack.run())


def _envoy_config(args: argparse.Namespace) -> int:
    from extauthz import envoyconfig

    return int(envoyconfig.main(args.args))


def _json_arg(text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc}") from None


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


_COMMANDS: Mapping[str, Any] = {
    "serve": _serve,
    "check": _check,
    "validate": _validate,
    "token": _token,
    "stack": _stack,
    "envoy-config": _envoy_config,
}
