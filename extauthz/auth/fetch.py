"""Fetching one JSON document of an issuer (discovery document or JWK Set) over HTTP(S) or
from a ``file://`` URL, within a byte cap (``max_fetch_bytes``, streamed and aborted), and the
outcome labels of a fetch. Runs on the event loop without blocking it (file reads go to a
thread); the total deadline is the caller's (``KeyStore``).
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from extauthz.auth.types import IssuerConfig

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


class FetchResult(enum.StrEnum):
    """Outcome of one key fetch (the ``result`` label of the fetch counter)."""

    OK = "ok"
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"
    HTTP_STATUS = "http_status"
    TOO_LARGE = "too_large"
    INVALID = "invalid"  # not JSON, not a JWK Set / discovery document
    ISSUER_MISMATCH = "issuer_mismatch"  # discovery document names another issuer
    NO_USABLE_KEYS = "no_usable_keys"
    ERROR = "error"  # anything unexpected



class FetchError(Exception):
    """A fetch failed; ``result`` is the counter label, the message is safe to log."""

    def __init__(self, result: FetchResult, message: str):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched JSON document and its freshness hint."""

    document: Any
    max_age: float | None


class CAFileError(ValueError):
    """A ``ca_file`` that cannot be used; the message says why (never the file's content)."""


def load_ca_file(path: str) -> ssl.SSLContext:
    """A client TLS context that trusts only the PEM certificates in ``path``.

    Hostname checking and certificate verification stay on; raises ``CAFileError`` if the
    file cannot be read or holds no PEM certificate OpenSSL accepts.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(4 * 1024 * 1024 + 1)
    except OSError as exc:
        raise CAFileError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > 4 * 1024 * 1024:
        raise CAFileError(f"{path}: larger than 4 MiB; expected a PEM CA bundle")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CAFileError(f"{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it; "
                          "expected the issuer's CA bundle in PEM")
    # the bundle goes to create_default_context itself: called without cafile/cadata it loads
    # the system store first, and a bundle loaded afterwards would only add to it. Its defaults
    # stay (CERT_REQUIRED, hostname checks, and the verify flags of this Python).
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise CAFileError(f"{path}: not a valid PEM CA bundle ({type(exc).__name__}: "
                          f"{getattr(exc, 'reason', None) or exc})") from None
    if not context.get_ca_certs():
        raise CAFileError(f"{path}: holds no CA certificate")
    return context


def issuer_client(config: IssuerConfig) -> httpx.AsyncClient | None:
    """The HTTPS client of an issuer with its own ``ca_file``; None: use the shared one."""
    if not config.ca_file:
        return None
    return httpx.AsyncClient(follow_redirects=False, verify=load_ca_file(config.ca_file))


def check_url(url: str, issuer: IssuerConfig, *, allow_file: bool) -> None:
    """Refuse URL schemes the configuration does not allow (``ValueError`` naming the issuer)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and issuer.allow_insecure_http):
        return
    if scheme == "file" and allow_file:
        return
    allowed = "https" + (", file" if allow_file else "")
    raise ValueError(
        f"issuer {issuer.issuer}: URL {url!r} has scheme {scheme!r}; allowed: {allowed}"
        + ("" if issuer.allow_insecure_http else " (http needs allow_insecure_http)")
    )


def discovery_url(issuer: str) -> str:
    """``<issuer>/.well-known/openid-configuration`` (one trailing slash stripped)."""
    base = issuer.removesuffix("/")
    return base + "/.well-known/openid-configuration"


def parse_max_age(cache_control: str | None) -> float | None:
    """``max-age`` seconds from a ``Cache-Control`` header, if any."""
    if not cache_control:
        return None
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


async def get_json(client: httpx.AsyncClient, config: IssuerConfig, url: str) -> Fetched:
    """Fetch ``url`` (``https``/``http`` or ``file``) within the byte cap and parse it as JSON."""
    if urlsplit(url).scheme.lower() == "file":
        body, max_age = await _read_file(config, url), None
    else:
        body, max_age = await _get_http(client, config, url)
    try:
        return Fetched(json.loads(body), max_age)
    except (ValueError, RecursionError):
        raise FetchError(FetchResult.INVALID, f"{url}: not JSON") from None


async def _get_http(client: httpx.AsyncClient, config: IssuerConfig, url: str
                    ) -> tuple[bytes, float | None]:
    cap = config.max_fetch_bytes
    try:
        async with client.stream(
            "GET", url, timeout=config.fetch_timeout_seconds,
            headers={"Accept": "application/json"},
        ) as response:
            if response.status_code != 200:
                raise FetchError(FetchResult.HTTP_STATUS,
                                 f"{url}: HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _too_large(url, cap)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise _too_large(url, cap)
                chunks.append(chunk)
            return b"".join(chunks), parse_max_age(response.headers.get("cache-control"))
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.HTTPError as exc:
        raise FetchError(FetchResult.NETWORK_ERROR,
                         f"{url}: {type(exc).__name__}") from None


async def _read_file(config: IssuerConfig, url: str) -> bytes:
    path = Path(unquote(urlsplit(url).path))
    cap = config.max_fetch_bytes

    def read() -> bytes:
        with path.open("rb") as handle:
            return handle.read(cap + 1)

    try:
        body = await asyncio.to_thread(read)
    except OSError as exc:
        raise FetchError(FetchResult.NETWORK_ERROR,
                         f"{url}: {type(exc).__name__}") from None
    if len(body) > cap:
        raise _too_large(url, cap)
    return body


def _too_large(url: str, cap: int) -> FetchError:
    return FetchError(FetchResult.TOO_LARGE, f"{url}: larger than max_fetch_bytes {cap}")
