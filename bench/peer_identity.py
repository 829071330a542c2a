"""Micro-benchmark: µs per pipeline check for a certificate caller against a cached token, in the
same run (ratios, not absolute numbers, are the result).

Run: ``.venv/bin/python -m bench.peer_identity``.

Each figure is the median of 7 rounds, the cases in alternation. Cases, each a
StartWorkflowExecution on its allowed queue through ``Pipeline.check`` with the
policy engine: a token already verified (the verifier's cache hit: baseline); a certificate
alone in gRPC mode (URL-encoded PEM of ``include_peer_certificate``), memoised; the same
certificate's memo miss alone (a PEM parse and the identity rules: what the first call of a
new certificate adds); the HTTP mode's x-forwarded-client-cert element; a token and a
certificate together.
"""

from __future__ import annotations

import asyncio
import datetime
import statistics
import time
from collections.abc import Callable
from urllib.parse import quote

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.api.taskqueue.v1 import message_pb2 as taskqueue_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame
from extauthz import methods
from extauthz.auth.certs import fields_of_pem
from extauthz.auth.types import IssuerConfig, VerifiedToken
from extauthz.model import CheckInput, PeerEvidence
from extauthz.peers import PeerSettings, identify
from extauthz.pipeline import Pipeline
from extauthz.rules.document import compile_policy
from extauthz.rules.engine import Engine

SPIFFE = "spiffe://cluster.local/ns/billing/sa/billing-worker"
POLICY = """
bindings:
  - name: billing
    match: [{spiffe: ["spiffe://cluster.local/ns/billing/sa/*"]}, {subject: [alice]}]
    roles: [worker, write]
    namespaces: [default]
    task_queues: ["billing-*"]
"""
START = f"/{methods.WORKFLOW_SERVICE}/StartWorkflowExecution"


def workload_pem() -> str:
    """A self-signed workload certificate with the SPIFFE URI SAN, as Envoy's URL-encoded PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billing-worker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SPIFFE)]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return quote(cert.public_bytes(serialization.Encoding.PEM).decode())


class CachedVerifier:
    """The verifier's cache hit: one VerifiedToken object handed back."""

    def __init__(self) -> None:
        self.verified = VerifiedToken(IssuerConfig("https://idp.example"), {"sub": "alice"},
                                      time.time() + 3600)

    async def verify(self, token: str) -> VerifiedToken:
        return self.verified


def fresh(text: str) -> str:
    """An equal string that is a new object (its hash not yet cached), as a new request's is."""
    return (text + " ")[:-1]


async def per_check(pipeline: Pipeline, make: Callable[[], CheckInput], n: int) -> float:
    """µs per check, each on a CheckInput built as an adapter builds it (new strings)."""
    assert (await pipeline.check(make())).allowed
    t0 = time.perf_counter()
    for _ in range(n):
        await pipeline.check(make())
    return (time.perf_counter() - t0) / n * 1e6


async def main(n: int = 4_000, rounds: int = 7) -> None:
    engine = Engine(compile_policy(yaml.safe_load(POLICY), "bench.yaml"))
    peers = PeerSettings(enabled=True, fields=("spiffe", "subject"),
                         trust_domains=("cluster.local",))
    body = frame(rr.StartWorkflowExecutionRequest(
        namespace="default", workflow_id="w",
        task_queue=taskqueue_pb2.TaskQueue(name="billing-1")).SerializeToString())
    grpc_h = {"content-type": "application/grpc"}
    pem = workload_pem()
    # as Envoy sets it (cert: true): the URL-encoded PEM first, then the text fields
    xfcc_value = f'Hash=ab;Cert="{pem}";Subject="CN=billing-worker";URI={SPIFFE}'

    def token() -> CheckInput:
        return CheckInput(START, {**grpc_h, "authorization": fresh("Bearer t")}, body)

    def cert() -> CheckInput:
        return CheckInput(START, grpc_h, body,
                          peer=PeerEvidence(certificate=fresh(pem), principal=fresh(SPIFFE)))

    def xfcc() -> CheckInput:
        return CheckInput(START, grpc_h, body, peer=PeerEvidence(xfcc=fresh(xfcc_value)))

    def both() -> CheckInput:
        return CheckInput(START, {**grpc_h, "authorization": fresh("Bearer t")}, body,
                          peer=PeerEvidence(certificate=fresh(pem), principal=fresh(SPIFFE)))

    off = Pipeline(CachedVerifier(), engine)
    on = Pipeline(CachedVerifier(), engine, peers=peers)
    cases = [("token (cached), peer_identity off", off, token),
             ("token (cached), peer_identity on", on, token),
             ("certificate alone, gRPC PEM (memoised)", on, cert),
             ("certificate alone, HTTP XFCC (memoised)", on, xfcc),
             ("token + certificate (memoised)", on, both)]
    samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(rounds):  # the cases in alternation: a busy machine slows them all alike
        for name, pipeline, make in cases:
            samples[name].append(await per_check(pipeline, make, n))
    rows = [(name, statistics.median(values)) for name, values in samples.items()]
    base = rows[0][1]
    cold = 2000
    t0 = time.perf_counter()
    for _ in range(cold):  # what a memo miss adds: the PEM parse and the identity rules
        identify(fields_of_pem(pem), peers)
    rows.append(("memo miss alone: PEM parse + identity rules",
                 (time.perf_counter() - t0) / cold * 1e6))
    for name, us in rows:
        print(f"{name:44} {us:7.2f} µs/check   {us / base:5.2f}x baseline")


if __name__ == "__main__":
    asyncio.run(main())
