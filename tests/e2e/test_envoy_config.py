"""The committed Envoy configs (envoy/envoy.yaml for the gRPC ext_authz protocol,
envoy/envoy-http.yaml for the HTTP one): valid, renderable, and they enforce the security
invariants through a real Envoy in front of a recording authorizer and a recording upstream.
Every test taking ``transport`` (directly or through ``fakes``) runs for both files."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from support.fakes import Decision, RecordingAuthz, RecordingHttpAuthz, RecordingUpstream

from devkit import components, envoyconfig
from devkit.components import EnvoyInstance, start_envoy
from devkit.grpcframe import frame
from devkit.ports import LOOPBACK, free_port

Fakes = tuple[RecordingAuthz | RecordingHttpAuthz, RecordingUpstream, EnvoyInstance]

HEALTH = "/grpc.health.v1.Health/Check"
MAX_REQUEST_BYTES = 4194309  # 4 MiB frontend limit + 5 bytes of gRPC framing
UPSTREAM_RQ = "cluster.temporal_frontend.upstream_rq_total"
FILES = {"grpc": "envoy.yaml", "http": "envoy-http.yaml"}
IDENTITY = ["x-temporal-authz-subject", "x-temporal-authz-issuer", "x-temporal-authz-kind"]
# what the server reads besides host, content-length, authorization, x-envoy-auth-partial-body
# (never content-type: see test_slow_authorizer_is_unavailable_not_allowed)
HTTP_ALLOWED_HEADERS = ["grpc-encoding", "x-request-id", "authorization-extras", "client-name",
                        "client-version", "traceparent", "tracestate"]


def _committed(repo_root: Path, transport: str = "grpc") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "envoy" / FILES[transport]).read_text())
    return data


def _call(target: str, path: str, body: bytes = b"", **kwargs: Any) -> grpc.StatusCode:
    """A unary call with a raw body on an arbitrary :path; the resulting status code."""
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(path)(body, timeout=5, **kwargs)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


# ---- the file itself ---------------------------------------------------------------------


def test_committed_config_validates(repo_root: Path, transport: str) -> None:
    """`envoy --mode validate` accepts envoy/envoy.yaml and envoy/envoy-http.yaml as committed."""
    result = components.validate_envoy_config(repo_root / "envoy" / FILES[transport])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_rendered_config_validates(tmp_path: Path, transport: str) -> None:
    """`envoy --mode validate` accepts a config rendered for other addresses."""
    path = tmp_path / "envoy.yaml"
    path.write_text(
        envoyconfig.render(
            listen=(LOOPBACK, 17233),
            internal_listen=(LOOPBACK, 17235),
            admin=(LOOPBACK, 19901),
            authz=(LOOPBACK, 19191),
            upstream=(LOOPBACK, 17234),
            authz_timeout=0.5,
            transport=transport,
        )
    )
    result = components.validate_envoy_config(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_changes_only_addresses(repo_root: Path, transport: str) -> None:
    """Rendering moves the named listeners, clusters and admin and leaves everything else alone."""
    original = _committed(repo_root, transport)
    rendered = yaml.safe_load(
        envoyconfig.render(
            listen=("127.0.0.2", 1001),
            internal_listen=("127.0.0.3", 1002),
            admin=("127.0.0.4", 1003),
            authz=("127.0.0.5", 1004),
            upstream=("127.0.0.6", 1005),
            transport=transport,
        )
    )
    assert envoyconfig.listener(rendered, "external")["address"]["socket_address"] == {
        "address": "127.0.0.2", "port_value": 1001}
    assert envoyconfig.listener(rendered, "internal")["address"]["socket_address"] == {
        "address": "127.0.0.3", "port_value": 1002}
    assert rendered["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.4", "port_value": 1003}
    for name, host, port in (("extauthz", "127.0.0.5", 1004),
                             ("temporal_frontend", "127.0.0.6", 1005)):
        endpoint = envoyconfig.cluster(rendered, name)["load_assignment"]["endpoints"][0][
            "lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert endpoint == {"address": host, "port_value": port}

    def strip(config: dict[str, Any]) -> dict[str, Any]:
        return envoyconfig.edit(config, listen=("x", 1), internal_listen=("x", 1),
                                  admin=("x", 1), authz=("x", 1), upstream=("x", 1))

    assert strip(rendered) == strip(original)


def test_render_without_arguments_is_the_committed_file(repo_root: Path, transport: str) -> None:
    """Rendering with no changes yields the committed config, value for value."""
    assert yaml.safe_load(envoyconfig.render(transport=transport)) == _committed(
        repo_root, transport)


def test_http_config_is_the_grpc_config_but_for_the_authz_protocol(repo_root: Path) -> None:
    """envoy-http.yaml differs from envoy.yaml only in the ext_authz protocol (http_service,
    allowed_headers) and the extauthz cluster (HTTP/1.1, /healthz health check): listeners,
    routes, header stripping, body and failure settings are the same."""
    grpc_config, http_config = _committed(repo_root, "grpc"), _committed(repo_root, "http")
    grpc_ext = envoyconfig.ext_authz_filter(grpc_config)
    http_ext = envoyconfig.ext_authz_filter(http_config)
    assert set(grpc_ext) - {"grpc_service"} == set(http_ext) - {"http_service", "allowed_headers"}
    for key in set(grpc_ext) - {"grpc_service"}:
        assert grpc_ext[key] == http_ext[key], key

    def without_authz(config: dict[str, Any]) -> dict[str, Any]:
        config = envoyconfig.edit(config)
        envoyconfig.ext_authz_filter(config).clear()
        config["static_resources"]["clusters"] = [
            c for c in config["static_resources"]["clusters"] if c["name"] != "extauthz"]
        return config

    assert without_authz(grpc_config) == without_authz(http_config)


def test_render_cli_writes_a_file(tmp_path: Path) -> None:
    """`python -m devkit.envoyconfig --out` writes the rendered config."""
    out = tmp_path / "e.yaml"
    assert envoyconfig.main(["--listen", "127.0.0.1:17233", "--authz-timeout", "0.25",
                             "--out", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    assert envoyconfig.listener(config, "external")["address"]["socket_address"][
        "port_value"] == 17233
    assert envoyconfig.ext_authz_filter(config)["grpc_service"]["timeout"] == "0.250s"


def test_render_cli_http_moves_the_server_uri(tmp_path: Path) -> None:
    """`--transport http` renders envoy-http.yaml: the authz address moves the cluster endpoint
    and http_service.server_uri; --authz-timeout sets its timeout."""
    out = tmp_path / "e.yaml"
    assert envoyconfig.main(["--transport", "http", "--authz", "127.0.0.1:19192",
                             "--authz-timeout", "0.25", "--out", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    uri = envoyconfig.ext_authz_filter(config)["http_service"]["server_uri"]
    assert uri["uri"] == "http://127.0.0.1:19192"
    assert uri["timeout"] == "0.250s"
    endpoint = envoyconfig.cluster(config, "extauthz")["load_assignment"]["endpoints"][0][
        "lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "127.0.0.1", "port_value": 19192}


def test_render_reports_a_missing_source(tmp_path: Path) -> None:
    """A missing config file is a clear error, not a traceback."""
    with pytest.raises(FileNotFoundError):
        envoyconfig.render(source=tmp_path / "nope.yaml")
    assert envoyconfig.main(["--source", str(tmp_path / "nope.yaml")]) == 2


def test_ext_authz_settings_are_the_invariants(repo_root: Path, transport: str) -> None:
    """ext_authz fails closed (503), sees the whole raw body, and has an explicit timeout."""
    ext = envoyconfig.ext_authz_filter(_committed(repo_root, transport))
    assert ext["failure_mode_allow"] is False
    assert ext["status_on_error"] == {"code": "ServiceUnavailable"}
    assert ext["transport_api_version"] == "V3"
    assert ext["with_request_body"] == {
        "max_request_bytes": MAX_REQUEST_BYTES,
        "allow_partial_message": False,
        "pack_as_bytes": True,
    }
    if transport == "grpc":
        assert ext["grpc_service"]["envoy_grpc"]["cluster_name"] == "extauthz"
        assert ext["grpc_service"]["timeout"].endswith("s")
        return
    service = ext["http_service"]
    assert service["server_uri"]["cluster"] == "extauthz"
    assert service["server_uri"]["timeout"].endswith("s")
    assert service["path_prefix"] == "/check"
    # exactly what the server reads; never temporal-namespace (the body is the truth)
    assert [p["exact"] for p in ext["allowed_headers"]["patterns"]] == HTTP_ALLOWED_HEADERS
    assert service["authorization_request"]["headers_to_add"] == [
        {"key": "x-extauthz-content-type", "value": "%REQ(content-type)%"}]
    response = service["authorization_response"]
    assert [p["exact"] for p in response["allowed_upstream_headers"]["patterns"]] == IDENTITY
    assert [p["exact"] for p in response["allowed_client_headers"]["patterns"]] == [
        "x-temporal-authz-reason"]
    authz = envoyconfig.cluster(_committed(repo_root, transport), "extauthz")
    assert authz["health_checks"][0]["http_health_check"] == {"path": "/healthz"}
    idle = authz["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["common_http_protocol_options"][
        "idle_timeout"]
    assert int(idle.rstrip("s")) < 120  # below the server's keep-alive idle timeout


def test_only_the_exact_health_route_disables_the_filter(repo_root: Path, transport: str) -> None:
    """The ext_authz filter precedes the router on the external listener, and the only
    per-filter override anywhere is `disabled: true` on the exact health path."""
    config = _committed(repo_root, transport)
    hcm = envoyconfig.http_connection_manager(envoyconfig.listener(config, "external"))
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    route_config = hcm["route_config"]
    assert "typed_per_filter_config" not in route_config
    disabled = []
    for vhost in route_config["virtual_hosts"]:
        assert "typed_per_filter_config" not in vhost
        for route in vhost["routes"]:
            per_filter = route.get("typed_per_filter_config", {})
            assert set(per_filter) <= {"envoy.filters.http.ext_authz"}
            if per_filter:
                assert per_filter["envoy.filters.http.ext_authz"]["disabled"] is True
                disabled.append(route["match"])
    assert disabled == [{
        "path": HEALTH,
        "headers": [{"name": ":path", "string_match": {"exact": HEALTH}}],
    }]
    # no path rewriting that could make Envoy forward something other than what was judged
    assert hcm["normalize_path"] is False
    assert hcm["merge_slashes"] is False
    assert hcm["path_with_escaped_slashes_action"] == "KEEP_UNCHANGED"


def test_listeners_and_admin_are_loopback_without_reuse_port(repo_root: Path,
                                                             transport: str) -> None:
    """Every address in the committed file is loopback; no listener enables SO_REUSEPORT."""
    config = _committed(repo_root, transport)
    assert config["admin"]["address"]["socket_address"]["address"] == LOOPBACK
    for item in config["static_resources"]["listeners"]:
        assert item["address"]["socket_address"]["address"] == LOOPBACK
        assert item["enable_reuse_port"] is False
        assert item["per_connection_buffer_limit_bytes"] > MAX_REQUEST_BYTES


def test_long_polls_are_not_cut(repo_root: Path, transport: str) -> None:
    """No route deadline and ≥ 90 s idle timeouts on both listeners (long polls are ~70 s)."""
    config = _committed(repo_root, transport)
    for name in ("external", "internal"):
        hcm = envoyconfig.http_connection_manager(envoyconfig.listener(config, name))
        assert int(hcm["stream_idle_timeout"].rstrip("s")) >= 90
        for vhost in hcm["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                if route["match"].get("path") == HEALTH:
                    continue
                assert route["route"]["timeout"] == "0s"
                assert int(route["route"]["idle_timeout"].rstrip("s")) >= 90


# ---- through a real Envoy ----------------------------------------------------------------

TRICK_PATHS = [
    f"{HEALTH}?x",
    f"{HEALTH}?",
    f"/{HEALTH}",
    "/grpc.health.v1.Health//Check",
    "/grpc.health.v1.Health%2FCheck",
    "/grpc.health.v1.Health%2fCheck",
    f"/.{HEALTH}",
    "/grpc.health.v1.Health/./Check",
    f"/x/..{HEALTH}",
    f"{HEALTH}/../../temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution",
    "/GRPC.HEALTH.V1.HEALTH/CHECK",
    "/grpc.health.v1.Health/check",
    f"{HEALTH}/",
    f"{HEALTH}%3Fx",
    f"{HEALTH};x",
    f"{HEALTH}%00",
    f"{HEALTH}X",
    "/grpc.health.v1.Health/Watch",
    "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution",
    "/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo",
    "/temporal.api.operatorservice.v1.OperatorService/DeleteNamespace",
    "/temporal.api.adminservice.v1.AdminService/DescribeCluster",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/",
]
# Paths that the client library or Envoy refuses before routing: they must not reach upstream.
REFUSED_PATHS = [f"{HEALTH}#x", "grpc.health.v1.Health/Check", "*", f"{HEALTH}\t"]


def test_exact_health_path_skips_authz(fakes: Fakes) -> None:
    """The exact health path goes upstream without a Check (the one exemption)."""
    recorder, upstream, envoy = fakes
    assert _call(envoy.target, HEALTH) == grpc.StatusCode.OK
    assert [c.method for c in upstream.seen] == [HEALTH]
    assert recorder.seen == []


@pytest.mark.parametrize("path", TRICK_PATHS)
def test_every_other_path_is_checked(fakes: Fakes, path: str) -> None:
    """Any path but the exact health path is sent to the authorizer, verbatim, and a denial
    keeps it from the upstream."""
    recorder, upstream, envoy = fakes
    before = envoy.stats()[UPSTREAM_RQ]
    code = _call(envoy.target, path)
    assert upstream.seen == []
    assert envoy.stats()[UPSTREAM_RQ] == before
    assert code == grpc.StatusCode.PERMISSION_DENIED, code
    assert [c.path for c in recorder.seen] == [path]


@pytest.mark.parametrize("path", REFUSED_PATHS)
def test_malformed_paths_never_reach_upstream(fakes: Fakes, path: str) -> None:
    """A path refused before routing fails and reaches neither the upstream nor, unchecked,
    anything else."""
    _recorder, upstream, envoy = fakes
    before = envoy.stats()[UPSTREAM_RQ]
    assert _call(envoy.target, path) != grpc.StatusCode.OK
    assert upstream.seen == []
    assert envoy.stats()[UPSTREAM_RQ] == before


def test_http1_requests_are_checked_too(fakes: Fakes) -> None:
    """codec AUTO accepts HTTP/1.1; a non-health HTTP/1.1 request is checked and denied."""
    recorder, upstream, envoy = fakes
    request = urllib.request.Request(
        f"http://{envoy.target}/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution",
        data=b"\x00\x00\x00\x00\x00",
        headers={"content-type": "application/grpc-web+proto"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 403
    assert [c.path for c in recorder.seen] == [
        "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution"]
    assert upstream.seen == []


def test_denial_maps_to_grpc_status_with_reason(fakes: Fakes) -> None:
    """403 → PERMISSION_DENIED and 401 → UNAUTHENTICATED, with the authorizer's body as the
    gRPC message."""
    recorder, _upstream, envoy = fakes
    for status, code in ((403, grpc.StatusCode.PERMISSION_DENIED),
                         (401, grpc.StatusCode.UNAUTHENTICATED)):
        recorder.decision = Decision(status=status, body=f"reason_{status}: because")
        with grpc.insecure_channel(envoy.target) as channel, pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/a.B/C")(b"", timeout=5)
        assert info.value.code() == code
        assert info.value.details() == f"reason_{status}: because"


def test_client_cannot_forge_identity_or_envoy_headers(fakes: Fakes) -> None:
    """Client-sent x-temporal-authz-* and x-envoy-* headers are removed before the authorizer
    and never reach the upstream; the authorizer's own headers do."""
    recorder, upstream, envoy = fakes
    recorder.decision = Decision(allow=True, add_headers=[("x-temporal-authz-subject", "alice")])
    forged = [
        ("x-temporal-authz-subject", "root"),
        ("x-temporal-authz-roles", "temporal-system:admin"),
        ("x-envoy-auth-partial-body", "false"),
        ("x-envoy-original-path", "/grpc.health.v1.Health/Check"),
    ]
    assert _call(envoy.target, "/a.B/C", b"", metadata=forged) == grpc.StatusCode.OK
    (check,) = recorder.seen
    assert "x-temporal-authz-subject" not in check.headers
    assert "x-temporal-authz-roles" not in check.headers
    assert "x-envoy-original-path" not in check.headers
    (call,) = upstream.seen
    assert call.metadata["x-temporal-authz-subject"] == ["alice"]
    assert "x-temporal-authz-roles" not in call.metadata
    assert "x-envoy-original-path" not in call.metadata

    # allowed without identity headers: the forged ones are still gone
    recorder.decision = Decision(allow=True)
    recorder.clear()
    upstream.clear()
    assert _call(envoy.target, "/a.B/C", b"", metadata=forged) == grpc.StatusCode.OK
    (call,) = upstream.seen
    assert not any(key.startswith("x-temporal-authz-") for key in call.metadata)


def test_request_id_is_generated_and_passed_on(fakes: Fakes) -> None:
    """The authorizer gets an Envoy-generated x-request-id (a client's is replaced) and the
    upstream gets the same one."""
    recorder, upstream, envoy = fakes
    recorder.decision = Decision(allow=True)
    assert _call(envoy.target, "/a.B/C", metadata=[("x-request-id", "client-chosen")]) == (
        grpc.StatusCode.OK)
    (check,) = recorder.seen
    (call,) = upstream.seen
    request_id = check.headers["x-request-id"]
    assert request_id and request_id != "client-chosen"
    assert call.metadata["x-request-id"] == [request_id]


def test_whole_body_reaches_the_authorizer(fakes: Fakes) -> None:
    """A message at the frontend's 4 MiB limit arrives whole, raw, gRPC-framed, and not
    flagged partial."""
    recorder, upstream, envoy = fakes
    recorder.decision = Decision(allow=True)
    payload = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    assert len(payload) + 5 == MAX_REQUEST_BYTES
    assert _call(envoy.target, "/a.B/C", payload) == grpc.StatusCode.OK
    (check,) = recorder.seen
    assert check.headers["x-envoy-auth-partial-body"] == "false"
    assert check.raw_body == frame(payload)
    assert [len(c.body) for c in upstream.seen] == [len(payload)]


@pytest.mark.parametrize("extra", [1, 100, 1024 * 1024])
def test_oversized_body_is_refused_or_flagged(fakes: Fakes, extra: int) -> None:
    """Over the limit, Envoy either refuses the call itself or hands the authorizer a body that
    is flagged `x-envoy-auth-partial-body: true` (which the server must deny): never an
    unflagged truncated body."""
    recorder, upstream, envoy = fakes
    recorder.decision = Decision()  # deny, as the real server does on a partial body
    payload = b"p" * (MAX_REQUEST_BYTES - 5 + extra)
    code = _call(envoy.target, "/a.B/C", payload)
    assert code != grpc.StatusCode.OK
    assert upstream.seen == []
    for check in recorder.seen:
        assert check.headers["x-envoy-auth-partial-body"] == "true"
        assert len(check.raw_body) <= MAX_REQUEST_BYTES


def test_internal_listener_skips_authz(fakes: Fakes) -> None:
    """The internal (cluster-only) listener forwards without asking the authorizer."""
    recorder, upstream, envoy = fakes
    assert _call(envoy.internal_target, "/a.B/C", b"x") == grpc.StatusCode.OK
    assert recorder.seen == []
    assert [c.method for c in upstream.seen] == ["/a.B/C"]


def test_slow_authorizer_is_unavailable_not_allowed(fakes: Fakes) -> None:
    """An authorizer slower than the ext_authz timeout yields UNAVAILABLE and no upstream call.

    In HTTP mode this failed open once: with `content-type: application/grpc` forwarded to the
    authorizer, Envoy answered its own timeout with a gRPC-style `200` local reply, which the
    ext_authz HTTP client took for an allow."""
    recorder, upstream, envoy = fakes
    recorder.decision = Decision(allow=True, delay=1.5)
    assert _call(envoy.target, "/a.B/C") == grpc.StatusCode.UNAVAILABLE
    assert upstream.seen == []


def test_unreachable_authorizer_is_unavailable_not_allowed(
    e2e_dir: Path, upstream: RecordingUpstream, transport: str
) -> None:
    """With nothing listening at the authz address, every call is UNAVAILABLE (503), none
    reaches the upstream; the health path still works."""
    upstream.clear()
    envoy = start_envoy(e2e_dir, authz=(LOOPBACK, free_port()), upstream=upstream.address,
                        transport=transport)
    try:
        for _ in range(3):
            assert _call(envoy.target, "/a.B/C") == grpc.StatusCode.UNAVAILABLE
        assert upstream.seen == []
        assert _call(envoy.target, HEALTH) == grpc.StatusCode.OK
        assert envoy.stats()["http.external.ext_authz.extauthz.error"] >= 3
    finally:
        envoy.stop()


def test_one_mib_body_arrives_byte_exact(fakes: Fakes) -> None:
    """A 1 MiB message reaches the authorizer byte for byte, gRPC-framed, not flagged partial,
    and the upstream gets the same message."""
    recorder, upstream, envoy = fakes
    recorder.decision = Decision(allow=True)
    payload = bytes((i * 7 + 3) % 256 for i in range(1024 * 1024))
    assert _call(envoy.target, "/a.B/C", payload) == grpc.StatusCode.OK
    (check,) = recorder.seen
    assert check.headers["x-envoy-auth-partial-body"] == "false"
    assert check.raw_body == frame(payload)
    assert [c.body for c in upstream.seen] == [payload]


def test_headers_the_authorizer_gets(fakes: Fakes, transport: str) -> None:
    """The check carries what the server reads (content-type, authorization, grpc-encoding,
    x-request-id, client-name/version, the partial-body flag); in HTTP mode temporal-namespace
    and other client headers are not sent at all."""
    recorder, _upstream, envoy = fakes
    metadata = [("authorization", "Bearer t"), ("temporal-namespace", "payroll"),
                ("client-name", "temporal-python"), ("client-version", "1.2.3"),
                ("authorization-extras", "x"), ("x-something-else", "y")]
    _call(envoy.target, "/a.B/C", b"x", metadata=metadata)
    (check,) = recorder.seen
    headers = check.headers
    if transport == "grpc":
        assert headers["content-type"] == "application/grpc"
    else:  # renamed, so the authz request is never a gRPC request to Envoy
        assert headers["x-extauthz-content-type"] == "application/grpc"
        assert not headers.get("content-type", "").startswith("application/grpc")
    assert headers["authorization"] == "Bearer t"
    assert headers["client-name"] == "temporal-python"
    assert headers["client-version"] == "1.2.3"
    assert headers["authorization-extras"] == "x"
    assert headers["x-envoy-auth-partial-body"] == "false"
    assert headers["x-request-id"]
    assert check.method == "POST"
    if transport == "http":
        assert "temporal-namespace" not in headers
        assert "x-something-else" not in headers
        assert isinstance(recorder, RecordingHttpAuthz)
        assert recorder.raw_paths == ["/check/a.B/C"]
