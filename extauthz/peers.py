"""Certificate identity (``peer_identity``): settings, Envoy's ``x-forwarded-client-cert``, SPIFFE
IDs and their path-segment globs, and the rules that turn certificate fields into a
``PeerIdentity``. Pure: no I/O (the PEM parser is ``extauthz.auth.certs``).

What counts (docs/mesh.md): the client certificate Envoy verified at its downstream TLS, never
a header a client can send. ``fields`` says which certificate fields name the principal, in order
of preference (``spiffe``: the one ``spiffe://`` URI SAN; ``subject``: the subject DN as RFC 4514
text; ``dns``: the first DNS SAN). A SPIFFE ID whose trust domain is not in ``trust_domains`` is
refused whatever else the certificate carries: removing a trust domain revokes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from extauthz.model import PeerIdentity, Principal, Reason

FIELDS = ("spiffe", "subject", "dns")
XFCC_HEADER = "x-forwarded-client-cert"
# how a listener labels its checks: a gRPC context extension, an HTTP header Envoy adds
LISTENER_KEY = "extauthz-listener"
LISTENER_HEADER = "x-extauthz-listener"
X509_ISSUER = "x509"  # the issuer a decision reports for a certificate without a SPIFFE ID
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_XFCC_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """The ``peer_identity`` block of the config: off by default."""

    enabled: bool = False
    fields: tuple[str, ...] = ("spiffe",)
    trust_domains: tuple[str, ...] = ()
    # the Envoy listeners whose certificates count (their label); empty: every listener
    listeners: tuple[str, ...] = ()

    def counts(self, listener: str) -> bool:
        """Whether a certificate verified by ``listener`` is a credential here."""
        return not self.listeners or listener in self.listeners


class PeerError(ValueError):
    """A certificate identity that is refused, with the reason code of the denial."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class CertFields:
    """What a verified certificate says: URI SANs, DNS SANs and the subject DN."""

    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    subject: str = ""
    # HTTP mode: the URL-encoded PEM of the XFCC ``Cert=`` pair (set_current_client_cert_details
    # cert: true); the certificate itself, the only unambiguous part of the header
    pem: str = ""


def split_spiffe_id(text: str) -> tuple[str, str]:
    """``spiffe://td/a/b`` → (``td``, ``/a/b``); raises ``PeerError`` unless it is a valid
    SPIFFE ID (lower-case trust domain; non-empty path segments, none ``.`` or ``..``)."""
    if not text.startswith("spiffe://"):
        raise PeerError(Reason.MALFORMED_PEER, f"{text[:80]!r} is not a spiffe:// ID")
    rest = text[len("spiffe://"):]
    domain, _, path = rest.partition("/")
    if not _TRUST_DOMAIN.fullmatch(domain):
        raise PeerError(Reason.MALFORMED_PEER,
                        f"SPIFFE ID {text[:120]!r}: bad trust domain (lower-case letters, "
                        "digits, '.', '-', '_')")
    if path:
        for seg in path.split("/"):
            if not _PATH_SEGMENT.fullmatch(seg) or seg in (".", ".."):
                raise PeerError(Reason.MALFORMED_PEER,
                                f"SPIFFE ID {text[:120]!r}: bad path segment {seg[:40]!r}")
    return domain, f"/{path}" if path else ""


def identify(cert: CertFields, settings: PeerSettings) -> PeerIdentity:
    """The identity of a verified certificate under ``settings``, or ``PeerError``."""
    spiffe = [u for u in cert.uris if u.lower().startswith("spiffe:")]
    if len(spiffe) > 1:
        raise PeerError(Reason.MALFORMED_PEER,
                        "the client certificate has more than one spiffe:// URI SAN")
    spiffe_id = trust_domain = ""
    if spiffe:
        trust_domain, _ = split_spiffe_id(spiffe[0])
        spiffe_id = spiffe[0]
        if trust_domain not in settings.trust_domains:
            raise PeerError(Reason.UNTRUSTED_PEER,
                            f"trust domain {trust_domain!r} of the client certificate is not in "
                            "peer_identity.trust_domains")
    name = ""
    for f in settings.fields:
        if f == "spiffe" and spiffe_id:
            name = spiffe_id
        elif f == "subject" and cert.subject:
            name = cert.subject
        elif f == "dns" and cert.dns:
            name = cert.dns[0]
        if name:
            break
    if not name:
        raise PeerError(Reason.UNTRUSTED_PEER,
                        "the client certificate has none of the fields peer_identity.fields "
                        f"counts ({', '.join(settings.fields)})")
    return PeerIdentity(
        name=name,
        spiffe_id=spiffe_id if "spiffe" in settings.fields else "",
        trust_domain=trust_domain if "spiffe" in settings.fields else "",
        subject=cert.subject if "subject" in settings.fields else "",
        dns=cert.dns if "dns" in settings.fields else (),
    )


def certificate_principal(peer: PeerIdentity) -> Principal:
    """The principal a certificate alone names: kind ``service``, no claims, no roles; its
    issuer is ``spiffe://<trust domain>`` when a SPIFFE ID names it, else ``x509``."""
    issuer = (f"spiffe://{peer.trust_domain}" if peer.spiffe_id and peer.name == peer.spiffe_id
              else X509_ISSUER)
    return Principal(subject=peer.name, issuer=issuer, kind="service", peer=peer)


def xfcc_of(cert: CertFields) -> str:
    """The ``x-forwarded-client-cert`` element Envoy would set for ``cert`` (offline checks)."""
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    parts = [f"Subject={quoted(cert.subject)}"] if cert.subject else []
    parts += [f"URI={u}" for u in cert.uris]
    parts += [f"DNS={d}" for d in cert.dns]
    return ";".join(parts)


def parse_xfcc(value: str) -> CertFields:
    """The one element of an ``x-forwarded-client-cert`` header Envoy set (SANITIZE_SET).

    ``Key=Value`` pairs separated by ``;``, values double-quoted when they hold ``,;=`` (``\\"``
    escapes a quote, ``\\\\`` a backslash; a DN's own escapes such as ``\\,`` are kept). More
    than one element (a ``,`` outside quotes) means the header was forwarded, not set by the
    Envoy that verified the certificate: refused.
    """
    if len(value) > _MAX_XFCC_CHARS:
        raise PeerError(Reason.MALFORMED_PEER, "x-forwarded-client-cert is too long")
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        eq = value.find("=", i)
        if eq < 0:
            raise PeerError(Reason.MALFORMED_PEER, "x-forwarded-client-cert: a key without '='")
        key = value[i:eq].strip()
        i = eq + 1
        if i < n and value[i] == '"':
            out: list[str] = []
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    # only the quote and the backslash are XFCC escapes; any other escape
                    # is the DN's own (RFC 2253 ``\,``, ``\+``...) and stays, exactly as the
                    # certificate's RFC 4514 text has it: ``CN=a\,O=b`` is one CN, never two
                    # attributes
                    if value[i + 1] not in '"\\':
                        out.append(value[i])
                    i += 1
                out.append(value[i])
                i += 1
            if i >= n:
                raise PeerError(Reason.MALFORMED_PEER,
                                "x-forwarded-client-cert: an unterminated quoted value")
            i += 1
            val = "".join(out)
        else:
            end = i
            while end < n and value[end] not in ";,":
                end += 1
            val = value[i:end]
            i = end
        pairs.append((key.lower(), val))
        if i < n:
            if value[i] == ",":
                raise PeerError(Reason.MALFORMED_PEER,
                                "x-forwarded-client-cert has more than one element; the Envoy "
                                "that verifies the certificate must set it (SANITIZE_SET)")
            if value[i] != ";":
                raise PeerError(Reason.MALFORMED_PEER,
                                "x-forwarded-client-cert: expected ';' between pairs")
            i += 1
    certs = [v for k, v in pairs if k == "cert"]
    if len(certs) > 1:
        raise PeerError(Reason.MALFORMED_PEER,
                        "x-forwarded-client-cert has more than one Cert: a SAN carried one")
    return CertFields(
        pem=certs[0] if certs else "",
        uris=tuple(v for k, v in pairs if k == "uri" and v),
        dns=tuple(v for k, v in pairs if k == "dns" and v),
        subject=next((v for k, v in pairs if k == "subject"), ""),
    )


def fields_of_principal(principal: str) -> CertFields:
    """Envoy's ``attributes.source.principal`` alone (no certificate): its URI SAN, else its
    subject."""
    if principal.startswith("spiffe://"):
        return CertFields(uris=(principal,))
    return CertFields(subject=principal)


class GlobError(ValueError):
    """A ``spiffe`` pattern that cannot be compiled."""


def spiffe_glob(pattern: str) -> Callable[[str], bool]:
    """A matcher for ``spiffe://td/ns/billing/sa/*``: compared path segment by path segment.

    ``*`` inside a segment matches any characters but ``/`` (so ``sa/*`` is exactly one more
    segment); a last segment ``**`` matches one or more whole segments. Case-sensitive."""
    if not pattern.startswith("spiffe://"):
        raise GlobError(f"{pattern!r}: a spiffe pattern starts with spiffe://")
    segments = pattern[len("spiffe://"):].split("/")
    parts: list[str] = []
    for i, seg in enumerate(segments):
        if not seg:
            raise GlobError(f"{pattern!r}: empty path segment (a '//' or a trailing '/')")
        if seg == "**":
            if i != len(segments) - 1 or i == 0:
                raise GlobError(f"{pattern!r}: '**' is only allowed as the last path segment")
            parts.append("[^/]+(?:/[^/]+)*")
            continue
        if "**" in seg:
            raise GlobError(f"{pattern!r}: '**' must be a whole segment")
        parts.append("[^/]*".join(re.escape(piece) for piece in seg.split("*")))
    compiled = re.compile("spiffe://" + "/".join(parts))
    return lambda text: compiled.fullmatch(text) is not None


def any_glob(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Whether any of ``patterns`` (``spiffe_glob``) matches."""
    tests = [spiffe_glob(p) for p in patterns]
    return lambda text: any(t(text) for t in tests)
