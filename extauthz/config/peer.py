"""The ``peer_identity`` block: the client certificate Envoy verified as a credential.

```yaml
peer_identity:
  enabled: true                 # default false: certificates are ignored, a token is required
  fields: [spiffe]              # which certificate fields name the principal, in order:
                                # spiffe (the spiffe:// URI SAN), subject (the DN), dns
  trust_domains: [cluster.local]  # SPIFFE trust domains accepted (required with spiffe);
                                  # removing one revokes every certificate of it
  listeners: [mesh]             # optional: only certificates from these Envoy listeners count
                                # (the label a listener puts on its checks); default: every one
```

Only safe when the Envoy in front terminates the client's TLS and requires client certificates
(envoy/envoy-mtls.yaml, envoy/envoy-http-mtls.yaml; docs/mesh.md).
"""

from __future__ import annotations

from extauthz.peers import (
    FIELDS,
    LISTENER_HEADER,
    LISTENER_KEY,
    PeerError,
    PeerSettings,
    split_spiffe_id,
)
from extauthz.yamlread import Reader


def read_peer_identity(r: Reader, base: PeerSettings) -> PeerSettings:
    """The ``peer_identity`` block under ``r`` on top of ``base``, checked."""
    p = r.child("peer_identity")
    fields = p.strings("fields", base.fields)
    settings = PeerSettings(
        enabled=p.get("enabled", bool, base.enabled),
        fields=fields,
        trust_domains=p.strings("trust_domains", base.trust_domains),
        listeners=p.strings("listeners", base.listeners),
    )
    p.done()
    if not fields:
        raise p.error("fields", f"empty; name at least one of {', '.join(FIELDS)}")
    for i, name in enumerate(fields):
        if name not in FIELDS:
            raise p.error("fields", f"[{i}] {name!r} is not a certificate field; use "
                          f"{', '.join(FIELDS)}")
    if any(not name.strip() for name in settings.listeners):
        raise p.error("listeners", "an empty listener name; use the label the Envoy listener "
                      "puts on its checks (docs/mesh.md)")
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


def envoy_problems(doc: object, transport: str, listeners: tuple[str, ...] = ()) -> list[str]:
    """Why an Envoy config cannot back ``peer_identity`` (empty: it can), read from the YAML.

    The identity means "the certificate this Envoy verified": every listener that runs the
    ext_authz filter must terminate the client's TLS and require a client certificate, set
    x-forwarded-client-cert itself (SANITIZE_SET), and hand the certificate to the authz server
    (gRPC: include_peer_certificate; HTTP: x-forwarded-client-cert in allowed_headers). With
    ``listeners`` (peer_identity.listeners), each such listener must label its checks with one.
    """
    items = _get(_get(doc, "static_resources"), "listeners")
    if not isinstance(items, list):
        return ["no static_resources.listeners: cannot tell whether Envoy terminates client TLS"]
    problems: list[str] = []
    checked = 0
    for item in items:
        name = str(_get(item, "name") or "?")
        for chain in _list(_get(item, "filter_chains")):
            hcm, authz = _hcm_and_ext_authz(chain)
            if authz is None:
                continue
            checked += 1
            where = f"listener {name!r}"
            tls = _get(_get(chain, "transport_socket"), "typed_config")
            if not isinstance(tls, dict) or "DownstreamTlsContext" not in str(tls.get("@type")):
                problems.append(f"{where} does not terminate the client's TLS: the certificate "
                                "identity would not be this Envoy's to vouch for; turn "
                                "peer_identity off or use envoy/envoy-mtls.yaml")
                continue
            if tls.get("require_client_certificate") is not True:
                problems.append(f"{where}: require_client_certificate is not true")
            problems += _verification(where, _get(tls, "common_tls_context"))
            if _get(hcm, "forward_client_cert_details") != "SANITIZE_SET":
                problems.append(f"{where}: forward_client_cert_details must be SANITIZE_SET (a "
                                "client-sent x-forwarded-client-cert must never pass)")
            if "grpc_service" not in authz and _get(
                    _get(hcm, "set_current_client_cert_details"), "cert") is not True:
                problems.append(f"{where}: set_current_client_cert_details.cert must be true "
                                "(the server reads the certificate itself; URI=/DNS= text is "
                                "ambiguous)")
            problems += _handover(where, authz, transport)
            label = _label(hcm, authz)
            if listeners and label not in listeners:
                problems.append(f"{where} labels its checks {label!r}, which "
                                "peer_identity.listeners does not list: its certificates would "
                                "be ignored")
    if not checked:
        problems.append("no listener runs the ext_authz filter")
    return problems


def _verification(where: str, common: object) -> list[str]:
    """The listener must verify client certificates against a CA, never accept untrusted ones."""
    context = _get(common, "validation_context")
    if context is None and _get(common, "validation_context_sds_secret_config") is not None:
        return []  # the CA comes by SDS (the chart's file-based SDS)
    if not isinstance(context, dict) or context.get("trusted_ca") is None:
        return [f"{where}: no validation_context.trusted_ca: client certificates are not "
                "verified against a CA"]
    if context.get("trust_chain_verification") == "ACCEPT_UNTRUSTED":
        return [f"{where}: trust_chain_verification ACCEPT_UNTRUSTED takes any certificate"]
    return []


def _handover(where: str, authz: dict[str, object], transport: str) -> list[str]:
    if "grpc_service" in authz:
        if transport == "http":
            return [f"{where}: ext_authz uses gRPC but the server's transport is http"]
        if authz.get("include_peer_certificate") is not True:
            return [f"{where}: include_peer_certificate is not true (only the SPIFFE ID or "
                    "subject of attributes.source.principal reaches the server)"]
        return []
    patterns = _list(_get(_get(_get(authz, "http_service"), "authorization_request"),
                          "allowed_headers"))
    patterns = patterns or _list(_get(_get(authz, "allowed_headers"), "patterns"))
    if not any(_get(p, "exact") == "x-forwarded-client-cert" for p in patterns):
        return [f"{where}: x-forwarded-client-cert is not in the ext_authz allowed_headers, so "
                "the HTTP authz server never sees the certificate"]
    return []


def _label(hcm: object, authz: dict[str, object]) -> str:
    """The listener label on its checks: the gRPC context extension on its virtual host, or the
    header its HTTP ext_authz adds ("" when none)."""
    for vhost in _list(_get(_get(hcm, "route_config"), "virtual_hosts")):
        per_filter = _get(_get(vhost, "typed_per_filter_config"), "envoy.filters.http.ext_authz")
        extensions = _get(_get(per_filter, "check_settings"), "context_extensions")
        if isinstance(extensions, dict) and LISTENER_KEY in extensions:
            return str(extensions[LISTENER_KEY])
    added = _get(_get(_get(authz, "http_service"), "authorization_request"), "headers_to_add")
    for header in _list(added):
        if _get(header, "key") == LISTENER_HEADER:
            return str(_get(header, "value"))
    return ""


def _hcm_and_ext_authz(chain: object) -> tuple[object, dict[str, object] | None]:
    for f in _list(_get(chain, "filters")):
        hcm = _get(f, "typed_config")
        for http_filter in _list(_get(hcm, "http_filters")):
            typed = _get(http_filter, "typed_config")
            if "ExtAuthz" in str(_get(typed, "@type")) and isinstance(typed, dict):
                return hcm, typed
    return None, None


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, dict) else None


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
