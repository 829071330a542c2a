"""Server TLS and mTLS from PEM files, re-read when the files change, for both transports.

cert-manager (or any Secret volume) rotates ``tls.crt``/``tls.key``/``ca.crt`` in place: the
kubelet swaps a ``..data`` symlink, so every path keeps its name and gets new contents. gRPC's
``dynamic_ssl_server_credentials`` asks a fetcher for the certificate configuration before every
TLS handshake; :class:`CertificateFiles` is that fetcher. It ``stat``\\s the files (a few
microseconds: connections from Envoy are long-lived) and re-reads them only when one changed.

A new set is adopted only when it is complete and consistent: the chain parses, the private key
parses and belongs to the first certificate, the client CA bundle (when configured) parses.
Otherwise (a half-written rotation, a wrong key) the current configuration stays in force, a
warning is logged once per change, and the next handshake looks again. At start-up an unusable
set is an error (:class:`TLSFilesError`): the server refuses to start rather than serve without
the TLS it was told to use.

The HTTP ext_authz listener (``server.http1``) has no such fetcher in asyncio: it accepts
plain TCP and upgrades each connection with ``loop.start_tls`` and the :class:`ssl.SSLContext`
that :class:`ServerSSLContext` holds, rebuilt from a new set of files when they change. The
same files, the same checks, the same semantics: a new connection gets the new certificate and
is verified against the new client CA.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from extauthz.config import TLSSettings

log = structlog.get_logger("extauthz.tls")

# the HTTP ext_authz listener speaks HTTP/1.1 only
HTTP_ALPN = ("http/1.1",)
# (st_dev, st_ino, st_size, st_mtime_ns) per file; None for a file that cannot be stat'ed
Fingerprint = tuple[tuple[int, int, int, int] | None, ...]


class TLSFilesError(Exception):
    """The TLS files are missing, unreadable or inconsistent; the message says which."""


@dataclass(frozen=True, slots=True)
class LoadedFiles:
    """One consistent set of PEM files, as read."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    subject: str
    not_after: datetime.datetime


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise TLSFilesError(f"{what} {path}: cannot read: {exc.strerror}") from None


def load_files(tls: TLSSettings) -> LoadedFiles:
    """Read and check the configured files; raise :class:`TLSFilesError` on any problem."""
    chain = _read(tls.cert_file, "tls.cert_file")
    key = _read(tls.key_file, "tls.key_file")
    ca = _read(tls.client_ca_file, "tls.client_ca_file") if tls.client_ca_file else None
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise TLSFilesError(f"tls.cert_file {tls.cert_file}: no PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TLSFilesError(
            f"tls.key_file {tls.key_file}: not an unencrypted PEM private key") from None
    public = certs[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != public:
        raise TLSFilesError(f"tls.key_file {tls.key_file} does not belong to the first "
                            f"certificate of {tls.cert_file}")
    if ca is not None:
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise TLSFilesError(
                f"tls.client_ca_file {tls.client_ca_file}: no PEM certificate") from None
    return LoadedFiles(chain, key, ca, certs[0].subject.rfc4514_string(),
                       certs[0].not_valid_after_utc)


def _fingerprint(paths: tuple[str, ...]) -> Fingerprint:
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _configuration(files: LoadedFiles) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(files.private_key, files.cert_chain)], root_certificates=files.client_ca)


class CertificateFiles:
    """The certificate-configuration fetcher for :func:`grpc.dynamic_ssl_server_credentials`.

    ``clock`` is for tests (certificate expiry warnings)."""

    def __init__(self, tls: TLSSettings,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        if not tls.enabled:
            raise ValueError("TLS is not configured (tls.cert_file is empty)")
        self.tls = tls
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._paths = tuple(p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p)
        self._lock = threading.Lock()
        self._seen = _fingerprint(self._paths)
        self.current = load_files(tls)  # raises: no start without usable TLS files
        self.reloads = 0
        self.rejected = 0
        self._warn_expiry(self.current)
        log.info("tls.loaded", subject=self.current.subject,
                 not_after=self.current.not_after.isoformat(),
                 client_certificates="required" if tls.require_client_cert else "not required")

    def initial(self) -> grpc.ServerCertificateConfiguration:
        """The configuration to start with."""
        return _configuration(self.current)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC calls this before each handshake: a new configuration, or None (no change).

        It must never raise: an exception here would fail the handshake."""
        try:
            files = self.refresh()
        except Exception:  # pragma: no cover (defensive: keep serving the current files)
            log.exception("tls.reload_failed")
            return None
        return None if files is None else _configuration(files)

    def refresh(self, adopt: Callable[[LoadedFiles], object] | None = None) -> LoadedFiles | None:
        """The new set of files if they changed and are usable (now ``current``), else None.

        ``adopt`` (optional) builds what the caller serves from the new set; if it raises
        :class:`TLSFilesError` the set is rejected like an inconsistent one."""
        seen = _fingerprint(self._paths)
        if seen == self._seen:
            return None
        with self._lock:
            if seen == self._seen:
                return None
            self._seen = seen
            try:
                files = load_files(self.tls)
                if files != self.current and adopt is not None:
                    adopt(files)
            except TLSFilesError as exc:
                # a rotation caught half-way, or a broken Secret: keep the current files
                self.rejected += 1
                log.warning("tls.reload_rejected", problem=str(exc),
                            keeping=self.current.subject)
                return None
            if files == self.current:
                return None
            self.current = files
            self.reloads += 1
            self._warn_expiry(files)
            log.info("tls.reloaded", subject=files.subject, not_after=files.not_after.isoformat())
            return files

    def _warn_expiry(self, files: LoadedFiles) -> None:
        if files.not_after <= self._clock():
            log.warning("tls.certificate_expired", subject=files.subject,
                        not_after=files.not_after.isoformat())


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` for OpenSSL's file-only loaders, kept in memory (a memfd on Linux;
    elsewhere a private temporary file)."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("extauthz-tls", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as directory:  # pragma: no cover (not Linux)
        path = os.path.join(directory, "pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(data)
        yield path


def ssl_context(files: LoadedFiles, tls: TLSSettings) -> ssl.SSLContext:
    """A server :class:`ssl.SSLContext` for exactly these (already checked) bytes, not the
    paths read again, so a rotation between the check and the load cannot mix two sets.

    TLS 1.2 and 1.3 only, ALPN ``http/1.1``; client certificates required and verified against
    the client CA when ``tls.require_client_cert`` (else none is requested, as with gRPC).
    Each context has its own session cache and ticket keys: after a rotation no session of the
    previous files can be resumed, so every new connection is checked against the new set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(list(HTTP_ALPN))
    try:
        with _memory_file(files.cert_chain) as chain, _memory_file(files.private_key) as key:
            ctx.load_cert_chain(chain, key)
        if files.client_ca is not None:
            ctx.load_verify_locations(cadata=files.client_ca.decode("ascii"))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TLSFilesError(f"tls: OpenSSL cannot use the files ({tls.cert_file}, "
                            f"{tls.key_file}): {exc}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    return ctx


class ServerSSLContext:
    """The :class:`ssl.SSLContext` for new connections of the HTTP listener, following the
    files.

    :meth:`current` is called once per accepted connection, before its handshake: it
    ``stat``\\s the files (as the gRPC fetcher does) and, when they changed and the new set is
    usable, builds a new context and swaps it in (one reference assignment). Connections
    already open keep the context they were accepted with."""

    def __init__(self, tls: TLSSettings,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.files = CertificateFiles(tls, clock)  # raises: no start without usable files
        self._context = ssl_context(self.files.current, tls)

    def current(self) -> ssl.SSLContext:
        """The context a connection accepted now must use. Never raises."""
        try:
            self.files.refresh(self._adopt)
        except Exception:  # pragma: no cover (defensive: keep serving the current files)
            log.exception("tls.reload_failed")
        return self._context

    def _adopt(self, files: LoadedFiles) -> None:
        self._context = ssl_context(files, self.files.tls)


def server_credentials(tls: TLSSettings) -> tuple[grpc.ServerCredentials, CertificateFiles]:
    """Credentials for ``add_secure_port`` that follow the files, and the fetcher behind them."""
    files = CertificateFiles(tls)
    creds = grpc.dynamic_ssl_server_credentials(
        files.initial(), files, require_client_authentication=tls.require_client_cert)
    return creds, files
