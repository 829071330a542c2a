"""The Helm chart (helm/temporal-extauthz), rendered offline by the embedded Helm 4 of PyPI
``helm-python-sdk``: it lints strictly, every manifest validates with ``kubernetes-validate
--strict``, custom resources validate against the schemas vendored in tests/data/schemas,
``values.schema.json`` rejects typos, and the rendered objects have the properties the
deployment guide promises."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from helmchart import (
    CHART,
    NAMESPACE,
    RELEASE,
    REPO,
    VALUE_SETS,
    Manifest,
    envoy_config,
    envoy_files,
    find,
    manifests,
    merged,
    notes,
    one,
    render_files,
)

from devkit import envoyconfig
from extauthz import config as extauthz_config

KUBE_VERSION = "1.34.0"
SCHEMAS = REPO / "tests" / "data" / "schemas"  # sources: tests/data/README.md
CR_SCHEMAS = {
    ("security.istio.io/v1", "AuthorizationPolicy"):
        "authorizationpolicy-security.istio.io-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
}
OIDC = {"issuerUrl": "https://login.example.com/realms/temporal", "clientId": "temporal"}
ENVOY = f"{RELEASE}-envoy"

SETS = sorted(VALUE_SETS)


@pytest.fixture(scope="module", params=SETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    """(value set name, every rendered object)."""
    return request.param, manifests(VALUE_SETS[request.param])


def _containers(doc: Manifest) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _pod_spec(doc: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" \
        else doc["spec"]
    return spec


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists properties and allows
    nothing else explicitly (the CRD schemas do not forbid unknown keys)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _validate_custom_resource(doc: Manifest) -> None:
    key = (doc["apiVersion"], doc["kind"])
    schema = json.loads((SCHEMAS / CR_SCHEMAS[key]).read_text())
    jsonschema.Draft7Validator(schema).validate(doc)
    # and strictly for spec: a misspelled key in a custom resource is silently ignored by the
    # API server, so it must fail here
    spec_schema = _strict(schema["properties"]["spec"])
    jsonschema.Draft7Validator(spec_schema).validate(doc["spec"])


# ---- rendering, lint, validation -------------------------------------------------------------


def test_value_sets_cover_the_required_scenarios() -> None:
    """Besides the defaults, the tested value sets include standalone Envoy, Istio mode, HPA on,
    NetworkPolicy on and an existing Secret (the issue's minimum), plus mTLS, monitoring and
    the HTTP ext_authz transport (standalone and Istio)."""
    assert {"defaults", "standalone", "istio", "hpa", "networkpolicy", "existing-secret",
            "mtls", "monitoring", "http", "istio-http"} <= set(VALUE_SETS)


@pytest.mark.parametrize("name", SETS)
def test_chart_lints_strictly(name: str) -> None:
    """`helm lint --strict` (Helm 4, Kubernetes 1.34) reports nothing for every value set."""
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, kube_version=f"v{KUBE_VERSION}",
                       namespace=NAMESPACE)
    assert report["errors"] == [], report
    assert report["messages"] == [], report


def test_every_manifest_validates_strictly(rendered: tuple[str, list[Manifest]]) -> None:
    """Every built-in object validates with kubernetes-validate --strict (unknown fields are
    errors) against Kubernetes 1.34; Istio and Prometheus Operator resources validate against
    tests/data/schemas (with unknown keys rejected in spec); cert-manager Certificates have the
    fields cert-manager needs."""
    name, docs = rendered
    assert docs, name
    for doc in docs:
        kind = doc["kind"]
        if (doc["apiVersion"], kind) in CR_SCHEMAS:
            _validate_custom_resource(doc)
        elif kind == "Certificate":
            assert doc["apiVersion"] == "cert-manager.io/v1"
            assert {"secretName", "issuerRef"} <= set(doc["spec"])
            assert doc["spec"]["issuerRef"]["name"]
        else:
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(p) for p in err.path)
                pytest.fail(f"{name}: {kind}/{doc['metadata']['name']}: {path}: {err.message}")


def test_vendored_schemas_are_present() -> None:
    """The custom-resource schemas the validation uses are where the tests look for them."""
    for filename in CR_SCHEMAS.values():
        assert (SCHEMAS / filename).is_file(), filename


def test_validation_would_catch_a_bad_manifest() -> None:
    """The strict validators are live: an unknown field in a Deployment and in a ServiceMonitor
    spec are both errors."""
    docs = manifests(VALUE_SETS["monitoring"])
    deployment = copy.deepcopy(one(docs, "Deployment", RELEASE))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    monitor = copy.deepcopy(find(docs, "ServiceMonitor")[0])
    monitor["spec"]["endpoint"] = monitor["spec"].pop("endpoints")
    with pytest.raises(jsonschema.ValidationError):
        _validate_custom_resource(monitor)


# ---- values.schema.json ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"extauthz": {"replica": 3}}, "replica"),
        ({"envoy": {"servce": {"type": "LoadBalancer"}}}, "servce"),
        ({"tls": {"enable": True}}, "enable"),
        ({"modes": "istio"}, "modes"),
        ({"transprt": "http"}, "transprt"),
        ({"extauthz": {"httpport": 9192}}, "httpport"),
    ],
)
def test_schema_rejects_a_misspelled_key(values: dict[str, Any], message: str) -> None:
    """A misspelled key anywhere is an error naming it (render and lint), not silently ignored."""
    with pytest.raises(helm.HelmValuesError, match=message):
        render_files(values)
    report = helm.lint(CHART, values, strict=True)
    assert any(message in m["error"] for m in report["messages"]), report


@pytest.mark.parametrize(
    "values",
    [
        {"extauthz": {"replicas": "3"}},
        {"envoy": {"port": "7233"}},
        {"tls": {"enabled": "yes"}},
        {"mode": "sidecar"},
        {"envoy": {"authzTimeout": "1000"}},
        {"envoy": {"maxRequestBytes": 1048576}},
        {"istio": {"ports": [7233]}},
        {"extauthz": {"config": {"listen": "0.0.0.0:1"}}},
        {"extauthz": {"oidc": {"issuerUrl": "login.example.com"}}},
        {"transport": "both"},
        {"transport": "HTTP"},
        {"extauthz": {"httpPort": "9192"}},
        {"extauthz": {"httpPort": 70000}},
        {"extauthz": {"config": {"transport": "http"}}},
        {"extauthz": {"config": {"http_listen": "0.0.0.0:1"}}},
        {"extauthz": {"config": {"http_path_prefix": "/authz"}}},
    ],
)
def test_schema_rejects_a_wrong_type_or_value(values: dict[str, Any]) -> None:
    """Wrong types, unknown enum values (transport is grpc or http: `both` is a server option
    the chart does not deploy), a too-small max_request_bytes, a chart-managed key in
    `extauthz.config` (transport, http_listen, http_path_prefix included: Envoy's side must
    agree with them) are rejected before anything renders."""
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        render_files(values)


def test_schema_accepts_every_value_set_and_the_defaults() -> None:
    """values.yaml and every tested value set satisfy the schema (Helm's validator and the
    jsonschema package agree)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    with helm.Chart.load(CHART) as chart:
        for values in VALUE_SETS.values():
            chart.validate_schema(values)
            jsonschema.Draft7Validator(schema).validate(merged(defaults, values))


def test_impossible_combinations_fail_with_a_reason() -> None:
    """TLS in Istio mode, and TLS without Secrets or cert-manager, fail at install with a
    message that says what to do."""
    with pytest.raises(helm.HelmError, match="PeerAuthentication"):
        render_files({"mode": "istio", "tls": {"enabled": True, "serverSecret": "a",
                                               "clientSecret": "b"}})
    with pytest.raises(helm.HelmError, match=r"tls\.serverSecret"):
        render_files({"tls": {"enabled": True}})


_TLS_SETS = [{"enabled": True, "serverSecret": "a", "clientSecret": "b"},
             {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "ca"}}},
             {"enabled": True}]


@pytest.mark.parametrize("tls", _TLS_SETS)
def test_tls_with_the_http_transport_passes_the_schema(tls: dict[str, Any]) -> None:
    """The HTTP listener serves TLS/mTLS too: tls.enabled with transport: http passes
    values.schema.json like with transport: grpc (the template still asks for Secrets or
    cert-manager)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({"transport": "http", "tls": tls})
        chart.validate_schema({"transport": "grpc", "tls": tls})
    if "serverSecret" in tls or "certManager" in tls:
        rendered = render_files({"transport": "http", "tls": tls})
        assert "https://" in rendered[f"{RELEASE}/templates/envoy-configmap.yaml"]
    else:
        with pytest.raises(helm.HelmError, match=r"tls\.serverSecret"):
            render_files({"transport": "http", "tls": tls})


def test_http_transport_with_mtls_renders_an_https_check_cluster() -> None:
    """transport: http + tls.enabled: Envoy calls https://<headless>:9192 with ALPN http/1.1
    and TLS up to 1.3, presents its client certificate and checks the server's name and CA
    through file-based SDS (rotations followed), and health-checks GET /healthz over the same
    TLS; the server gets the `tls` block (client certificates required) and its certificate
    and Envoy its client certificate from Secrets."""
    docs = manifests(VALUE_SETS["http-mtls"])
    config = envoy_config(VALUE_SETS["http-mtls"])
    http_service = envoyconfig.ext_authz_filter(config)["http_service"]
    assert http_service["server_uri"]["uri"] == f"https://{HEADLESS}:9192"
    assert http_service["path_prefix"] == "/check"
    cluster = envoyconfig.cluster(config, "extauthz")
    assert cluster["health_checks"][0]["http_health_check"] == {"path": "/healthz"}
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("UpstreamTlsContext")
    assert tls["sni"] == f"{RELEASE}.{NAMESPACE}.svc.cluster.local"
    common = tls["common_tls_context"]
    assert common["alpn_protocols"] == ["http/1.1"]
    assert common["tls_params"] == {"tls_maximum_protocol_version": "TLSv1_3"}
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "authz_client_cert"
    assert common["validation_context_sds_secret_config"]["name"] == "authz_server_ca"
    files = one(docs, "ConfigMap", ENVOY)["data"]
    ca = yaml.safe_load(files["sds-authz-server-ca.yaml"])["resources"][0]["validation_context"]
    assert ca["match_typed_subject_alt_names"][0]["matcher"] == {"exact": tls["sni"]}
    cfg = yaml.safe_load(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    assert cfg["tls"]["require_client_cert"] is True
    assert cfg["tls"]["client_ca_file"] == "/etc/extauthz/tls/ca.crt"
    server = one(docs, "Deployment", RELEASE)
    envoy = one(docs, "Deployment", ENVOY)
    secrets = {v["name"]: v.get("secret", {}).get("secretName")
               for d in (server, envoy) for v in _pod_spec(d)["volumes"]}
    assert secrets["tls"] == f"{RELEASE}-server-tls"
    assert secrets["authz-tls"] == f"{RELEASE}-client-tls"
    certificates = {d["spec"]["secretName"] for d in find(docs, "Certificate")}
    assert certificates == {f"{RELEASE}-server-tls", f"{RELEASE}-client-tls"}


def test_http_transport_with_mtls_probes_the_plaintext_health_port() -> None:
    """With transport: http + tls the kubelet (no client certificate) probes the plaintext
    gRPC health port, which moves to the gRPC `port` (unused with http) because the default
    healthPort is the HTTP port; a distinct healthPort is used as set. The NetworkPolicy keeps
    the Check port for Envoy only and opens the health port for probes; the loaded config
    listens on both without a clash."""
    docs = manifests(VALUE_SETS["http-mtls"])
    c = _containers(one(docs, "Deployment", RELEASE))[0]
    assert c["readinessProbe"]["grpc"] == {"port": 9191,
                                           "service": "envoy.service.auth.v3.Authorization"}
    assert "httpGet" not in c["readinessProbe"]
    assert c["startupProbe"]["tcpSocket"] == {"port": 9191}
    assert c["livenessProbe"]["tcpSocket"] == {"port": 9191}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 9192, "grpc-health": 9191, "metrics": 9090}
    data = yaml.safe_load(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    env = {k: v for k, v in _env(c).items() if isinstance(v, str)}
    settings = extauthz_config.apply_env(extauthz_config.from_mapping(data, "c.yaml"), env)
    assert (settings.transport, settings.http_listen, settings.health_listen) == (
        "http", "0.0.0.0:9192", "0.0.0.0:9191")
    assert settings.tls.enabled and settings.tls.require_client_cert
    assert not settings.serves_grpc  # `listen` (9191) is not opened: no clash with health
    policy = one(find(docs, "NetworkPolicy"), "NetworkPolicy", RELEASE)["spec"]["ingress"]
    rules = {r["ports"][0]["port"]: r for r in policy}
    assert rules[9192]["from"]  # Envoy only
    assert "from" not in rules[9191]  # probes come from the node

    custom = merged(VALUE_SETS["http-mtls"], {"extauthz": {"healthPort": 9300}})
    c = _containers(one(manifests(custom), "Deployment", RELEASE))[0]
    assert c["readinessProbe"]["grpc"]["port"] == 9300
    cfg = yaml.safe_load(one(manifests(custom), "ConfigMap", RELEASE)["data"]["config.yaml"])
    assert cfg["health_listen"] == "0.0.0.0:9300"


# ---- security properties ---------------------------------------------------------------------


def test_every_container_is_locked_down(rendered: tuple[str, list[Manifest]]) -> None:
    """Every container (server, Envoy, the helm test pod) runs as non-root with a read-only root
    filesystem, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault, and
    resource requests; no pod mounts a service-account token."""
    name, docs = rendered
    pods = find(docs, "Deployment") + find(docs, "Pod")
    assert pods, name
    for doc in pods:
        spec = _pod_spec(doc)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in _containers(doc):
            sc = container["securityContext"]
            where = f"{name}: {doc['metadata']['name']}/{container['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["resources"]["requests"], where


def test_standard_labels_everywhere(rendered: tuple[str, list[Manifest]]) -> None:
    """Every object carries app.kubernetes.io/{name,instance,version,managed-by,component} and
    helm.sh/chart."""
    name, docs = rendered
    for doc in docs:
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{name}: {doc['kind']}/{doc['metadata']['name']} lacks {key}"
        assert labels["helm.sh/chart"] == "temporal-extauthz-0.1.0"


def test_probes_use_grpc_health_of_the_check_server() -> None:
    """Readiness is the gRPC health of the Check service on the Check port (plaintext); with
    mTLS the probes move to the plaintext health-only port the server opens for them, because a
    kubelet cannot present a client certificate. Liveness is TCP: an IdP outage (NOT_SERVING)
    must not restart pods and lose their last-good keys."""
    plain = one(manifests(VALUE_SETS["standalone"]), "Deployment", RELEASE)
    c = _containers(plain)[0]
    assert c["readinessProbe"]["grpc"] == {"port": 9191,
                                           "service": "envoy.service.auth.v3.Authorization"}
    assert c["livenessProbe"]["tcpSocket"] == {"port": 9191}
    docs = manifests(VALUE_SETS["mtls"])
    c = _containers(one(docs, "Deployment", RELEASE))[0]
    assert c["readinessProbe"]["grpc"]["port"] == 9192
    cfg = yaml.safe_load(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    assert cfg["health_listen"] == "0.0.0.0:9192"
    assert cfg["listen"] == "0.0.0.0:9191"


def test_envoy_probes_and_shutdown() -> None:
    """Envoy is ready by its own /ready on the stats port, sleeps in preStop so endpoints move
    away before it exits, and runs without hot restart."""
    envoy = one(manifests(VALUE_SETS["standalone"]), "Deployment", ENVOY)
    c = _containers(envoy)[0]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "stats"}
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert "--disable-hot-restart" in c["args"]
    assert c["args"][c["args"].index("--config-path") + 1] == "/etc/envoy/config/envoy.yaml"


def test_rendered_server_config_loads_with_the_real_loader(
        rendered: tuple[str, list[Manifest]]) -> None:
    """The server's config.yaml from the ConfigMap, with the Deployment's literal environment on
    top, loads with extauthz.config (the same code `extauthz validate` runs)."""
    name, docs = rendered
    cm = one(docs, "ConfigMap", RELEASE)
    data = yaml.safe_load(cm["data"]["config.yaml"])
    settings = extauthz_config.from_mapping(data, f"{name}:config.yaml")
    env = {k: v for k, v in _env(_containers(one(docs, "Deployment", RELEASE))[0]).items()
           if isinstance(v, str)}
    settings = extauthz_config.apply_env(settings, env)
    assert settings.listen == "0.0.0.0:9191"
    transport = (VALUE_SETS[name] or {}).get("transport", "grpc")
    assert settings.transport == transport
    assert settings.serves_grpc == (transport == "grpc")
    assert settings.serves_http == (transport == "http")
    if transport == "http":
        assert settings.http_listen == "0.0.0.0:9192"
        assert settings.http_path_prefix == "/check"  # Envoy's path_prefix / Istio's pathPrefix
    if VALUE_SETS[name] and "oidc" in (VALUE_SETS[name] or {}).get("extauthz", {}) \
            and "issuerUrl" in VALUE_SETS[name]["extauthz"]["oidc"]:  # type: ignore[index]
        assert [i.issuer for i in settings.issuers] == [OIDC["issuerUrl"]]
        assert settings.issuers[0].audiences == ("temporal",)


def test_extra_config_keys_reach_the_server_and_policy_is_mounted() -> None:
    """`extauthz.config` keys end up in config.yaml; an inline policy becomes its own ConfigMap
    mounted as a directory (not subPath), so the server's hot reload sees edits."""
    docs = manifests(VALUE_SETS["monitoring"])
    cfg = yaml.safe_load(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    assert cfg["token_cache_entries"] == 5000
    assert cfg["policy_file"] == "/etc/extauthz/policy/policy.yaml"
    assert cfg["metrics_listen"] == "0.0.0.0:9090"
    policy = one(docs, "ConfigMap", f"{RELEASE}-policy")
    assert yaml.safe_load(policy["data"]["policy.yaml"]) == {"version": 1,
                                                             "profile": "temporal-compatible"}
    deployment = one(docs, "Deployment", RELEASE)
    mounts = {m["name"]: m for m in _containers(deployment)[0]["volumeMounts"]}
    assert mounts["policy"]["mountPath"] == "/etc/extauthz/policy"
    assert "subPath" not in mounts["policy"]


def test_tracing_is_set_through_extra_config_and_loads() -> None:
    """The chart has no tracing values of its own: `extauthz.config.tracing` reaches the
    server's config.yaml and loads with the real loader (the image carries the packages)."""
    base: dict[str, Any] = dict(VALUE_SETS["standalone"] or {})
    values = {**base, "extauthz": {**base["extauthz"], "config": {"tracing": {
        "enabled": True, "endpoint": "http://otel:4318", "sample_ratio": 0.1}}}}
    cfg = yaml.safe_load(one(manifests(values), "ConfigMap", RELEASE)["data"]["config.yaml"])
    settings = extauthz_config.from_mapping(cfg, "config.yaml")
    assert settings.tracing.enabled and settings.tracing.sample_ratio == 0.1
    assert settings.tracing.endpoint == "http://otel:4318"


def test_oidc_settings_come_from_an_existing_secret_by_reference() -> None:
    """With `oidc.existingSecret` the issuer URL and client id are secretKeyRefs to the named
    keys (the Secret users already create for Temporal's Web UI); an existing policy ConfigMap
    is mounted by name."""
    docs = manifests(VALUE_SETS["existing-secret"])
    env = _env(_containers(one(docs, "Deployment", RELEASE))[0])
    assert env["TEMPORAL_AUTH_PROVIDER_URL"] == {
        "secretKeyRef": {"name": "temporal-ui-sso", "key": "issuer_url"}}
    assert env["TEMPORAL_AUTH_CLIENT_ID"] == {
        "secretKeyRef": {"name": "temporal-ui-sso", "key": "client_id"}}
    volumes = {v["name"]: v for v in _pod_spec(one(docs, "Deployment", RELEASE))["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == "temporal-policy"
    assert not find(docs, "Secret")


def test_hpa_and_pdb() -> None:
    """With autoscaling on, both Deployments get an autoscaling/v2 HPA and leave `replicas` to
    it; PodDisruptionBudgets exist by default for both."""
    docs = manifests(VALUE_SETS["hpa"])
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in find(docs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {RELEASE, ENVOY}
    assert hpas[RELEASE]["spec"]["maxReplicas"] == 6
    assert hpas[ENVOY]["spec"]["maxReplicas"] == 8
    for deployment in find(docs, "Deployment"):
        assert "replicas" not in deployment["spec"]
    pdbs = {p["metadata"]["name"] for p in find(manifests(None), "PodDisruptionBudget")}
    assert pdbs == {RELEASE, ENVOY}


def test_topology_spread_by_default() -> None:
    """Both Deployments spread across zones and nodes without blocking scheduling."""
    for deployment in find(manifests(None), "Deployment"):
        constraints = _pod_spec(deployment)["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone",
                                                           "kubernetes.io/hostname"}
        assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in constraints)
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert all(c["labelSelector"]["matchLabels"] == selector for c in constraints)


def test_network_policies_leave_no_way_around_envoy() -> None:
    """Only Envoy pods may reach the authz server's Check port; in Temporal's namespace only
    Envoy may reach the frontend's gRPC port and its HTTP API port (7243, in the same rule),
    membership and metrics stay open (tests/deploy/test_chart_http_api.py: the HTTP port)."""
    docs = manifests(VALUE_SETS["networkpolicy"])
    policies = {p["metadata"]["name"]: p for p in find(docs, "NetworkPolicy")}
    envoy_selector = one(docs, "Deployment", ENVOY)["spec"]["selector"]["matchLabels"]

    authz = policies[RELEASE]["spec"]
    assert authz["policyTypes"] == ["Ingress"]
    check_rule = next(r for r in authz["ingress"] if r["ports"][0]["port"] == 9191)
    assert check_rule["from"] == [{"podSelector": {"matchLabels": envoy_selector}}]
    assert all("from" in r for r in authz["ingress"] if r["ports"][0]["port"] == 9191)

    frontend = policies[f"{RELEASE}-temporal-frontend"]
    assert frontend["metadata"]["namespace"] == NAMESPACE
    assert frontend["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "temporal", "app.kubernetes.io/component": "frontend"}
    rules = {r["ports"][0]["port"]: r for r in frontend["spec"]["ingress"]}
    assert set(rules) == {7233, 6933, 9090}
    assert rules[7233]["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
        "podSelector": {"matchLabels": envoy_selector}}]
    envoy_np = policies[ENVOY]["spec"]["ingress"]
    assert envoy_np[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"temporal-client": "true"}}}]


def test_istio_mode_renders_a_custom_authorization_policy_and_no_envoy() -> None:
    """Istio mode: an AuthorizationPolicy with action CUSTOM, the provider by name, selecting
    the frontend pods on the gRPC and HTTP ports; namespace scope puts it in Temporal's
    namespace, mesh scope in the root namespace; no Envoy objects; only the frontend pods may
    call the authz server."""
    docs = manifests(VALUE_SETS["istio-namespace"])
    policy = one(docs, "AuthorizationPolicy")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"] == {"name": "temporal-extauthz"}
    assert policy["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "frontend"
    assert policy["spec"]["rules"] == [{"to": [{"operation": {"ports": ["7233", "7243"]}}]}]
    assert not [d for d in docs if d["metadata"]["name"].startswith(ENVOY)]
    np = one(docs, "NetworkPolicy")["spec"]["ingress"][0]["from"][0]
    assert np["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    assert np["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "frontend"
    mesh = one(manifests(VALUE_SETS["istio"]), "AuthorizationPolicy")
    assert mesh["metadata"]["namespace"] == "istio-system"


def test_istio_notes_carry_the_extension_provider() -> None:
    """In Istio mode NOTES.txt prints the meshConfig extensionProviders entry with the settings
    of envoy/envoy.yaml: fail closed, 503 on error, the whole body packed as bytes."""
    text = notes(VALUE_SETS["istio"])
    provider = yaml.safe_load(text[text.index("extensionProviders:"):text.index("Clients keep")])
    entry = provider["extensionProviders"][0]
    assert entry["name"] == "temporal-extauthz"
    grpc_cfg = entry["envoyExtAuthzGrpc"]
    assert grpc_cfg["service"] == f"{RELEASE}.{NAMESPACE}.svc.cluster.local"
    assert grpc_cfg["port"] == 9191
    assert grpc_cfg["failOpen"] is False
    assert grpc_cfg["statusOnError"] == "503"
    assert grpc_cfg["includeRequestBodyInCheck"] == {
        "maxRequestBytes": 4194309, "allowPartialMessage": False, "packAsBytes": True}


def test_notes_print_the_client_address() -> None:
    """NOTES.txt tells clients Envoy's address, and warns when no issuer is configured."""
    text = notes(VALUE_SETS["standalone"])
    assert f"{ENVOY}.{NAMESPACE}.svc.cluster.local:7233" in text
    assert "internal-frontend" in text
    assert "no token issuer is configured" in notes(None)
    assert "no token issuer is configured" not in text


def test_notes_tell_http_api_users_the_same_envoy_address_or_that_it_is_off() -> None:
    """With httpApi enabled NOTES.txt shows a curl against Envoy's address (never the
    frontend's HTTP port); with it disabled, NOTES says /api/v1 paths are refused."""
    text = notes(VALUE_SETS["standalone"])
    assert f"http://{ENVOY}.{NAMESPACE}.svc.cluster.local:7233/api/v1/namespaces/" in text
    assert "frontend's HTTP port 7243" in text
    off = notes({**VALUE_SETS["standalone"], "httpApi": {"enabled": False}})
    assert "/api/v1/namespaces/" not in off
    assert "HTTP API is not served" in off


def test_helm_test_hook_checks_health_through_envoy() -> None:
    """The `helm test` pod targets Envoy's Service and runs the bundled check script."""
    pod = one(manifests(VALUE_SETS["standalone"]), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert _env(container)["TARGET"] == f"{ENVOY}.{NAMESPACE}.svc.cluster.local:7233"
    assert container["args"] == [(CHART / "files" / "helm-test.py").read_text()]


# ---- transport: http -------------------------------------------------------------------------


def _server(docs: list[Manifest]) -> dict[str, Any]:
    return _containers(one(docs, "Deployment", RELEASE))[0]


def test_http_transport_server_listens_on_the_http_port_only() -> None:
    """transport: http sets EXTAUTHZ_TRANSPORT=http and EXTAUTHZ_HTTP_LISTEN on the HTTP port;
    the container exposes that port (named http) and no gRPC Check port; readiness is GET
    /healthz there (503 while loading keys or shutting down); startup and liveness stay TCP on
    that port (an IdP outage must not restart pods). transport: grpc (the default) sets
    EXTAUTHZ_TRANSPORT=grpc, no HTTP listener, and keeps the gRPC probes."""
    c = _server(manifests(VALUE_SETS["http"]))
    env = _env(c)
    assert env["EXTAUTHZ_TRANSPORT"] == "http"
    assert env["EXTAUTHZ_HTTP_LISTEN"] == "0.0.0.0:9192"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 9192, "metrics": 9090}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 9192}
    assert "grpc" not in c["readinessProbe"]
    assert c["startupProbe"]["tcpSocket"] == {"port": 9192}
    assert c["livenessProbe"]["tcpSocket"] == {"port": 9192}

    grpc_c = _server(manifests(VALUE_SETS["standalone"]))
    grpc_env = _env(grpc_c)
    assert grpc_env["EXTAUTHZ_TRANSPORT"] == "grpc"
    assert "EXTAUTHZ_HTTP_LISTEN" not in grpc_env
    assert {p["name"] for p in grpc_c["ports"]} == {"grpc", "metrics"}
    assert "httpGet" not in grpc_c["readinessProbe"]

    moved = _server(manifests(merged(VALUE_SETS["http"], {"extauthz": {"httpPort": 9300}})))
    assert _env(moved)["EXTAUTHZ_HTTP_LISTEN"] == "0.0.0.0:9300"
    assert moved["readinessProbe"]["httpGet"]["port"] == 9300


def test_http_transport_services_and_network_policy() -> None:
    """With transport: http both Services carry the HTTP port (appProtocol http) instead of the
    gRPC Check port, and the NetworkPolicy lets only Envoy reach it; nothing opens 9191."""
    docs = manifests(VALUE_SETS["http"])
    envoy_selector = one(docs, "Deployment", ENVOY)["spec"]["selector"]["matchLabels"]
    for name in (RELEASE, f"{RELEASE}-headless"):
        ports = one(docs, "Service", name)["spec"]["ports"]
        check = ports[0]
        assert check == {"name": "http", "port": 9192, "targetPort": "http", "protocol": "TCP",
                         "appProtocol": "http"}, name
        assert 9191 not in [p["port"] for p in ports], name
    authz = one(docs, "NetworkPolicy", RELEASE)["spec"]["ingress"]
    rules = {r["ports"][0]["port"]: r for r in authz}
    assert set(rules) == {9192, 9090}
    assert rules[9192]["from"] == [{"podSelector": {"matchLabels": envoy_selector}}]
    assert all(len(r["ports"]) == 1 for r in authz)


def test_istio_http_transport_policy_provider_and_network_policy() -> None:
    """Istio mode with transport: http: the AuthorizationPolicy names the HTTP provider
    (temporal-extauthz-http unless istio.provider is set; temporal-extauthz for gRPC), and only
    the frontend pods may reach the HTTP port."""
    docs = manifests(VALUE_SETS["istio-http"])
    policy = one(docs, "AuthorizationPolicy")
    assert policy["spec"]["provider"] == {"name": "temporal-extauthz-http"}
    assert policy["spec"]["action"] == "CUSTOM"
    np = one(docs, "NetworkPolicy")["spec"]["ingress"][0]
    assert np["ports"] == [{"port": 9192, "protocol": "TCP"}]
    assert np["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == \
        "frontend"
    assert not [d for d in docs if d["metadata"]["name"].startswith(ENVOY)]
    grpc_policy = one(manifests({"mode": "istio"}), "AuthorizationPolicy")
    assert grpc_policy["spec"]["provider"] == {"name": "temporal-extauthz"}
    named = one(manifests(merged(VALUE_SETS["istio-http"], {"istio": {"provider": "authz"}})),
                "AuthorizationPolicy")
    assert named["spec"]["provider"] == {"name": "authz"}


def _notes_provider(values: dict[str, Any] | None) -> dict[str, Any]:
    text = notes(values)
    entries = yaml.safe_load(text[text.index("extensionProviders:"):text.index("Clients keep")])
    assert len(entries["extensionProviders"]) == 1
    entry: dict[str, Any] = entries["extensionProviders"][0]
    return entry


def test_istio_http_notes_carry_the_http_extension_provider() -> None:
    """With transport: http NOTES.txt prints an envoyExtAuthzHttp entry carrying the settings of
    envoy/envoy-http.yaml: the HTTP port, pathPrefix /check, fail closed, 503 on error, the whole
    body as bytes, exactly the headers the server reads (never content-type: it goes as
    x-extauthz-content-type), the identity headers upstream and the reason downstream; its name
    is the AuthorizationPolicy's provider."""
    values = VALUE_SETS["istio-http"]
    entry = _notes_provider(values)
    assert set(entry) == {"name", "envoyExtAuthzHttp"}
    assert entry["name"] == one(manifests(values), "AuthorizationPolicy")["spec"]["provider"][
        "name"]
    canonical = envoyconfig.ext_authz_filter(_canonical("http"))
    request = canonical["http_service"]["authorization_request"]
    response = canonical["http_service"]["authorization_response"]
    assert entry["envoyExtAuthzHttp"] == {
        "service": f"{RELEASE}.{NAMESPACE}.svc.cluster.local",
        "port": 9192,
        "pathPrefix": canonical["http_service"]["path_prefix"],
        "timeout": "1s",
        "failOpen": False,
        "statusOnError": "503",
        "includeRequestBodyInCheck": {"maxRequestBytes": 4194309, "allowPartialMessage": False,
                                      "packAsBytes": True},
        "includeRequestHeadersInCheck": [p["exact"] for p in
                                         canonical["allowed_headers"]["patterns"]],
        "includeAdditionalHeadersInCheck": {h["key"]: h["value"]
                                            for h in request["headers_to_add"]},
        "headersToUpstreamOnAllow": [p["exact"] for p in
                                     response["allowed_upstream_headers"]["patterns"]],
        "headersToDownstreamOnDeny": [p["exact"] for p in
                                      response["allowed_client_headers"]["patterns"]],
    }
    assert "content-type" not in entry["envoyExtAuthzHttp"]["includeRequestHeadersInCheck"]
    assert entry["envoyExtAuthzHttp"]["includeAdditionalHeadersInCheck"] == {
        "x-extauthz-content-type": "%REQ(content-type)%"}
    grpc_entry = _notes_provider({"mode": "istio"})
    assert grpc_entry["name"] == "temporal-extauthz"
    assert set(grpc_entry) == {"name", "envoyExtAuthzGrpc"}


def test_deploy_guide_shows_the_http_provider_the_chart_prints() -> None:
    """docs/deploy.md's envoyExtAuthzHttp example is the entry NOTES.txt prints for the guide's
    release (`authz` in `temporal`), so the two cannot drift apart."""
    guide = (REPO / "docs" / "deploy.md").read_text()
    start = guide.index("  - name: temporal-extauthz-http\n")
    block = guide[guide.rindex("```yaml", 0, start) + len("```yaml"):guide.index("```", start)]
    documented = yaml.safe_load(block)["meshConfig"]["extensionProviders"][0]
    files = render_files(VALUE_SETS["istio-http"], name="authz", namespace="temporal")
    text = next(t for p, t in files.items() if p.endswith("NOTES.txt"))
    printed = yaml.safe_load(text[text.index("extensionProviders:"):text.index("Clients keep")])
    assert documented == printed["extensionProviders"][0]


# ---- mTLS wiring -----------------------------------------------------------------------------


def test_mtls_wires_both_sides_from_secrets() -> None:
    """With tls.enabled the server reads tls.crt/tls.key/ca.crt from the server Secret and
    requires client certificates; Envoy's extauthz cluster presents the client Secret's
    certificate and verifies the server's name, both through file-based SDS that watches the
    Secret volume (rotation without restart); cert-manager Certificates cover the names."""
    docs = manifests(VALUE_SETS["mtls"])
    cfg = yaml.safe_load(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    assert cfg["tls"] == {"cert_file": "/etc/extauthz/tls/tls.crt",
                          "key_file": "/etc/extauthz/tls/tls.key",
                          "client_ca_file": "/etc/extauthz/tls/ca.crt",
                          "require_client_cert": True}
    server = _pod_spec(one(docs, "Deployment", RELEASE))
    assert {"name": "tls", "secret": {"secretName": f"{RELEASE}-server-tls"}} in server["volumes"]
    envoy = _pod_spec(one(docs, "Deployment", ENVOY))
    assert {"name": "authz-tls", "secret": {"secretName": f"{RELEASE}-client-tls"}} \
        in envoy["volumes"]

    files = envoy_files(VALUE_SETS["mtls"])
    cluster = envoyconfig.cluster(yaml.safe_load(files["envoy.yaml"]), "extauthz")
    tls = cluster["transport_socket"]["typed_config"]
    host = f"{RELEASE}.{NAMESPACE}.svc.cluster.local"
    assert tls["sni"] == host
    sds = tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["sds_config"]
    assert sds["path_config_source"]["watched_directory"] == {"path": "/etc/envoy/authz-tls"}
    ca = yaml.safe_load(files["sds-authz-server-ca.yaml"])["resources"][0]["validation_context"]
    assert ca["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": host}}]

    certs = {c["metadata"]["name"]: c for c in find(docs, "Certificate")}
    assert host in certs[f"{RELEASE}-server"]["spec"]["dnsNames"]
    assert certs[f"{RELEASE}-server"]["spec"]["secretName"] == f"{RELEASE}-server-tls"
    assert certs[f"{RELEASE}-client"]["spec"]["usages"][0] == "client auth"
    assert certs[f"{RELEASE}-server"]["spec"]["issuerRef"]["kind"] == "ClusterIssuer"


# ---- Envoy config: the same as envoy/envoy.yaml ----------------------------------------------


CANONICAL = {"grpc": "envoy.yaml", "http": "envoy-http.yaml"}
HEADLESS = f"{RELEASE}-headless.{NAMESPACE}.svc.cluster.local"


def _canonical(transport: str = "grpc") -> dict[str, Any]:
    return envoyconfig.load(REPO / "envoy" / CANONICAL[transport])


def _transport_values(transport: str) -> dict[str, Any] | None:
    return None if transport == "grpc" else {"transport": transport}


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


@pytest.mark.parametrize("transport", sorted(CANONICAL))
def test_envoy_external_listener_is_the_canonical_one(transport: str) -> None:
    """With default values the chart's external listener (ext_authz filter, connection manager,
    routes, header stripping, limits) equals envoy/envoy.yaml's (transport grpc) or
    envoy/envoy-http.yaml's (transport http: http_service, path_prefix, allowed_headers without
    content-type, the x-extauthz-content-type addition, upstream/client headers), apart from
    addresses: its own and, for http, the authz URI (the headless Service's HTTP port)."""
    config = envoy_config(_transport_values(transport))
    chart = copy.deepcopy(envoyconfig.listener(config, "external"))
    canonical = copy.deepcopy(envoyconfig.listener(_canonical(transport), "external"))
    if transport == "http":
        uri = envoyconfig.ext_authz_filter(config)["http_service"]["server_uri"]["uri"]
        assert uri == f"http://{HEADLESS}:9192"
        for listener in (chart, canonical):
            authz = envoyconfig.http_connection_manager(listener)["http_filters"][0]
            assert authz["name"] == envoyconfig.EXT_AUTHZ_FILTER
            authz["typed_config"]["http_service"]["server_uri"]["uri"] = "<authz>"
        # belt and braces: the client's content-type never reaches the HTTP authorizer as such
        authz = envoyconfig.ext_authz_filter(config)
        sent = [p["exact"] for p in authz["allowed_headers"]["patterns"]]
        assert sent == ["grpc-encoding", "x-request-id", "authorization-extras", "client-name",
                        "client-version", "traceparent", "tracestate"]
        assert authz["http_service"]["authorization_request"]["headers_to_add"] == [
            {"key": "x-extauthz-content-type", "value": "%REQ(content-type)%"}]
    assert _without(chart, "address") == _without(canonical, "address")
    assert chart["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 7233}


@pytest.mark.parametrize("transport", sorted(CANONICAL))
@pytest.mark.parametrize("name", ["extauthz", "temporal_frontend"])
def test_envoy_clusters_match_the_canonical_ones(name: str, transport: str) -> None:
    """The chart's extauthz and temporal_frontend clusters equal the canonical ones of the
    transport's file (health checks: gRPC health or GET /healthz; timeouts; HTTP/2 windows or
    HTTP/1.1 with a 60 s idle timeout) except for discovery: DNS of the Services instead of
    static loopback addresses."""
    config = envoy_config(_transport_values(transport))
    chart = envoyconfig.cluster(config, name)
    canonical = envoyconfig.cluster(_canonical(transport), name)
    skip = ("type", "cluster_type", "load_assignment")
    assert _without(chart, *skip) == _without(canonical, *skip)
    assert chart["cluster_type"]["typed_config"]["@type"].endswith("DnsCluster")
    if name == "extauthz":
        address = chart["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
            "address"]["socket_address"]
        assert address == {"address": HEADLESS,
                           "port_value": 9192 if transport == "http" else 9191}


def test_http_transport_envoy_config_follows_values() -> None:
    """With transport: http, authzTimeout is the http_service timeout, extauthz.httpPort moves
    the cluster's endpoint and the authz URI together, and failure_mode_allow stays false."""
    config = envoy_config({"transport": "http", "envoy": {"authzTimeout": "0.25s"},
                           "extauthz": {"httpPort": 9300}})
    authz = envoyconfig.ext_authz_filter(config)
    assert "grpc_service" not in authz
    assert authz["http_service"]["server_uri"] == {
        "uri": f"http://{HEADLESS}:9300", "cluster": "extauthz", "timeout": "0.25s"}
    assert authz["failure_mode_allow"] is False
    endpoint = envoyconfig.cluster(config, "extauthz")["load_assignment"]["endpoints"][0]
    assert endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": HEADLESS, "port_value": 9300}


def test_envoy_config_follows_values() -> None:
    """Values that tune Envoy land where they belong; failure_mode_allow stays false."""
    values = {"envoy": {"authzTimeout": "0.25s", "maxRequestBytes": 8388613,
                        "perConnectionBufferLimitBytes": 16777216, "streamIdleTimeout": "300s",
                        "routeIdleTimeout": "300s", "port": 8233},
              "temporal": {"namespace": "t", "frontend": {"host": "prod-temporal-frontend",
                                                          "port": 7000}}}
    config = envoy_config(values)
    authz = envoyconfig.ext_authz_filter(config)
    assert authz["grpc_service"]["timeout"] == "0.25s"
    assert authz["with_request_body"]["max_request_bytes"] == 8388613
    assert authz["failure_mode_allow"] is False
    external = envoyconfig.listener(config, "external")
    assert external["per_connection_buffer_limit_bytes"] == 16777216
    assert envoyconfig.http_connection_manager(external)["stream_idle_timeout"] == "300s"
    assert external["address"]["socket_address"]["port_value"] == 8233
    endpoint = envoyconfig.cluster(config, "temporal_frontend")["load_assignment"]["endpoints"][0]
    assert endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "prod-temporal-frontend.t.svc.cluster.local", "port_value": 7000}
    authz_ep = envoyconfig.cluster(config, "extauthz")["load_assignment"]["endpoints"][0]
    assert authz_ep["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] == \
        f"{RELEASE}-headless.{NAMESPACE}.svc.cluster.local"


def test_envoy_has_no_unauthorized_listener_and_a_loopback_admin() -> None:
    """The chart's Envoy has no internal (unauthorized) listener; admin is on loopback; the
    stats listener serves exactly GET /stats/prometheus and GET /ready from it."""
    config = envoy_config()
    names = [lst["name"] for lst in config["static_resources"]["listeners"]]
    assert names == ["external", "stats"]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    stats = envoyconfig.http_connection_manager(envoyconfig.listener(config, "stats"))
    routes = stats["route_config"]["virtual_hosts"][0]["routes"]
    served = [(r["match"]["path"], r["match"]["headers"][0]["string_match"]["exact"])
              for r in routes if "route" in r]
    assert served == [("/stats/prometheus", "GET"), ("/ready", "GET")]
    assert routes[-1] == {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
    assert not any(f == "envoy.filters.http.ext_authz"
                   for f in [h["name"] for h in stats["http_filters"]])


def test_envoy_pods_roll_when_the_envoy_config_changes() -> None:
    """The Envoy Deployment carries a checksum of its ConfigMap, so a config change rolls it."""
    def checksum(values: dict[str, Any] | None) -> str:
        deployment = one(manifests(values), "Deployment", ENVOY)
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])
    assert checksum(None) != checksum({"envoy": {"authzTimeout": "2s"}})
    assert checksum(None) == checksum({"extauthz": {"replicas": 5}})


# ---- observability files ---------------------------------------------------------------------


@pytest.mark.parametrize(("copy_path", "canonical"), [
    ("files/dashboard.json", "dashboards/extauthz.json"),
    ("files/alerts.yaml", "alerts/extauthz-rules.yml"),
])
def test_chart_copies_of_dashboard_and_alerts_are_identical(copy_path: str,
                                                            canonical: str) -> None:
    """Helm reads files only inside the chart: its copies of the dashboard and the alert rules
    are byte-identical to the canonical files
    (fix: cp <canonical> helm/temporal-extauthz/<copy>)."""
    source = REPO / canonical
    target = CHART / copy_path
    assert target.read_bytes() == source.read_bytes(), (
        f"{target} differs from {source}: run `cp {canonical} helm/temporal-extauthz/{copy_path}`")


def test_dashboard_and_rules_are_rendered_from_the_files() -> None:
    """The dashboard ConfigMap (label grafana_dashboard "1", folder annotation, its own
    namespace) carries the dashboard JSON; the PrometheusRule carries the rules file's groups."""
    docs = manifests(VALUE_SETS["monitoring"])
    dashboard = one(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Temporal / Security"}
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert json.loads(dashboard["data"]["temporal-extauthz.json"]) == json.loads(
        (REPO / "dashboards" / "extauthz.json").read_text())
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(
        (REPO / "alerts" / "extauthz-rules.yml").read_text())["groups"]
    monitors = {(m["kind"], m["metadata"]["name"]): m for m in docs
                if m["kind"] in ("ServiceMonitor", "PodMonitor")}
    assert set(monitors) == {("ServiceMonitor", RELEASE), ("ServiceMonitor", ENVOY),
                             ("PodMonitor", RELEASE), ("PodMonitor", ENVOY)}
    assert monitors[("ServiceMonitor", ENVOY)]["spec"]["endpoints"][0]["path"] == \
        "/stats/prometheus"
    assert monitors[("ServiceMonitor", RELEASE)]["metadata"]["labels"]["release"] == \
        "kube-prometheus-stack"


def test_chart_files_exist_only_inside_the_chart() -> None:
    """Everything the templates read with .Files.Get is inside the chart directory."""
    for path in ("files/dashboard.json", "files/alerts.yaml", "files/helm-test.py"):
        assert (CHART / path).is_file(), path
    assert Path(CHART / "values.schema.json").is_file()
