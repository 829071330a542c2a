"""Render the project's Envoy config (``envoy/envoy.yaml``) for other addresses.

``envoy/envoy.yaml`` is the one Envoy configuration of the project: the e2e tests, the local stack
and the Helm chart use it. It is a complete, valid file with local-stack defaults. This module
changes only addresses (and, optionally, the ext_authz timeout) by structured edits: it loads the
YAML, finds the listeners ``external`` and ``internal``, the clusters ``extauthz``,
``temporal_frontend`` and ``temporal_http`` (the frontend's HTTP API port) and the admin block by
name, replaces their socket addresses and dumps the
result. There is no text templating, so what the tests run is exactly the committed file with
other ports.

Where the file is found (first match wins):

1. the ``source`` argument / ``--source`` option;
2. the environment variable ``EXTAUTHZ_ENVOY_CONFIG``;
3. ``envoy/envoy.yaml`` in the source checkout (the parent of ``devkit/``).

For Envoy's HTTP ext_authz protocol (``transport="http"``, ``--transport http``) the file is
``envoy/envoy-http.yaml`` (or ``$EXTAUTHZ_ENVOY_HTTP_CONFIG``): the same listeners and clusters,
with ``http_service`` instead of ``grpc_service``; the authz address then also moves
``http_service.server_uri.uri``.

The mTLS variants (``mtls=True``, ``--mtls``: ``envoy/envoy-mtls.yaml`` and
``envoy/envoy-http-mtls.yaml``, or ``$EXTAUTHZ_ENVOY_MTLS_CONFIG`` /
``$EXTAUTHZ_ENVOY_HTTP_MTLS_CONFIG``) terminate the client's TLS on the external listener and
require a client certificate; ``tls_dir`` (``--tls-dir``) points its ``tls.crt``, ``tls.key`` and
``ca.crt`` at another directory (a Kubernetes Secret volume's layout).

Otherwise :class:`EnvoyConfigNotFound` says so; an installed wheel does not ship the file (it is
not package data, and no generated copy is committed).

Command line::

    python -m devkit.envoyconfig --listen 127.0.0.1:7233 --upstream 127.0.0.1:7234 \\
        --http-upstream 127.0.0.1:7243 \\
        --authz 127.0.0.1:9191 --admin 127.0.0.1:9901 --out /tmp/envoy.yaml
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ENV_VAR = "EXTAUTHZ_ENVOY_CONFIG"
HTTP_ENV_VAR = "EXTAUTHZ_ENVOY_HTTP_CONFIG"
TRANSPORTS = ("grpc", "http")
_FILES = {"grpc": ("envoy.yaml", ENV_VAR), "http": ("envoy-http.yaml", HTTP_ENV_VAR)}
_MTLS_FILES = {"grpc": ("envoy-mtls.yaml", "EXTAUTHZ_ENVOY_MTLS_CONFIG"),
               "http": ("envoy-http-mtls.yaml", "EXTAUTHZ_ENVOY_HTTP_MTLS_CONFIG")}
TLS_FILES = ("tls.crt", "tls.key", "ca.crt")

EXTERNAL_LISTENER = "external"
INTERNAL_LISTENER = "internal"
AUTHZ_CLUSTER = "extauthz"
UPSTREAM_CLUSTER = "temporal_frontend"
HTTP_UPSTREAM_CLUSTER = "temporal_http"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
HEALTH_PATH = "/grpc.health.v1.Health/Check"

Address = tuple[str, int]


class EnvoyConfigNotFound(FileNotFoundError):
    """The canonical ``envoy/envoy.yaml`` could not be located."""


class EnvoyConfigError(ValueError):
    """The config does not have the shape this module edits (a listener or cluster is missing)."""


def default_path(transport: str = "grpc", mtls: bool = False) -> Path:
    """Where the canonical config is, per the module docstring; raise if it is nowhere."""
    if transport not in _FILES:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    name, var = (_MTLS_FILES if mtls else _FILES)[transport]
    env = os.environ.get(var)
    if env:
        path = Path(env)
        if not path.is_file():
            raise EnvoyConfigNotFound(f"{var}={env} is not a file")
        return path
    path = Path(__file__).resolve().parent.parent / "envoy" / name
    if path.is_file():
        return path
    raise EnvoyConfigNotFound(
        f"envoy/{name} not found in the source checkout ({path}); "
        f"run from a source checkout or set {var} to the file"
    )


def load(source: Path | str | None = None, transport: str = "grpc",
         mtls: bool = False) -> dict[str, Any]:
    """Parse the canonical config for ``transport`` (or ``source``) into plain dicts and
    lists."""
    path = Path(source) if source is not None else default_path(transport, mtls)
    if not path.is_file():
        raise EnvoyConfigNotFound(f"Envoy config {path} is not a file")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise EnvoyConfigError(f"{path}: not a YAML mapping")
    return data


def parse_address(text: str) -> Address:
    """``"127.0.0.1:7233"`` → ``("127.0.0.1", 7233)`` (``[::1]:7233`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, number


def _named(items: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise EnvoyConfigError(f"no {kind} named {name!r} in the Envoy config")


def _set_socket(holder: dict[str, Any], address: Address) -> None:
    holder["address"] = {"socket_address": {"address": address[0], "port_value": address[1]}}


def _set_endpoint(cluster: dict[str, Any], address: Address) -> None:
    cluster["load_assignment"] = {
        "cluster_name": cluster["name"],
        "endpoints": [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": address[0], "port_value": address[1]}
                            }
                        }
                    }
                ]
            }
        ],
    }


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The listener called ``name``."""
    return _named(config["static_resources"]["listeners"], name, "listener")


def cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The cluster called ``name``."""
    return _named(config["static_resources"]["clusters"], name, "cluster")


def http_connection_manager(listener_config: dict[str, Any]) -> dict[str, Any]:
    """The typed config of the listener's (single) HTTP connection manager."""
    for chain in listener_config.get("filter_chains", []):
        for network_filter in chain.get("filters", []):
            if network_filter.get("name") == "envoy.filters.network.http_connection_manager":
                typed: dict[str, Any] = network_filter["typed_config"]
                return typed
    name = listener_config.get("name")
    raise EnvoyConfigError(f"listener {name!r} has no HTTP connection manager")


def ext_authz_filter(config: dict[str, Any]) -> dict[str, Any]:
    """The ext_authz HTTP filter's typed config on the external listener."""
    hcm = http_connection_manager(listener(config, EXTERNAL_LISTENER))
    for http_filter in hcm.get("http_filters", []):
        if http_filter.get("name") == EXT_AUTHZ_FILTER:
            typed: dict[str, Any] = http_filter["typed_config"]
            return typed
    raise EnvoyConfigError("the external listener has no ext_authz filter")


def downstream_tls(config: dict[str, Any]) -> dict[str, Any]:
    """The external listener's DownstreamTlsContext (the mTLS variants)."""
    for chain in listener(config, EXTERNAL_LISTENER).get("filter_chains", []):
        socket = chain.get("transport_socket")
        if socket is not None:
            typed: dict[str, Any] = socket["typed_config"]
            return typed
    raise EnvoyConfigError("the external listener has no downstream TLS (not an mTLS variant)")


def set_tls_dir(config: dict[str, Any], tls_dir: Path | str) -> None:
    """Point the external listener's certificate, key and client CA at ``tls_dir``."""
    common = downstream_tls(config)["common_tls_context"]
    crt, key, ca = (str(Path(tls_dir) / name) for name in TLS_FILES)
    common["tls_certificates"] = [{"certificate_chain": {"filename": crt},
                                   "private_key": {"filename": key}}]
    common["validation_context"]["trusted_ca"] = {"filename": ca}


def edit(
    config: dict[str, Any],
    *,
    listen: Address | None = None,
    internal_listen: Address | None = None,
    admin: Address | None = None,
    authz: Address | None = None,
    upstream: Address | None = None,
    authz_timeout: float | None = None,
    drop_internal: bool = False,
    http_upstream: Address | None = None,
    tls_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Return a copy of ``config`` with the given addresses; ``None`` keeps the file's value."""
    out = copy.deepcopy(config)
    if tls_dir is not None:
        set_tls_dir(out, tls_dir)
    if listen is not None:
        _set_socket(listener(out, EXTERNAL_LISTENER), listen)
    if drop_internal:
        listener(out, INTERNAL_LISTENER)  # must exist: fail loudly on a renamed listener
        out["static_resources"]["listeners"] = [
            item for item in out["static_resources"]["listeners"]
            if item.get("name") != INTERNAL_LISTENER
        ]
    elif internal_listen is not None:
        _set_socket(listener(out, INTERNAL_LISTENER), internal_listen)
    if admin is not None:
        _set_socket(out["admin"], admin)
    if authz is not None:
        _set_endpoint(cluster(out, AUTHZ_CLUSTER), authz)
        http_service = ext_authz_filter(out).get("http_service")
        if http_service is not None:
            host = f"[{authz[0]}]" if ":" in authz[0] else authz[0]
            http_service["server_uri"]["uri"] = f"http://{host}:{authz[1]}"
    if upstream is not None:
        _set_endpoint(cluster(out, UPSTREAM_CLUSTER), upstream)
    if http_upstream is not None:
        _set_endpoint(cluster(out, HTTP_UPSTREAM_CLUSTER), http_upstream)
    if authz_timeout is not None:
        if authz_timeout <= 0:
            raise ValueError("authz_timeout must be positive")
        ext = ext_authz_filter(out)
        service = ext["http_service"]["server_uri"] if "http_service" in ext else ext[
            "grpc_service"]
        service["timeout"] = f"{authz_timeout:.3f}s"
    return out


def dump(config: dict[str, Any]) -> str:
    """YAML text for Envoy, with a note on where it came from."""
    header = "# Rendered from envoy/ by devkit.envoyconfig; edit the file there, not this.\n"
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=120)


def render(
    listen: Address | None = None,
    internal_listen: Address | None = None,
    admin: Address | None = None,
    authz: Address | None = None,
    upstream: Address | None = None,
    authz_timeout: float | None = None,
    *,
    drop_internal: bool = False,
    source: Path | str | None = None,
    transport: str = "grpc",
    http_upstream: Address | None = None,
    mtls: bool = False,
    tls_dir: Path | str | None = None,
) -> str:
    """The canonical Envoy config for ``transport`` (``mtls``: its mTLS variant) as YAML text
    with the given addresses (others unchanged)."""
    return dump(
        edit(
            load(source, transport, mtls),
            listen=listen,
            internal_listen=internal_listen,
            admin=admin,
            authz=authz,
            upstream=upstream,
            authz_timeout=authz_timeout,
            drop_internal=drop_internal,
            http_upstream=http_upstream,
            tls_dir=tls_dir,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devkit.envoyconfig``: render the config for other addresses."""
    parser = argparse.ArgumentParser(
        prog="python -m devkit.envoyconfig",
        description="Render envoy/envoy.yaml with other addresses (unset options keep the file's).",
    )
    parser.add_argument("--listen", type=parse_address, help="external listener HOST:PORT")
    parser.add_argument("--internal-listen", type=parse_address, help="internal listener HOST:PORT")
    parser.add_argument("--no-internal", action="store_true", help="drop the internal listener")
    parser.add_argument("--admin", type=parse_address, help="admin HOST:PORT")
    parser.add_argument("--transport", choices=TRANSPORTS, default="grpc",
                        help="ext_authz protocol: grpc (envoy/envoy.yaml) or http "
                        "(envoy/envoy-http.yaml)")
    parser.add_argument("--authz", type=parse_address,
                        help="extauthz server HOST:PORT (its gRPC listen or its http_listen)")
    parser.add_argument("--upstream", type=parse_address, help="Temporal frontend HOST:PORT")
    parser.add_argument("--http-upstream", type=parse_address,
                        help="Temporal frontend's HTTP API HOST:PORT (its httpPort, 7243)")
    parser.add_argument("--authz-timeout", type=float, help="ext_authz call timeout in seconds")
    parser.add_argument(
        "--source", type=Path, help=f"config to edit (default: ${ENV_VAR} or envoy/envoy.yaml)"
    )
    parser.add_argument("--mtls", action="store_true",
                        help="the mTLS variant (envoy/envoy-mtls.yaml, envoy-http-mtls.yaml): "
                        "client certificates required on the external listener")
    parser.add_argument("--tls-dir", type=Path,
                        help="directory of the listener's tls.crt, tls.key and the client ca.crt")
    parser.add_argument("--out", type=Path, help="output file (default: stdout)")
    args = parser.parse_args(argv)
    try:
        text = render(
            listen=args.listen,
            internal_listen=args.internal_listen,
            admin=args.admin,
            authz=args.authz,
            upstream=args.upstream,
            authz_timeout=args.authz_timeout,
            drop_internal=args.no_internal,
            source=args.source,
            transport=args.transport,
            http_upstream=args.http_upstream,
            mtls=args.mtls,
            tls_dir=args.tls_dir,
        )
    except (EnvoyConfigNotFound, EnvoyConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
