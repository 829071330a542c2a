"""Envoy's HTTP ext_authz mode: ``POST <prefix><original :path>``, answered by the pipeline.

The second adapter beside ``grpc_service``: on the bounded HTTP/1.1 server (``server.http1``),
it turns a request into a ``CheckInput`` and a ``Decision`` into a response Envoy understands
(``envoy/envoy-http.yaml``; the bytes come from ``responses.HttpResponses``):

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

A body over ``max_body_bytes`` (≥ Envoy's ``max_request_bytes``) is read and discarded by the
server, then denied ``body_too_large``.

``GET /healthz`` answers 200 while the server is SERVING and 503 otherwise (loading keys,
shutting down): Envoy's HTTP health check and Kubernetes probes use it. Any other path outside
the prefix is 404.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

from extauthz.interfaces import Checker, Observer
from extauthz.model import STATUS_FORBIDDEN, CheckInput, Decision, PeerEvidence, Reason
from extauthz.obs.observer import NullObserver
from extauthz.peers import LISTENER_HEADER, XFCC_HEADER
from extauthz.server.http1 import Connection, Http1Server, HttpLimits, Request, Response, plain
from extauthz.server.responses import HttpResponses

DEFAULT_PATH_PREFIX = "/check"
CONTENT_TYPE_HEADER = "x-extauthz-content-type"
HEALTH_PATH = b"/healthz"
# Envoy's max_request_bytes: the frontend's 4 MiB message limit + 5 bytes of gRPC framing
ENVOY_MAX_REQUEST_BYTES = 4 * 1024 * 1024 + 5
# the names Envoy's HTTP ext_authz client sends (envoy/envoy-http.yaml), already lower-case
ENVOY_HEADER_NAMES = (
    "host", "content-length", "authorization", "x-envoy-auth-partial-body", "x-request-id",
    "x-extauthz-content-type", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms",
    "x-forwarded-proto", "x-forwarded-for", "grpc-encoding", "authorization-extras",
    "client-name", "client-version", "x-forwarded-client-cert", "x-extauthz-listener")

_GRPC_CONTENT_TYPE = Decision.deny(
    Reason.UNSUPPORTED_PROTOCOL,
    "Envoy sent content-type application/grpc to the HTTP authorizer: its timeouts would then "
    "read as allows; send the client's content-type as x-extauthz-content-type instead "
    "(envoy/envoy-http.yaml)")
_HEALTHY = plain(200, "SERVING\n")
_UNHEALTHY = plain(503, "NOT_SERVING\n")
_NOT_FOUND = plain(404, "not found: checks are POST <path_prefix><gRPC method path>\n")


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
        self.prefix = path_prefix.encode()
        self.serving = serving
        self.http1 = Http1Server(
            self.check, limits=limits or HttpLimits(max_body_bytes=ENVOY_MAX_REQUEST_BYTES),
            ssl_context=ssl_context, known_headers=ENVOY_HEADER_NAMES)

    # ---- the listener (server.http1) ------------------------------------------------------------

    @property
    def limits(self) -> HttpLimits:
        """The listener's bounds."""
        return self.http1.limits

    @property
    def port(self) -> int:
        """The bound port (0 before ``start``)."""
        return self.http1.port

    @property
    def draining(self) -> bool:
        """Whether ``drain`` has begun."""
        return self.http1.draining

    @property
    def connections(self) -> set[Connection]:
        """The open client connections."""
        return self.http1.connections

    @property
    def handshakes(self) -> set[asyncio.Task[None]]:
        """TLS handshakes in progress."""
        return self.http1.handshakes

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        return await self.http1.start(host, port, reuse_port=reuse_port)

    def stop_accepting(self) -> None:
        """Close the listening socket (connections already open keep being served)."""
        self.http1.stop_accepting()

    async def drain(self, grace: float) -> None:
        """Stop accepting, finish in-flight requests, abort the rest after ``grace`` s."""
        await self.http1.drain(grace)

    # ---- the handler ----------------------------------------------------------------------------

    async def check(self, req: Request) -> Response:
        """Answer one request: health, not found, or a check through the pipeline."""
        url = req.url
        if not url.startswith(self.prefix) or url[len(self.prefix):len(self.prefix) + 1] != b"/":
            if url == HEALTH_PATH and req.method in ("GET", "HEAD"):
                return _HEALTHY if self.serving() and not self.http1.draining else _UNHEALTHY
            return _NOT_FOUND
        started = time.perf_counter()
        self.observer.check_started()
        headers = req.headers
        forwarded = headers.get("content-type", "")
        headers["content-type"] = headers.pop(CONTENT_TYPE_HEADER, "")
        # the certificate Envoy verified: the x-forwarded-client-cert it set (SANITIZE_SET)
        xfcc = headers.get(XFCC_HEADER)
        check = CheckInput(path=url[len(self.prefix):].decode("latin-1"), headers=headers,
                           body=req.body, method=req.method,
                           peer=PeerEvidence(xfcc=xfcc, listener=headers.get(LISTENER_HEADER, ""))
                           if xfcc else None)
        if forwarded.startswith("application/grpc"):
            decision = _GRPC_CONTENT_TYPE
        elif req.too_large:
            decision = Decision.deny(
                Reason.BODY_TOO_LARGE,
                f"request body over {self.http1.limits.max_body_bytes} bytes",
                status=STATUS_FORBIDDEN)
        else:
            decision = await self.pipeline.check(check)
        self.observer.checked(check, decision, time.perf_counter() - started)
        return self.responses.build(decision)
