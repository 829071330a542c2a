"""TLS and mTLS on the HTTP ext_authz listener (``http_service`` + ``server.tls``), on loopback
with a throw-away PKI: checks are answered over TLS 1.2 and 1.3 only; with a client CA a client
without a certificate, or with one from another CA, is refused in the handshake; rotated files
(a Secret volume's ``..data`` swap) reach the next new connection while open ones go on; a broken
rotation keeps the current files; ``extauthz serve`` with ``transport: http`` and ``tls:`` keeps
its plaintext gRPC health port for probes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
import tempfile
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from deploy.pki import CA, Issued, write_secret_volume
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devkit.issuer import DevIssuer
from devkit.ports import LOOPBACK, free_ports
from extauthz import config
from extauthz.config import Settings, TLSSettings
from extauthz.model import CheckInput, Decision, Principal, Reason
from extauthz.server.app import Server
from extauthz.server.http1 import HttpLimits
from extauthz.server.http_service import HttpCheckServer
from extauthz.server.responses import HttpResponses
from extauthz.server.tls import ServerSSLContext, TLSFilesError

# async fixtures run in the session loop (asyncio_default_fixture_loop_scope): so do the tests
session_loop = pytest.mark.asyncio(loop_scope="session")

CHECK = (b"POST /check/x.Y/Allow HTTP/1.1\r\nhost: authz\r\n"
         b"x-extauthz-content-type: application/grpc\r\ncontent-length: 0\r\n\r\n")


class Allow:
    """A decision core that allows everything as alice."""

    async def check(self, req: CheckInput) -> Decision:
        return Decision.allow(Reason.ALLOWED, "ok",
                              principal=Principal(subject="alice", issuer="i", kind="human"))


@dataclass
class Pki:
    """The server's CA, the clients' CA, and the server's Secret volume."""

    server_ca: CA
    client_ca: CA
    secret: Path

    def client(self, ca: CA | None = None, *, tls_max: ssl.TLSVersion | None = None,
               certificate: bool = True) -> ssl.SSLContext:
        """A client context trusting the server CA, with a certificate from ``ca`` (default:
        the client CA) unless ``certificate`` is false."""
        ctx = ssl.create_default_context(cadata=self.server_ca.pem.decode())
        if tls_max is not None:
            ctx.maximum_version = tls_max
        if certificate:
            issued = (ca or self.client_ca).issue("envoy", client=True)
            directory = Path(tempfile.mkdtemp(prefix="client-", dir=self.secret.parent))
            (directory / "tls.crt").write_bytes(issued.cert)
            (directory / "tls.key").write_bytes(issued.key)
            ctx.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def rotate(self, name: str, *, client_ca: bytes | None = None) -> Issued:
        """A new server certificate (and optionally a new client CA bundle), as the kubelet
        writes a renewed Secret."""
        issued = self.server_ca.issue(name, dns=("localhost",), ips=(LOOPBACK,))
        write_secret_volume(self.secret, issued, ca=client_ca or self.client_ca.pem)
        return issued


def _settings(secret: Path, *, mtls: bool = True) -> TLSSettings:
    return TLSSettings(cert_file=str(secret / "tls.crt"), key_file=str(secret / "tls.key"),
                       client_ca_file=str(secret / "ca.crt") if mtls else "",
                       require_client_cert=mtls)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    out = Pki(CA("server-ca"), CA("client-ca"), tmp_path / "tls")
    out.rotate("extauthz")
    return out


async def _listener(tls: TLSSettings,
                    limits: HttpLimits | None = None) -> tuple[HttpCheckServer, ServerSSLContext]:
    holder = ServerSSLContext(tls)
    srv = HttpCheckServer(Allow(), HttpResponses(), limits=limits, ssl_context=holder.current)
    await srv.start(LOOPBACK, 0)
    return srv, holder


@pytest.fixture
async def mtls(pki: Pki) -> AsyncIterator[tuple[HttpCheckServer, ServerSSLContext]]:
    srv, holder = await _listener(_settings(pki.secret))
    try:
        yield srv, holder
    finally:
        await srv.drain(0.5)


@dataclass
class Answer:
    """What one check over a new connection got: the HTTP status, or the error instead."""

    status: int | None
    error: str = ""
    serial: int = 0
    version: str = ""
    alpn: str | None = None


async def _read_status(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return int(head.split(b" ", 2)[1])


async def check(port: int, ctx: ssl.SSLContext, keep: bool = False) -> Answer:
    """One check on a new TLS connection (server name ``localhost``)."""
    try:
        reader, writer = await asyncio.open_connection(
            LOOPBACK, port, ssl=ctx, server_hostname="localhost", ssl_handshake_timeout=5)
    except (ssl.SSLError, OSError) as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}")
    tls = writer.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True)
    serial = x509.load_der_x509_certificate(der).serial_number
    try:
        writer.write(CHECK)
        status = await _read_status(reader)
    except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
        # TLS 1.3: the server's alert for a missing/unknown client certificate arrives after
        # the client considers the handshake done, at the first read
        return Answer(None, f"{type(exc).__name__}: {exc}", serial)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, OSError):
            await writer.wait_closed()
    return Answer(status, "", serial, tls.version(), tls.selected_alpn_protocol())


def _serial(issued: Issued) -> int:
    return x509.load_pem_x509_certificate(issued.cert).serial_number


# ---- configuration ---------------------------------------------------------------------------


def test_tls_block_is_accepted_with_the_http_transport(tmp_path: Path) -> None:
    """`tls:` with transport http (or both) is valid configuration: one block for every Check
    listener."""
    for transport in ("http", "both"):
        settings = config.from_mapping({"transport": transport, "tls": {
            "cert_file": "/t/tls.crt", "key_file": "/t/tls.key",
            "client_ca_file": "/t/ca.crt"}}, "c.yaml")
        assert settings.serves_http and settings.tls.require_client_cert


# ---- TLS and mTLS ------------------------------------------------------------------------------


@session_loop
async def test_checks_are_answered_over_tls_1_2_and_1_3_with_alpn_http_1_1(pki: Pki) -> None:
    """Without a client CA (TLS only) any client that trusts the server CA is answered, over
    TLS 1.3 and TLS 1.2, with ALPN http/1.1; TLS 1.1 is refused."""
    srv, holder = await _listener(_settings(pki.secret, mtls=False))
    try:
        assert holder.current().minimum_version == ssl.TLSVersion.TLSv1_2
        best = await check(srv.port, pki.client(certificate=False))
        assert (best.status, best.version, best.alpn) == (200, "TLSv1.3", "http/1.1")
        tls12 = await check(srv.port, pki.client(certificate=False, tls_max=ssl.TLSVersion.TLSv1_2))
        assert (tls12.status, tls12.version) == (200, "TLSv1.2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = pki.client(certificate=False, tls_max=ssl.TLSVersion.TLSv1_1)
            with contextlib.suppress(ValueError, ssl.SSLError):
                old.minimum_version = ssl.TLSVersion.TLSv1
                old.set_ciphers("DEFAULT:@SECLEVEL=0")
        assert (await check(srv.port, old)).status is None
    finally:
        await srv.drain(0.5)


@session_loop
async def test_plaintext_http_to_the_tls_port_gets_no_answer(
        mtls: tuple[HttpCheckServer, ServerSSLContext]) -> None:
    """A plaintext request to the TLS port is never answered as a check (the connection is
    closed by the failed handshake)."""
    srv, _ = mtls
    reader, writer = await asyncio.open_connection(LOOPBACK, srv.port)
    writer.write(CHECK)
    data = await asyncio.wait_for(reader.read(), 5)
    assert b"200" not in data and b"HTTP/1.1" not in data
    writer.close()


@session_loop
async def test_mtls_refuses_a_client_without_a_certificate(
        pki: Pki, mtls: tuple[HttpCheckServer, ServerSSLContext]) -> None:
    """With a client CA a client without a certificate is refused in the handshake (no HTTP
    answer); a client with the client CA's certificate is answered on the same listener."""
    srv, _ = mtls
    refused = await check(srv.port, pki.client(certificate=False))
    assert refused.status is None, refused
    refused12 = await check(srv.port, pki.client(certificate=False,
                                                 tls_max=ssl.TLSVersion.TLSv1_2))
    assert refused12.status is None, refused12
    assert (await check(srv.port, pki.client())).status == 200
    await asyncio.sleep(0.1)
    assert len(srv.connections) == 0 and len(srv.handshakes) == 0


@session_loop
async def test_mtls_refuses_a_certificate_from_another_ca(
        pki: Pki, mtls: tuple[HttpCheckServer, ServerSSLContext]) -> None:
    """A client certificate from a CA other than the configured client CA (even the server's
    own CA) is refused, over TLS 1.3 and 1.2."""
    srv, _ = mtls
    for ca in (CA("rogue"), pki.server_ca):
        for tls_max in (None, ssl.TLSVersion.TLSv1_2):
            answer = await check(srv.port, pki.client(ca, tls_max=tls_max))
            assert answer.status is None, (ca, tls_max, answer)


@session_loop
async def test_rotated_certificate_reaches_new_connections_while_open_ones_continue(
        pki: Pki, mtls: tuple[HttpCheckServer, ServerSSLContext]) -> None:
    """After the Secret is rotated the next new connection gets the new certificate (no
    restart); a connection opened before keeps working on the old one."""
    srv, holder = mtls
    client = pki.client()
    before = await check(srv.port, client)
    assert before.status == 200
    reader, writer = await asyncio.open_connection(LOOPBACK, srv.port, ssl=client,
                                                   server_hostname="localhost")
    writer.write(CHECK)
    assert await _read_status(reader) == 200
    renewed = pki.rotate("extauthz-renewed")
    after = await check(srv.port, client)
    assert (after.status, after.serial) == (200, _serial(renewed))
    assert after.serial != before.serial
    assert holder.files.reloads == 1
    writer.write(CHECK)  # the old connection, still on the old certificate
    assert await _read_status(reader) == 200
    writer.close()


def _resuming_check(port: int, ctx: ssl.SSLContext,
                    session: ssl.SSLSession | None) -> tuple[int | None, ssl.SSLSession | None,
                                                            bool]:
    """One check on a new connection offering ``session`` for resumption: (status or None,
    the session, whether it was resumed)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(CHECK)
            head = tls.recv(65536)
            return int(head.split(b" ", 2)[1]), tls.session, bool(tls.session_reused)
    except (ssl.SSLError, OSError, IndexError, ValueError):
        return None, None, False


@session_loop
async def test_rotated_client_ca_admits_its_clients_and_refuses_the_old_ones(
        pki: Pki, mtls: tuple[HttpCheckServer, ServerSSLContext]) -> None:
    """A new client CA bundle applies to the next handshake: clients of the new CA get in,
    clients of the old CA are refused, even one resuming a TLS session it got before the
    rotation (sessions resume while the files stay the same, never across a rotation)."""
    srv, _ = mtls
    old_client = pki.client(tls_max=ssl.TLSVersion.TLSv1_2)
    status, session, _ = await asyncio.to_thread(_resuming_check, srv.port, old_client, None)
    assert status == 200 and session is not None
    status, session, resumed = await asyncio.to_thread(_resuming_check, srv.port, old_client,
                                                       session)
    assert (status, resumed) == (200, True)
    new_ca = CA("client-ca-2")
    pki.rotate("extauthz", client_ca=new_ca.pem)
    assert (await check(srv.port, pki.client(new_ca))).status == 200
    assert (await asyncio.to_thread(_resuming_check, srv.port, old_client, session))[0] is None
    assert (await check(srv.port, pki.client())).status is None
    assert (await check(srv.port, pki.client(certificate=False))).status is None


@session_loop
async def test_broken_rotation_keeps_serving_the_current_files(
        pki: Pki, mtls: tuple[HttpCheckServer, ServerSSLContext]) -> None:
    """A rotation caught half-way (new certificate, old key) is rejected: new connections keep
    getting the current certificate; the completed rotation is adopted next."""
    srv, holder = mtls
    client = pki.client()
    current = await check(srv.port, client)
    half = pki.server_ca.issue("extauthz-renewed", dns=("localhost",))
    old_key = (pki.secret / "tls.key").read_bytes()
    write_secret_volume(pki.secret, Issued(half.cert, old_key, pki.client_ca.pem),
                        ca=pki.client_ca.pem)
    still = await check(srv.port, client)
    assert (still.status, still.serial) == (200, current.serial)
    assert holder.files.rejected == 1
    renewed = pki.rotate("extauthz-renewed")
    assert (await check(srv.port, client)).serial == _serial(renewed)


@session_loop
async def test_a_silent_client_is_closed_after_the_handshake_timeout(pki: Pki) -> None:
    """A TCP connection that never starts its handshake holds a connection slot only until
    request_timeout; handshakes in progress count against max_connections."""
    srv, _ = await _listener(_settings(pki.secret),
                             HttpLimits(request_timeout=0.5, max_connections=2))
    try:
        silent = [await asyncio.open_connection(LOOPBACK, srv.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert len(srv.handshakes) == 2
        extra_reader, _extra = await asyncio.open_connection(LOOPBACK, srv.port)
        assert await asyncio.wait_for(extra_reader.read(), 2) == b""  # over the cap: closed
        for reader, _ in silent:
            assert await asyncio.wait_for(reader.read(), 3) == b""
        for _ in range(50):
            if not srv.handshakes:
                break
            await asyncio.sleep(0.01)
        assert len(srv.handshakes) == 0
        assert (await check(srv.port, pki.client())).status == 200
    finally:
        await srv.drain(0.5)


def test_tls_listener_serves_under_uvloop(pki: Pki) -> None:
    """Under uvloop (what `extauthz serve` runs), which starts reading a new connection right
    after connection_made: the ClientHello reaches the TLS layer, a client with a certificate
    is answered and one without is refused."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[Answer, Answer]:
        srv, _ = await _listener(_settings(pki.secret))
        try:
            return (await check(srv.port, pki.client()),
                    await check(srv.port, pki.client(certificate=False)))
        finally:
            await srv.drain(0.5)

    good, refused = uvloop.run(asyncio.wait_for(scenario(), 20))
    assert good.status == 200, good
    assert refused.status is None, refused


def test_unusable_files_stop_the_start(tmp_path: Path, pki: Pki) -> None:
    """Missing files, or a key that does not belong to the certificate, are an error before
    the listener exists (never a plaintext fallback)."""
    with pytest.raises(TLSFilesError, match="cannot read"):
        ServerSSLContext(_settings(tmp_path / "missing"))
    other = pki.server_ca.issue("other")
    write_secret_volume(pki.secret, Issued(pki.server_ca.issue("x").cert, other.key,
                                           pki.client_ca.pem))
    with pytest.raises(TLSFilesError, match="does not belong"):
        ServerSSLContext(_settings(pki.secret))


# ---- the server --------------------------------------------------------------------------------


def _grpc_health(port: int) -> int:
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization"),
            timeout=5).status)


@session_loop
async def test_serve_http_with_mtls_keeps_a_plaintext_health_port(tmp_path: Path,
                                                                  pki: Pki) -> None:
    """`transport: http` with `tls:`: /healthz and checks need a client certificate on the HTTP
    port; the plaintext health_listen answers gRPC health (Kubernetes probes) as in gRPC mode."""
    dev = DevIssuer().start()
    health, http_port, grpc_port = free_ports(3)
    settings = config.apply_env(Settings(), {
        "TEMPORAL_AUTH_PROVIDER_URL": dev.url, "TEMPORAL_AUTH_CLIENT_ID": "temporal",
        "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1", "EXTAUTHZ_TRANSPORT": "http",
        "EXTAUTHZ_HTTP_LISTEN": f"{LOOPBACK}:{http_port}",
        "EXTAUTHZ_LISTEN": f"{LOOPBACK}:{grpc_port}",
        "EXTAUTHZ_HEALTH_LISTEN": f"{LOOPBACK}:{health}",
        "EXTAUTHZ_TLS_CERT_FILE": str(pki.secret / "tls.crt"),
        "EXTAUTHZ_TLS_KEY_FILE": str(pki.secret / "tls.key"),
        "EXTAUTHZ_TLS_CLIENT_CA_FILE": str(pki.secret / "ca.crt")})
    server = Server(dataclasses.replace(settings, shutdown_delay_seconds=0,
                                        shutdown_grace_seconds=1))
    await server.start()
    readiness = asyncio.create_task(server.watch_readiness())
    try:
        assert server.http_tls is not None and server.port == 0
        for _ in range(100):
            if server.serving:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_grpc_health, health) == \
            health_pb2.HealthCheckResponse.SERVING
        healthz = CHECK.replace(b"POST /check/x.Y/Allow", b"GET /healthz")
        reader, writer = await asyncio.open_connection(
            LOOPBACK, server.http_port, ssl=pki.client(), server_hostname="localhost")
        writer.write(healthz)
        assert await _read_status(reader) == 200
        writer.close()
        assert (await check(server.http_port, pki.client(certificate=False))).status is None
    finally:
        server.request_stop()
        await readiness
        await server.stop()
        dev.stop()
