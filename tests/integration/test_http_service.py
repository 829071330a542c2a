"""The HTTP ext_authz transport (``extauthz.server.http_service``) on loopback: the answers Envoy
relies on, and the bounds that keep a hostile or broken client from holding the server — slow
clients, oversized headers and bodies, pipelining, connection floods, drain, and
``extauthz serve`` in HTTP mode with workers and SIGTERM. Every loop here is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devkit.issuer import DevIssuer
from devkit.ports import free_ports
from devkit.procs import ManagedProcess, http_get, wait_until
from extauthz.model import STATUS_UNAUTHENTICATED, CheckInput, Decision, Principal, Reason
from extauthz.server.http1 import HttpLimits
from extauthz.server.http_service import HttpCheckServer
from extauthz.server.responses import HttpResponses

# the server fixture and the tests share the session loop
pytestmark = pytest.mark.asyncio(loop_scope="session")

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
GRPC = "x-extauthz-content-type: application/grpc\r\n"


class Stub:
    """A decision core that records what it was asked: ``/x.Y/Allow`` allows as alice,
    ``.../Slow`` takes ``slow`` seconds, ``.../Yield`` yields once; anything else is denied
    with the path in the message."""

    def __init__(self) -> None:
        self.seen: list[CheckInput] = []
        self.slow = 0.2

    async def check(self, req: CheckInput) -> Decision:
        self.seen.append(req)
        if req.path.endswith("/Slow"):
            await asyncio.sleep(self.slow)
        if req.path.endswith("/Yield"):
            await asyncio.sleep(0)
        if req.path.endswith(("/Allow", "/Slow", "/Yield")):
            principal = Principal(subject="alice", issuer="https://idp", kind="human")
            return Decision.allow(Reason.ALLOWED, "ok", principal=principal)
        if req.path.endswith("/NoToken"):
            return Decision.deny(Reason.MISSING_TOKEN, "no token", status=STATUS_UNAUTHENTICATED)
        return Decision.deny(Reason.PERMISSION_DENIED, f"denied {req.path}")


def request(path: str, body: bytes = b"", extra: str = GRPC, method: str = "POST") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nhost: authz\r\n{extra}"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return status, headers, body


async def closed(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes the connection within ``within`` seconds (data is drained)."""
    deadline = time.monotonic() + within
    with contextlib.suppress(ConnectionError):
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except TimeoutError:
                return False
            if not chunk:
                return True
        return False
    return True


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpCheckServer, Stub]]:
    stub = Stub()
    limits = HttpLimits(request_timeout=0.5, idle_timeout=1.0, max_connections=40,
                        max_pipelined=8, max_header_bytes=16 * 1024, max_headers=32,
                        write_high_water=4096)
    srv = HttpCheckServer(stub, HttpResponses(), limits=limits)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv, stub
    finally:
        await srv.drain(0.5)


async def connect(srv: HttpCheckServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def roundtrip(srv: HttpCheckServer, data: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await connect(srv)
    try:
        writer.write(data)
        return await read_response(reader)
    finally:
        writer.close()


# ---- answers ---------------------------------------------------------------------------------


async def test_allow_carries_identity_and_strips_the_prefix(server: tuple[HttpCheckServer, Stub],
                                                            ) -> None:
    """An allow is 200 with the three identity headers; the pipeline sees the original path,
    method, body and the client's content-type."""
    srv, stub = server
    status, headers, body = await roundtrip(srv, request("/check/x.Y/Allow", b"\x00" * 5))
    assert (status, body) == (200, b"")
    assert headers["x-temporal-authz-subject"] == "alice"
    assert headers["x-temporal-authz-issuer"] == "https://idp"
    assert headers["x-temporal-authz-kind"] == "human"
    (seen,) = stub.seen
    assert (seen.path, seen.method, seen.body) == ("/x.Y/Allow", "POST", b"\x00" * 5)
    assert seen.headers["content-type"] == "application/grpc"
    assert "x-extauthz-content-type" not in seen.headers


async def test_denials_have_status_reason_header_and_code_body(
        server: tuple[HttpCheckServer, Stub]) -> None:
    """403 and 401 denials carry `<code>: <message>` and x-temporal-authz-reason."""
    srv, _ = server
    status, headers, body = await roundtrip(srv, request("/check/x.Y/Z"))
    assert status == 403
    assert body == b"permission_denied: denied /x.Y/Z"
    assert headers["x-temporal-authz-reason"] == "permission_denied"
    status, headers, body = await roundtrip(srv, request("/check/x.Y/NoToken"))
    assert (status, body) == (401, b"missing_token: no token")


async def test_grpc_content_type_on_the_authz_request_is_refused(
        server: tuple[HttpCheckServer, Stub]) -> None:
    """A check whose own content-type is gRPC (an Envoy config whose timeouts would read as
    allows) is denied without asking the pipeline."""
    srv, stub = server
    status, _, body = await roundtrip(
        srv, request("/check/x.Y/Allow", extra="content-type: application/grpc\r\n" + GRPC))
    assert status == 403
    assert body.startswith(b"unsupported_protocol: Envoy sent content-type application/grpc")
    assert stub.seen == []


async def test_health_and_unknown_paths(server: tuple[HttpCheckServer, Stub]) -> None:
    """GET /healthz is 200 while serving and 503 otherwise; paths outside the prefix are 404
    and never reach the pipeline (neither does /check-less /healthz via POST)."""
    srv, stub = server
    assert (await roundtrip(srv, request("/healthz", method="GET")))[0] == 200
    srv.serving = lambda: False
    assert (await roundtrip(srv, request("/healthz", method="GET")))[0] == 503
    for path in ("/x.Y/Allow", "/checkx.Y/Allow", "/healthz?x", "/"):
        assert (await roundtrip(srv, request(path)))[0] == 404, path
    assert stub.seen == []


async def test_one_mib_body_arrives_byte_exact(server: tuple[HttpCheckServer, Stub]) -> None:
    """A 1 MiB body reaches the pipeline byte for byte, however the client splits it."""
    srv, stub = server
    body = bytes((i * 31 + 7) % 256 for i in range(1024 * 1024))
    reader, writer = await connect(srv)
    data = request("/check/x.Y/Allow", body)
    for i in range(0, len(data), 65521):
        writer.write(data[i:i + 65521])
        await writer.drain()
    assert (await read_response(reader))[0] == 200
    writer.close()
    assert stub.seen[0].body == body


async def test_body_at_envoys_limit_is_accepted_and_over_it_denied() -> None:
    """With the default limits a body of Envoy's max_request_bytes (4 MiB + 5) is judged; one
    byte more is read, discarded and denied body_too_large."""
    stub = Stub()
    srv = HttpCheckServer(stub, HttpResponses())
    await srv.start("127.0.0.1", 0)
    try:
        limit = srv.limits.max_body_bytes
        assert limit >= 4194309
        assert (await roundtrip(srv, request("/check/x.Y/Allow", b"a" * limit)))[0] == 200
        status, _, body = await roundtrip(srv, request("/check/x.Y/Allow", b"a" * (limit + 1)))
        assert status == 403
        assert body.startswith(b"body_too_large:")
        assert len(stub.seen) == 1
    finally:
        await srv.drain(0.5)


async def test_chunked_body_and_expect_continue_work(server: tuple[HttpCheckServer, Stub]) -> None:
    """A chunked body is reassembled; `expect: 100-continue` gets its interim answer."""
    srv, stub = server
    reader, writer = await connect(srv)
    writer.write(b"POST /check/x.Y/Allow HTTP/1.1\r\nhost: a\r\n" + GRPC.encode()
                 + b"expect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    writer.close()
    assert stub.seen[0].body == b"abcde"


# ---- keep-alive and pipelining -----------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order(server: tuple[HttpCheckServer, Stub],
                                                        ) -> None:
    """60 requests in one write — some suspending, some slow — come back in request order."""
    srv, stub = server
    stub.slow = 0.01
    paths = [f"/check/x.Y/{['Allow', 'Slow', 'Yield', 'D' + str(i)][i % 4]}" for i in range(60)]
    reader, writer = await connect(srv)
    writer.write(b"".join(request(p) for p in paths))
    for i, path in enumerate(paths):
        status, _, body = await read_response(reader)
        if i % 4 == 3:
            assert (status, body) == (403, f"permission_denied: denied {path[6:]}".encode())
        else:
            assert status == 200, (i, path)
    writer.close()
    assert [r.path for r in stub.seen] == [p[6:] for p in paths]


async def test_keep_alive_and_connection_close(server: tuple[HttpCheckServer, Stub]) -> None:
    """Many requests share one connection; `connection: close` from the client gets the answer
    and then the close."""
    srv, _ = server
    reader, writer = await connect(srv)
    for _ in range(20):
        writer.write(request("/check/x.Y/Allow"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and "connection" not in headers
    writer.write(request("/check/x.Y/Allow", extra=GRPC + "connection: close\r\n"))
    status, headers, _ = await read_response(reader)
    assert headers["connection"] == "close"
    assert await closed(reader, 2)


# ---- slow and hostile clients ------------------------------------------------------------------


async def test_slow_header_client_gets_408_while_others_are_served(
        server: tuple[HttpCheckServer, Stub]) -> None:
    """A client trickling its headers is cut off with 408 after request_timeout; other clients
    are answered meanwhile."""
    srv, _ = server
    reader, writer = await connect(srv)
    data = request("/check/x.Y/Allow")
    started = time.monotonic()
    head = b""
    for i, byte in enumerate(data[:60]):
        writer.write(bytes([byte]))
        with contextlib.suppress(TimeoutError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.02)
            break
        if i == 5:
            assert (await roundtrip(srv, request("/check/x.Y/Allow")))[0] == 200
    assert head.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3
    assert await closed(reader, 2)


async def test_silent_and_idle_connections_are_closed(server: tuple[HttpCheckServer, Stub]) -> None:
    """A connection that never sends is closed after request_timeout; one idle after a request
    after idle_timeout."""
    srv, _ = server
    silent_reader, _silent = await connect(srv)
    assert await closed(silent_reader, 2)
    reader, writer = await connect(srv)
    writer.write(request("/check/x.Y/Allow"))
    assert (await read_response(reader))[0] == 200
    assert not await closed(reader, 0.6)  # idle_timeout is 1 s
    assert await closed(reader, 2)


async def test_oversized_headers_are_refused_with_431(server: tuple[HttpCheckServer, Stub]) -> None:
    """Headers over max_header_bytes, more than max_headers, an endless header value and a
    huge request line are each answered 431 and the connection closed; nothing reaches the
    pipeline."""
    srv, stub = server
    cases = [
        request("/check/x.Y/Allow", extra=GRPC + "x-big: " + "a" * 20_000 + "\r\n"),
        request("/check/x.Y/Allow", extra=GRPC + "".join(f"x-h{i}: v\r\n" for i in range(40))),
        request("/check/" + "a" * 20_000),
    ]
    for data in cases:
        status, _, _ = await roundtrip(srv, data)
        assert status == 431
    reader, writer = await connect(srv)
    writer.write(b"POST /check/x.Y/Allow HTTP/1.1\r\nx-endless: ")
    with contextlib.suppress(ConnectionError):
        for _ in range(128):  # 2 MiB at most: the server refuses after ~80 KiB
            writer.write(b"a" * 16384)
            await writer.drain()
    status, _, _ = await read_response(reader)
    assert status == 431  # refused while the header was still arriving
    assert stub.seen == []


async def test_malformed_requests_get_400(server: tuple[HttpCheckServer, Stub]) -> None:
    """Garbage, a bad content-length and an upgrade are 400 and closed."""
    srv, stub = server
    for data in (b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
                 b"POST /check/a HTTP/1.1\r\ncontent-length: x\r\n\r\n",
                 b"GET /check/a HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"):
        reader, writer = await connect(srv)
        writer.write(data)
        assert (await read_response(reader))[0] == 400
        assert await closed(reader, 2)
        writer.close()
    assert stub.seen == []


async def test_client_that_never_reads_is_closed(server: tuple[HttpCheckServer, Stub]) -> None:
    """A client pipelining requests without reading answers: the server stops reading, then
    closes the connection after request_timeout of back-pressure (bounded memory)."""
    srv, stub = server
    reader, writer = await connect(srv)
    chunk = request("/check/x.Y/" + "D" * 2000) * 16
    with contextlib.suppress(TimeoutError):
        for _ in range(2000):  # bounded: ~64 MiB at most
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 0.5)
    asked = len(stub.seen)
    await asyncio.sleep(1.5)  # > request_timeout: back-pressure lasted too long
    assert len(stub.seen) - asked < 100  # it stopped reading
    assert await closed(reader, 5)
    writer.close()
    await asyncio.sleep(0.1)
    assert len(srv.connections) == 0


async def test_connection_flood_is_capped_and_recovers(
        server: tuple[HttpCheckServer, Stub]) -> None:
    """Past max_connections new connections get 503 and are closed; once the flood goes, a
    normal client is served."""
    srv, _ = server
    flood = [await connect(srv) for _ in range(srv.limits.max_connections)]
    extra_reader, extra_writer = await connect(srv)
    status, _, _ = await read_response(extra_reader)
    assert status == 503
    extra_writer.close()
    for _, writer in flood:
        writer.close()
    await asyncio.sleep(0.2)
    assert (await roundtrip(srv, request("/check/x.Y/Allow")))[0] == 200


# ---- drain -----------------------------------------------------------------------------------


async def test_drain_closes_idle_finishes_in_flight_and_refuses_new(
        server: tuple[HttpCheckServer, Stub]) -> None:
    """drain: idle connections close now, an in-flight check is answered with
    `connection: close`, new connections are refused, and it returns within the grace."""
    srv, stub = server
    stub.slow = 0.5
    idle_reader, idle_writer = await connect(srv)
    idle_writer.write(request("/check/x.Y/Allow"))
    assert (await read_response(idle_reader))[0] == 200
    busy_reader, busy_writer = await connect(srv)
    busy_writer.write(request("/check/x.Y/Slow"))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    drained = asyncio.create_task(srv.drain(3.0))
    assert await closed(idle_reader, 1)
    status, headers, _ = await read_response(busy_reader)
    assert (status, headers["connection"]) == (200, "close")
    await drained
    assert time.monotonic() - started < 2
    with pytest.raises(ConnectionRefusedError):
        await connect(srv)
    idle_writer.close()
    busy_writer.close()


# ---- the real server ---------------------------------------------------------------------------


async def test_serve_http_mode_with_workers_drains_on_sigterm(tmp_path: Path) -> None:
    """`extauthz serve` with transport http and 2 workers answers checks with a real token;
    on SIGTERM /healthz turns 503 while checks are still answered (shutdown delay), then every
    process exits 0."""
    dev = DevIssuer().start()
    port, grpc_port = free_ports(2)
    env = {**os.environ, "EXTAUTHZ_TRANSPORT": "http", "EXTAUTHZ_HTTP_LISTEN": f"127.0.0.1:{port}",
           "EXTAUTHZ_LISTEN": f"127.0.0.1:{grpc_port}", "TEMPORAL_AUTH_PROVIDER_URL": dev.url,
           "TEMPORAL_AUTH_CLIENT_ID": "temporal", "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1",
           "EXTAUTHZ_WORKERS": "2"}
    config = tmp_path / "c.yaml"
    config.write_text("shutdown_delay_seconds: 1.5\nshutdown_grace_seconds: 2\n")
    proc = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve", "--config",
                                       str(config)], log_path=tmp_path / "x.log", env=env).start()
    url = f"http://127.0.0.1:{port}"
    token = dev.mint({"sub": "zoe", "permissions": ["default:read"]})
    body = b"\x00\x00\x00\x00\x09\x0a\x07default"

    def check() -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            f"{url}/check{WS}DescribeNamespace", data=body, method="POST",
            headers={"authorization": f"Bearer {token}",
                     "x-extauthz-content-type": "application/grpc"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status), resp.headers.get("x-temporal-authz-subject", "").encode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    try:
        proc.wait_ready(lambda: http_get(f"{url}/healthz")[0] == 200, 30, "healthz")
        assert all(check() == (200, b"zoe") for _ in range(20))
        proc.signal(signal.SIGTERM)
        wait_until(lambda: http_get(f"{url}/healthz")[0] == 503, 5, "healthz 503")
        assert check() == (200, b"zoe")  # still answering during the shutdown delay
        assert proc.wait(timeout=20) == 0
    finally:
        proc.stop()
        dev.stop()
