"""Client-credentials tokens without a human ``sub`` (a ``client_id``/``azp`` only): real
tokens signed by a loopback dev issuer, through the ``Authenticator`` and the pipeline."""

from __future__ import annotations

import json
import time
from typing import Any

from support_auth import config_for, refused, running
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame
from devkit.issuer import DevIssuer
from extauthz import methods
from extauthz.claims import ClaimMapping
from extauthz.model import CheckInput, Reason, Role
from extauthz.pipeline import Pipeline
from extauthz.rules.matchers import ClaimSources, Facts, Match

START = f"/{methods.WORKFLOW_SERVICE}/StartWorkflowExecution"


def service_token(dev: DevIssuer, **claims: Any) -> str:
    """A client-credentials token as some providers issue it: no ``sub`` at all."""
    return dev.mint({"client_id": "billing-worker", "azp": "billing-worker",
                     "permissions": ["billing:write"], **claims})


def start(token: str, namespace: str) -> CheckInput:
    data = rr.StartWorkflowExecutionRequest(namespace=namespace,
                                            workflow_id="w").SerializeToString()
    headers = {"content-type": "application/grpc", "authorization": f"Bearer {token}"}
    return CheckInput(START, headers, frame(data))


async def test_token_without_sub_maps_to_a_service_principal(dev: DevIssuer) -> None:
    """No ``sub``, a ``client_id``: verified, the subject is the client id, the principal is a
    ``service`` with the token's roles; allowed where it may write, denied elsewhere."""
    async with running(config_for(dev)) as auth:
        token = service_token(dev)
        verified = await auth.verify(token)
        assert verified.subject == "billing-worker"
        pipeline = Pipeline(auth)
        allowed = await pipeline.check(start(token, "billing"))
        denied = await pipeline.check(start(token, "payroll"))
    assert allowed.allowed, allowed.message
    assert allowed.principal is not None
    p = allowed.principal
    assert (p.subject, p.kind, p.namespaces) == ("billing-worker", "service",
                                                 {"billing": Role.WRITER})
    assert not denied.allowed and denied.reason == Reason.PERMISSION_DENIED
    assert "billing-worker" in denied.message


async def test_subject_matcher_sees_the_client_id_of_a_service(dev: DevIssuer) -> None:
    """A policy ``subject: [billing-worker]`` matches the service (its subject is its client
    id), as does ``client_id:``; a human whose ``azp`` is that client does not."""
    async with running(config_for(dev)) as auth:
        service = Pipeline(auth).principal(await auth.verify(service_token(dev)))
        human = Pipeline(auth).principal(
            await auth.verify(dev.mint({"sub": "u-alice", "azp": "billing-worker"})))
    by_subject = Match(subjects=frozenset({"billing-worker"}))
    by_client = Match(client_ids=frozenset({"billing-worker"}))
    assert by_subject(Facts(service, ClaimSources()))
    assert by_client(Facts(service, ClaimSources()))
    assert not by_subject(Facts(human, ClaimSources()))
    assert (human.subject, human.kind) == ("u-alice", "human")


async def test_azp_is_the_fallback_when_client_id_is_absent(dev: DevIssuer) -> None:
    """Keycloak-style: only ``azp`` names the client."""
    async with running(config_for(dev)) as auth:
        verified = await auth.verify(dev.mint({"azp": "cli-app"}))
    assert verified.subject == "cli-app"


async def test_empty_fallback_list_refuses_tokens_without_sub(dev: DevIssuer) -> None:
    """``subject_fallback: []``: the subject claim is required, as before."""
    config = config_for(dev, claims=ClaimMapping(subject_fallback=()))
    async with running(config) as auth:
        error = await refused(auth, service_token(dev), Reason.INVALID_CLAIMS)
        assert "subject_fallback" in error.message
        assert (await auth.verify(dev.mint({"sub": "u-1"}))).subject == "u-1"


async def test_bad_sub_is_refused_even_with_a_client_id(dev: DevIssuer) -> None:
    """``"sub": ""`` next to a good ``client_id``: INVALID_CLAIMS (no fallback), and the
    refusal is remembered like any bad token (one verification for a flood of it)."""
    claims = {"iss": dev.url, "aud": "temporal", "exp": int(time.time()) + 600, "sub": "",
              "client_id": "billing-worker"}
    token = dev.sign_raw(json.dumps(claims).encode())
    async with running(config_for(dev)) as auth:
        for _ in range(3):
            await refused(auth, token, Reason.INVALID_CLAIMS)
        assert (auth.stats.misses, auth.stats.negative_hits) == (1, 2)


async def test_dev_issuer_token_endpoint_token_is_a_service(dev: DevIssuer) -> None:
    """The dev issuer's ``/token`` (client credentials, ``sub`` = client id) also maps to a
    service named by its client id."""
    response = dev.client_credentials({"client_id": "ops-bot", "audience": "temporal",
                                       "permissions": "default:read"})
    async with running(config_for(dev)) as auth:
        verified = await auth.verify(response["access_token"])
        p = Pipeline(auth).principal(verified)
    assert (p.subject, p.kind, p.namespaces) == ("ops-bot", "service", {"default": Role.READER})
