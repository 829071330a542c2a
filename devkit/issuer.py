"""A DEVELOPMENT-ONLY OIDC issuer. NEVER USE IT IN PRODUCTION: it mints any token for anyone.

It exists so that tests, demos and local stacks have a real issuer over HTTP on loopback:

- ``GET /.well-known/openid-configuration``: issuer ``http://<host>:<port>``, ``jwks_uri``.
- ``GET /jwks.json``: the published public keys.
- ``POST /dev/mint``: JSON claims in, ``{"token": ...}`` out. Defaults ``iss``, ``iat``,
  ``exp`` (``ttl`` seconds, default 3600) and ``aud`` (``temporal``); a claim set to ``null``
  is left out (e.g. ``{"exp": null}``).
- ``POST /dev/rotate``: add a key and sign with it; ``{"drop_old": true}`` unpublishes the others.
- ``POST /token``: OAuth2 client credentials (form ``grant_type=client_credentials``,
  ``client_id``, any ``client_secret``; optional ``audience``, ``scope``, ``permissions``).

Run it: ``python -m devkit.issuer --host 127.0.0.1 --port 0 [--state-dir DIR] [--alg RS256]``
(it refuses a non-loopback host unless ``--allow-non-loopback``). In tests use ``DevIssuer``
(a ``ThreadingHTTPServer`` in a background thread): ``.url``, ``.mint()``, ``.rotate()``,
``.set_mode("ok" | "down" | "slow" | "garbage" | "huge")`` and request counters.

With ``--state-dir`` the keys and the issuer URL are kept in ``devissuer.json`` (private keys in
clear: development only), so ``devkit.tokens.mint_offline`` can sign tokens the running issuer
will vouch for.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from devkit.issuer_http import IssuerHandler
from devkit.tokens import STATE_FILE, DevKey, build_claims, generate_key, sign

log = structlog.get_logger(__name__)

WARNING = "DEVELOPMENT-ONLY OIDC issuer: mints tokens for anyone; never use it in production"
MODES = ("ok", "down", "slow", "garbage", "huge")

@dataclass(slots=True)
class _State:
    keys: list[DevKey] = field(default_factory=list)
    current: str = ""
    extra_jwks: list[dict[str, Any]] = field(default_factory=list)


class DevIssuer:
    """The development issuer as an object: start/stop in a background thread.

    Args:
        host: bind address; loopback unless ``allow_non_loopback``.
        port: 0 picks a free port.
        state_dir: keep keys (and the issuer URL) in ``<state_dir>/devissuer.json``.
        alg: algorithm of the signing key.
        issuer: override the ``iss``/URL (e.g. behind a proxy); default ``http://host:port``.
        audience: default ``aud`` of minted tokens.
        default_ttl: default lifetime of minted tokens, seconds.
        slow_seconds: in ``slow`` mode, how long the body takes to trickle out.
        tls: a server context: serve HTTPS (the URL is ``https://host:port``), e.g. with a
            certificate from a private CA to test an issuer's ``ca_file``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        state_dir: str | Path | None = None,
        alg: str = "RS256",
        issuer: str | None = None,
        audience: str = "temporal",
        default_ttl: float = 3600.0,
        slow_seconds: float = 30.0,
        allow_non_loopback: bool = False,
        tls: ssl.SSLContext | None = None,
    ):
        if not allow_non_loopback and not _is_loopback(host):
            raise ValueError(f"refusing to bind the dev issuer to non-loopback host {host!r}")
        self.host, self.port, self.alg = host, port, alg
        self.audience, self.default_ttl, self.slow_seconds = audience, default_ttl, slow_seconds
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._issuer = issuer
        self.tls = tls
        self.handshake_failures = 0
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.mode = "ok"
        self.jwks_max_age: int | None = 300  # Cache-Control max-age of JWKS/discovery; None: none
        self.jwks_requests = 0
        self.discovery_requests = 0
        self.requests = 0
        self._state = self._load_state() or self._new_state(alg)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DevIssuer:
        """Bind and serve in a daemon thread. Returns ``self``."""
        server = (_TLSServer if self.tls is not None else ThreadingHTTPServer)(
            (self.host, self.port), IssuerHandler)
        server.daemon_threads = True
        server.dev = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, name="devissuer",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._save_state()
        log.warning("devissuer.started", url=self.url, warning=WARNING)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (slow responses are abandoned)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> DevIssuer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The issuer URL (``iss``)."""
        if self._issuer is not None:
            return self._issuer
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls is not None else 'http'}://{host}:{self.port}"

    def set_mode(self, mode: str) -> None:
        """How discovery and JWKS answer: ``ok``, ``down`` (connection dropped), ``slow``
        (body trickles over ``slow_seconds``), ``garbage`` (200, not JSON), ``huge`` (endless
        chunked body)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode

    # -- keys --------------------------------------------------------------------------------

    @property
    def current_kid(self) -> str:
        """The kid tokens are signed with by default."""
        return self._state.current

    def key(self, kid: str | None = None) -> DevKey:
        """A key by kid (default: the current one)."""
        wanted = kid or self._state.current
        with self._lock:
            for key in self._state.keys:
                if key.kid == wanted:
                    return key
        raise KeyError(f"no dev key {wanted!r}")

    def add_key(
        self, alg: str | None = None, *, rsa_bits: int = 2048, use: str | None = "sig",
        publish: bool = True, make_current: bool = False,
    ) -> str:
        """Add a key (optionally weak or ``use: enc`` for negative tests). Returns its kid."""
        new = DevKey(secrets.token_hex(8), alg or self.alg, generate_key(alg or self.alg,
                                                                          rsa_bits), use, publish)
        with self._lock:
            self._state.keys.append(new)
            if make_current:
                self._state.current = new.kid
        self._save_state()
        return new.kid

    def rotate(self, drop_old: bool = False, alg: str | None = None) -> str:
        """Add a key and sign with it; ``drop_old`` unpublishes every other key. Returns the kid."""
        kid = self.add_key(alg, make_current=True)
        if drop_old:
            with self._lock:
                self._state.keys = [k for k in self._state.keys if k.kid == kid]
            self._save_state()
        return kid

    def remove_key(self, kid: str) -> None:
        """Unpublish and forget a key."""
        with self._lock:
            self._state.keys = [k for k in self._state.keys if k.kid != kid]
        self._save_state()

    def publish_raw_jwk(self, jwk: Mapping[str, Any]) -> None:
        """Publish an arbitrary JWK as is (e.g. an ``oct`` key) for negative tests."""
        with self._lock:
            self._state.extra_jwks.append(dict(jwk))

    def jwks(self) -> dict[str, Any]:
        """The published JWK Set."""
        with self._lock:
            keys = [k.public_jwk() for k in self._state.keys if k.published]
            return {"keys": keys + [dict(j) for j in self._state.extra_jwks]}

    # -- tokens ------------------------------------------------------------------------------

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        """Sign a token. ``headers`` are merged over ``{"alg", "typ": "JWT", "kid"}``."""
        payload = build_claims(
            self.url, claims or {}, ttl=self.default_ttl if ttl is None else ttl,
            audience=self.audience, now=time.time() if now is None else now,
        )
        return self.sign_raw(json.dumps(payload).encode(), kid=kid, headers=headers)

    def sign_raw(
        self, payload: bytes, *, kid: str | None = None, headers: Mapping[str, Any] | None = None
    ) -> str:
        """Sign arbitrary payload bytes (duplicate members, non-JSON...) with a dev key."""
        key = self.key(kid)
        header: dict[str, Any] = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
        header.update(headers or {})
        return sign(key, {k: v for k, v in header.items() if v is not None}, payload)

    def client_credentials(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The ``/token`` response for a client-credentials request (any secret accepted)."""
        client_id = form["client_id"]
        claims: dict[str, Any] = {"sub": client_id, "client_id": client_id, "azp": client_id}
        if form.get("audience"):
            claims["aud"] = form["audience"]
        if form.get("scope"):
            claims["scope"] = form["scope"]
        if form.get("permissions"):
            claims["permissions"] = form["permissions"].replace(",", " ").split()
        token = self.mint(claims)
        return {"access_token": token, "token_type": "Bearer",
                "expires_in": int(self.default_ttl), **({"scope": form["scope"]}
                                                        if form.get("scope") else {})}

    # -- state -------------------------------------------------------------------------------

    def _new_state(self, alg: str) -> _State:
        key = DevKey(secrets.token_hex(8), alg, generate_key(alg))
        return _State([key], key.kid)

    def _load_state(self) -> _State | None:
        if self.state_dir is None or not (self.state_dir / STATE_FILE).exists():
            return None
        data = json.loads((self.state_dir / STATE_FILE).read_text())
        return _State([DevKey.from_state(k) for k in data["keys"]], data["current"])

    def _save_state(self) -> None:
        if self.state_dir is None:
            return
        with self._lock:
            data = {"warning": WARNING, "issuer": self.url, "audience": self.audience,
                    "current": self._state.current,
                    "keys": [k.to_state() for k in self._state.keys]}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)


class _TLSServer(ThreadingHTTPServer):
    """HTTPS: the handshake runs in the request's thread, so a client that refuses the
    certificate (or stalls) never blocks the accept loop; a failed handshake is counted."""

    def finish_request(self, request: Any, client_address: Any) -> None:
        dev: DevIssuer = self.dev  # type: ignore[attr-defined]
        assert dev.tls is not None
        try:
            request.settimeout(10)
            conn = dev.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            with dev._lock:
                dev.handshake_failures += 1
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devkit.issuer``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m devkit.issuer", description=WARNING)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free one)")
    parser.add_argument("--state-dir", help="keep keys and the issuer URL in this directory")
    parser.add_argument("--alg", default="RS256", choices=sorted(
        {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
         "EdDSA"}), help="signing algorithm of the first key (default: RS256)")
    parser.add_argument("--audience", default="temporal", help="default `aud` of minted tokens")
    parser.add_argument("--allow-non-loopback", action="store_true",
                        help="listen on a non-loopback address (never in production)")
    args = parser.parse_args(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: URL
    dev = DevIssuer(args.host, args.port, state_dir=args.state_dir, alg=args.alg,
                    audience=args.audience, allow_non_loopback=args.allow_non_loopback)
    dev.start()
    print(f"WARNING: {WARNING}", file=sys.stderr)
    print(dev.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
