"""``extauthz check``: one decision offline, through the same pipeline the server runs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory

from extauthz import config, methods
from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken
from extauthz.interfaces import Authorizer, TokenVerifier
from extauthz.model import CheckInput, Decision, PeerEvidence, Reason
from extauthz.peers import FIELDS, CertFields, PeerSettings, split_spiffe_id, xfcc_of
from extauthz.pipeline import Pipeline
from extauthz.policy import authorize as temporal_default
from extauthz.rules.engine import Engine


class StaticClaims:
    """A verifier that trusts the given claims (``--claims``: no signature is checked)."""

    def __init__(self, claims: Mapping[str, Any], issuers: tuple[IssuerConfig, ...]):
        self._claims = claims
        iss = claims.get("iss")
        match = [i for i in issuers if i.issuer == iss]
        self._issuer = match[0] if match else (issuers[0] if issuers else IssuerConfig(
            issuer=str(iss or "")))

    async def verify(self, _token: str) -> VerifiedToken:
        """Return the claims as if verified."""
        exp = self._claims.get("exp")
        return VerifiedToken(self._issuer, self._claims,
                             float(exp) if isinstance(exp, int | float) else time.time() + 60)


def encode_request(entry: methods.MethodEntry | None, request: Mapping[str, Any]) -> bytes:
    """The gRPC-framed body for a request given in protobuf JSON form."""
    if entry is None or not entry.request_type:
        if request:
            raise ValueError("--request is only understood for WorkflowService and "
                             "OperatorService methods")
        return b"\x00\x00\x00\x00\x00"
    pool = descriptor_pool.Default()
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(entry.request_type))
    try:
        msg = json_format.ParseDict(dict(request), cls())
    except json_format.ParseError as exc:
        raise ValueError(f"--request is not a valid {entry.request_type}: {exc}") from None
    data = msg.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


async def decide_offline(
    method: str,
    request: Mapping[str, Any],
    *,
    claims: Mapping[str, Any] | None = None,
    token: str | None = None,
    config_path: str | None = None,
    policy_path: str | None = None,
    certificate: CertFields | None = None,
) -> Decision:
    """Decide exactly as the server would for the given call."""
    decision, _ = await decide_explained(method, request, claims=claims, token=token,
                                         config_path=config_path, policy_path=policy_path,
                                         certificate=certificate)
    return decision


def authorizer_for(settings: config.Settings, policy_path: str | None = None
                   ) -> tuple[Authorizer, Engine]:
    """The authorizer the server would use (the policy file's engine, else Temporal's default)
    and the engine that explains its decisions."""
    from extauthz.rules.document import load_file, temporal_compatible

    path = policy_path or settings.policy_file
    if path:
        engine = Engine(load_file(path))
        return engine, engine
    return temporal_default, Engine(temporal_compatible("<built-in temporal-compatible>"))


async def decide_explained(
    method: str,
    request: Mapping[str, Any],
    *,
    claims: Mapping[str, Any] | None = None,
    token: str | None = None,
    config_path: str | None = None,
    policy_path: str | None = None,
    explain: bool = False,
    certificate: CertFields | None = None,
) -> tuple[Decision, dict[str, Any] | None]:
    """Decide as the server would; with ``explain``, also say which rule decided and why.
    ``certificate``: the client certificate Envoy verified (as its x-forwarded-client-cert)."""
    decision = await _decide_offline(method, request, claims=claims, token=token,
                                     config_path=config_path, policy_path=policy_path,
                                     certificate=certificate)
    if not explain:
        return decision, None
    settings = config.load(config_path, env={}) if config_path else config.Settings()
    from extauthz.rules.explain import explain as explain_decision

    return decision, explain_decision(authorizer_for(settings, policy_path)[1], decision)


async def _decide_offline(
    method: str,
    request: Mapping[str, Any],
    *,
    claims: Mapping[str, Any] | None,
    token: str | None,
    config_path: str | None,
    policy_path: str | None,
    certificate: CertFields | None = None,
) -> Decision:
    settings = config.load(config_path, env={}) if config_path else config.Settings()
    authorizer, _ = authorizer_for(settings, policy_path)
    peers = _peer_settings(settings, config_path, certificate)
    path = method if method.startswith("/") else f"/{method}"
    entry = methods.lookup(path) or methods.by_name(method) or _by_bare_name(method)
    if entry is not None:
        path = entry.method.path
    # The server reads no body for an unknown path, an AdminService method or the health
    # check, so `--request`/`--namespace` cannot change their decision: not a usage error
    body = encode_request(entry, request if entry is not None and entry.request_type else {})
    if claims is not None or (token is None and certificate is not None):
        return await _decide(settings, path, body, None if claims is None else "offline-claims",
                             StaticClaims(claims or {}, settings.issuers), authorizer,
                             certificate, peers)
    from extauthz.auth.authenticator import Authenticator

    if not settings.issuers:
        raise ValueError("--token needs --config with at least one issuer")
    authenticator = Authenticator(settings.issuers)
    await authenticator.start()
    try:
        return await _decide(settings, path, body, token or "", authenticator, authorizer,
                             certificate, peers)
    finally:
        await authenticator.close()


def _by_bare_name(name: str) -> methods.MethodEntry | None:
    """``StartWorkflowExecution``: the method of that name, when only one service has it."""
    found = [e for e in methods.table().values() if e.method.name == name]
    return found[0] if len(found) == 1 else None


def _peer_settings(settings: config.Settings, config_path: str | None,
                   certificate: CertFields | None) -> PeerSettings | None:
    """The server's peer_identity for a call with a certificate: the config's; with no config,
    every field and the certificate's own trust domain (the policy alone is tested)."""
    if certificate is None:
        return None
    if settings.peer_identity.enabled:  # offline there is no listener to label the call
        return replace(settings.peer_identity, listeners=())
    if config_path:
        raise ValueError(f"{config_path}: peer_identity is off, so the server ignores client "
                         "certificates; turn it on (docs/mesh.md) or drop the certificate")
    domains = tuple(split_spiffe_id(u)[0] for u in certificate.uris if u.startswith("spiffe:"))
    return PeerSettings(enabled=True, fields=FIELDS, trust_domains=domains)


async def _decide(settings: config.Settings, path: str, body: bytes, token: str | None,
                  verifier: TokenVerifier, authorizer: Authorizer,
                  certificate: CertFields | None = None,
                  peers: PeerSettings | None = None) -> Decision:
    headers = {"content-type": "application/grpc"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    peer = None if certificate is None else PeerEvidence(xfcc=xfcc_of(certificate), xfcc_text=True)
    pipeline = Pipeline(verifier, authorizer, max_message_bytes=settings.max_message_bytes,
                        peers=peers)
    return await pipeline.check(CheckInput(path=path, headers=headers, body=body, peer=peer))

__all__ = ["AuthError", "Reason", "decide_explained", "decide_offline", "encode_request"]
