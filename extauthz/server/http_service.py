"""Envoy's HTTP ext_authz mode: ``POST <prefix><original :path>``, answered by the pipeline.

The second adapter beside ``grpc_service``: it turns an HTTP/1.1 request into a ``CheckInput``
and a ``Decision`` into a response Envoy understands (``envoy/envoy-http.yaml``):

- allow: ``200`` with the identity headers (Envoy copies the ones in
  ``allowed_upstream_headers`` onto the upstream request, overwriting), or, without an identity,
  ``x-envoy-auth-headers-to-remove`` naming them (client copies removed, as in gRPC mode);
- deny: ``401``/``403`` with the body ``"<code>: <message>"`` (Envoy makes it the client's
  ``grpc-message``; 401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED) and
  ``x-temporal-authz-reason``; ``503`` for infrastructure failures (Envoy treats any 5xx as an
  error: ``status_on_error``, never an allow).

The client's ``content-type`` arrives as ``x-extauthz-content-type`` (Envoy's
``headers_to_add: %REQ(content-type)%``) and is handed to the pipeline as ``content-type``. The
authz request itself must NOT carry ``content-type: application/grpc``: Envoy answers a timeout
or reset of such a request with a gRPC-style local reply, ``200`` plus ``grpc-status``, which
its HTTP ext_authz client reads as an allow (Envoy 1.40, tests/e2e/test_envoy_config.py). A
check that arrives with one is denied, so the dangerous configuration fails loudly.

``GET /healthz`` answers 200 while the server is SERVING and 503 otherwise (loading keys,
shutting down): Envoy's HTTP health check and Kubernetes probes use it. Any other path outside
the prefix is 404.

Why a small server of our own on ``httptools`` (llhttp, the parser uvicorn uses) rather than
granian or uvicorn: measured on a 2-CPU machine (``bench/http_servers.py``, h2load, 2000
checks/s over 4 keep-alive connections), server CPU per always-allow answer was ~17 µs here,
~73 µs with uvicorn (httptools), ~114 µs with granian (RSGI); the whole pipeline must fit in
≤ 60 µs. HTTP parsing stays in llhttp; this module only bounds the connection:

- request line + headers ≤ ``max_header_bytes`` and ≤ ``max_headers`` (else 431, close);
- body ≤ ``max_body_bytes`` (≥ Envoy's ``max_request_bytes``); a bigger body is read and
  discarded, then denied ``body_too_large`` (memory stays bounded);
- a started request must be complete within ``request_timeout``; an idle keep-alive connection
  is closed after ``idle_timeout``; a client that does not read its responses is closed after
  ``request_timeout`` of back-pressure;
- requests on one connection (pipelining) are answered in order; reading pauses while
  ``max_pipelined`` are waiting or the client is not reading;
- at most ``max_connections`` connections (more are answered 503 and closed);
- drain: stop accepting, close idle connections, answer in-flight requests with
  ``connection: close``, abort what is left after the grace period;
- TLS (``ssl_context``, from ``server.tls.ServerSSLContext``): each accepted connection is
  upgraded with ``loop.start_tls`` and the context current at that moment (rotated files reach
  new connections); a handshake counts as a connection and must end within
  ``request_timeout``; a refused one is logged ``http.tls_handshake_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httptools
import structlog

from extauthz.interfaces import Observer
from extauthz.model import STATUS_FORBIDDEN, CheckInput, Decision, Reason
from extauthz.obs.observer import NullObserver
from extauthz.server.responses import REASON_HEADER, ResponseBuilder, _header_safe

log = structlog.get_logger("extauthz.http")

DEFAULT_PATH_PREFIX = "/check"
CONTENT_TYPE_HEADER = "x-extauthz-content-type"
HEALTH_PATH = b"/healthz"
# Envoy's max_request_bytes: the frontend's 4 MiB message limit + 5 bytes of gRPC framing
ENVOY_MAX_REQUEST_BYTES = 4 * 1024 * 1024 + 5
_OK_CACHE_ENTRIES = 10_000
_STATUS_TEXT = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
                404: b"Not Found", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
                503: b"Service Unavailable"}
_CLOSE = b"connection: close\r\n"
# the names Envoy's HTTP ext_authz client sends (envoy/envoy-http.yaml), already lower-case
_HEADER_NAMES = {name.encode("ascii"): name for name in (
    "host", "content-length", "authorization", "x-envoy-auth-partial-body", "x-request-id",
    "x-extauthz-content-type", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms",
    "x-forwarded-proto", "x-forwarded-for", "grpc-encoding", "authorization-extras",
    "client-name", "client-version")}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on what one client may make the server hold or wait for."""

    max_body_bytes: int = ENVOY_MAX_REQUEST_BYTES
    # Envoy's own default is 60 KiB of request headers; the check adds a few
    max_header_bytes: int = 96 * 1024
    max_headers: int = 128
    max_connections: int = 4096
    max_pipelined: int = 32
    request_timeout: float = 10.0
    # above Envoy's idle_timeout for the extauthz cluster (60 s in envoy/envoy-http.yaml), so
    # Envoy closes idle connections first and never sends on one the server is closing
    idle_timeout: float = 120.0
    write_high_water: int = 256 * 1024


class HttpResponses:
    """Response bytes for decisions; identity header names come from the gRPC builder."""

    def __init__(self, subject_header: str = "x-temporal-authz-subject"):
        grpc_builder = ResponseBuilder(subject_header)
        self._names = (grpc_builder.subject_header, grpc_builder.issuer_header,
                       grpc_builder.kind_header)
        self._ok_cache: dict[tuple[str, str, str], bytes] = {}
        self._ok_anonymous = (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
                              b"x-envoy-auth-headers-to-remove: "
                              + ",".join(self._names).encode() + b"\r\n")

    def build(self, decision: Decision) -> tuple[bytes, bytes]:
        """(status line and headers without the final CRLF, body) for a decision."""
        if decision.allowed:
            p = decision.principal
            if p is None:
                return self._ok_anonymous, b""
            key = (p.subject, p.issuer, p.kind)
            head = self._ok_cache.get(key)
            if head is None:
                if len(self._ok_cache) >= _OK_CACHE_ENTRIES:
                    self._ok_cache.clear()
                head = self._ok_cache[key] = self._ok_for(*key)
            return head, b""
        return denied(decision.status, str(decision.reason), decision.message)

    def _ok_for(self, subject: str, issuer: str, kind: str) -> bytes:
        lines = b"".join(f"{name}: {_header_safe(value)}\r\n".encode("ascii")
                         for name, value in zip(self._names, (subject, issuer, kind),
                                                strict=True))
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n" + lines


def denied(status: int, reason: str, message: str) -> tuple[bytes, bytes]:
    """A denial: ``<code>: <message>`` as the body, the code in ``x-temporal-authz-reason``."""
    body = f"{reason}: {message}".encode()
    head = (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\n%s: %s\r\n"
            % (status, _STATUS_TEXT.get(status, b"Error"), len(body), REASON_HEADER.encode(),
               _header_safe(reason).encode("ascii")))
    return head, body


_GRPC_CONTENT_TYPE = Decision.deny(
    Reason.UNSUPPORTED_PROTOCOL,
    "Envoy sent content-type application/grpc to the HTTP authorizer: its timeouts would then "
    "read as allows; send the client's content-type as x-extauthz-content-type instead "
    "(envoy/envoy-http.yaml)")


def _plain(status: int, text: str) -> tuple[bytes, bytes]:
    body = text.encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            % (status, _STATUS_TEXT.get(status, b"Error"), len(body)), body)


_HEALTHY = _plain(200, "SERVING\n")
_UNHEALTHY = _plain(503, "NOT_SERVING\n")
_NOT_FOUND = _plain(404, "not found: checks are POST <path_prefix><gRPC method path>\n")


@dataclass(slots=True)
class _Request:
    method: str
    url: bytes
    headers: dict[str, str]
    body: bytes
    too_large: bool
    keep_alive: bool


class Checker(Protocol):
    """What the adapter needs from the decision core (``Pipeline``)."""

    async def check(self, req: CheckInput) -> Decision:
        """Decide one request; never raises."""
        ...


class _ParseAbort(Exception):
    """Stop parsing: the request broke a limit (``status`` says which answer to give)."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status
        self.text = text


class HttpCheckServer:
    """The HTTP ext_authz listener. ``start`` binds; ``drain`` stops gracefully."""

    def __init__(
        self,
        pipeline: Checker,
        responses: HttpResponses,
        observer: Observer | None = None,
        *,
        limits: HttpLimits | None = None,
        path_prefix: str = DEFAULT_PATH_PREFIX,
        serving: Callable[[], bool] = lambda: True,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
    ):
        if not path_prefix.startswith("/") or path_prefix.endswith("/") or \
                path_prefix.encode().startswith(HEALTH_PATH):
            raise ValueError(f"path prefix {path_prefix!r}: must start with '/', not end with "
                             "'/', and not overlap /healthz")
        self.pipeline = pipeline
        self.responses = responses
        self.observer: Observer = observer or NullObserver()
        self.limits = limits or HttpLimits()
        self.prefix = path_prefix.encode()
        self.serving = serving
        # TLS: the context for a connection accepted now (server.tls.ServerSSLContext.current)
        self.ssl_context = ssl_context
        self.handshakes: set[asyncio.Task[None]] = set()
        self.connections: set[_Connection] = set()
        self.draining = False
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol] = (
            (lambda: _Connection(self)) if self.ssl_context is None else (lambda: _Accepted(self)))
        self._server = await loop.create_server(
            factory, host, port, reuse_port=reuse_port or None, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = asyncio.create_task(self._sweep())
        return self.port

    async def _sweep(self) -> None:
        """Close connections past their deadline (one timer for all connections)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.25)
            now = loop.time()
            for conn in [c for c in self.connections if c.deadline <= now]:
                conn.expired()

    def stop_accepting(self) -> None:
        """Close the listening socket (connections already open keep being served)."""
        if self._server is not None:
            self._server.close()

    async def drain(self, grace: float) -> None:
        """Stop accepting; close idle connections now and busy ones after their current
        request; abort whatever is still open after ``grace`` seconds."""
        self.draining = True
        self.stop_accepting()
        for task in list(self.handshakes):
            task.cancel()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.connections:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.wait_closed()

    def accept_tls(self, transport: asyncio.Transport) -> None:
        """A new TCP connection to the TLS listener: hand it to the TLS layer now, with the
        current context, and serve it once the handshake is done. Handshakes in progress count
        against ``max_connections`` and must finish within ``request_timeout``."""
        if self.draining or len(self.connections) + len(self.handshakes) >= \
                self.limits.max_connections:
            transport.abort()  # no plaintext answer a TLS client could read
            return
        assert self.ssl_context is not None
        conn = _Connection(self)
        # Run start_tls up to its wait for the handshake right here, inside connection_made:
        # the TLS layer must own the socket before the loop reads from it (uvloop starts
        # reading right after connection_made and ignores a pause_reading() made in it; a
        # ClientHello read before start_tls would be lost and the handshake would hang).
        upgrade = asyncio.get_running_loop().start_tls(
            transport, conn, self.ssl_context(), server_side=True,
            ssl_handshake_timeout=self.limits.request_timeout)
        try:
            waiting = upgrade.send(None)
        except StopIteration:  # pragma: no cover (start_tls always waits for the handshake)
            transport.abort()
            return
        except Exception as exc:  # pragma: no cover (a closed transport)
            log.info("http.tls_handshake_failed", error=type(exc).__name__)
            transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._handshake(conn, upgrade, waiting))
        self.handshakes.add(task)
        task.add_done_callback(self.handshakes.discard)

    async def _handshake(self, conn: _Connection,
                         upgrade: Coroutine[Any, Any, asyncio.Transport | None],
                         waiting: Any) -> None:
        """Finish ``start_tls`` (``waiting``: the future its coroutine yielded), then serve."""
        try:
            while True:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    waiting._asyncio_future_blocking = False
                    await asyncio.wait((waiting,))
                waiting = upgrade.send(None)
        except StopIteration as done:
            tls: asyncio.Transport | None = done.value
        except asyncio.CancelledError:  # drain: start_tls closes the connection
            upgrade.close()
            raise
        except Exception as exc:  # refused certificate, timeout, reset: start_tls closed it
            log.info("http.tls_handshake_failed", error=type(exc).__name__,
                     reason=getattr(exc, "reason", None) or str(exc)[:200])
            return
        if tls is None or conn.closing:  # lost between the handshake and now
            if tls is not None:
                tls.abort()
            return
        conn.connection_made(tls)

    def forget(self, conn: _Connection) -> None:
        """A connection closed."""
        self.connections.discard(conn)
        if not self.connections:
            self._idle.set()

    async def check(self, req: _Request) -> tuple[bytes, bytes]:
        """Answer one request: health, not found, or a check through the pipeline."""
        url = req.url
        if not url.startswith(self.prefix) or url[len(self.prefix):len(self.prefix) + 1] != b"/":
            if url == HEALTH_PATH and req.method in ("GET", "HEAD"):
                return _HEALTHY if self.serving() and not self.draining else _UNHEALTHY
            return _NOT_FOUND
        started = time.perf_counter()
        self.observer.check_started()
        headers = req.headers
        forwarded = headers.get("content-type", "")
        headers["content-type"] = headers.pop(CONTENT_TYPE_HEADER, "")
        check = CheckInput(path=url[len(self.prefix):].decode("latin-1"), headers=headers,
                           body=req.body, method=req.method)
        if forwarded.startswith("application/grpc"):
            decision = _GRPC_CONTENT_TYPE
        elif req.too_large:
            decision = Decision.deny(
                Reason.BODY_TOO_LARGE,
                f"request body over {self.limits.max_body_bytes} bytes",
                status=STATUS_FORBIDDEN)
        else:
            decision = await self.pipeline.check(check)
        self.observer.checked(check, decision, time.perf_counter() - started)
        return self.responses.build(decision)


class _Accepted(asyncio.Protocol):
    """A TCP connection to the TLS listener until ``start_tls`` takes it over."""

    def __init__(self, server: HttpCheckServer):
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.accept_tls(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:  # pragma: no cover
        pass  # never called: accept_tls gives the socket to the TLS layer in connection_made


class _Connection(asyncio.Protocol):
    """One client connection: parse with llhttp, answer in order, enforce the limits."""

    def __init__(self, server: HttpCheckServer):
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.deadline = _INF
        self.queue: deque[_Request] = deque()
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
            head, body = _plain(503, "too many connections\n")
            transport.write(head + _CLOSE + b"\r\n" + body)
            transport.close()
            return
        server.connections.add(self)
        transport.set_write_buffer_limits(high=self.limits.write_high_water)
        self.deadline = self.loop.time() + self.limits.request_timeout
        if self._early:
            early, self._early = b"".join(self._early), []
            self.data_received(early)

    def connection_lost(self, exc: Exception | None) -> None:
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
        # per header of every check: locals, and the lower-cased name of the names Envoy sends
        # looked up instead of decoded and lower-cased each time
        size = self._head_bytes + len(name) + len(value) + 4
        self._head_bytes = size
        limits = self.limits
        if size > limits.max_header_bytes:
            raise _ParseAbort(431, "request headers too large\n")
        headers = self._headers
        if len(headers) >= limits.max_headers:
            raise _ParseAbort(431, "too many request headers\n")
        key = _HEADER_NAMES.get(name)
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
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes <= self.limits.max_body_bytes:
            self._body.append(body)
        elif self._body:
            self._body.clear()  # over the limit: keep counting, stop holding

    def on_message_complete(self) -> None:
        self.reading = False
        body = self._body
        self.queue.append(_Request(
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
        # answer synchronously while checks complete without suspending (a cached token: the
        # common case); the first check that suspends continues in a task
        server = self.server
        while self.queue and not self.closing and not self.write_paused:
            req = self.queue.popleft()
            coro = server.check(req)
            try:
                suspended = coro.send(None)
            except StopIteration as done:
                if not self._respond(req, done.value):
                    return
                continue
            self.busy = True
            task = self.loop.create_task(self._run(req, coro, suspended))
            task.add_done_callback(_ignore_result)
            return
        self._maybe_resume_reading()
        self._rearm()

    def _respond(self, req: _Request, answer: tuple[bytes, bytes]) -> bool:
        """Write one answer; False once the connection is closing."""
        if self.closing or self.transport is None:
            return False
        head, body = answer
        close = not req.keep_alive or self.server.draining
        self.transport.write(head + (_CLOSE + b"\r\n" if close else b"\r\n") + body)
        if close:
            self.closing = True
            self.transport.close()
            return False
        return True

    async def _run(self, req: _Request, coro: Coroutine[Any, Any, tuple[bytes, bytes]],
                   suspended: Any) -> None:
        """Finish a check that suspended (``suspended``: what its coroutine yielded, as a
        Task would have seen it), then go on answering the queue."""
        try:
            try:
                while True:
                    if suspended is None:  # a bare yield (asyncio.sleep(0))
                        await asyncio.sleep(0)
                    else:  # a future: wait for it as the Task would, then resume
                        suspended._asyncio_future_blocking = False
                        await asyncio.wait((suspended,))
                    suspended = coro.send(None)
            except StopIteration as done:
                answer: tuple[bytes, bytes] = done.value
            except Exception as exc:  # the pipeline never raises; fail closed if it did
                log.error("http.check_failed", error=type(exc).__name__)
                answer = _plain(503, "internal error\n")
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
        head, body = _plain(status, text)
        self.transport.write(head + _CLOSE + b"\r\n" + body)
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
