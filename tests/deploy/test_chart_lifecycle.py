"""The chart's lifecycle never opens the Temporal frontend, and a bad policy never reaches a
pod: the frontend guards survive uninstall and rollback, a PodDisruptionBudget only where it
cannot block a node drain, the policy checked at render time (the schema exported from the
loader) and by a pre-install/pre-upgrade hook whose command is run here for real, and the
private-CA issuer bundle and extra volumes reach the server pod."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml
from chartschema import CHART_SCHEMA, chart_schema_text
from helmchart import (
    RELEASE,
    REPO,
    VALUE_SETS,
    find,
    manifests,
    merged,
    notes,
    one,
    render_files,
)

from extauthz.rules.document import PolicyError, load_file
from extauthz.rules.schema import policy_schema

OIDC = {"issuerUrl": "https://login.example.com/realms/temporal", "clientId": "temporal"}
CHECK = f"{RELEASE}-policy-check"
EXAMPLE_POLICY = REPO / "examples" / "policy.yaml"
EXAMPLE_TESTS = REPO / "examples" / "policy.tests.yaml"
EXTAUTHZ = str(Path(sys.executable).with_name("extauthz"))


def _example_policy() -> dict[str, Any]:
    policy: dict[str, Any] = yaml.safe_load(EXAMPLE_POLICY.read_text())
    return policy


def _example_tests() -> dict[str, Any]:
    table: dict[str, Any] = yaml.safe_load(EXAMPLE_TESTS.read_text())
    return table


# ---- frontend guards ------------------------------------------------------------------------


def test_frontend_guards_are_kept_on_uninstall_and_rollback() -> None:
    """The frontend NetworkPolicy (standalone) and the Istio AuthorizationPolicy carry
    `helm.sh/resource-policy: keep`: Helm leaves them in place on uninstall and when an
    upgrade or rollback drops them; nothing else of the release is kept."""
    standalone = manifests(VALUE_SETS["networkpolicy"])
    kept = [d for d in standalone
            if d["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"]
    assert [(d["kind"], d["metadata"]["name"]) for d in kept] == [
        ("NetworkPolicy", f"{RELEASE}-temporal-frontend")]
    for name in ("istio", "istio-namespace", "istio-http"):
        docs = manifests(VALUE_SETS[name])
        kept = [d for d in docs
                if d["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"]
        assert [d["kind"] for d in kept] == ["AuthorizationPolicy"], name


def test_notes_say_the_guards_are_kept() -> None:
    """NOTES tell the installer that the guard outlives the release (standalone with the
    frontend NetworkPolicy, and Istio)."""
    assert "kept on uninstall and rollback" in notes(VALUE_SETS["networkpolicy"])
    assert "kept on uninstall and rollback" in notes(VALUE_SETS["istio"])
    assert "kept on uninstall" not in notes(None)  # no frontend NetworkPolicy: a warning


# ---- PodDisruptionBudget --------------------------------------------------------------------


@pytest.mark.parametrize(("values", "expected"), [
    (None, {RELEASE, f"{RELEASE}-envoy"}),
    ({"extauthz": {"replicas": 1}, "envoy": {"replicas": 1}}, set()),
    ({"extauthz": {"replicas": 1}}, {f"{RELEASE}-envoy"}),
    ({"extauthz": {"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 2}},
      "envoy": {"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 1}}}, {RELEASE}),
    ({"extauthz": {"podDisruptionBudget": {"enabled": False}}}, {f"{RELEASE}-envoy"}),
])
def test_pdb_only_when_more_than_one_pod_can_run(values: dict[str, Any] | None,
                                                 expected: set[str]) -> None:
    """A `minAvailable: 1` budget over a single pod blocks every node drain: a PDB is rendered
    only when replicas (or, with the HPA, its minimum) exceed 1."""
    docs = manifests(merged({"extauthz": {"oidc": OIDC}}, values))
    assert {p["metadata"]["name"] for p in find(docs, "PodDisruptionBudget")} == expected


# ---- the policy schema ----------------------------------------------------------------------


def test_embedded_policy_schema_equals_the_loader_export() -> None:
    """values.schema.json holds exactly what extauthz.rules.schema exports
    (fix: .venv/bin/python tests/deploy/chartschema.py)."""
    current = json.loads(CHART_SCHEMA.read_text())
    assert CHART_SCHEMA.read_text() == chart_schema_text(current), (
        "values.schema.json is stale: run .venv/bin/python tests/deploy/chartschema.py")
    assert current["properties"]["extauthz"]["properties"]["policy"] == policy_schema()


def test_policy_schema_accepts_what_the_loader_accepts() -> None:
    """The shipped example policy and the temporal-compatible one pass the schema and load."""
    validator = jsonschema.Draft7Validator(policy_schema())
    for doc in (_example_policy(), {"version": 1, "profile": "temporal-compatible"}, {}):
        validator.validate(doc)
    load_file(EXAMPLE_POLICY)


P = "/extauthz/policy/"
BAD_POLICIES = [
    pytest.param({"bindings": [{"name": "a", "match": {"groups": ["x"]}, "roles": ["read"],
                                "namespace": ["default"]}]}, "namespace", id="misspelt-key"),
    pytest.param({"profile": "strict"}, P + "profile", id="unknown-profile"),
    pytest.param({"version": 2}, P + "version", id="wrong-version"),
    pytest.param({"deny": [{"name": "d", "match": {"kind": "robot"},
                            "methods": ["TerminateWorkflowExecution"]}]},
                 P + "deny/0/match", id="unknown-kind"),
    pytest.param({"roles": {"ops": {"categories": ["writes"]}}},
                 P + "roles/ops/categories", id="unknown-category"),
    pytest.param({"bindings": [{"name": "a", "match": {}, "roles": ["read"],
                                "namespaces": ["*"]}]}, P + "bindings/0/match",
                 id="empty-matcher"),
    pytest.param({"options": {"temporal_permissions": "yes"}},
                 P + "options/temporal_permissions", id="wrong-type"),
]


@pytest.mark.parametrize(("policy", "word"), BAD_POLICIES)
def test_a_bad_policy_fails_helm_at_render_time(policy: dict[str, Any], word: str,
                                                tmp_path: Path) -> None:
    """A policy the loader rejects is rejected by the chart's schema too, so `helm upgrade`
    stops before anything is applied: Helm's render fails naming the key path."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with pytest.raises(PolicyError):  # the oracle: the server's own loader refuses it
        load_file(path)
    with pytest.raises(helm.HelmValuesError, match=word):
        render_files({"extauthz": {"oidc": OIDC, "policy": policy}})


# ---- the pre-install / pre-upgrade hook ------------------------------------------------------


def _hook(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = manifests(merged({"extauthz": {"oidc": OIDC}}, values))
    return one(docs, "ConfigMap", CHECK), one(docs, "Job", CHECK)


def test_hook_runs_before_install_and_upgrade_and_is_kept_on_failure() -> None:
    """The hook ConfigMap is created first (weight -10), then the Job (weight -5), on
    pre-install and pre-upgrade; both are deleted only when the check succeeds (a failed
    Job stays for `kubectl logs`); the Job never retries and gets no Istio sidecar; no policy,
    no hook."""
    cm, job = _hook({"extauthz": {"policy": _example_policy()}})
    for doc, weight in ((cm, "-10"), (job, "-5")):
        ann = doc["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert ann["helm.sh/hook-weight"] == weight
        assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert job["spec"]["backoffLimit"] == 0
    # an Istio sidecar would never exit and the Job would never complete
    assert job["spec"]["template"]["metadata"]["annotations"] == {
        "sidecar.istio.io/inject": "false"}
    assert not find(manifests({"extauthz": {"oidc": OIDC}}), "Job")
    assert not find(manifests({"extauthz": {"oidc": OIDC, "policy": _example_policy(),
                                            "policyCheck": {"enabled": False}}}), "Job")


def _run_hook(cm: dict[str, Any], job: dict[str, Any], root: Path) -> list[
        subprocess.CompletedProcess[str]]:
    """Run the Job's containers in order, as the kubelet would, with the ConfigMap's keys
    written where the Job mounts them (under ``root``) and the real `extauthz` CLI."""
    spec = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"] for v in spec["volumes"]}
    results = []
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for mount in container["volumeMounts"]:
            source = volumes[mount["name"]]
            assert source["name"] == cm["metadata"]["name"]
            target = root / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            for item in source["items"]:
                (target / item["path"]).write_text(cm["data"][item["key"]])
        argv = [EXTAUTHZ if a == "extauthz" else
                (str(root / a.lstrip("/")) if a.startswith("/etc/") else a)
                for a in container["command"]]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        results.append(result)
        if result.returncode != 0:
            break
    return results


def test_hook_validates_and_tests_a_good_policy(tmp_path: Path) -> None:
    """With the example policy and its test table, the hook's validate then test commands
    succeed against the rendered ConfigMap."""
    cm, job = _hook({"extauthz": {"policy": _example_policy(),
                                  "policyCheck": {"tests": _example_tests()}}})
    results = _run_hook(cm, job, tmp_path)
    assert [r.returncode for r in results] == [0, 0], [r.stdout + r.stderr for r in results]
    assert [c["command"][1] for c in [*job["spec"]["template"]["spec"]["initContainers"],
                                      *job["spec"]["template"]["spec"]["containers"]]] == [
        "validate", "test"]


def test_hook_of_the_monitoring_value_set_passes(tmp_path: Path) -> None:
    """The value set the strict manifest validation covers (policy + a one-case table) passes
    its own hook."""
    values = VALUE_SETS["monitoring"]
    assert values is not None
    cm, job = _hook(values)
    results = _run_hook(cm, job, tmp_path)
    assert [r.returncode for r in results] == [0, 0], [r.stdout + r.stderr for r in results]


def test_hook_fails_a_policy_the_schema_cannot_see(tmp_path: Path) -> None:
    """A policy that passes the schema but names an unknown role fails the hook's `extauthz
    validate` with the key path: the upgrade stops in the hook, not in new pods."""
    policy = {"version": 1, "bindings": [{"name": "ops", "match": {"groups": ["ops"]},
                                          "roles": ["writer"], "namespaces": ["*"]}]}
    jsonschema.Draft7Validator(policy_schema()).validate(policy)
    cm, job = _hook({"extauthz": {"policy": policy}})
    [result] = _run_hook(cm, job, tmp_path)
    assert result.returncode != 0
    assert "bindings[0].roles[0]" in result.stderr + result.stdout
    assert "writer" in result.stderr + result.stdout


def test_hook_fails_when_a_test_case_fails(tmp_path: Path) -> None:
    """A valid policy whose test table expects a different decision fails the hook's `extauthz
    test` step."""
    table = _example_tests()
    case = dict(table["cases"][0])
    case["expect"] = "deny" if case["expect"] == "allow" else "allow"
    case.pop("code", None)
    case.pop("rule", None)
    table["cases"] = [case]
    cm, job = _hook({"extauthz": {"policy": _example_policy(),
                                  "policyCheck": {"tests": table}}})
    results = _run_hook(cm, job, tmp_path)
    assert [r.returncode != 0 for r in results] == [False, True], [
        r.stdout + r.stderr for r in results]


def test_hook_reads_an_existing_policy_configmap() -> None:
    """With existingPolicyConfigMap the Job mounts that ConfigMap's key, not a copy."""
    _, job = _hook({"extauthz": {"existingPolicyConfigMap": "temporal-policy",
                                 "existingPolicyKey": "rules.yaml"}})
    [volume] = job["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"] == {"name": "temporal-policy",
                                   "items": [{"key": "rules.yaml", "path": "policy.yaml"}]}


# ---- issuer CA bundle, extra volumes ----------------------------------------------------------


def _server(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = one(manifests(merged({"extauthz": {"oidc": OIDC}}, values)), "Deployment",
                     RELEASE)
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


@pytest.mark.parametrize("source", ["configMap", "secret"])
def test_issuer_ca_bundle_is_mounted_and_named_to_the_server(source: str) -> None:
    """extauthz.oidc.caBundle mounts the PEM bundle read-only and sets EXTAUTHZ_ISSUER_CA_FILE
    to its path (the server's issuers[].ca_file for the environment's issuer)."""
    spec, c = _server({"extauthz": {"oidc": {"caBundle": {source: "corp-ca",
                                                          "key": "bundle.pem"}}}})
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["EXTAUTHZ_ISSUER_CA_FILE"] == "/etc/extauthz/issuer-ca/bundle.pem"
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "issuer-ca"]
    assert mount == {"name": "issuer-ca", "mountPath": "/etc/extauthz/issuer-ca",
                     "readOnly": True}
    [volume] = [v for v in spec["volumes"] if v["name"] == "issuer-ca"]
    ref = volume["configMap"] if source == "configMap" else volume["secret"]
    assert ref["items"] == [{"key": "bundle.pem", "path": "bundle.pem"}]
    _, plain = _server({})
    assert "EXTAUTHZ_ISSUER_CA_FILE" not in {e["name"] for e in plain["env"]}


def test_issuer_ca_bundle_from_two_places_is_refused() -> None:
    """A ConfigMap and a Secret both set is an error naming the key."""
    with pytest.raises(helm.HelmError, match=r"extauthz\.oidc\.caBundle"):
        render_files({"extauthz": {"oidc": {**OIDC, "caBundle": {"configMap": "a",
                                                                 "secret": "b"}}}})


def test_extra_volumes_and_mounts_reach_the_server_pod() -> None:
    """extraVolumes / extraVolumeMounts are appended to the server pod as given."""
    spec, c = _server({"extauthz": {
        "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca",
                               "readOnly": True}]}})
    assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in spec["volumes"]
    assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in \
        c["volumeMounts"]
    with pytest.raises(helm.HelmValuesError):
        render_files({"extauthz": {"extraVolumeMounts": [{"name": "x"}]}})



# ---- helm test -------------------------------------------------------------------------------


def test_helm_test_pod_dials_the_frontend_ports_directly() -> None:
    """Standalone: the `helm test` pod gets the frontend's gRPC and HTTP API addresses to dial
    (they must refuse or time out); bypassCheck false drops them; Istio mode tests through the
    frontend itself (its sidecar authorizes), so there is nothing to dial around."""
    def env(values: dict[str, Any]) -> dict[str, str]:
        pod = one(manifests(merged({"extauthz": {"oidc": OIDC}}, values)), "Pod")
        return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}

    host = "prod-temporal-frontend.temporal-system.svc.cluster.local"
    standalone = env({"temporal": {"namespace": "temporal-system",
                                   "frontend": {"host": "prod-temporal-frontend"}}})
    assert standalone["FRONTEND_ADDRESSES"] == f"{host}:7233,{host}:7243"
    assert "FRONTEND_ADDRESSES" not in env({"tests": {"bypassCheck": False}})
    assert "FRONTEND_ADDRESSES" not in env({"mode": "istio"})


def test_issuer_ca_bundle_beside_config_issuers() -> None:
    """With extauthz.config.issuers the bundle is theirs to name (ca_file): the chart does not
    set EXTAUTHZ_ISSUER_CA_FILE (the server refuses it beside file issuers), and a bundle that
    no listed issuer names is refused at install time."""
    bundle = {"configMap": "corp-ca", "key": "bundle.pem"}
    issuer = {"issuer": "https://idp.corp.example", "audiences": ["temporal"]}
    _, c = _server({"extauthz": {"oidc": {"caBundle": bundle}, "config": {"issuers": [
        {**issuer, "ca_file": "/etc/extauthz/issuer-ca/bundle.pem"}]}}})
    assert "EXTAUTHZ_ISSUER_CA_FILE" not in {e["name"] for e in c["env"]}
    with pytest.raises(helm.HelmError, match=r"no issuer of extauthz\.config\.issuers has "
                                             r"ca_file"):
        render_files({"extauthz": {"oidc": {**OIDC, "caBundle": bundle},
                                   "config": {"issuers": [issuer]}}})
