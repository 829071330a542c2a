"""The verified client certificate → a ``PeerIdentity`` (``peer_identity``; docs/mesh.md).

Envoy verified the certificate at its downstream TLS (a CA it trusts,
``require_client_certificate``); this module only reads it: the URL-encoded PEM of
``include_peer_certificate`` (gRPC mode), else ``attributes.source.principal``, else the
``x-forwarded-client-cert`` element Envoy set (HTTP mode). The result is memoised per
evidence: a worker's connection repeats the same certificate on every call, and a PEM parse
costs tens of microseconds.
"""

from __future__ import annotations

from urllib.parse import unquote

from cryptography import x509

from extauthz.model import PeerEvidence, PeerIdentity, Principal, Reason
from extauthz.peers import (
    CertFields,
    PeerError,
    PeerSettings,
    certificate_principal,
    fields_of_principal,
    identify,
    parse_xfcc,
)

_CACHE_ENTRIES = 4096
_MAX_PEM_CHARS = 65_536


def fields_of_pem(url_encoded_pem: str) -> CertFields:
    """The URI SANs, DNS SANs and subject DN of Envoy's URL-encoded PEM certificate."""
    if len(url_encoded_pem) > _MAX_PEM_CHARS:
        raise PeerError(Reason.MALFORMED_PEER, "the client certificate is too large")
    try:
        cert = x509.load_pem_x509_certificate(unquote(url_encoded_pem).encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise PeerError(Reason.MALFORMED_PEER,
                        f"the client certificate is not PEM: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        uris, dns = (), ()
    return CertFields(uris=uris, dns=dns, subject=cert.subject.rfc4514_string())


class PeerIdentifier:
    """Evidence → identity (or ``PeerError``) under one ``peer_identity`` setting; memoised."""

    __slots__ = ("_cache", "_principals", "settings")

    def __init__(self, settings: PeerSettings):
        self.settings = settings
        self._cache: dict[PeerEvidence, PeerIdentity | PeerError] = {}
        self._principals: dict[PeerIdentity, Principal] = {}

    def identify(self, evidence: PeerEvidence) -> PeerIdentity:
        """The identity of the certificate in ``evidence``; raises ``PeerError``."""
        hit = self._cache.get(evidence)
        if hit is None:
            try:
                hit = identify(self._fields(evidence), self.settings)
            except PeerError as exc:
                hit = exc
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            self._cache[evidence] = hit
        if isinstance(hit, PeerError):
            raise hit
        return hit

    def principal(self, peer: PeerIdentity) -> Principal:
        """The principal a certificate alone names: kind ``service``, no claims, no roles."""
        hit = self._principals.get(peer)
        if hit is None:
            hit = certificate_principal(peer)
            if len(self._principals) >= _CACHE_ENTRIES:
                self._principals.clear()
            self._principals[peer] = hit
        return hit

    @staticmethod
    def _fields(evidence: PeerEvidence) -> CertFields:
        if evidence.certificate:
            return fields_of_pem(evidence.certificate)
        if evidence.principal:
            return fields_of_principal(evidence.principal)
        fields = parse_xfcc(evidence.xfcc)
        if fields.pem:
            return fields_of_pem(fields.pem)
        if evidence.xfcc_text:
            return fields
        # Envoy writes URI= and DNS= SANs unquoted and unescaped: a DNS SAN
        # "x;URI=spiffe://td/..." reads as that SPIFFE ID. Only the certificate is unambiguous.
        raise PeerError(Reason.MALFORMED_PEER,
                        "x-forwarded-client-cert has no Cert= (the certificate): set "
                        "set_current_client_cert_details.cert: true in Envoy; its URI= and "
                        "DNS= text alone cannot be told apart from SAN contents")
