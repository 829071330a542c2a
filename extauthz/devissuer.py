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

Run it: ``python -m extauthz.devissuer --host 127.0.0.1 --port 0 [--state-dir DIR] [--alg RS256]``
(it refuses a non-loopback host unless ``--allow-non-loopback``). In tests use ``DevIssuer``
(a ``ThreadingHTTPServer`` in a background thread): ``.url``, ``.mint()``, ``.rotate()``,
``.set_mode("ok" | "down" | "slow" | "garbage" | "huge")`` and request counters.

With ``--state-dir`` the keys and the issuer URL are kept in ``devissuer.json`` (private keys in
clear: development only), so ``mint_offline`` can sign tokens the running issuer will vouch for.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import secrets
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

log = structlog.get_logger(__name__)

WARNING = "DEVELOPMENT-ONLY OIDC issuer: mints tokens for anyone; never use it in production"
MODES = ("ok", "down", "slow", "garbage", "huge")
STATE_FILE = "devissuer.json"
DEFAULT_PORT = 8899
URL_ENV = "EXTAUTHZ_DEV_ISSUER_URL"
_ALGS = get_default_algorithms()
_EC_CURVES: Mapping[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1, "ES256K": ec.SECP256K1,
}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_key(alg: str, rsa_bits: int = 2048) -> PrivateKey:
    """A fresh private key for a JWS algorithm."""
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if alg in _EC_CURVES:
        return ec.generate_private_key(_EC_CURVES[alg]())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg!r}")


@dataclass(slots=True)
class DevKey:
    """A signing key of the dev issuer."""

    kid: str
    alg: str
    private: PrivateKey
    use: str | None = "sig"
    published: bool = True

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK as published."""
        jwk: dict[str, Any] = dict(_ALGS[self.alg].to_jwk(self.private.public_key(), as_dict=True))
        jwk.update(kid=self.kid, alg=self.alg)
        if self.use is not None:
            jwk["use"] = self.use
        return jwk

    def to_state(self) -> dict[str, Any]:
        """Serializable form (private key in clear PEM: development only)."""
        pem = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return {"kid": self.kid, "alg": self.alg, "use": self.use, "published": self.published,
                "pem": pem}

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> DevKey:
        """Inverse of ``to_state``."""
        private = serialization.load_pem_private_key(data["pem"].encode("ascii"), None)
        if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                          | ed25519.Ed25519PrivateKey):
            raise ValueError("unsupported key type in dev issuer state")
        return cls(data["kid"], data["alg"], private, data.get("use"), data.get("published", True))


def sign(key: DevKey, header: Mapping[str, Any], payload: bytes) -> str:
    """A compact JWS over raw ``payload`` bytes with exactly ``header`` (tests craft odd tokens)."""
    head = b64url(json.dumps(dict(header), separators=(",", ":")).encode())
    signing_input = f"{head}.{b64url(payload)}"
    signature = _ALGS[key.alg].sign(signing_input.encode("ascii"), key.private)
    return f"{signing_input}.{b64url(signature)}"


def build_claims(
    issuer: str, claims: Mapping[str, Any], *, ttl: float, audience: str, now: float
) -> dict[str, Any]:
    """Default ``iss``, ``iat``, ``exp``, ``aud``; given claims win; ``None`` removes a claim."""
    merged: dict[str, Any] = {"iss": issuer, "aud": audience, "iat": int(now),
                              "exp": int(now + ttl)}
    merged.update(claims)
    return {name: value for name, value in merged.items() if value is not None}


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
    ):
        if not allow_non_loopback and not _is_loopback(host):
            raise ValueError(f"refusing to bind the dev issuer to non-loopback host {host!r}")
        self.host, self.port, self.alg = host, port, alg
        self.audience, self.default_ttl, self.slow_seconds = audience, default_ttl, slow_seconds
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._issuer = issuer
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
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
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
        return f"http://{host}:{self.port}"

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


class _Handler(BaseHTTPRequestHandler):
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- helpers for the CLI ------------------------------------------------------------------------


def default_url() -> str:
    """The dev issuer ``extauthz token`` talks to: ``$EXTAUTHZ_DEV_ISSUER_URL`` or
    ``http://127.0.0.1:8899``."""
    return os.environ.get(URL_ENV) or f"http://127.0.0.1:{DEFAULT_PORT}"


def mint(issuer_url: str, claims: Mapping[str, Any], timeout: float = 10.0) -> str:
    """Ask a running dev issuer to mint a token (``POST <issuer>/dev/mint``)."""
    request = urllib.request.Request(  # noqa: S310 - the caller's dev issuer URL
        issuer_url.rstrip("/") + "/dev/mint",
        data=json.dumps(dict(claims)).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        token: str = json.loads(response.read())["token"]
    return token


def mint_offline(
    state_dir: str | Path, claims: Mapping[str, Any], *, ttl: float = 3600.0,
    issuer: str | None = None,
) -> str:
    """Sign a token with the keys a dev issuer saved in ``state_dir`` (no server needed)."""
    data = json.loads((Path(state_dir) / STATE_FILE).read_text())
    keys = {k["kid"]: DevKey.from_state(k) for k in data["keys"]}
    payload = build_claims(issuer or data["issuer"], claims, ttl=ttl,
                           audience=data.get("audience", "temporal"), now=time.time())
    key = keys[data["current"]]
    return sign(key, {"alg": key.alg, "typ": "JWT", "kid": key.kid},
                json.dumps(payload).encode())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m extauthz.devissuer``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m extauthz.devissuer", description=WARNING)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir")
    parser.add_argument("--alg", default="RS256", choices=sorted(
        {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
         "EdDSA"}))
    parser.add_argument("--audience", default="temporal")
    parser.add_argument("--allow-non-loopback", action="store_true")
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
