"""The call side of an HTTP/2 connection: the state a connection keeps, each call's
handler run (synchronously when it never suspends), and the frames that answer it under the
peer's flow control; stream and connection errors as exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hpack
import structlog

from extauthz.server.coroutines import resume, step
from extauthz.server.h2grpc import frames as f

if TYPE_CHECKING:
    from extauthz.server.h2grpc.server import H2GrpcServer

log = structlog.get_logger("extauthz.h2grpc")
_HEAD = f.HEAD
_RESP = f.RESPONSE_HEADERS
_TRAIL = f.TRAILERS_OK
_RESP_HEAD = len(_RESP) << 8 | f.HEADERS
_TRAIL_HEAD = len(_TRAIL) << 8 | f.HEADERS

class H2Error(Exception):
    """A connection error: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


class GrpcError(Exception):
    """A handler's non-OK answer: gRPC status ``code`` with ``message``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True, eq=False)
class Stream:
    """One call: its request as it arrives, its send window, what waits for that window."""

    id: int
    send_window: int
    recv_window: int
    path: bytes = b""
    body: bytes | bytearray = b""
    ended: bool = False  # the peer sent END_STREAM
    task: asyncio.Task[None] | None = None
    pending: bytes = b""  # response DATA waiting for window, then the trailers
    unacked: int = 0  # bytes received since our last stream WINDOW_UPDATE
    shift: int = 0  # the connection's window_shift that send_window includes


# the dynamic table's size limit and its entries, by value
TableState = tuple[int, tuple[tuple[bytes, bytes], ...]]


class Calls:
    """A connection's state, and answering its calls."""

    def __init__(self, server: H2GrpcServer):
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.preface = False
        self.preface_timer: asyncio.TimerHandle | None = None
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = self.limits.max_header_list
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.send_window = f.DEFAULT_WINDOW  # the peer's connection window for our DATA
        self.recv_window = self.limits.connection_window  # ours, as advertised
        self.recv_unacked = 0
        self.peer_initial = f.DEFAULT_WINDOW
        # the sum of INITIAL_WINDOW_SIZE changes, applied to a stream's window when it is used
        # (``window``): a SETTINGS frame costs O(1), not O(open streams)
        self.window_shift = 0
        self.waiting: dict[int, Stream] = {}  # streams whose answer waits for window
        self.peer_max_frame = f.DEFAULT_FRAME
        self.block: bytearray | None = None  # a header block awaiting CONTINUATION
        self.block_stream = 0
        self.block_end_stream = False
        self.goaway_last: int | None = None  # our final GOAWAY's last stream id
        self.draining = False
        self.peer_gone = False
        self.closed = False
        self.out: list[bytes] = []
        self.early: list[bytes] = []
        # header blocks that left the HPACK dynamic table unchanged, with the table's state
        # header block -> (the HPACK table it was decoded under, its headers)
        self.decoded: dict[bytes, tuple[TableState, list[tuple[bytes, bytes]]]] = {}


    # ---- calls --------------------------------------------------------------------------

    def dispatch(self, st: Stream) -> None:
        """The request is complete: call its handler; answer now or when it finishes."""
        handler = self.server.routes.get(st.path)
        if handler is None:
            self.error(st, 12, f"unknown method {st.path.decode('latin-1')}")
            return
        body = bytes(st.body)
        if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5]) != len(body) - 5:
            self.error(st, 13 if len(body) >= 5 and body[0] != 1 else 12,
                       "expected one uncompressed length-prefixed message")
            return
        coro = handler(body[5:])
        try:
            done, value = step(coro)
        except GrpcError as exc:
            self.error(st, exc.code, exc.message)
            return
        except Exception:
            log.exception("h2grpc.handler_failed")
            self.error(st, 13, "internal error")
            return
        if done:
            self.respond(st, value)
        else:
            st.task = asyncio.get_running_loop().create_task(self.finish(st, coro, value))

    async def finish(self, st: Stream, coro: Coroutine[Any, Any, bytes],
                     suspended: Any) -> None:
        """Finish a handler that suspended, then answer (unless the stream went away)."""
        try:
            value = await resume(coro, suspended)
        except GrpcError as exc:
            if self.streams.get(st.id) is st:
                self.error(st, exc.code, exc.message)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("h2grpc.handler_failed")
            if self.streams.get(st.id) is st:
                self.error(st, 13, "internal error")
        else:
            if self.streams.get(st.id) is st:
                self.respond(st, value)
        self.flush()

    def window(self, st: Stream) -> int:
        """The stream's send window, with the INITIAL_WINDOW_SIZE changes since last used."""
        if st.shift != self.window_shift:
            st.send_window += self.window_shift - st.shift
            st.shift = self.window_shift
        return st.send_window

    def respond(self, st: Stream, message: bytes) -> None:
        """Headers, the message, ``grpc-status: 0``: one write when the windows allow."""
        sid = st.id
        n = len(message) + 5
        if n <= self.send_window and n <= self.window(st) and n <= self.peer_max_frame:
            self.send_window -= n
            self.out.append(b"".join((
                _HEAD.pack(_RESP_HEAD, f.END_HEADERS, sid), _RESP,
                _HEAD.pack(n << 8, 0, sid), f.grpc_message(message),
                _HEAD.pack(_TRAIL_HEAD, f.END_HEADERS | f.END_STREAM, sid), _TRAIL)))
            self.close_stream(st)
            return
        self.out.append(_HEAD.pack(_RESP_HEAD, f.END_HEADERS, sid) + _RESP)
        st.pending = f.grpc_message(message)
        self.waiting[sid] = st
        self.send_pending()

    def send_pending(self) -> None:
        """Send what waits for window, in stream order, as far as the windows allow."""
        for st in list(self.waiting.values()):
            while st.pending and self.send_window > 0 and self.window(st) > 0:
                n = min(len(st.pending), self.send_window, st.send_window, self.peer_max_frame)
                chunk, st.pending = st.pending[:n], st.pending[n:]
                self.send_window -= n
                st.send_window -= n
                self.out.append(f.frame(f.DATA, 0, st.id, chunk))
            if not st.pending:
                self.out.append(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, st.id, _TRAIL))
                self.close_stream(st)

    def error(self, st: Stream, code: int, message: str) -> None:
        """A trailers-only answer with gRPC status ``code``."""
        self.out.append(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, st.id,
                                f.trailers_only(code, message)))
        self.close_stream(st)

    def http_error(self, sid: int, status: bytes, ended: bool) -> None:
        """Not a gRPC request: an HTTP status, and the stream closed."""
        block = f.literal(b":status", status)
        self.out.append(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid, block))
        if not ended:
            self.out.append(f.rst_stream(sid, f.NO_ERROR))

    def release(self, st: Stream) -> None:
        """The stream is gone: its body no longer counts against ``limits.max_buffered``."""
        self.server.buffered -= len(st.body)
        st.body = b""
        self.waiting.pop(st.id, None)

    def close_stream(self, st: Stream) -> None:
        """We sent END_STREAM: forget the stream (reset it if the peer is still sending)."""
        self.release(st)
        if not st.ended:
            self.out.append(f.rst_stream(st.id, f.NO_ERROR))
        if self.streams.get(st.id) is st:
            del self.streams[st.id]
        self.maybe_close()

    def reset(self, sid: int, code: int) -> None:
        """A stream error: RST_STREAM with ``code``."""
        self.out.append(f.rst_stream(sid, code))
        st = self.streams.pop(sid, None)
        if st is not None:
            self.release(st)
            if st.task is not None:
                st.task.cancel()

    def maybe_close(self) -> None:
        if not self.streams and (self.goaway_last is not None or self.peer_gone):
            self.flush()
            if self.transport is not None and not self.closed:
                self.transport.close()

    def flush(self) -> None:
        if self.out:
            out, self.out = self.out, []
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
