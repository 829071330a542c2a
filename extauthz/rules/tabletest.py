"""``extauthz test FILE.yaml``: a table of expected decisions, run against a policy. Pure.

Each case goes through the same steps the server runs after token verification: the request
body is encoded from protobuf JSON and scanned by the real body scanner
(``extauthz.phases.target``), the claims are mapped by Temporal's claim mapper, and the policy
engine decides. File format:

.. code-block:: yaml

    policy: policy.yaml          # relative to this file; `--policy` overrides
    principals:                  # named claim sets, reused by cases
      alice: {sub: alice, groups: [finance]}
    cases:
      - name: finance may start payroll workflows
        principal: alice         # or `claims: {...}` inline
        certificate:             # optional: the client certificate Envoy verified (alone, or
          spiffe: spiffe://cluster.local/ns/billing/sa/worker   # beside a token's claims)
          subject: CN=worker,O=acme                              # (docs/mesh.md)
        method: StartWorkflowExecution   # bare, Service/Method or full path
        namespace: payroll       # shortcut for request.namespace
        request: {taskQueue: {name: payroll}}   # protobuf JSON (optional)
        expect: allow            # allow | deny | dry-run (allowed, flagged dry-run)
        code: explicit_deny      # optional: the reason code
        rule: finance-starts     # optional: the binding/deny rule named by the decision

A wrong expectation is reported with what came out instead, the rule and the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from extauthz import methods, wire
from extauthz.claims import ClaimMapper, ClaimMapping
from extauthz.model import CheckInput, Decision, PeerIdentity, Principal, Target
from extauthz.peers import PeerError, certificate_principal, split_spiffe_id
from extauthz.phases import target as targets
from extauthz.rules.document import PolicyError, load_file
from extauthz.rules.engine import Engine

EXPECTATIONS = ("allow", "deny", "dry-run")
_CASE_KEYS = frozenset({"name", "principal", "claims", "method", "namespace", "request",
                        "expect", "code", "rule", "certificate"})
_CERT_KEYS = frozenset({"spiffe", "subject", "dns"})


class TableError(ValueError):
    """The test file itself is wrong (not a failing case)."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case's outcome."""

    name: str
    passed: bool
    expected: str
    got: str
    decision: Decision | None = None


def _expect_of(d: Decision) -> str:
    if d.dry_run:
        return "dry-run"
    return "allow" if d.allowed else "deny"


def case_method(method: str) -> methods.MethodEntry:
    """The method a case's ``method`` names (bare, ``Service/Method`` or a full path; a bare
    name in a public service and AdminService means the public one)."""
    path = method if method.startswith("/") else f"/{method}"
    entry = methods.lookup(path) or methods.by_name(method)
    if entry is None:
        from extauthz.rules.categories import UnknownMethodError, resolve_method

        try:
            paths = resolve_method(method)
        except UnknownMethodError:
            raise TableError(f"unknown method {method!r}") from None
        public = [x for x in paths if not x.startswith(f"/{methods.ADMIN_SERVICE}/")]
        if len(paths) > 1 and len(public) == 1:  # a call by bare name: the public service
            paths = frozenset(public)
        if len(paths) != 1:
            raise TableError(f"method {method!r} is ambiguous ({', '.join(sorted(paths))}); "
                             "write Service/Method")
        entry = methods.table()[next(iter(paths))]
    return entry


def build_target(method: str, request: Mapping[str, Any]) -> Target | Decision:
    """The Target the server would see for a call given in protobuf JSON form."""
    from extauthz.offline import encode_request

    entry = case_method(method)
    body = encode_request(entry, request)
    headers = {"content-type": "application/grpc"}
    return targets.of_grpc(entry, CheckInput(entry.method.path, headers, body),
                           wire.DEFAULT_MAX_MESSAGE_BYTES)


def run_case(engine: Engine, case: Mapping[str, Any], principals: Mapping[str, Any],
             where: str, mapper: ClaimMapper) -> CaseResult:
    """Run one case; raises ``TableError`` for a malformed case."""
    unknown = sorted(set(case) - _CASE_KEYS)
    if unknown:
        raise TableError(f"{where}: unknown key {unknown[0]!r}; known: "
                         f"{', '.join(sorted(_CASE_KEYS))}")
    name = str(case.get("name") or where)
    expect = case.get("expect")
    if expect not in EXPECTATIONS:
        raise TableError(f"{where}.expect: expected one of {', '.join(EXPECTATIONS)}, "
                         f"got {expect!r}")
    principal = _principal(case, principals, where, mapper)
    method = case.get("method")
    if not isinstance(method, str):
        raise TableError(f"{where}.method: required, a method name")
    request = dict(case.get("request") or {})
    if "namespace" in case:
        request["namespace"] = case["namespace"]
    try:
        target = build_target(method, request)
    except ValueError as exc:
        raise TableError(f"{where}: {exc}") from None
    decision = target if isinstance(target, Decision) else engine.decide(principal, target)
    got = _expect_of(decision)
    ok = got == expect
    want = str(expect)
    if "code" in case:
        want += f" ({case['code']})"
        ok = ok and str(decision.reason) == str(case["code"])
    if "rule" in case:
        want += f" by {case['rule']}"
        ok = ok and decision.rule == case["rule"]
    got_text = f"{got} ({decision.reason})" + (f" by {decision.rule}" if decision.rule else "")
    return CaseResult(name, ok, want, f"{got_text}: {decision.message}", decision)


def _principal(case: Mapping[str, Any], principals: Mapping[str, Any], where: str,
               mapper: ClaimMapper) -> Principal:
    """The case's caller: mapped claims (``principal``/``claims``), with the ``certificate``
    beside them, or the certificate alone (a ``service`` principal with no claims)."""
    peer = _certificate(case["certificate"], where) if "certificate" in case else None
    claims: object = None
    if "claims" in case:
        claims = case["claims"]
    elif isinstance(case.get("principal"), str):
        if case["principal"] not in principals:
            raise TableError(f"{where}.principal: {case['principal']!r} is not defined under "
                             "`principals`")
        claims = principals[case["principal"]]
    elif peer is not None:
        return certificate_principal(peer)
    else:
        raise TableError(f"{where}: give `principal: NAME`, `claims: {{...}}` or a "
                         "`certificate: {spiffe: ...}`")
    if not isinstance(claims, Mapping):
        raise TableError(f"{where}: claims must be a mapping")
    principal = mapper.principal(claims, str(claims.get("iss", "")))
    return principal if peer is None else replace(principal, peer=peer)


def _certificate(data: object, where: str) -> PeerIdentity:
    """A case's ``certificate``: the identity peer_identity accepted (spiffe, subject, dns)."""
    if not isinstance(data, Mapping) or not data:
        raise TableError(f"{where}.certificate: a mapping of spiffe, subject and/or dns")
    unknown = sorted(set(data) - _CERT_KEYS)
    if unknown:
        raise TableError(f"{where}.certificate: unknown key {unknown[0]!r}; known: "
                         f"{', '.join(sorted(_CERT_KEYS))}")
    spiffe, subject = data.get("spiffe", ""), data.get("subject", "")
    dns = data.get("dns", [])
    dns = [dns] if isinstance(dns, str) else dns
    if not isinstance(spiffe, str) or not isinstance(subject, str) or not isinstance(dns, list) \
            or not all(isinstance(d, str) for d in dns):
        raise TableError(f"{where}.certificate: spiffe and subject are strings, dns a list")
    domain = ""
    if spiffe:
        try:
            domain = split_spiffe_id(spiffe)[0]
        except PeerError as exc:
            raise TableError(f"{where}.certificate.spiffe: {exc}") from None
    name = spiffe or subject or (dns[0] if dns else "")
    return PeerIdentity(name=name, spiffe_id=spiffe, trust_domain=domain, subject=subject,
                        dns=tuple(dns))


def load_table(path: Path) -> dict[str, Any]:
    """Parse a table file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TableError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise TableError(f"{path}: expected a mapping with a `cases` list")
    unknown = sorted(set(data) - {"policy", "principals", "cases"})
    if unknown:
        raise TableError(f"{path}: {unknown[0]}: unknown key; known: cases, principals, policy")
    return data


def run_file(path: str | Path, policy_path: str | Path | None = None
             ) -> tuple[str, list[CaseResult]]:
    """Run a table file; returns (the policy path used, results). Raises ``TableError`` or
    ``PolicyError`` for a broken table or policy."""
    p = Path(path)
    data = load_table(p)
    if policy_path is None:
        named = data.get("policy")
        if not isinstance(named, str):
            raise TableError(f"{p}: name the policy with `policy: FILE` or pass --policy")
        policy_path = p.parent / named
    engine = Engine(load_file(policy_path))
    principals = data.get("principals") or {}
    if not isinstance(principals, Mapping):
        raise TableError(f"{p}: principals: expected a mapping of name → claims")
    mapper = ClaimMapper(ClaimMapping())
    results = [
        run_case(engine, case if isinstance(case, Mapping) else {}, principals,
                 f"{p}: cases[{i}]", mapper)
        for i, case in enumerate(data["cases"])
    ]
    return str(policy_path), results


def report(policy: str, results: list[CaseResult]) -> tuple[str, bool]:
    """Runner-style text and whether every case passed."""
    lines = [f"policy {policy}"]
    for r in results:
        if r.passed:
            lines.append(f"PASS  {r.name}")
        else:
            lines.append(f"FAIL  {r.name}\n      expected {r.expected}\n      got      {r.got}")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines), failed == 0


__all__ = ["CaseResult", "PolicyError", "TableError", "case_method", "report", "run_file"]
