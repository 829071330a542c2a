"""The HTTP side of the development issuer (``devkit.issuer.DevIssuer``): discovery, JWKS,
``/dev/mint``, ``/dev/rotate`` and the OAuth2 ``/token`` endpoint, with the failure modes tests
switch on (down, slow, garbage, huge). DEVELOPMENT ONLY.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from devkit.issuer import DevIssuer


class IssuerHandler(BaseHTTPRequestHandler):
    """The dev issuer's HTTP endpoints; ``self.server.dev`` is the :class:`DevIssuer`."""

    server_version = "extauthz-devissuer"
    protocol_version = "HTTP/1.1"

    @property
    def dev(self) -> DevIssuer:
        dev: DevIssuer = self.server.dev  # type: ignore[attr-defined]
        return dev

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are counted, not logged."""

    def do_GET(self) -> None:
        dev = self.dev
        with dev._lock:
            dev.requests += 1
        if self.path == "/.well-known/openid-configuration":
            with dev._lock:
                dev.discovery_requests += 1
            self._serve_key_document(self._discovery())
        elif self.path == "/jwks.json":
            with dev._lock:
                dev.jwks_requests += 1
            self._serve_key_document(dev.jwks())
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        dev = self.dev
        with dev._lock:
            dev.requests += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if self.path == "/dev/mint":
                self._mint(body)
            elif self.path == "/dev/rotate":
                options = json.loads(body or b"{}")
                kid = dev.rotate(drop_old=bool(options.get("drop_old")), alg=options.get("alg"))
                self._json(200, {"kid": kid})
            elif self.path == "/token":
                self._token(body)
            else:
                self._json(404, {"error": "not_found"})
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"error": "invalid_request", "error_description": str(exc)[:200]})

    def _mint(self, body: bytes) -> None:
        claims = json.loads(body or b"{}")
        if not isinstance(claims, dict):
            raise ValueError("body must be a JSON object of claims")
        ttl = claims.pop("ttl", None)
        self._json(200, {"token": self.dev.mint(claims, ttl=ttl)})

    def _token(self, body: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic ") and "client_id" not in form:
            form["client_id"] = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        if form.get("grant_type") != "client_credentials":
            self._json(400, {"error": "unsupported_grant_type"})
        elif not form.get("client_id"):
            self._json(401, {"error": "invalid_client"})
        else:
            self._json(200, self.dev.client_credentials(form))

    def _discovery(self) -> dict[str, Any]:
        url = self.dev.url
        return {
            "issuer": url,
            "jwks_uri": f"{url}/jwks.json",
            "token_endpoint": f"{url}/token",
            "grant_types_supported": ["client_credentials"],
            "id_token_signing_alg_values_supported": [self.dev.alg],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }

    def _serve_key_document(self, document: Mapping[str, Any]) -> None:
        mode = self.dev.mode
        if mode == "down":
            self.close_connection = True  # drop the connection without an answer
            return
        if mode == "garbage":
            self._send(200, b"<html>this is not json", "text/html")
        elif mode == "huge":
            self._huge()
        elif mode == "slow":
            self._slow(json.dumps(document).encode())
        else:
            max_age = self.dev.jwks_max_age
            self._json(200, document,
                       cache_control="" if max_age is None else f"max-age={max_age}")

    def _slow(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        pause = self.dev.slow_seconds / max(len(body), 1)
        try:
            for byte in body:
                if self.dev._stopping.wait(pause):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b'{"keys":[' + b" " * 65536
        try:
            for _ in range(1024):  # at most 64 MiB
                if self.dev._stopping.is_set():
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            return
        self.close_connection = True

    def _json(self, status: int, value: Any, cache_control: str = "no-store") -> None:
        self._send(status, json.dumps(value).encode(), "application/json", cache_control)

    def _send(self, status: int, body: bytes, content_type: str,
              cache_control: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if cache_control:
            self.send_header("Cache-Control", cache_control)
        self.end_headers()
        self.wfile.write(body)
