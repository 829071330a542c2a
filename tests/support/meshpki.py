"""Mesh PKI for the certificate-identity tests: CAs and leaves with SPIFFE URI SANs, written as
Envoy's ``--tls-dir`` reads them, and one raw gRPC call over h2 + mTLS (for bodies an SDK
would never send: split-view cases with a certificate-only caller)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from deploy.pki import self_signed_ca

_NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Leaf:
    """A certificate and its key (PEM), and the CA that signed it."""

    cert: bytes
    key: bytes
    ca: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """``name.crt`` and ``name.key`` under ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        crt, key = directory / f"{name}.crt", directory / f"{name}.key"
        crt.write_bytes(self.cert)
        key.write_bytes(self.key)
        return crt, key


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class MeshCA:
    """A self-signed CA issuing server and workload certificates."""

    def __init__(self, name: str) -> None:
        self.key, self.cert = self_signed_ca(name)
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, subject: Sequence[tuple[x509.ObjectIdentifier, str]] = (), *,
              uris: Sequence[str] = (), dns: Sequence[str] = (), ips: Sequence[str] = (),
              server: bool = False) -> Leaf:
        """A leaf with the given subject attributes and SANs (client auth unless ``server``)."""
        key = _key()
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(o, v) for o, v in subject]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(minutes=5))
            .not_valid_after(_NOW + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans),
                                            critical=bool(uris) and not subject)
        cert = builder.sign(self.key, hashes.SHA256())
        return Leaf(cert.public_bytes(serialization.Encoding.PEM),
                    key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()), self.pem)

    def write_listener_dir(self, directory: Path, server: Leaf) -> Path:
        """``tls.crt``, ``tls.key`` (the listener's) and ``ca.crt`` (this CA: the client
        certificates it accepts) as ``devkit.envoyconfig --tls-dir`` reads them."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_bytes(server.cert)
        (directory / "tls.key").write_bytes(server.key)
        (directory / "ca.crt").write_bytes(self.pem)
        return directory


def cn(name: str) -> list[tuple[x509.ObjectIdentifier, str]]:
    """A subject of one common name."""
    return [(NameOID.COMMON_NAME, name)]


@dataclass(frozen=True)
class RawAnswer:
    """What a raw gRPC call got back: the gRPC status and message (trailers or headers)."""

    status: int | None
    message: str
    headers: dict[str, str]


def raw_grpc(address: tuple[str, int], path: str, body: bytes, *, ca: Path,
             cert: Path | None, key: Path | None,
             headers: Sequence[tuple[str, str]] = (), timeout: float = 15.0) -> RawAnswer:
    """One HTTP/2 gRPC request over a fresh mTLS connection, the body sent as given."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    raw = socket.create_connection(address, timeout=timeout)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8"))
    deadline = time.monotonic() + timeout
    try:
        conn.initiate_connection()
        conn.increment_flow_control_window(2**30)
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [
            (":method", "POST"), (":scheme", "https"), (":path", path),
            (":authority", "localhost"), ("content-type", "application/grpc"),
            ("te", "trailers"), *headers], end_stream=not body)
        pending = memoryview(body)
        got: dict[str, str] = {}
        done = False
        while not done:
            while pending:
                window = min(conn.local_flow_control_window(stream),
                             conn.max_outbound_frame_size)
                if window <= 0:
                    break
                piece, pending = pending[:window], pending[window:]
                conn.send_data(stream, bytes(piece), end_stream=not pending)
            sock.sendall(conn.data_to_send())
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            incoming = sock.recv(1 << 16)
            if not incoming:
                break
            for event in conn.receive_data(incoming):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    got.update({str(k): str(v) for k, v in event.headers})
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset
                                | h2.events.ConnectionTerminated):
                    done = True
    finally:
        sock.close()
    status = got.get("grpc-status")
    return RawAnswer(int(status) if status is not None else None,
                     got.get("grpc-message", ""), got)
