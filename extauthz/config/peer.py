"""The ``peer_identity`` block: the client certificate Envoy verified as a credential.

```yaml
peer_identity:
  enabled: true                 # default false: certificates are ignored, a token is required
  fields: [spiffe]              # which certificate fields name the principal, in order:
                                # spiffe (the spiffe:// URI SAN), subject (the DN), dns
  trust_domains: [cluster.local]  # SPIFFE trust domains accepted (required with spiffe);
                                  # removing one revokes every certificate of it
```

Only safe when the Envoy in front terminates the client's TLS and requires client certificates
(envoy/envoy-mtls.yaml, envoy/envoy-http-mtls.yaml; docs/mesh.md).
"""

from __future__ import annotations

from extauthz.peers import FIELDS, PeerError, PeerSettings, split_spiffe_id
from extauthz.yamlread import Reader


def read_peer_identity(r: Reader, base: PeerSettings) -> PeerSettings:
    """The ``peer_identity`` block under ``r`` on top of ``base``, checked."""
    p = r.child("peer_identity")
    fields = p.strings("fields", base.fields)
    settings = PeerSettings(
        enabled=p.get("enabled", bool, base.enabled),
        fields=fields,
        trust_domains=p.strings("trust_domains", base.trust_domains),
    )
    p.done()
    if not fields:
        raise p.error("fields", f"empty; name at least one of {', '.join(FIELDS)}")
    for i, name in enumerate(fields):
        if name not in FIELDS:
            raise p.error("fields", f"[{i}] {name!r} is not a certificate field; use "
                          f"{', '.join(FIELDS)}")
    if len(set(fields)) != len(fields):
        raise p.error("fields", "a field is listed twice")
    for i, domain in enumerate(settings.trust_domains):
        try:
            split_spiffe_id(f"spiffe://{domain}")
        except PeerError:
            raise p.error("trust_domains",
                          f"[{i}] {domain!r} is not a SPIFFE trust domain (lower-case letters, "
                          "digits, '.', '-', '_'; no spiffe:// prefix)") from None
    if settings.enabled and "spiffe" in fields and not settings.trust_domains:
        raise p.error("trust_domains", "required when fields has spiffe: the SPIFFE trust "
                      "domains whose certificates are accepted (e.g. [cluster.local])")
    return settings
