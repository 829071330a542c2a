"""Conformance of the hand-framed gRPC server (``grpc_server: h2``, ``extauthz.server.h2grpc``):
the grpcio client, 4 MiB bodies under flow control, CONTINUATION, PING, RST_STREAM, SETTINGS
changes, GOAWAY and drain, h2c prior knowledge and TLS with ALPN h2, malformed frames refused
without a crash, and never an allow for a broken call. Frames are crafted with ``hyperframe``
and ``hpack`` (the ``h2`` project's), and the ``h2`` state machine is a strict client."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from cryptography import x509
from deploy.pki import CA, write_secret_volume
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2, status_pb2
from hyperframe import frame as hf

from devkit.ports import LOOPBACK
from extauthz.config import TLSSettings
from extauthz.server.h2grpc.calls import GrpcError
from extauthz.server.h2grpc.server import H2GrpcServer, H2Limits
from extauthz.server.h2grpc.tls import with_h2_alpn
from extauthz.server.tls import ServerSSLContext

# async fixtures run in the session loop (asyncio_default_fixture_loop_scope): so do the tests
pytestmark = pytest.mark.asyncio(loop_scope="session")
CHECK = "/envoy.service.auth.v3.Authorization/Check"
SLOW = "/test.Slow/Call"
BOOM = "/test.Boom/Call"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
BIG_ECHO_MIN = 100_000


async def _check(message: bytes) -> bytes:
    """Parses the CheckRequest; allows; a request body >= 100 kB is echoed back in a denial
    message (a large response, to exercise our send-side flow control)."""
    req = external_auth_pb2.CheckRequest.FromString(message)
    body = req.attributes.request.http.raw_body
    if len(body) >= BIG_ECHO_MIN:
        return bytes(external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED,
                                     message=body.decode("latin-1"))).SerializeToString())
    return bytes(OK.SerializeToString())


async def _slow(message: bytes) -> bytes:
    """Suspends for the number of milliseconds in the message, then echoes it."""
    await asyncio.sleep(int(message or b"0") / 1000)
    return message


async def _boom(message: bytes) -> bytes:
    """Raises: the server must answer INTERNAL, never OK."""
    if message == b"grpc":
        raise GrpcError(code_pb2.PERMISSION_DENIED, "nope: ünïcode % message")
    raise RuntimeError("handler bug")


ROUTES = {CHECK.encode(): _check, SLOW.encode(): _slow, BOOM.encode(): _boom}


@pytest.fixture
async def server() -> AsyncIterator[tuple[H2GrpcServer, int]]:
    srv = H2GrpcServer(dict(ROUTES), H2Limits(max_message=8 * 1024 * 1024))
    port = await srv.start(LOOPBACK, 0)
    try:
        yield srv, port
    finally:
        await srv.drain(0.5)


# ---- a raw client -------------------------------------------------------------------------


class Raw:
    """A byte-level HTTP/2 client: write any frame, read the server's frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()

    @classmethod
    async def open(cls, port: int, *, preface: bool = True) -> Raw:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        raw = cls(reader, writer)
        if preface:
            raw.send(PREFACE + hf.SettingsFrame(0).serialize())
        return raw

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def headers_block(self, path: str = CHECK) -> bytes:
        return bytes(self.encoder.encode([
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "extauthz"), ("content-type", "application/grpc"), ("te", "trailers"),
        ]))

    def request(self, sid: int, message: bytes, path: str = CHECK) -> None:
        """HEADERS then one DATA with END_STREAM."""
        self.send(hf.HeadersFrame(sid, self.headers_block(path), flags=["END_HEADERS"])
                  .serialize())
        data = b"\x00" + struct.pack(">I", len(message)) + message
        self.send(hf.DataFrame(sid, data, flags=["END_STREAM"]).serialize())

    async def frame(self, timeout: float = 5.0) -> hf.Frame | None:
        """The next frame, or None when the server closed the connection."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(9), timeout)
        except asyncio.IncompleteReadError:
            return None
        f, length = hf.Frame.parse_frame_header(memoryview(head))
        f.parse_body(memoryview(await self.reader.readexactly(length)))
        return f

    async def until(self, kind: type[hf.Frame], timeout: float = 5.0) -> hf.Frame | None:
        """Frames up to the first of ``kind`` (None: closed first); headers decoded on the
        way so the HPACK state follows."""
        while True:
            f = await self.frame(timeout)
            if f is None or isinstance(f, kind):
                if isinstance(f, hf.HeadersFrame):
                    f.decoded = self.decoder.decode(f.data)  # type: ignore[attr-defined]
                return f
            if isinstance(f, hf.HeadersFrame):
                self.decoder.decode(f.data)

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (after any frames) within ``timeout``."""
        with contextlib.suppress(ConnectionError):
            while await self.frame(timeout) is not None:
                pass
            return True
        return True

    async def status(self, sid: int) -> str:
        """The grpc-status of stream ``sid``'s final HEADERS."""
        while True:
            f = await self.until(hf.HeadersFrame)
            assert f is not None, "connection closed before the trailers"
            if f.stream_id == sid and "END_STREAM" in f.flags:
                return dict(f.decoded)["grpc-status"]  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        self.writer.close()


async def _goaway(raw: Raw) -> hf.GoAwayFrame:
    f = await raw.until(hf.GoAwayFrame)
    assert isinstance(f, hf.GoAwayFrame)
    return f


async def _still_serves(port: int) -> None:
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        reply = await channel.unary_unary(CHECK)(
            external_auth_pb2.CheckRequest().SerializeToString(), timeout=5)
    assert external_auth_pb2.CheckResponse.FromString(reply).status.code == code_pb2.OK


# ---- the grpcio client --------------------------------------------------------------------


async def test_grpcio_client_checks_over_h2c_prior_knowledge(server: tuple[H2GrpcServer, int]
                                                             ) -> None:
    """grpc.aio's client gets OK Checks over h2c, many concurrently on one connection."""
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{server[1]}") as channel:
        check = channel.unary_unary(CHECK)
        replies = await asyncio.gather(*(check(b"", timeout=5) for _ in range(200)))
    assert {external_auth_pb2.CheckResponse.FromString(r).status.code for r in replies} == {0}


async def test_4_mib_requests_and_1_mib_responses_pass_flow_control(
        server: tuple[H2GrpcServer, int]) -> None:
    """4 MiB bodies (beyond every initial window) arrive whole; 1 MiB answers go out under the
    client's windows; five at once on one connection."""
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{server[1]}", options=[
            ("grpc.max_receive_message_length", 8 << 20)]) as channel:
        check = channel.unary_unary(CHECK)

        async def one(fill: bytes, size: int) -> None:
            req = external_auth_pb2.CheckRequest()
            req.attributes.request.http.raw_body = fill * size
            reply = external_auth_pb2.CheckResponse.FromString(
                await check(req.SerializeToString(), timeout=30))
            assert reply.status.message == (fill * size).decode()

        await asyncio.gather(one(b"a", 4 << 20), one(b"b", 1 << 20), one(b"c", 4 << 20),
                             one(b"d", 200_000), one(b"e", 4 << 20))


async def test_errors_are_grpc_statuses_never_ok(server: tuple[H2GrpcServer, int]) -> None:
    """Unknown method UNIMPLEMENTED; a handler bug INTERNAL; a handler's status with a
    non-ASCII message arrives intact; a message over the limit RESOURCE_EXHAUSTED."""
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{server[1]}") as channel:
        cases = [("/no.Such/Method", b"", grpc.StatusCode.UNIMPLEMENTED),
                 (BOOM, b"x", grpc.StatusCode.INTERNAL),
                 (BOOM, b"grpc", grpc.StatusCode.PERMISSION_DENIED),
                 (CHECK, b"\x00" * (9 << 20), grpc.StatusCode.RESOURCE_EXHAUSTED)]
        for path, body, code in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary(path)(body, timeout=10)
            assert err.value.code() == code, path
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(BOOM)(b"grpc", timeout=5)
        assert err.value.details() == "nope: ünïcode % message"
        await _still_serves(server[1])


async def test_a_suspending_handler_answers_and_a_reset_cancels_it(
        server: tuple[H2GrpcServer, int]) -> None:
    """A handler that awaits gets a Task and answers; RST_STREAM from the client while it waits
    drops the call (nothing is sent on that stream) and the connection serves on."""
    raw = await Raw.open(server[1])
    raw.request(1, b"300", SLOW)
    raw.send(hf.RstStreamFrame(1, error_code=8).serialize())
    raw.request(3, b"10", SLOW)
    assert await raw.status(3) == "0"
    raw.request(5, b"", CHECK)
    assert await raw.status(5) == "0"
    await asyncio.sleep(0.4)  # stream 1's handler would have answered by now
    raw.send(hf.PingFrame(0, opaque_data=b"12345678").serialize())
    while (f := await raw.frame()) is not None and not isinstance(f, hf.PingFrame):
        assert f.stream_id != 1, f"frame on the reset stream: {f}"
    raw.close()


# ---- frame-level conformance --------------------------------------------------------------


async def test_headers_split_across_continuation_frames(server: tuple[H2GrpcServer, int]
                                                        ) -> None:
    """A header block in HEADERS + 2 CONTINUATION frames is one request."""
    raw = await Raw.open(server[1])
    block = raw.headers_block()
    third = len(block) // 3
    raw.send(hf.HeadersFrame(1, block[:third]).serialize()
             + hf.ContinuationFrame(1, block[third:2 * third]).serialize()
             + hf.ContinuationFrame(1, block[2 * third:], flags=["END_HEADERS"]).serialize()
             + hf.DataFrame(1, b"\x00\x00\x00\x00\x00", flags=["END_STREAM"]).serialize())
    assert await raw.status(1) == "0"
    raw.close()


async def test_repeated_header_blocks_follow_the_dynamic_table(
        server: tuple[H2GrpcServer, int]) -> None:
    """The same all-indexed header block decodes anew after a literal shifted the dynamic
    table: here it names another method and is answered UNIMPLEMENTED, not from a stale
    decode of the earlier identical bytes."""
    raw = await Raw.open(server[1])
    empty = hf.DataFrame(1, b"\x00" * 5, flags=["END_STREAM"])

    def send(sid: int, block: bytes) -> None:
        empty.stream_id = sid
        raw.send(hf.HeadersFrame(sid, block, flags=["END_HEADERS"]).serialize()
                 + empty.serialize())

    send(1, raw.headers_block())  # literals: the entries go into the table
    indexed = raw.headers_block()  # the same headers: now one byte per field
    assert all(b & 0x80 for b in indexed)
    send(3, indexed)
    send(5, indexed)
    assert [await raw.status(sid) for sid in (1, 3, 5)] == ["0", "0", "0"]
    send(7, raw.headers_block("/no.Such/Method"))  # a literal :path shifts every entry
    send(9, indexed)  # its last index now names the new :path
    assert await raw.status(7) == "12"
    assert await raw.status(9) == "12"
    raw.close()


async def test_ping_is_acknowledged_with_its_payload(server: tuple[H2GrpcServer, int]) -> None:
    """PING gets PING ACK carrying the same 8 bytes."""
    raw = await Raw.open(server[1])
    raw.send(hf.PingFrame(0, opaque_data=b"pingpong").serialize())
    f = await raw.until(hf.PingFrame)
    assert isinstance(f, hf.PingFrame) and "ACK" in f.flags and f.opaque_data == b"pingpong"
    raw.close()


async def test_client_settings_tiny_window_and_big_frames_are_obeyed(
        server: tuple[H2GrpcServer, int]) -> None:
    """h2's strict client with a 100-byte initial window (then changed mid-connection) and a
    larger max frame: the server never overruns a window (h2 would raise) and answers all."""
    reader, writer = await asyncio.open_connection(LOOPBACK, server[1])
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: 65_536})
    conn.initiate_connection()
    req = external_auth_pb2.CheckRequest()
    req.attributes.request.http.raw_body = b"z" * 150_000
    message = req.SerializeToString()
    body = b"\x00" + struct.pack(">I", len(message)) + message
    got: dict[int, bytearray] = {}
    done: dict[int, str] = {}

    def send(sid: int) -> None:
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", CHECK),
                                (":authority", "x"), ("content-type", "application/grpc")])
        got[sid] = bytearray()

    pending: dict[int, bytes] = {}
    for sid in (1, 3):
        send(sid)
        pending[sid] = body
    changed = False
    while len(done) < 2:
        for sid in list(pending):
            while sid in pending and (n := min(len(pending[sid]), conn.max_outbound_frame_size,
                                               conn.local_flow_control_window(sid))):
                rest = pending[sid]
                conn.send_data(sid, rest[:n], end_stream=n == len(rest))
                pending[sid] = rest[n:]
                if not pending[sid]:
                    del pending[sid]
        writer.write(conn.data_to_send())
        data = await asyncio.wait_for(reader.read(65_536), 10)
        assert data, "server closed"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                got[ev.stream_id] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if not changed:  # a SETTINGS change while responses are in flight
                    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
                    changed = True
            elif isinstance(ev, h2.events.TrailersReceived):
                done[ev.stream_id] = dict(ev.headers)[b"grpc-status"].decode()
    writer.close()
    assert done == {1: "0", 3: "0"}
    for sid in (1, 3):
        reply = external_auth_pb2.CheckResponse.FromString(bytes(got[sid][5:]))
        assert reply.status.message == "z" * 150_000


@pytest.mark.parametrize(("name", "frames", "code"), [
    ("not a preface", b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", 1),
    ("DATA on stream 0", bytes.fromhex("000001 00 00 00000000") + b"x", 1),
    ("PING of 4 bytes", bytes.fromhex("000004 06 00 00000000") + b"abcd", 6),
    ("SETTINGS of 5 bytes", bytes.fromhex("000005 04 00 00000000") + b"\x00" * 5, 6),
    ("frame over 16 KiB", bytes.fromhex("010000 00 00 00000001") + b"\x00" * 65_536, 6),
    ("HPACK index 200", hf.HeadersFrame(1, b"\xff\x49", flags=["END_HEADERS"]).serialize(), 9),
    ("HEADERS on stream 2", hf.HeadersFrame(2, b"\x82", flags=["END_HEADERS"]).serialize(), 1),
    ("PUSH_PROMISE", bytes.fromhex("000004 05 04 00000001") + b"\x00\x00\x00\x02", 1),
    ("CONTINUATION alone", bytes.fromhex("000001 09 04 00000001 82"), 1),
    ("WINDOW_UPDATE of 0", bytes.fromhex("000004 08 00 00000000 00000000"), 1),
    ("DATA on an idle stream", hf.DataFrame(7, b"x").serialize(), 1),
    ("MAX_FRAME_SIZE too small", bytes.fromhex("000006 04 00 00000000 0005 00000010"), 1),
])
async def test_malformed_frames_are_connection_errors(server: tuple[H2GrpcServer, int],
                                                      name: str, frames: bytes, code: int) -> None:
    """Each malformed frame gets GOAWAY with the RFC's error code, then the connection closes;
    the server serves the next connection."""
    raw = await Raw.open(server[1], preface=name != "not a preface")
    raw.send(frames)
    goaway = await _goaway(raw)
    assert goaway.error_code == code, name
    assert await raw.closed()
    await _still_serves(server[1])


async def test_broken_calls_are_never_an_allow(server: tuple[H2GrpcServer, int]) -> None:
    """A truncated message, a compressed one, two messages, a GET, a text content type:
    each ends with a non-OK gRPC status or an HTTP error, never grpc-status 0."""
    raw = await Raw.open(server[1])
    bad = {1: b"\x00\x00\x00\x00\x09abc", 3: b"\x01\x00\x00\x00\x01x",
           5: b"\x00\x00\x00\x00\x00" * 2, 7: b"\x00\x00\x00"}
    for sid, data in bad.items():
        raw.send(hf.HeadersFrame(sid, raw.headers_block(), flags=["END_HEADERS"]).serialize()
                 + hf.DataFrame(sid, data, flags=["END_STREAM"]).serialize())
    statuses = {sid: await raw.status(sid) for sid in bad}
    assert "0" not in statuses.values(), statuses
    block = bytes(raw.encoder.encode([(":method", "GET"), (":scheme", "http"),
                                      (":path", CHECK), (":authority", "x")]))
    raw.send(hf.HeadersFrame(9, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    f = await raw.until(hf.HeadersFrame)
    assert f is not None and dict(f.decoded)[":status"] == "405"  # type: ignore[attr-defined]
    raw.close()


async def test_random_bytes_after_the_preface_never_crash_the_server(
        server: tuple[H2GrpcServer, int]) -> None:
    """200 connections of random frames: each is answered or closed, the server serves on."""
    rng = random.Random(16)
    for _ in range(200):
        raw = await Raw.open(server[1])
        junk = bytearray(rng.randbytes(rng.randint(1, 300)))
        if rng.random() < 0.5:  # plausible frame headers reach deeper into the parser
            junk[:9] = bytes((0, 0, min(len(junk) - 9, 255) if len(junk) > 9 else 0,
                              rng.randint(0, 10), rng.randint(0, 255), 0, 0, 0,
                              rng.choice((0, 1, 3))))
        raw.send(bytes(junk))
        with contextlib.suppress(ConnectionError, TimeoutError):
            await raw.frame(0.2)
        raw.close()
    await _still_serves(server[1])


# ---- lifetime: GOAWAY, drain ----------------------------------------------------------------


async def test_drain_sends_two_goaways_and_finishes_calls_in_flight() -> None:
    """On drain the client gets GOAWAY(2^31-1) and a PING; after its ACK, GOAWAY naming the
    last stream; a call begun before still completes; a new stream is refused; then close."""
    srv = H2GrpcServer(dict(ROUTES))
    port = await srv.start(LOOPBACK, 0)
    raw = await Raw.open(port)
    raw.send(hf.HeadersFrame(1, raw.headers_block(SLOW), flags=["END_HEADERS"]).serialize())
    await asyncio.sleep(0.1)
    drained = asyncio.create_task(srv.drain(5))
    first = await _goaway(raw)
    assert first.last_stream_id == 2**31 - 1 and first.error_code == 0
    ping = await raw.until(hf.PingFrame)
    assert isinstance(ping, hf.PingFrame)
    raw.send(hf.PingFrame(0, opaque_data=ping.opaque_data, flags=["ACK"]).serialize())
    second = await _goaway(raw)
    assert second.last_stream_id == 1
    raw.send(hf.HeadersFrame(3, raw.headers_block(), flags=["END_HEADERS"]).serialize())
    raw.send(hf.DataFrame(1, b"\x00\x00\x00\x00\x0250", flags=["END_STREAM"]).serialize())
    refused = await raw.until(hf.RstStreamFrame)
    assert isinstance(refused, hf.RstStreamFrame)
    assert refused.stream_id == 3 and refused.error_code == 7
    assert await raw.status(1) == "0"
    assert await raw.closed()
    await asyncio.wait_for(drained, 5)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(LOOPBACK, port)


async def test_peer_goaway_closes_once_calls_finish(server: tuple[H2GrpcServer, int]) -> None:
    """A client's GOAWAY: its open call is answered, then the server closes."""
    raw = await Raw.open(server[1])
    raw.send(hf.HeadersFrame(1, raw.headers_block(SLOW), flags=["END_HEADERS"]).serialize()
             + hf.GoAwayFrame(0, last_stream_id=0).serialize()
             + hf.DataFrame(1, b"\x00\x00\x00\x00\x0220", flags=["END_STREAM"]).serialize())
    assert await raw.status(1) == "0"
    assert await raw.closed()


# ---- TLS with ALPN h2 -------------------------------------------------------------------------


async def _served_serial(port: int, client: ssl.SSLContext) -> tuple[str | None, int]:
    """(ALPN protocol, certificate serial) a new TLS connection gets."""
    _, writer = await asyncio.open_connection(LOOPBACK, port, ssl=client)
    tls = writer.get_extra_info("ssl_object")
    serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
    writer.close()
    return tls.selected_alpn_protocol(), serial


async def test_tls_negotiates_alpn_h2_serves_grpcio_and_follows_rotated_files(
        tmp_path: Path) -> None:
    """With the project's TLS files the listener negotiates ALPN h2 and grpc.aio's secure
    channel gets OK Checks; after the files rotate, a new connection gets the new
    certificate; a client offering only http/1.1 gets no protocol (never http/1.1)."""
    ca = CA("server-ca")
    first = ca.issue("extauthz", ips=(LOOPBACK,))
    write_secret_volume(tmp_path / "tls", first)
    tls = TLSSettings(cert_file=str(tmp_path / "tls" / "tls.crt"),
                      key_file=str(tmp_path / "tls" / "tls.key"))
    srv = H2GrpcServer(dict(ROUTES), ssl_context=with_h2_alpn(ServerSSLContext(tls).current))
    port = await srv.start(LOOPBACK, 0)
    try:
        client = ssl.create_default_context(cadata=ca.pem.decode())
        client.set_alpn_protocols(["h2", "http/1.1"])
        first_serial = x509.load_pem_x509_certificate(first.cert).serial_number
        assert await _served_serial(port, client) == ("h2", first_serial)
        second = ca.issue("extauthz", ips=(LOOPBACK,))
        write_secret_volume(tmp_path / "tls", second)
        second_serial = x509.load_pem_x509_certificate(second.cert).serial_number
        assert await _served_serial(port, client) == ("h2", second_serial)
        h1_only = ssl.create_default_context(cadata=ca.pem.decode())
        h1_only.set_alpn_protocols(["http/1.1"])
        assert (await _served_serial(port, h1_only))[0] is None  # never http/1.1
        creds = grpc.ssl_channel_credentials(root_certificates=ca.pem)
        async with grpc.aio.secure_channel(f"{LOOPBACK}:{port}", creds) as channel:
            reply = await channel.unary_unary(CHECK)(b"", timeout=5)
        assert external_auth_pb2.CheckResponse.FromString(reply).status.code == 0
    finally:
        await srv.drain(0.5)


# ---- attacks on the authz hop (a compromised pod or a buggy Envoy) ---------------------------


async def test_headers_after_end_stream_never_run_the_handler_again() -> None:
    """Attack: HEADERS+DATA(END_STREAM) to a handler that suspends, then more HEADERS with
    END_STREAM on the same stream. The stream is half-closed (remote): STREAM_CLOSED, and the
    handler runs once (it used to be dispatched again per frame: work amplification past
    MAX_CONCURRENT_STREAMS, and the first run no longer cancellable)."""
    runs: list[bytes] = []

    async def counted(message: bytes) -> bytes:
        runs.append(message)
        await asyncio.sleep(0.3)
        return message

    srv = H2GrpcServer({SLOW.encode(): counted})
    port = await srv.start(LOOPBACK, 0)
    try:
        raw = await Raw.open(port)
        raw.request(1, b"x", SLOW)
        for _ in range(20):
            raw.send(hf.HeadersFrame(1, raw.headers_block(SLOW),
                                     flags=["END_HEADERS", "END_STREAM"]).serialize())
        f = await raw.until(hf.RstStreamFrame)
        assert isinstance(f, hf.RstStreamFrame)
        assert (f.stream_id, f.error_code) == (1, 5)  # STREAM_CLOSED
        await asyncio.sleep(0.5)
        assert runs == [b"x"]
        raw.close()
    finally:
        await srv.drain(0.5)


async def test_a_peer_that_never_reads_cannot_grow_the_servers_write_buffer(
        server: tuple[H2GrpcServer, int]) -> None:
    """Attack: a PING flood (each answered by an ACK) from a client that never reads. The server
    stops reading once its writes back up, so its buffered output stays small (it used to
    queue every ACK in memory: 16 MiB sent, ~16 MiB held)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((LOOPBACK, server[1]))
    sock.setblocking(False)
    _reader, writer = await asyncio.open_connection(sock=sock)
    pings = hf.PingFrame(0, opaque_data=b"flooding").serialize() * 4096  # 68 KiB
    writer.write(PREFACE + hf.SettingsFrame(0).serialize())
    stalled = 0
    for _ in range(16 * 1024 * 1024 // len(pings)):
        writer.write(pings)
        try:
            await asyncio.wait_for(writer.drain(), 0.05)
        except TimeoutError:
            stalled += 1
            if stalled == 5:  # the server stopped reading: the attack is over
                break
    await asyncio.sleep(0.3)
    held = max(c.transport.get_write_buffer_size() for c in server[0].connections
               if c.transport is not None)
    assert held < 1024 * 1024, f"{held} bytes queued for a peer that never reads"
    writer.close()
    await _still_serves(server[1])


async def test_a_connection_that_never_completes_the_preface_is_closed() -> None:
    """Attack: slowloris on the preface (nothing, or half of it, and then silence). The
    connection is closed after the handshake timeout (it used to stay open for ever, a file
    descriptor and a Connection each)."""
    srv = H2GrpcServer(dict(ROUTES), H2Limits(handshake_timeout=0.5))
    port = await srv.start(LOOPBACK, 0)
    try:
        silent = await Raw.open(port, preface=False)
        half = await Raw.open(port, preface=False)
        half.send(PREFACE[:10])
        ok = await Raw.open(port)
        assert await silent.closed(3.0) and await half.closed(3.0)
        await asyncio.sleep(0.3)
        assert len(srv.connections) == 1  # the client that sent its preface stays
        ok.close()
    finally:
        await srv.drain(0.5)


async def test_connections_past_the_limit_are_closed_and_the_rest_served() -> None:
    """Attack: open connections until file descriptors run out. Past max_connections a new
    connection is closed at once; the ones inside the limit are still served."""
    srv = H2GrpcServer(dict(ROUTES), H2Limits(max_connections=3))
    port = await srv.start(LOOPBACK, 0)
    try:
        inside = [await Raw.open(port) for _ in range(3)]
        extra = await Raw.open(port)
        assert await extra.closed(3.0)
        assert len(srv.connections) == 3
        raw = inside[0]
        raw.send(hf.HeadersFrame(1, raw.headers_block(), flags=["END_HEADERS"]).serialize())
        raw.send(hf.DataFrame(1, b"\x00\x00\x00\x00\x00", flags=["END_STREAM"]).serialize())
        assert await raw.status(1) == "0"
        for raw in inside:
            raw.close()
    finally:
        await srv.drain(0.5)


async def test_unfinished_request_bodies_are_bounded_per_server() -> None:
    """Attack: many streams, each with a large body under the message limit and flow control
    but never END_STREAM. The bytes the server holds for unanswered calls stay under its
    budget (each stream past it gets RESOURCE_EXHAUSTED, never an allow); they used to be
    max_streams x max_message (1000 x 16 MiB) per connection, and connections are free."""
    srv = H2GrpcServer(dict(ROUTES), H2Limits(max_message=8 << 20, stream_window=4 << 20,
                                              max_buffered=4 << 20))
    port = await srv.start(LOOPBACK, 0)
    try:
        raw = await Raw.open(port)
        chunk = b"\x00" * 16384
        sids = [1, 3, 5, 7, 9]
        for sid in sids:
            raw.send(hf.HeadersFrame(sid, raw.headers_block(), flags=["END_HEADERS"])
                     .serialize())
            for _ in range(160):  # 2.5 MiB each, 12.5 MiB in all (under every window)
                raw.send(hf.DataFrame(sid, chunk).serialize())
            await raw.writer.drain()
        statuses = [await raw.status(sid) for sid in sids[2:]]
        held = sum(len(st.body) for c in srv.connections for st in c.streams.values())
        assert held <= 4 << 20, f"{held} bytes held for unfinished calls"
        assert set(statuses) == {"8"}, statuses
        assert srv.buffered == held
        raw.close()
        await asyncio.sleep(0.2)
        assert srv.buffered == 0  # released with the connection
        await _still_serves(port)
    finally:
        await srv.drain(0.5)


async def test_window_frames_cost_the_same_with_many_open_streams() -> None:
    """Attack: 1000 open streams (HEADERS, no body), then SETTINGS frames packed with
    INITIAL_WINDOW_SIZE entries and a WINDOW_UPDATE flood. Each frame costs the server O(1),
    not O(open streams) (it used to: 16 KB of SETTINGS took ~130 ms of CPU, 1000 x the cost
    to send it); the windows still end up right for an answer sent afterwards."""
    srv = H2GrpcServer(dict(ROUTES))
    port = await srv.start(LOOPBACK, 0)
    try:
        raw = await Raw.open(port)
        for i in range(1000):
            raw.send(hf.HeadersFrame(1 + 2 * i, raw.headers_block(), flags=["END_HEADERS"])
                     .serialize())
        payload = b"".join(struct.pack(">HI", 4, 65_535 + (i & 1)) for i in range(2700))
        settings = struct.pack(">I", len(payload) << 8 | 4) + b"\x00" * 5 + payload
        flood = settings * 10 + hf.WindowUpdateFrame(0, 1).serialize() * 50_000
        ping = hf.PingFrame(0, opaque_data=b"measured").serialize()
        raw.send(ping)
        assert await raw.until(hf.PingFrame) is not None
        started = time.process_time()
        raw.send(flood + ping)
        assert await raw.until(hf.PingFrame, timeout=60) is not None
        spent = time.process_time() - started
        assert spent < 0.5, f"{spent:.2f} s of CPU for 0.8 MB of window frames"
        raw.send(hf.DataFrame(1999, b"\x00" * 5, flags=["END_STREAM"]).serialize())
        assert await raw.status(1999) == "0"
        raw.close()
    finally:
        await srv.drain(0.5)
