"""Command line: ``extauthz serve | check | validate | test | api-diff``. The development
commands (token, stack, envoy-config) are ``python -m devkit`` in a source checkout."""

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

# argparse prints descriptions as they are: plain text here, no reStructuredText markup
DESCRIPTION = ("Envoy external-authorization server for Temporal: serve, or decide, test and "
               "validate offline.")


class UsageError(Exception):
    """Bad arguments: exit 2 with the message on stderr."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="extauthz", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"extauthz {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the Envoy ext_authz Check server")
    s.add_argument("--config", help="YAML config file (environment variables apply on top)")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="server processes sharing the port (default: the `workers` key, else "
                   "one per CPU of the cgroup CPU quota)")

    c = sub.add_parser(
        "check", help="decide one call offline, exactly as the server would",
        description="Decide one call offline, through the server's own pipeline, and print "
        'one JSON object {"allowed", "code", "reason"} (and "explain" with --explain). Every '
        "method path gets a decision: an unknown method or a path that is not exactly one "
        "(`//`, `%2F`, ...) is denied with unknown_method, as the server denies it.",
        epilog="exit status: 0 allowed, 1 denied, 2 a broken invocation (bad flags, bad JSON, "
        "an unreadable or invalid file); the message is then on stderr and stdout is empty.")
    c.add_argument("--method", required=True, help="the :path, e.g. "
                   "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution; "
                   "also Service/Method or a method name that only one service has")
    c.add_argument("--namespace", help="shortcut for --request '{\"namespace\": NS}'")
    c.add_argument("--request", help="the request message in protobuf JSON form "
                   "(WorkflowService and OperatorService methods; the server reads no body for "
                   "AdminService, the health check or an unknown method, so it is ignored there)")
    who = c.add_mutually_exclusive_group()
    who.add_argument("--claims", help="verified claims as JSON (no signature is checked)")
    who.add_argument("--token", help="a JWT, verified against the configured issuers")
    c.add_argument("--spiffe", metavar="ID", help="the client certificate's SPIFFE ID (URI "
                   "SAN), as Envoy verified it; with or without --claims/--token (docs/mesh.md)")
    c.add_argument("--x509-subject", metavar="DN", help="the client certificate's subject DN "
                   "(RFC 4514, e.g. CN=worker,O=acme)")
    c.add_argument("--dns", metavar="NAME", action="append", default=[],
                   help="a DNS SAN of the client certificate (repeatable)")
    c.add_argument("--config", help="YAML config file")
    c.add_argument("--policy", help="policy file (default: the config's policy_file)")
    c.add_argument("--explain", action="store_true",
                   help="add an `explain` object: every rule considered (deny rules, "
                        "bindings, the permissions claim), whether it applied and why, and "
                        "which one decided")

    v = sub.add_parser("validate", help="validate a config file and/or a policy file")
    v.add_argument("--config", help="YAML config file (its policy_file is validated too)")
    v.add_argument("--policy", help="policy file")
    v.add_argument("--envoy", help="the Envoy config in front of the server: with "
                   "peer_identity on, check that it terminates client TLS and vouches for the "
                   "certificate (docs/mesh.md)")

    tt = sub.add_parser("test", help="run a table of expected decisions against a policy")
    tt.add_argument("file", help="the table (YAML; see docs/policy.md)")
    tt.add_argument("--policy", help="policy file (default: the table's `policy` key)")

    a = sub.add_parser("api-diff", help="compare the Temporal server's API (gRPC reflection) "
                       "with the one this build judges; exit 1 if the server has methods or "
                       "target fields this build cannot read")
    a.add_argument("--address", required=True, help="Temporal frontend HOST:PORT (plaintext)")
    a.add_argument("--timeout", type=float, default=10.0, help="seconds")

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
    from extauthz.server.workers import resolve_workers, supervise

    settings = config.load(args.config)
    config.require_issuers(settings)
    configure_logging(settings.log_level, settings.log_format)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be 1 or more")
    workers = resolve_workers(args.workers, settings)
    if workers > 1:
        return supervise(settings, workers, args.config)
    return serve(settings)


def _validate(args: argparse.Namespace) -> int:
    from extauthz import config
    from extauthz.rules.document import load_file

    if not args.config and not args.policy:
        raise UsageError("give --config and/or --policy")
    out: dict[str, Any] = {"valid": True}
    policy_path = args.policy
    if args.config:
        settings = config.load(args.config, env={})
        out.update({"config": str(args.config),
                    "issuers": [i.issuer for i in settings.issuers]})
        policy_path = policy_path or settings.policy_file or None
        peer = _validate_peer(settings, args.envoy)
        if peer["enabled"]:  # off (the default): the output stays as it always was
            out["peer_identity"] = peer
    elif args.envoy:
        raise UsageError("--envoy needs --config (its peer_identity and transport)")
    if policy_path:
        policy = load_file(policy_path)
        out["policy"] = {"file": str(policy_path), "digest": policy.digest,
                         "profile": policy.profile, "bindings": len(policy.bindings),
                         "deny_rules": len(policy.deny), "dry_run": policy.dry_run,
                         "warnings": list(policy.warnings)}
        for warning in policy.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(out))
    return 0


def _validate_peer(settings: Any, envoy: str | None) -> dict[str, Any]:
    """The peer_identity verdict: off, on and checked against ``envoy``, or on and unchecked
    (a warning). An Envoy that does not terminate and require client TLS is an error."""
    from extauthz.config.peer import envoy_problems
    from extauthz.yamlread import read_bytes, read_yaml

    peer = settings.peer_identity
    out: dict[str, Any] = {"enabled": peer.enabled}
    if not peer.enabled:
        return out
    out.update({"fields": list(peer.fields), "trust_domains": list(peer.trust_domains)})
    if envoy is None:
        print("warning: peer_identity is on: a client certificate is a credential, which is "
              "only sound when the Envoy in front terminates the client's TLS and requires "
              "certificates (pass --envoy FILE to check it; docs/mesh.md)", file=sys.stderr)
        return out
    from pathlib import Path

    doc = read_yaml(read_bytes(Path(envoy), ConfigError, ""), envoy)
    transport = "http" if settings.transport == "http" else "grpc"
    problems = envoy_problems(doc, transport, peer.listeners)
    if problems:
        raise ConfigError(f"{envoy}: peer_identity is on ({settings.source}) but this Envoy "
                          "cannot vouch for client certificates: " + "; ".join(problems))
    out["envoy"] = envoy
    return out


def _test(args: argparse.Namespace) -> int:
    from extauthz.rules.tabletest import TableError, report, run_file

    try:
        policy, results = run_file(args.file, args.policy)
    except TableError as exc:
        raise UsageError(str(exc)) from None
    text, ok = report(policy, results)
    print(text)
    return EXIT_ALLOWED if ok else EXIT_DENIED


def _check(args: argparse.Namespace) -> int:
    from extauthz.offline import decide_explained

    request = _json_arg(args.request, "--request") if args.request else {}
    if not isinstance(request, dict):
        raise UsageError("--request must be a JSON object")
    if args.namespace is not None:
        request["namespace"] = args.namespace
    claims = _json_arg(args.claims, "--claims") if args.claims is not None else None
    if claims is not None and not isinstance(claims, dict):
        raise UsageError("--claims must be a JSON object")
    certificate = None
    if args.spiffe or args.x509_subject or args.dns:
        from extauthz.peers import CertFields

        certificate = CertFields(uris=(args.spiffe,) if args.spiffe else (),
                                 dns=tuple(args.dns), subject=args.x509_subject or "")
    if claims is None and args.token is None and certificate is None:
        raise UsageError("say who calls: --claims or --token, and/or a client certificate "
                         "(--spiffe, --x509-subject, --dns)")
    try:
        decision, explained = asyncio.run(decide_explained(
            args.method, request, claims=claims, token=args.token, config_path=args.config,
            policy_path=args.policy, explain=args.explain, certificate=certificate))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out: dict[str, Any] = {"allowed": decision.allowed, "code": str(decision.reason),
                           "reason": decision.message}
    if explained is not None:
        out["explain"] = explained
    print(json.dumps(out))
    return EXIT_ALLOWED if decision.allowed else EXIT_DENIED


def _api_diff(args: argparse.Namespace) -> int:
    from extauthz.skew import compare_with_server

    try:
        report = compare_with_server(args.address, args.timeout)
    except Exception as exc:  # unreachable server, no reflection: a broken invocation
        raise UsageError(f"cannot read the API of {args.address}: {exc}") from None
    print(json.dumps(report.as_dict()))
    return EXIT_ALLOWED if report.safe else EXIT_DENIED


def _json_arg(text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc}") from None


_COMMANDS: Mapping[str, Any] = {
    "serve": _serve,
    "check": _check,
    "validate": _validate,
    "test": _test,
    "api-diff": _api_diff,
}
