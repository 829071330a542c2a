"""One HTTP/2 connection of the unary gRPC server: frames in, handlers called, frames out.

Everything a server must do is here and nothing more: the preface and SETTINGS exchange, HPACK
decoding (``hpack``) across HEADERS + CONTINUATION, flow control both ways, PING, RST_STREAM,
GOAWAY (the peer's, and ours in two phases on drain), and every malformed frame refused as the
RFC says: a connection error (GOAWAY, then close) or a stream error (RST_STREAM). A failure is
never an answer: a handler that raises gets ``INTERNAL``, which Envoy reads as a denial.

A call whose handler completes without suspending (a cached token) is answered inside
``data_received`` with one write of three precomputed-layout frames; only a call that really
suspends gets a Task (``server.coroutines``).
"""

from __future__ import annotations

import asyncio
from typing import cast

import hpack
import structlog

from extauthz.server.h2grpc import frames as f
from extauthz.server.h2grpc.calls import Calls, H2Error, Stream

log = structlog.get_logger("extauthz.h2grpc")
_HEAD = f.HEAD
_DRAIN_PING = b"drain\x00\x00\x00"
_DECODED_ENTRIES = 64
MAX_HEADER_BLOCK = 64 * 1024  # bytes of one header block across CONTINUATION frames


class Connection(Calls, asyncio.Protocol):
    """The server side of one HTTP/2 connection (h2c prior knowledge, or TLS with ALPN h2)."""

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.connections) >= self.limits.max_connections:
            log.warning("h2grpc.connection_limit", limit=self.limits.max_connections)
            self.closed = True
            cast(asyncio.Transport, transport).abort()
            return
        self.server.connections.add(self)
        self.out.append(f.settings(self.server.settings_frame_values))
        self.out.append(f.window_update(0, self.limits.connection_window - f.DEFAULT_WINDOW))
        if self.server.draining:
            self.drain()
        self.flush()
        if not self.preface:  # a peer that never completes its preface (slowloris) is closed
            self.preface_timer = asyncio.get_running_loop().call_later(
                self.limits.handshake_timeout, self.preface_expired)
        if self.early:  # TLS: bytes that came with the handshake's last flight
            early, self.early = b"".join(self.early), []
            self.data_received(early)

    def preface_expired(self) -> None:
        if not self.preface and not self.closed and self.transport is not None:
            log.info("h2grpc.preface_timeout")
            self.transport.abort()

    def connection_lost(self, _exc: Exception | None) -> None:
        self.closed = True
        if self.preface_timer is not None:
            self.preface_timer.cancel()
        self.server.connections.discard(self)
        for st in self.streams.values():
            self.release(st)
            if st.task is not None:
                st.task.cancel()
        self.streams.clear()
        self.server.connection_closed()

    def pause_writing(self) -> None:
        """The peer is not reading what we send: read nothing more from it until it does (a
        PING or SETTINGS flood would otherwise queue its ACKs in memory without bound)."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:  # TLS: start_tls may deliver before connection_made
            self.early.append(data)
            return
        buf = self.buf + data if self.buf else data
        try:
            if not self.preface:
                if len(buf) < 24:
                    if not f.PREFACE.startswith(buf):
                        raise H2Error(f.PROTOCOL_ERROR, "not an HTTP/2 preface")
                    self.buf = buf
                    return
                if buf[:24] != f.PREFACE:
                    raise H2Error(f.PROTOCOL_ERROR, "not an HTTP/2 preface")
                self.preface = True
                buf = buf[24:]
            pos, end = 0, len(buf)
            max_frame = self.limits.max_frame
            while end - pos >= 9 and not self.closed:
                word, flags, sid = _HEAD.unpack_from(buf, pos)
                length = word >> 8
                if length > max_frame:
                    raise H2Error(f.FRAME_SIZE_ERROR, "frame larger than MAX_FRAME_SIZE")
                if end - pos - 9 < length:
                    break
                payload = buf[pos + 9:pos + 9 + length]
                pos += 9 + length
                self.on_frame(word & 0xFF, flags, sid & 0x7FFFFFFF, payload)
            self.buf = buf[pos:]
        except H2Error as exc:
            self.fail(exc.code, str(exc))
        except hpack.HPACKError as exc:
            self.fail(f.COMPRESSION_ERROR, f"HPACK: {type(exc).__name__}")
        self.flush()

    # ---- frames -------------------------------------------------------------------------

    def on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        """Dispatch one frame (CONTINUATION must follow its HEADERS immediately)."""
        if self.block is not None and kind != f.CONTINUATION:
            raise H2Error(f.PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == f.DATA:
            self.on_data(flags, sid, payload)
        elif kind == f.HEADERS:
            self.on_headers(flags, sid, payload)
        elif kind == f.CONTINUATION:
            self.on_continuation(flags, sid, payload)
        elif kind == f.SETTINGS:
            self.on_settings(flags, sid, payload)
        elif kind == f.WINDOW_UPDATE:
            self.on_window_update(sid, payload)
        elif kind == f.PING:
            self.on_ping(flags, sid, payload)
        elif kind == f.RST_STREAM:
            self.on_rst_stream(sid, payload)
        elif kind == f.PRIORITY:
            if sid == 0:
                raise H2Error(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self.reset(sid, f.FRAME_SIZE_ERROR)
        elif kind == f.GOAWAY:
            if sid != 0:
                raise H2Error(f.PROTOCOL_ERROR, "GOAWAY on a stream")
            self.peer_gone = True
            self.maybe_close()
        elif kind == f.PUSH_PROMISE:
            raise H2Error(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # unknown frame types are ignored (RFC 9113 §4.1)

    def on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self.block is None or sid != self.block_stream:
            raise H2Error(f.PROTOCOL_ERROR, "unexpected CONTINUATION")
        self.block += payload
        if len(self.block) > MAX_HEADER_BLOCK:
            raise H2Error(f.ENHANCE_YOUR_CALM, "header block too large")
        if flags & f.END_HEADERS:
            block, self.block = bytes(self.block), None
            self.on_header_block(sid, block, self.block_end_stream)

    def on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2Error(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2Error(f.FRAME_SIZE_ERROR, "PING of length != 8")
        if not flags & f.ACK:
            self.out.append(f.frame(f.PING, f.ACK, 0, payload))
        elif payload == _DRAIN_PING and self.draining:
            self.final_goaway()

    def on_rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2Error(f.FRAME_SIZE_ERROR, "RST_STREAM of length != 4")
        if sid > self.last_stream:
            raise H2Error(f.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        st = self.streams.pop(sid, None)
        if st is not None:
            self.release(st)
            if st.task is not None:
                st.task.cancel()
        self.maybe_close()

    def on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2Error(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise H2Error(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise H2Error(f.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise H2Error(f.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                self.window_shift += value - self.peer_initial
                self.peer_initial = value
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_FRAME <= value <= f.MAX_FRAME_LIMIT:
                    raise H2Error(f.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.peer_max_frame = value
            elif key == f.ENABLE_PUSH and value > 1:
                raise H2Error(f.PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
            # HEADER_TABLE_SIZE: our encodings never use the dynamic table
        self.out.append(f.frame(f.SETTINGS, f.ACK, 0))
        self.send_pending()

    def on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE of length != 4")
        increment = f.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise H2Error(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise H2Error(f.FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            if sid > self.last_stream:
                raise H2Error(f.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            st = self.streams.get(sid)
            if st is None:
                return
            if increment == 0:
                self.reset(sid, f.PROTOCOL_ERROR)
                return
            if self.window(st) + increment > f.MAX_WINDOW:
                self.reset(sid, f.FLOW_CONTROL_ERROR)
                return
            st.send_window += increment
        self.send_pending()

    def on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise H2Error(f.PROTOCOL_ERROR, "HEADERS on stream 0 or an even stream")
        if flags & (f.PADDED | f.PRIORITY_FLAG):
            start = 0
            pad = 0
            if flags & f.PADDED:
                if not payload:
                    raise H2Error(f.PROTOCOL_ERROR, "PADDED HEADERS without a length")
                pad, start = payload[0], 1
            if flags & f.PRIORITY_FLAG:
                start += 5
            if start + pad > len(payload):
                raise H2Error(f.PROTOCOL_ERROR, "padding exceeds the frame")
            payload = payload[start:len(payload) - pad]
        if flags & f.END_HEADERS:
            self.on_header_block(sid, payload, bool(flags & f.END_STREAM))
        else:
            self.block, self.block_stream = bytearray(payload), sid
            self.block_end_stream = bool(flags & f.END_STREAM)

    def on_header_block(self, sid: int, block: bytes, end_stream: bool) -> None:
        """A complete header block: a new call, or a stream's trailers."""
        table = self.decoder.header_table
        entries = table.dynamic_entries
        # the table's size and contents, by value: object ids could be reused after an
        # eviction, and a stale decode would hand one call another call's headers
        state = (table.maxsize, tuple(entries))
        hit = self.decoded.get(block)
        if hit is not None and hit[0] == state:
            headers = hit[1]
        else:
            # always decoded (a refused stream too): keeps the HPACK state
            headers = cast(list[tuple[bytes, bytes]], self.decoder.decode(block, raw=True))
            if (table.maxsize, tuple(entries)) != state:
                self.decoded.clear()  # the dynamic table changed: every cached decode is stale
            elif len(self.decoded) < _DECODED_ENTRIES:
                # decoding left the table as it was: the same bytes decode the same, and
                # skipping the decode leaves the table as decoding would
                self.decoded[block] = (state, headers)
        st = self.streams.get(sid)
        if st is not None:  # trailers
            if st.ended:  # half-closed (remote): never a second dispatch of one stream
                self.reset(sid, f.STREAM_CLOSED)
                return
            if not end_stream:
                self.reset(sid, f.PROTOCOL_ERROR)
                return
            st.ended = True
            self.dispatch(st)
            return
        if sid <= self.last_stream:
            return  # a stream already closed (we may have reset it): ignore
        self.last_stream = sid
        if self.goaway_last is not None or self.peer_gone:
            self.reset(sid, f.REFUSED_STREAM)
            return
        if len(self.streams) >= self.limits.max_streams:
            self.reset(sid, f.REFUSED_STREAM)
            return
        st = Stream(sid, self.peer_initial, self.limits.stream_window, shift=self.window_shift)
        path = method = content_type = b""
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
        if method != b"POST" or not content_type.startswith(b"application/grpc"):
            self.http_error(sid, b"405" if method != b"POST" else b"415", end_stream)
            return
        st.path = path
        self.streams[sid] = st
        if end_stream:
            st.ended = True
            self.dispatch(st)

    def on_data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise H2Error(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_unacked += size
        if self.recv_unacked >= self.limits.connection_window // 2:
            self.out.append(f.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        if sid == 0:
            raise H2Error(f.PROTOCOL_ERROR, "DATA on stream 0")
        if sid > self.last_stream:
            raise H2Error(f.PROTOCOL_ERROR, "DATA on an idle stream")
        st = self.streams.get(sid)
        if st is None:
            return  # closed or reset by us: already counted for the connection
        if st.ended:
            self.reset(sid, f.STREAM_CLOSED)
            return
        st.recv_window -= size
        if st.recv_window < 0:
            self.reset(sid, f.FLOW_CONTROL_ERROR)
            return
        if flags & f.PADDED:
            if not payload or payload[0] >= size:
                raise H2Error(f.PROTOCOL_ERROR, "padding exceeds the frame")
            payload = payload[1:size - payload[0]]
        if self.server.buffered + len(payload) > self.limits.max_buffered:
            self.error(st, 8, "server receive buffers full")
            return
        self.server.buffered += len(payload)
        if st.body:
            if isinstance(st.body, bytes):
                st.body = bytearray(st.body)
            st.body += payload
        else:
            st.body = payload
        if len(st.body) > self.limits.max_message + 5:
            self.error(st, 8, f"message larger than {self.limits.max_message} bytes")
            return
        if flags & f.END_STREAM:
            st.ended = True
            self.dispatch(st)
            return
        st.unacked += size
        if st.unacked >= self.limits.stream_window // 2:
            self.out.append(f.window_update(sid, st.unacked))
            st.recv_window += st.unacked
            st.unacked = 0

    # ---- connection lifetime ------------------------------------------------------------

    def drain(self) -> None:
        """Graceful stop, phase one: GOAWAY(2^31-1) and a PING; the ACK triggers phase two."""
        if self.draining or self.closed:
            return
        self.draining = True
        self.out.append(f.goaway(f.MAX_WINDOW, f.NO_ERROR))
        self.out.append(f.frame(f.PING, 0, 0, _DRAIN_PING))
        self.flush()

    def final_goaway(self) -> None:
        """Phase two: GOAWAY naming the last stream we will answer; close once all are done."""
        if self.goaway_last is None:
            self.goaway_last = self.last_stream
            self.out.append(f.goaway(self.last_stream, f.NO_ERROR))
        self.maybe_close()

    def fail(self, code: int, why: str) -> None:
        """A connection error: GOAWAY with ``code`` and the reason, then close."""
        log.info("h2grpc.connection_error", code=code, reason=why)
        self.out.append(f.goaway(self.last_stream, code, why.encode()[:200]))
        self.flush()
        for st in self.streams.values():
            self.release(st)
            if st.task is not None:
                st.task.cancel()
        self.streams.clear()
        if self.transport is not None:
            self.transport.close()
        self.closed = True
