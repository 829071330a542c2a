"""Certificate identity below the transports: XFCC parsing, SPIFFE IDs and their globs, the
trust-domain allow-list and the counted fields, PEM reading, the pipeline's rules when a call
carries a certificate, a token or both, and the gRPC adapter never reading a header as one."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from cryptography.x509.oid import NameOID
from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from support.meshpki import MeshCA
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame
from extauthz import methods
from extauthz.auth.certs import PeerIdentifier, fields_of_pem
from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken
from extauthz.config import ConfigError, from_mapping
from extauthz.config.peer import envoy_problems
from extauthz.model import CheckInput, PeerEvidence, Reason, Target
from extauthz.obs.audit import event_fields
from extauthz.peers import (
    CertFields,
    PeerError,
    PeerSettings,
    certificate_principal,
    identify,
    parse_xfcc,
    spiffe_glob,
    xfcc_of,
)
from extauthz.pipeline import Pipeline
from extauthz.rules.document import PolicyError, compile_policy
from extauthz.rules.engine import Engine
from extauthz.rules.tabletest import build_target
from extauthz.server.responses import check_input

BILLING = "spiffe://cluster.local/ns/billing/sa/billing-worker"
ON = PeerSettings(enabled=True, fields=("spiffe", "subject"), trust_domains=("cluster.local",))
START = f"/{methods.WORKFLOW_SERVICE}/StartWorkflowExecution"
ISSUER = IssuerConfig(issuer="https://issuer.example")
POLICY = """
bindings:
  - name: billing
    match: {spiffe: ["spiffe://cluster.local/ns/billing/sa/*"]}
    roles: [write]
    namespaces: [default]
  - name: ops
    match: {groups: [ops], spiffe: ["spiffe://cluster.local/ns/ops/**"]}
    roles: [write]
    namespaces: [default]
"""


# ---- x-forwarded-client-cert -------------------------------------------------------------


def test_xfcc_element_reads_quoted_subject_uri_and_every_dns() -> None:
    """One element Envoy set: the quoted subject (with commas, an escaped quote), the URI and
    both DNS SANs; Hash and By are ignored."""
    got = parse_xfcc('By=spiffe://x/y;Hash=abc;Subject="CN=a\\"b,O=acme";'
                     f"URI={BILLING};DNS=w.billing;DNS=w2.billing")
    assert got == CertFields(uris=(BILLING,), dns=("w.billing", "w2.billing"),
                             subject='CN=a"b,O=acme')


@pytest.mark.parametrize("value", [
    f"URI={BILLING},URI=spiffe://cluster.local/ns/x/sa/y",   # two elements: forwarded
    'Subject="CN=a;URI=x',                                   # unterminated quote
    "URI",                                                   # no '='
    'Subject="CN=a"junk;URI=x',                              # text after a quoted value
])
def test_xfcc_that_envoy_did_not_set_alone_is_refused(value: str) -> None:
    """More than one element, an unterminated quote, a key without '=' or text after a
    quoted value is malformed_peer."""
    with pytest.raises(PeerError) as info:
        parse_xfcc(value)
    assert info.value.reason is Reason.MALFORMED_PEER


def test_xfcc_round_trips_through_the_offline_encoder() -> None:
    """What `extauthz check` sends as a certificate parses back to the same fields."""
    cert = CertFields(uris=(BILLING,), dns=("a",), subject='CN=x\\y,O="q"')
    assert parse_xfcc(xfcc_of(cert)) == cert


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('URIDNSubjectHash=;,"\\ abc/:'), max_size=80))
def test_any_xfcc_text_parses_or_is_malformed_peer(value: str) -> None:
    """Whatever a header holds, the parser returns fields or raises PeerError: never another
    exception (nothing crashes)."""
    try:
        parse_xfcc(value)
    except PeerError as exc:
        assert exc.reason is Reason.MALFORMED_PEER


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=3), st.lists(st.text(max_size=20), max_size=3),
       st.text(max_size=40))
def test_any_certificate_fields_give_an_identity_or_a_peer_error(
        uris: list[str], dns: list[str], subject: str) -> None:
    """identify() on arbitrary fields returns an identity or a PeerError, and an identity it
    returns always carries a name."""
    try:
        got = identify(CertFields(tuple(uris), tuple(dns), subject), ON)
    except PeerError:
        return
    assert got.name


# ---- SPIFFE IDs and globs ----------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "text", "hit"), [
    ("spiffe://cluster.local/ns/billing/sa/*", BILLING, True),
    ("spiffe://cluster.local/ns/billing/sa/*", "spiffe://cluster.local/ns/billing/sa/a/b", False),
    ("spiffe://cluster.local/ns/billing/sa/*", "spiffe://cluster.local/ns/billing/sa", False),
    ("spiffe://cluster.local/ns/bill*/sa/w", "spiffe://cluster.local/ns/billing/sa/w", True),
    ("spiffe://cluster.local/ns/bill*/sa/w", "spiffe://cluster.local/ns/bill/x/sa/w", False),
    ("spiffe://cluster.local/ns/billing/**", BILLING, True),
    ("spiffe://cluster.local/ns/billing/**", "spiffe://cluster.local/ns/billing", False),
    ("spiffe://*/ns/billing/sa/billing-worker", BILLING, True),
    ("spiffe://cluster.local/ns/billing/sa/*", "spiffe://cluster.localx/ns/billing/sa/w", False),
    ("spiffe://cluster.local/ns/billing/sa/*", "spiffe://evil/x/cluster.local/ns/billing/sa/w",
     False),
    ("spiffe://cluster.local/ns/billing/sa/*", "SPIFFE://cluster.local/ns/billing/sa/w", False),
])
def test_spiffe_glob_matches_by_path_segment(pattern: str, text: str, hit: bool) -> None:
    """`*` stays inside one path segment, `**` (last) takes one or more; case-sensitive,
    anchored at both ends."""
    assert spiffe_glob(pattern)(text) is hit


@pytest.mark.parametrize("pattern", ["cluster.local/ns/*", "spiffe://td//x", "spiffe://td/x/",
                                     "spiffe://td/**/x", "spiffe://td/a**", "spiffe://**"])
def test_bad_spiffe_patterns_are_policy_errors_naming_the_key(pattern: str) -> None:
    """A pattern without spiffe://, with an empty segment or a misplaced `**` is refused at
    load, naming the key path."""
    doc = {"bindings": [{"name": "b", "match": {"spiffe": [pattern]}, "roles": ["read"],
                         "namespaces": ["default"]}]}
    with pytest.raises(PolicyError, match=r"p\.yaml: bindings\[0\]\.match\.spiffe"):
        compile_policy(doc, "p.yaml")


# ---- identity rules ----------------------------------------------------------------------


def test_untrusted_trust_domain_is_refused_whatever_else_the_certificate_has() -> None:
    """A SPIFFE ID of a domain not allowed is untrusted_peer even with a subject that would
    count: removing a trust domain revokes it."""
    cert = CertFields(uris=("spiffe://revoked.example/ns/billing/sa/w",), subject="CN=w")
    with pytest.raises(PeerError) as info:
        identify(cert, ON)
    assert info.value.reason is Reason.UNTRUSTED_PEER
    assert "revoked.example" in info.value.message


def test_fields_choose_the_name_in_order_and_uncounted_fields_are_dropped() -> None:
    """fields: [subject] names by subject and keeps no SPIFFE ID; [spiffe, subject] prefers the
    SPIFFE ID; a certificate with none of the counted fields is refused."""
    cert = CertFields(uris=(BILLING,), dns=("w.billing",), subject="CN=w,O=acme")
    by_subject = identify(cert, PeerSettings(True, ("subject",), ("cluster.local",)))
    assert (by_subject.name, by_subject.spiffe_id, by_subject.dns) == ("CN=w,O=acme", "", ())
    assert identify(cert, ON).name == BILLING
    assert identify(cert, PeerSettings(True, ("dns",), ("cluster.local",))).name == "w.billing"
    with pytest.raises(PeerError) as info:
        identify(CertFields(dns=("w.billing",)), ON)
    assert info.value.reason is Reason.UNTRUSTED_PEER


@pytest.mark.parametrize("uris", [
    (BILLING, "spiffe://cluster.local/ns/other/sa/x"),      # two SPIFFE IDs
    ("spiffe://Cluster.Local/ns/a",),                       # upper-case trust domain
    ("spiffe://cluster.local/ns/../sa/x",),                 # dot segment
    ("spiffe://cluster.local/ns//x",),                      # empty segment
])
def test_malformed_spiffe_ids_are_refused(uris: tuple[str, ...]) -> None:
    """Two SPIFFE URI SANs or an ID that is not a valid SPIFFE ID is malformed_peer."""
    with pytest.raises(PeerError) as info:
        identify(CertFields(uris=uris), ON)
    assert info.value.reason is Reason.MALFORMED_PEER


def test_pem_fields_match_what_the_certificate_says() -> None:
    """Envoy's URL-encoded PEM gives the URI SAN, the DNS SANs and the RFC 4514 subject."""
    leaf = MeshCA("ca").issue([(NameOID.ORGANIZATION_NAME, "acme"),
                               (NameOID.COMMON_NAME, "w")], uris=[BILLING], dns=["w.billing"])
    got = fields_of_pem(quote(leaf.cert.decode()))
    assert got == CertFields(uris=(BILLING,), dns=("w.billing",), subject="CN=w,O=acme")
    with pytest.raises(PeerError) as info:
        fields_of_pem("-----BEGIN CERTIFICATE-----%0Agarbage")
    assert info.value.reason is Reason.MALFORMED_PEER


def test_identifier_memoises_identities_and_refusals() -> None:
    """The same evidence gives the same identity object, and a refusal is remembered too."""
    ident = PeerIdentifier(ON)
    evidence = PeerEvidence(principal=BILLING)
    assert ident.identify(evidence) is ident.identify(evidence)
    bad = PeerEvidence(principal="spiffe://evil.example/x")
    for _ in range(2):
        with pytest.raises(PeerError):
            ident.identify(bad)


# ---- the pipeline ------------------------------------------------------------------------


class Verifier:
    """Tokens from a dict (the seam below the authenticator)."""

    def __init__(self) -> None:
        self.claims = {"ops-token": {"sub": "olga", "groups": ["ops"]}}

    async def verify(self, token: str) -> VerifiedToken:
        if token not in self.claims:
            raise AuthError(Reason.BAD_SIGNATURE, "token signature does not verify")
        return VerifiedToken(ISSUER, self.claims[token], time.time() + 60)


def _pipeline(peers: PeerSettings | None = ON) -> Pipeline:
    engine = Engine(compile_policy(yaml.safe_load(POLICY), "p.yaml"))
    return Pipeline(Verifier(), engine, peers=peers)


def _req(peer: PeerEvidence | None, token: str | None = None, **headers: str) -> CheckInput:
    h = {"content-type": "application/grpc", **headers}
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    body = frame(rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString())
    return CheckInput(START, h, body, peer=peer)


async def test_certificate_alone_names_a_service_principal() -> None:
    """No token, a billing certificate: allowed by the spiffe binding, subject = the SPIFFE ID,
    issuer = the trust domain, kind service."""
    d = await _pipeline().check(_req(PeerEvidence(principal=BILLING)))
    assert d.allowed, d
    assert d.principal is not None
    assert (d.principal.subject, d.principal.issuer, d.principal.kind) == (
        BILLING, "spiffe://cluster.local", "service")


async def test_only_listed_listeners_vouch_for_a_certificate() -> None:
    """With listeners: [mesh], a certificate labelled by `mesh` is a credential, one labelled
    by another listener (or unlabelled) is ignored: missing_token."""
    engine = Engine(compile_policy(yaml.safe_load(POLICY), "p.yaml"))
    only_mesh = Pipeline(Verifier(), engine, peers=PeerSettings(
        True, ("spiffe",), ("cluster.local",), listeners=("mesh",)))
    ok = await only_mesh.check(_req(PeerEvidence(principal=BILLING, listener="mesh")))
    assert ok.allowed, ok
    for label in ("external", ""):
        d = await only_mesh.check(_req(PeerEvidence(principal=BILLING, listener=label)))
        assert (d.reason, d.status) == (Reason.MISSING_TOKEN, 401)


async def test_peer_identity_off_ignores_the_certificate() -> None:
    """Off (the default): a certificate is no credential, the call is missing_token (401)."""
    for peers in (None, PeerSettings()):
        d = await _pipeline(peers).check(_req(PeerEvidence(principal=BILLING)))
        assert (d.allowed, d.reason, d.status) == (False, Reason.MISSING_TOKEN, 401)


async def test_neither_token_nor_certificate_says_both_ways_in() -> None:
    """With peer_identity on and nothing presented: missing_token naming both credentials."""
    d = await _pipeline().check(_req(None))
    assert (d.reason, d.status) == (Reason.MISSING_TOKEN, 401)
    assert "client certificate" in d.message


async def test_token_and_certificate_need_each_other_where_a_rule_asks_for_both() -> None:
    """The ops binding wants the ops group and an ops certificate: the token names the
    principal, the certificate rides along; either alone is refused."""
    ops_cert = PeerEvidence(principal="spiffe://cluster.local/ns/ops/sa/tool")
    both = await _pipeline().check(_req(ops_cert, "ops-token"))
    assert both.allowed and both.principal is not None and both.principal.subject == "olga"
    assert both.principal.peer is not None
    token_only = await _pipeline().check(_req(None, "ops-token"))
    assert token_only.reason is Reason.PERMISSION_DENIED
    cert_only = await _pipeline().check(_req(ops_cert))
    assert cert_only.reason is Reason.PERMISSION_DENIED


async def test_the_audit_event_names_the_certificate_beside_the_token() -> None:
    """A token+certificate decision's audit event has the token's subject and the
    certificate's identity; a token-only one has no peer."""
    ops_cert = PeerEvidence(principal="spiffe://cluster.local/ns/ops/sa/tool")
    both = await _pipeline().check(_req(ops_cert, "ops-token"))
    fields = event_fields(None, both, 0.001)
    assert (fields["subject"], fields["peer"]) == ("olga", "spiffe://cluster.local/ns/ops/sa/tool")
    assert event_fields(None, await _pipeline().check(_req(None, "ops-token")), 0.001)[
        "peer"] is None


async def test_a_bad_token_never_falls_back_to_the_certificate() -> None:
    """A billing certificate (allowed alone) with a bad token is the token's 401."""
    d = await _pipeline().check(_req(PeerEvidence(principal=BILLING), "forged"))
    assert (d.allowed, d.reason, d.status) == (False, Reason.BAD_SIGNATURE, 401)


async def test_a_refused_certificate_is_not_rescued_by_a_good_token() -> None:
    """An untrusted trust domain with a valid token is untrusted_peer (401)."""
    d = await _pipeline().check(_req(PeerEvidence(principal="spiffe://evil.example/ns/ops/x"),
                                     "ops-token"))
    assert (d.allowed, d.reason, d.status) == (False, Reason.UNTRUSTED_PEER, 401)


async def test_split_view_bodies_are_judged_for_a_certificate_caller() -> None:
    """A namespace sent twice is judged on the last for a certificate-only caller, and a
    partial body is refused before the certificate is even looked at."""
    body = rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString()
    body += b"\x0a\x07payroll"
    req = CheckInput(START, {"content-type": "application/grpc"}, frame(body),
                     peer=PeerEvidence(principal=BILLING))
    d = await _pipeline().check(req)
    assert d.reason is Reason.PERMISSION_DENIED and "payroll" in d.message
    partial = CheckInput(START, {"content-type": "application/grpc",
                                 "x-envoy-auth-partial-body": "true"},
                         frame(body), peer=PeerEvidence(principal=BILLING))
    assert (await _pipeline().check(partial)).reason is Reason.PARTIAL_BODY


# ---- the gRPC adapter --------------------------------------------------------------------


def test_grpc_adapter_reads_the_certificate_from_attributes_never_from_a_header() -> None:
    """A client-sent x-forwarded-client-cert (or listener label) is only a header; the evidence
    is attributes.source (principal and certificate) with the listener's context extension,
    and none without TLS."""
    req = external_auth_pb2.CheckRequest()
    req.attributes.request.http.path = START
    req.attributes.request.http.headers["x-forwarded-client-cert"] = f"URI={BILLING}"
    req.attributes.request.http.raw_body = b"\x00\x00\x00\x00\x00"
    req.attributes.request.http.headers["x-extauthz-listener"] = "mesh"
    assert check_input(req).peer is None
    req.attributes.source.principal = "spiffe://cluster.local/ns/other/sa/x"
    req.attributes.source.certificate = "PEM"
    req.attributes.context_extensions["extauthz-listener"] = "external"
    assert check_input(req).peer == PeerEvidence(
        certificate="PEM", principal="spiffe://cluster.local/ns/other/sa/x",
        listener="external")


# ---- config and validate -----------------------------------------------------------------


@pytest.mark.parametrize(("block", "key"), [
    ({"enabled": True}, "peer_identity.trust_domains"),
    ({"enabled": True, "fields": ["cn"], "trust_domains": ["td"]}, "peer_identity.fields"),
    ({"enabled": True, "fields": [], "trust_domains": ["td"]}, "peer_identity.fields"),
    ({"enabled": True, "trust_domains": ["spiffe://td"]}, "peer_identity.trust_domains"),
    ({"enabled": "yes"}, "peer_identity.enabled"),
    ({"enable": True}, "peer_identity.enable"),
    ({"enabled": True, "trust_domains": ["td"], "listeners": [""]}, "peer_identity.listeners"),
])
def test_bad_peer_identity_config_names_the_file_and_key(block: dict[str, Any],
                                                         key: str) -> None:
    """Every mistake in the block is a ConfigError naming the file and the key path."""
    with pytest.raises(ConfigError, match=rf"c\.yaml: {key}"):
        from_mapping({"peer_identity": block}, "c.yaml")


def test_peer_identity_is_off_by_default() -> None:
    """A config without the block has it off."""
    assert from_mapping({}, "c.yaml").peer_identity.enabled is False


def test_validate_tells_an_envoy_that_is_not_the_tls_terminator() -> None:
    """The plain configs do not terminate client TLS; the mTLS variants pass for their own
    transport only."""
    def problems(name: str, transport: str) -> list[str]:
        with open(f"envoy/{name}", encoding="utf-8") as f:
            return envoy_problems(yaml.safe_load(f), transport)

    assert "does not terminate" in problems("envoy.yaml", "grpc")[0]
    assert "does not terminate" in problems("envoy-http.yaml", "http")[0]
    assert problems("envoy-mtls.yaml", "grpc") == []
    assert problems("envoy-http-mtls.yaml", "http") == []
    assert problems("envoy-mtls.yaml", "http") != []
    assert envoy_problems("not a mapping", "grpc") != []
    with open("envoy/envoy-mtls.yaml", encoding="utf-8") as f:
        untrusted = yaml.safe_load(f)
    context = untrusted["static_resources"]["listeners"][0]["filter_chains"][0][
        "transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
    context["trust_chain_verification"] = "ACCEPT_UNTRUSTED"
    assert "ACCEPT_UNTRUSTED" in envoy_problems(untrusted, "grpc")[0]
    del context["trusted_ca"], context["trust_chain_verification"]
    assert "not verified against a CA" in envoy_problems(untrusted, "grpc")[0]
    for name, transport in (("envoy-mtls.yaml", "grpc"), ("envoy-http-mtls.yaml", "http")):
        with open(f"envoy/{name}", encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        assert envoy_problems(doc, transport, ("external",)) == []
        [problem] = envoy_problems(doc, transport, ("mesh",))
        assert "labels its checks 'external'" in problem


def test_certificate_principal_kind_survives_a_claims_based_kind_rule() -> None:
    """A policy's principal_kind rule reads claims; a certificate-only principal stays
    `service` under it (it has no claims to read)."""
    engine = Engine(compile_policy(yaml.safe_load("""
principal_kind:
  service: [{claims: {gty: client-credentials}}]
bindings:
  - name: services
    match: {kind: service, spiffe: ["spiffe://cluster.local/**"]}
    roles: [read]
    namespaces: [default]
"""), "p.yaml"))
    peer = PeerIdentifier(ON).identify(PeerEvidence(principal=BILLING))
    target = build_target("DescribeNamespace", {"namespace": "default"})
    assert isinstance(target, Target)
    assert engine.decide(certificate_principal(peer), target).allowed


def test_xfcc_subject_keeps_the_dns_own_escapes() -> None:
    """Envoy writes the subject as RFC 2253 text: a CN holding ``,O=acme`` arrives as
    ``CN=legacy-worker\\,O=acme``. The escape stays, as in the certificate's RFC 4514 text
    (gRPC mode), so it never reads as ``CN=legacy-worker,O=acme``."""
    got = parse_xfcc('Subject="CN=legacy-worker\\,O=acme"')
    assert got.subject == "CN=legacy-worker\\,O=acme"
    assert got.subject != "CN=legacy-worker,O=acme"


def test_xfcc_names_the_certificate_never_the_san_text() -> None:
    """A DNS SAN ``intruder;URI=<billing>`` reads in Envoy's XFCC text as a billing URI SAN.
    The server names the certificate by its ``Cert=`` (the PEM); an XFCC without one is
    malformed_peer, and a second ``Cert=`` (carried in a SAN) too."""
    ca = MeshCA("ca")
    leaf = ca.issue([(NameOID.COMMON_NAME, "intruder")], dns=[f"intruder;URI={BILLING}"])
    pem = quote(leaf.cert.decode())
    text = f'Subject="CN=intruder";DNS=intruder;URI={BILLING}'
    assert parse_xfcc(text).uris == (BILLING,)  # what the text alone says
    peers = PeerIdentifier(PeerSettings(enabled=True, fields=("spiffe", "subject"),
                                        trust_domains=("cluster.local",)))
    named = peers.identify(PeerEvidence(xfcc=f'Cert="{pem}";{text}'))
    assert named.name == "CN=intruder" and not named.spiffe_id
    with pytest.raises(PeerError) as info:
        peers.identify(PeerEvidence(xfcc=text))
    assert info.value.reason is Reason.MALFORMED_PEER
    with pytest.raises(PeerError) as info:
        parse_xfcc(f'Cert="{pem}";Subject="CN=intruder";DNS=x;Cert="{pem}"')
    assert info.value.reason is Reason.MALFORMED_PEER


def test_validate_requires_the_certificate_in_http_xfcc() -> None:
    """An HTTP-mode Envoy whose XFCC lacks cert: true cannot back peer_identity."""
    with open("envoy/envoy-http-mtls.yaml", encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    del hcm["set_current_client_cert_details"]["cert"]
    assert any("cert must be true" in p for p in envoy_problems(doc, "http"))
