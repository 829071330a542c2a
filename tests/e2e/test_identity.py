"""Identity under rotation and outage, end to end: Temporal SDK client → real Envoy (gRPC and
HTTP ext_authz protocols) → the real authz server → a real Temporal dev server, with the
development issuer in this process so a test can rotate its keys or take it down, slow it or
make it answer garbage.

What ``tests/integration/auth/`` proves at the ``Authenticator`` level (refresh timing,
coalesced refetches, byte caps, the exact fetch counters) is not repeated here; these tests add
what a client sees through Envoy (its gRPC status, that nothing is allowed), the server's health
as Envoy's health checker sees it, and the server's own logs. Each test runs its own authz
server with short intervals from a config file (``workers: 1``) and its own Envoy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support.identity import Authz, retry_port_clash, start_authz
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from devkit.components import EnvoyInstance, TemporalInstance, start_envoy
from devkit.issuer import DevIssuer
from extauthz.model import Reason

RPC_TIMEOUT = timedelta(seconds=10)
OK_STAT = "http.external.ext_authz.extauthz.ok"


@dataclass
class Stack:
    """Issuer (in this process) → authz server → Envoy → the shared Temporal."""

    dev: DevIssuer
    authz: Authz
    envoy: EnvoyInstance
    client: Client

    async def describe(self, token: str) -> rr.DescribeNamespaceResponse:
        return await self.client.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT,
            metadata={"authorization": f"Bearer {token}"})

    async def list_workflows(self, token: str) -> rr.ListWorkflowExecutionsResponse:
        return await self.client.workflow_service.list_workflow_executions(
            rr.ListWorkflowExecutionsRequest(namespace="default"), retry=False,
            timeout=RPC_TIMEOUT, metadata={"authorization": f"Bearer {token}"})

    async def refused(self, token: str) -> RPCError:
        """The call is refused; the error the SDK raises."""
        with pytest.raises(RPCError) as info:
            await self.describe(token)
        return info.value

    def allowed_count(self) -> int:
        """Checks Envoy let through (its ext_authz ``ok`` counter)."""
        return self.envoy.stats().get(OK_STAT, 0)


@pytest.fixture
def dev() -> Iterator[DevIssuer]:
    """A private dev issuer without Cache-Control (the server's short refresh interval rules)."""
    issuer = DevIssuer(slow_seconds=30.0)
    issuer.jwks_max_age = None
    with issuer:
        yield issuer


async def _stack(e2e_dir: Path, temporal: TemporalInstance, dev: DevIssuer, transport: str,
                 name: str, *, wait_serving: bool = True, server: dict[str, Any] | None = None,
                 **issuer: Any) -> Stack:
    authz = retry_port_clash(lambda: start_authz(
        e2e_dir, name, dev.url, transport, wait_serving=wait_serving, server=server, **issuer))
    try:
        envoy = retry_port_clash(lambda: start_envoy(
            e2e_dir, authz=authz.address, upstream=temporal.address, transport=transport))
    except BaseException:
        authz.proc.stop()
        raise
    # no api_key: every call carries its own token (old and new keys side by side)
    client = await Client.connect(envoy.target, namespace="default", tls=False)
    return Stack(dev, authz, envoy, client)


def _stop(stack: Stack) -> None:
    stack.envoy.stop()
    stack.authz.proc.stop()


def _token(dev: DevIssuer, who: str = "svc-load", kid: str | None = None) -> str:
    return dev.mint({"sub": who, "permissions": ["default:read"]}, kid=kid)


async def _wait_for(what: str, timeout: float, check: Any) -> float:
    """Poll the async ``check`` until true; seconds it took (bounded)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


# ---- rotation ---------------------------------------------------------------------------------


async def test_rotation_under_load_has_zero_failed_calls_then_the_old_key_is_refused(
    e2e_dir: Path, temporal: TemporalInstance, dev: DevIssuer, transport: str
) -> None:
    """Four clients call DescribeNamespace/ListWorkflowExecutions in a loop, each call with a
    freshly minted token, plus one long-lived token of the old key; midway the issuer adds a
    new key and signs with it at once (the server learns it by its unknown-kid refetch): zero
    failed calls, both keys used. Then the issuer unpublishes the old key: after the next
    refresh a token of the old key (even one the server has cached as valid) is
    UNAUTHENTICATED `unknown_key`, while new-key tokens keep working."""
    stack = await _stack(e2e_dir, temporal, dev, transport, "rotation",
                         refresh_interval_seconds=1.0, unknown_kid_refetch_seconds=1.0)
    try:
        old_kid = dev.current_kid
        long_lived = _token(dev, "svc-long-lived")
        failures: list[str] = []
        kids_used: dict[str, int] = {}
        rotated = asyncio.Event()
        enough = asyncio.Event()
        deadline = time.monotonic() + 15.0
        per_key = 30  # calls signed by each key before the load stops

        def count(kid: str) -> None:
            kids_used[kid] = kids_used.get(kid, 0) + 1
            if rotated.is_set() and kids_used.get(dev.current_kid, 0) >= per_key:
                enough.set()

        async def client_loop(n: int) -> int:
            # client 0 lists workflows (Temporal's dev server allows visibility calls at
            # 10/s per namespace, so it is paced), the others describe the namespace; the
            # load runs by phase, not by clock, so a fast transport cannot finish before the
            # rotation happens
            calls = 0
            while not enough.is_set() and time.monotonic() < deadline:
                token = long_lived if calls % 3 == 0 else _token(dev, f"svc-{n}")
                kid = old_kid if token is long_lived else dev.current_kid
                try:
                    if n == 0:
                        await stack.list_workflows(token)
                        await asyncio.sleep(0.2)
                    else:
                        await stack.describe(token)
                    count(kid)
                except RPCError as exc:
                    failures.append(f"{exc.status.name}: {exc.message}")
                calls += 1
            return calls

        async def rotate_midway() -> None:
            # poll a counter the callers feed, bounded by the deadline
            while kids_used.get(old_kid, 0) < per_key and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            dev.rotate()
            rotated.set()

        loops = asyncio.gather(*(client_loop(n) for n in range(4)))
        counts, _ = await asyncio.gather(loops, rotate_midway())
        assert rotated.is_set()
        assert failures == []
        new_kid = dev.current_kid
        assert new_kid != old_kid
        assert enough.is_set(), kids_used
        assert all(calls > 0 for calls in counts), counts
        assert kids_used.get(old_kid, 0) >= per_key and kids_used[new_kid] >= per_key, kids_used

        # the old key is unpublished: refused after the next background refresh
        never_seen = _token(dev, "svc-never-seen", kid=old_kid)
        dev.remove_key(old_kid)
        async def old_key_refused() -> bool:
            try:
                await stack.describe(long_lived)
            except RPCError as exc:
                assert exc.status == RPCStatusCode.UNAUTHENTICATED, exc.message
                assert Reason.UNKNOWN_KEY.value in exc.message, exc.message
                return True
            return False

        took = await _wait_for("the cached old-key token to be refused", 5.0, old_key_refused)
        assert took <= 1.1 * 1.0 + 1.5  # one refresh interval (with jitter) and some slack
        error = await stack.refused(never_seen)
        assert error.status == RPCStatusCode.UNAUTHENTICATED
        assert Reason.UNKNOWN_KEY.value in error.message
        await stack.describe(_token(dev, "svc-after"))
        await stack.list_workflows(_token(dev, "svc-after"))
    finally:
        _stop(stack)


# ---- outages ----------------------------------------------------------------------------------


async def test_issuer_down_at_start_is_not_serving_and_unavailable_never_allowed(
    e2e_dir: Path, temporal: TemporalInstance, dev: DevIssuer, transport: str
) -> None:
    """The issuer drops every connection when the server starts: health NOT_SERVING, every
    call (even with a token the issuer really signed) is UNAVAILABLE and Envoy allows
    nothing. When the issuer comes back the server loads its keys, turns SERVING and allows."""
    dev.set_mode("down")
    stack = await _stack(e2e_dir, temporal, dev, transport, "down-at-start",
                         wait_serving=False, refresh_interval_seconds=0.5)
    try:
        assert stack.authz.health() == "NOT_SERVING"
        if transport == "http":
            assert stack.authz.http_health() == 503
        token = _token(dev)
        allowed = stack.allowed_count()  # Client.connect's GetSystemInfo needs no token
        for _ in range(5):
            error = await stack.refused(token)
            assert error.status == RPCStatusCode.UNAVAILABLE, error.message
        if transport == "grpc":  # the HTTP protocol turns every 5xx into Envoy's own reply
            assert Reason.KEYS_UNAVAILABLE.value in error.message and dev.url in error.message
        assert stack.allowed_count() == allowed
        _assert_audited_keys_unavailable(stack.authz, dev.url, "no JWK Set loaded yet")
        failed = stack.authz.events("jwks.fetch_failed")
        assert failed and failed[-1]["result"] == "network_error"
        assert failed[-1]["issuer"] == dev.url

        dev.set_mode("ok")
        await _wait_for("SERVING", 10.0, _serving(stack.authz))
        assert (await stack.describe(token)).namespace_info.name == "default"
    finally:
        _stop(stack)


def _assert_audited_keys_unavailable(authz: Authz, issuer: str, why: str) -> None:
    """The server's audit log (both transports) has the 503 `keys_unavailable` denial,
    naming the issuer and why."""
    denials = [e for e in authz.events("authz.decision")
               if e["reason"] == Reason.KEYS_UNAVAILABLE.value]
    assert denials, authz.log_path
    last = denials[-1]
    assert last["status"] == 503 and last["decision"] == "error"  # refused, retryable
    assert issuer in last["message"] and why in last["message"], last["message"]


def _serving(authz: Authz) -> Any:
    async def check() -> bool:
        return authz.health() == "SERVING"
    return check


async def test_issuer_down_later_cached_keys_serve_until_max_stale_then_keys_unavailable(
    e2e_dir: Path, temporal: TemporalInstance, dev: DevIssuer, transport: str
) -> None:
    """The issuer goes down after the keys were loaded: calls with new tokens keep working on
    the cached keys until `max_stale_seconds` (3 s) after the last good fetch, then are
    UNAVAILABLE `keys_unavailable` naming the issuer (nothing allowed, health stays SERVING so
    the whole fleet does not drop out); when the issuer is back, calls work again."""
    stack = await _stack(e2e_dir, temporal, dev, transport, "down-later",
                         refresh_interval_seconds=0.5, max_stale_seconds=3.0)
    try:
        await stack.describe(_token(dev))
        dev.set_mode("down")
        down_at = time.monotonic()
        served = 0
        while time.monotonic() - down_at < 2.0:  # > 0.5 s inside max_stale for any refresh phase
            await stack.describe(_token(dev))  # a new token each time: verified on cached keys
            served += 1
            await asyncio.sleep(0.05)
        assert served >= 10

        async def refused() -> bool:
            try:
                await stack.describe(_token(dev))
            except RPCError as exc:
                assert exc.status == RPCStatusCode.UNAVAILABLE, exc.message
                if transport == "grpc":
                    assert Reason.KEYS_UNAVAILABLE.value in exc.message, exc.message
                    assert dev.url in exc.message and "max_stale_seconds" in exc.message
                return True
            return False

        took = await _wait_for("keys_unavailable after max_stale", 5.0, refused)
        assert 2.0 + took <= 3.0 + 1.5  # at most max_stale after going down, plus slack
        allowed = stack.allowed_count()
        for _ in range(3):
            assert (await stack.refused(_token(dev))).status == RPCStatusCode.UNAVAILABLE
        assert stack.allowed_count() == allowed
        _assert_audited_keys_unavailable(stack.authz, dev.url, "max_stale_seconds 3")
        assert stack.authz.health() == "SERVING"
        assert stack.authz.events("jwks.fetch_failed")[-1]["usable"] is False

        dev.set_mode("ok")
        async def works_again() -> bool:
            try:
                await stack.describe(_token(dev))
            except RPCError:
                return False
            return True
        await _wait_for("recovery", 5.0, works_again)
    finally:
        _stop(stack)


async def test_slow_issuer_hits_the_fetch_deadline_and_calls_stay_fast(
    e2e_dir: Path, temporal: TemporalInstance, dev: DevIssuer, transport: str
) -> None:
    """The issuer trickles its JWKS over 30 s: every refresh is cut at `fetch_timeout_seconds`
    (0.5 s, logged as a timeout) while calls verified on the cached keys never wait for it; a
    token with an unknown kid, which must wait for a refetch, is refused `unknown_key` within
    the deadline, not after 30 s."""
    stack = await _stack(e2e_dir, temporal, dev, transport, "slow",
                         refresh_interval_seconds=0.5, fetch_timeout_seconds=0.5,
                         unknown_kid_refetch_seconds=0.5)
    try:
        await stack.describe(_token(dev))
        dev.set_mode("slow")
        slowest = 0.0
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            before = time.monotonic()
            await stack.describe(_token(dev))
            slowest = max(slowest, time.monotonic() - before)
        assert slowest < 0.4, slowest  # a call never waits for the (0.5 s) fetch
        timeouts = [e for e in stack.authz.events("jwks.fetch_failed")
                    if e["result"] == "timeout"]
        assert len(timeouts) >= 1, stack.authz.log_path

        unpublished = dev.add_key(publish=False)
        before = time.monotonic()
        error = await stack.refused(_token(dev, kid=unpublished))
        assert time.monotonic() - before < 0.5 + 1.0
        assert error.status == RPCStatusCode.UNAUTHENTICATED
        assert Reason.UNKNOWN_KEY.value in error.message
    finally:
        _stop(stack)


async def test_garbage_from_the_issuer_keeps_the_last_good_keys_and_logs_why(
    e2e_dir: Path, temporal: TemporalInstance, dev: DevIssuer, transport: str
) -> None:
    """The issuer answers 200 with HTML: every refresh fails as `invalid` ("not JSON"), the
    log says so and that the loaded key is kept, and calls keep being allowed."""
    stack = await _stack(e2e_dir, temporal, dev, transport, "garbage",
                         refresh_interval_seconds=0.3)
    try:
        await stack.describe(_token(dev))
        dev.set_mode("garbage")
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            await stack.list_workflows(_token(dev))
            await asyncio.sleep(0.05)
        failed = stack.authz.events("jwks.fetch_failed")
        assert len(failed) >= 2, stack.authz.log_path
        assert all(e["result"] == "invalid" and "not JSON" in e["error"] for e in failed)
        assert all(e["keeping_keys"] == 1 and e["usable"] is True for e in failed)
        assert stack.authz.health() == "SERVING"
    finally:
        _stop(stack)


# ---- the Web UI's two tokens ------------------------------------------------------------------


async def test_web_ui_id_token_labels_the_audit_event_through_envoy(
    e2e_dir: Path, temporal: TemporalInstance, dev: DevIssuer, transport: str
) -> None:
    """The Web UI's shape through Envoy: access token in `authorization`, the bare ID token in
    `authorization-extras` (Envoy forwards it in both protocols). The call is decided on the
    access token alone; the audit event names the ID token's email and name; an ID token of
    another user leaves the label off and changes nothing; no token reaches the log."""
    stack = await _stack(e2e_dir, temporal, dev, transport, "web-ui",
                         server={"audit_allow_sample_rate": 1.0})
    try:
        access = dev.mint({"sub": "u-alice", "permissions": ["default:read"]})
        id_token = dev.mint({"sub": "u-alice", "aud": "temporal-ui", "email": "alice@example.com",
                             "name": "Alice Example", "permissions": ["temporal-system:admin"]})
        mallory = dev.mint({"sub": "u-mallory", "aud": "temporal-ui",
                            "email": "mallory@example.com"})
        for extras in (id_token, mallory):
            response = await stack.client.workflow_service.describe_namespace(
                rr.DescribeNamespaceRequest(namespace="default"), retry=False,
                timeout=RPC_TIMEOUT, metadata={"authorization": f"Bearer {access}",
                                               "authorization-extras": extras})
            assert response.namespace_info.name == "default"
        with pytest.raises(RPCError) as info:  # the ID token's admin claim grants nothing
            await stack.client.workflow_service.describe_namespace(
                rr.DescribeNamespaceRequest(namespace="payroll"), retry=False,
                timeout=RPC_TIMEOUT, metadata={"authorization": f"Bearer {access}",
                                               "authorization-extras": id_token})
        assert info.value.status == RPCStatusCode.PERMISSION_DENIED

        decisions = [e for e in stack.authz.events("authz.decision")
                     if e["subject"] == "u-alice"]
        labels = [(e["decision"], e["namespaces"], e["email"], e["display_name"])
                  for e in decisions]
        assert labels == [
            ("allow", ["default"], "alice@example.com", "Alice Example"),
            ("allow", ["default"], None, None),
            ("deny", ["payroll"], "alice@example.com", "Alice Example"),
        ]
        ignored = stack.authz.events("auth.extras_ignored")
        assert [e["reason"] for e in ignored] == [Reason.INVALID_CLAIMS.value]
        log = stack.authz.log_path.read_text()
        for token in (access, id_token, mallory):
            assert token.rsplit(".", 1)[1] not in log
    finally:
        _stop(stack)
