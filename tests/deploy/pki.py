"""Throw-away PKI for the TLS tests: CAs, server and client certificates (PEM), written the way a
Kubernetes Secret volume lays them out (``tls.crt``, ``tls.key``, ``ca.crt`` behind a ``..data``
symlink that is swapped atomically on rotation)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Issued:
    """A certificate and its key, PEM."""

    cert: bytes
    key: bytes
    ca: bytes  # the issuing CA's certificate

    @property
    def common_name(self) -> str:
        """The subject CN."""
        cert = x509.load_pem_x509_certificate(self.cert)
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def self_signed_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and a self-signed CA certificate for it, valid for a day (CN ``name``)."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(minutes=5))
        .not_valid_after(_NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


class CA:
    """A self-signed CA that issues leaf certificates."""

    def __init__(self, name: str) -> None:
        self.key, self.cert = self_signed_ca(name)
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
              client: bool = False) -> Issued:
        """A leaf for a server (SANs ``dns``/``ips``) or a client."""
        key = _key()
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(minutes=5))
            .not_valid_after(_NOW + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), self.pem)


def write_secret_volume(directory: Path, issued: Issued, *, ca: bytes | None = None) -> None:
    """Write ``tls.crt``/``tls.key``/``ca.crt`` as the kubelet does: into a fresh timestamped
    directory, then swap the ``..data`` symlink atomically (the file names are symlinks into it).
    ``ca`` overrides the bundle in ``ca.crt`` (default: the issuer's certificate)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = f"..{datetime.datetime.now(datetime.UTC).strftime('%Y_%m_%d_%H_%M_%S.%f')}"
    payload = directory / stamp
    payload.mkdir()
    (payload / "tls.crt").write_bytes(issued.cert)
    (payload / "tls.key").write_bytes(issued.key)
    (payload / "ca.crt").write_bytes(issued.ca if ca is None else ca)
    tmp_link = directory / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    os.symlink(stamp, tmp_link)
    os.replace(tmp_link, directory / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        link = directory / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
