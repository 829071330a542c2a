"""One HTTP/1.1 client connection: parse with llhttp, enforce the per-request limits, answer
pipelined requests in order through the server's handler, and close on time."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import httptools
import structlog

from extauthz.server.coroutines import resume, step
from extauthz.server.http1.wire import CLOSE, CONTINUE, Request, Response, plain

if TYPE_CHECKING:
    from extauthz.server.http1.server import Http1Server

log = structlog.get_logger("extauthz.http")

_INF = float("inf")


class _ParseAbort(Exception):
    """Stop parsing: the request broke a limit (``status`` says which answer to give)."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status
        self.text = text


class Connection(asyncio.Protocol):
    """One client connection: parse with llhttp, answer in order, enforce the limits."""

    def __init__(self, server: Http1Server):
        self.server = server
        self.limits = server.limits
        self.names = server.header_names
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.deadline = _INF
        self.queue: deque[Request] = deque()
        self.busy = False  # a task is answering the queue
        self.reading = False  # a request has begun and is not complete
        self.read_paused = False
        self.write_paused = False
        self.closing = False
        # TLS: bytes the TLS layer delivered with the handshake, before connection_made
        self._early: list[bytes] = []
        # the request being parsed
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._head_bytes = 0
        self._raw_head = 0
        self._body_bytes = 0

    # ---- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is not an asyncio.Transport subclass
        self.transport = transport = cast(asyncio.Transport, transport)
        server = self.server
        if server.draining or len(server.connections) >= self.limits.max_connections:
            head, body = plain(503, "too many connections\n")
            transport.write(head + CLOSE + b"\r\n" + body)
            transport.close()
            return
        server.connections.add(self)
        transport.set_write_buffer_limits(high=self.limits.write_high_water)
        self.deadline = self.loop.time() + self.limits.request_timeout
        if self._early:
            early, self._early = b"".join(self._early), []
            self.data_received(early)

    def connection_lost(self, _exc: Exception | None) -> None:
        self.closing = True
        self.queue.clear()
        self.server.forget(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.transport is None:
            # TLS: start_tls reads the first request with the handshake's last flight and
            # hands it over before connection_made (one socket read at most)
            self._early.append(data)
            return
        if not self.reading:
            self.deadline = self.loop.time() + self.limits.request_timeout
        elif self._raw_head >= 0:
            # headers still arriving: llhttp buffers an unfinished header internally, so
            # count raw bytes too (one chunk of slack on top of the precise count)
            self._raw_head += len(data)
        try:
            self.parser.feed_data(data)
        except _ParseAbort as abort:
            self._fail(abort.status, abort.text)
            return
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrade is not supported\n")
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _ParseAbort):
                self._fail(cause.status, cause.text)
            else:
                self._fail(400, "malformed HTTP/1.1 request\n")
            return
        if self.reading and self._raw_head > self.limits.max_header_bytes + 65536:
            self._fail(431, "request headers too large\n")
            return
        if len(self.queue) >= self.limits.max_pipelined and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.deadline = min(self.deadline, self.loop.time() + self.limits.request_timeout)
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._rearm()
        self._maybe_resume_reading()
        if self.queue and not self.busy:
            self._answer()

    # ---- llhttp callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.reading = True
        self._url = []
        self._headers = {}
        self._body = []
        self._head_bytes = 0
        self._raw_head = 0
        self._body_bytes = 0
        self.deadline = self.loop.time() + self.limits.request_timeout

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            raise _ParseAbort(431, "request line too long\n")
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # per header of every request: locals, and the lower-cased name of the names the
        # server was told to expect looked up instead of decoded and lower-cased each time
        size = self._head_bytes + len(name) + len(value) + 4
        self._head_bytes = size
        limits = self.limits
        if size > limits.max_header_bytes:
            raise _ParseAbort(431, "request headers too large\n")
        headers = self._headers
        if len(headers) >= limits.max_headers:
            raise _ParseAbort(431, "too many request headers\n")
        key = self.names.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in headers:
            headers[key] = f"{headers[key]},{text}"
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        self._raw_head = -1  # body from here on
        if self.parser.should_upgrade():
            raise _ParseAbort(400, "upgrade is not supported\n")
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport:
            self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes <= self.limits.max_body_bytes:
            self._body.append(body)
        elif self._body:
            self._body.clear()  # over the limit: keep counting, stop holding

    def on_message_complete(self) -> None:
        self.reading = False
        body = self._body
        self.queue.append(Request(
            method=self.parser.get_method().decode("latin-1"),
            url=b"".join(self._url),
            headers=self._headers,
            body=body[0] if len(body) == 1 else b"".join(body),
            too_large=self._body_bytes > self.limits.max_body_bytes,
            keep_alive=self.parser.should_keep_alive(),
        ))
        self._body = []
        self.deadline = _INF
        if not self.busy and not self.write_paused:
            self._answer()

    # ---- answering ------------------------------------------------------------------------------

    def _answer(self) -> None:
        # answer synchronously while the handler completes without suspending (a check with a
        # cached token: the common case); the first one that suspends continues in a task
        handler = self.server.handler
        while self.queue and not self.closing and not self.write_paused:
            req = self.queue.popleft()
            coro = handler(req)
            finished, value = step(coro)
            if finished:
                if not self._respond(req, value):
                    return
                continue
            self.busy = True
            task = self.loop.create_task(self._run(req, coro, value))
            task.add_done_callback(_ignore_result)
            return
        self._maybe_resume_reading()
        self._rearm()

    def _respond(self, req: Request, answer: Response) -> bool:
        """Write one answer; False once the connection is closing."""
        if self.closing or self.transport is None:
            return False
        head, body = answer
        close = not req.keep_alive or self.server.draining
        self.transport.write(head + (CLOSE + b"\r\n" if close else b"\r\n") + body)
        if close:
            self.closing = True
            self.transport.close()
            return False
        return True

    async def _run(self, req: Request, coro: Coroutine[Any, Any, Response],
                   suspended: Any) -> None:
        """Finish a handler that suspended (``suspended``: what its coroutine yielded, as a
        Task would have seen it), then go on answering the queue."""
        try:
            try:
                answer = await resume(coro, suspended)
            except Exception as exc:  # the handler should never raise; fail closed if it did
                log.error("http.check_failed", error=type(exc).__name__)
                answer = plain(503, "internal error\n")
            if not self._respond(req, answer):
                return
        finally:
            self.busy = False
        self._answer()

    def _maybe_resume_reading(self) -> None:
        if (self.read_paused and not self.write_paused and not self.closing
                and len(self.queue) < self.limits.max_pipelined and self.transport is not None):
            self.read_paused = False
            self.transport.resume_reading()

    def _rearm(self) -> None:
        """Deadline for the current state: reading → request_timeout; answering → none;
        idle → idle_timeout (draining: close now)."""
        if self.closing:
            return
        if self.reading:
            return  # set when the request began
        if self.busy or self.queue:
            self.deadline = _INF
            return
        if self.server.draining:
            self.abort()
            return
        self.deadline = self.loop.time() + self.limits.idle_timeout

    def close_if_idle(self) -> None:
        """Drain: close now unless a request is being read or answered."""
        if not (self.reading or self.busy or self.queue):
            self.abort()

    def expired(self) -> None:
        """The deadline passed: 408 if a request was started, else just close."""
        if self.reading and not self.write_paused and not self.closing:
            self._fail(408, "request not completed in time\n")
        else:
            self.abort()

    def abort(self) -> None:
        """Close at once."""
        self.closing = True
        self.deadline = _INF
        if self.transport is not None:
            self.transport.close()

    def _fail(self, status: int, text: str) -> None:
        """Answer a broken request with ``status`` and close (queued answers are dropped)."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.deadline = _INF
        self.queue.clear()
        head, body = plain(status, text)
        self.transport.write(head + CLOSE + b"\r\n" + body)
        # lingering close: stop sending, discard what the client still sends for a moment, so
        # the kernel does not reset the connection before the client has read the answer
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.deadline = self.loop.time() + min(1.0, self.limits.request_timeout)
            self.reading = False
        else:
            self.transport.close()


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("http.connection_error", error=type(exc).__name__)
