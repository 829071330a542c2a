"""The method table: every frontend method, its scope and access, and where its namespace sits."""

from __future__ import annotations

import csv
import importlib.resources
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import service_pb2 as operator_service
from temporalio.api.workflowservice.v1 import service_pb2 as workflow_service

from extauthz import methods
from extauthz.methods import Extract
from extauthz.model import Access, Scope

SHORT_TO_FULL = {
    "WorkflowService": methods.WORKFLOW_SERVICE,
    "OperatorService": methods.OPERATOR_SERVICE,
}
START = f"/{methods.WORKFLOW_SERVICE}/StartWorkflowExecution"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _installed_methods() -> list[tuple[str, str, str]]:
    """(service, method, request message full name) for every method temporalio ships."""
    out = []
    for module, service in (
        (workflow_service, methods.WORKFLOW_SERVICE),
        (operator_service, methods.OPERATOR_SERVICE),
    ):
        sd = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[-1]]
        out += [(service, md.name, md.input_type.full_name) for md in sd.methods]
    return out


def test_packaged_access_csv_equals_reference(reference_dir: Path) -> None:
    """The access facts shipped in the package are byte-for-byte the reference file."""
    packaged = importlib.resources.files("extauthz").joinpath("data/temporal-api-access.csv")
    assert packaged.read_bytes() == (reference_dir / "temporal-api-access.csv").read_bytes()


def test_every_installed_method_is_in_the_table(method_table: dict[str, methods.MethodEntry]
                                                ) -> None:
    """Every WorkflowService and OperatorService method of the installed temporalio is known."""
    installed = _installed_methods()
    assert len(installed) > 100
    missing = [f"{s}/{m}" for s, m, _ in installed if f"/{s}/{m}" not in method_table]
    assert missing == []
    for service, name, request_type in installed:
        assert method_table[f"/{service}/{name}"].request_type == request_type


def test_scope_and_access_agree_with_reference(
    reference_dir: Path, method_table: dict[str, methods.MethodEntry]
) -> None:
    """Each installed method's scope and access are the reference CSV's row for it."""
    facts = {
        (r["service"], r["method"]): (r["scope"], r["access"])
        for r in _rows(reference_dir / "temporal-api-access.csv")
    }
    wrong = []
    for service, name, _ in _installed_methods():
        assert (service, name) in facts, f"{service}/{name} has no row in the reference"
        m = method_table[f"/{service}/{name}"].method
        if (m.scope.value, m.access.value) != facts[(service, name)]:
            wrong.append((name, m.scope.value, m.access.value, facts[(service, name)]))
    assert wrong == []


def test_admin_service_methods_are_cluster_admin(
    reference_dir: Path, method_table: dict[str, methods.MethodEntry]
) -> None:
    """Every AdminService method of the reference is in the table as Cluster/Admin."""
    admin = [r["method"] for r in _rows(reference_dir / "temporal-api-access.csv")
             if r["service"] == methods.ADMIN_SERVICE]
    assert len(admin) >= 40
    for name in admin:
        m = method_table[f"/{methods.ADMIN_SERVICE}/{name}"].method
        assert (m.scope, m.access) == (Scope.CLUSTER, Access.ADMIN), name


def test_health_check_is_in_the_table_and_always_allowed(
    method_table: dict[str, methods.MethodEntry]
) -> None:
    """``/grpc.health.v1.Health/Check`` is known, health-scoped and always allowed."""
    entry = method_table["/grpc.health.v1.Health/Check"]
    assert entry.method.scope is Scope.HEALTH
    assert entry.method.path in methods.ALWAYS_ALLOWED
    assert f"/{methods.WORKFLOW_SERVICE}/GetSystemInfo" in methods.ALWAYS_ALLOWED
    assert len(methods.ALWAYS_ALLOWED) == 2


def test_namespace_field_numbers_agree_with_reference(
    reference_dir: Path, method_table: dict[str, methods.MethodEntry]
) -> None:
    """The derived `namespace` field number of every request equals the reference's column."""
    rows = _rows(reference_dir / "temporal-request-fields.csv")
    assert len(rows) > 100
    wrong = []
    for r in rows:
        entry = method_table.get(f"/{SHORT_TO_FULL[r['service']]}/{r['method']}")
        assert entry is not None, f"{r['service']}/{r['method']} is not in the table"
        assert entry.request_type.rsplit(".", 1)[-1] == r["request_message"]
        expected = int(r["namespace_field_no"]) if r["namespace_field_no"] else None
        if entry.method.namespace_field != expected:
            wrong.append((r["method"], entry.method.namespace_field, expected))
    assert wrong == []


@pytest.mark.parametrize(("service", "name", "number"), [
    ("WorkflowService", "RespondWorkflowTaskCompleted", 9),
    ("WorkflowService", "RespondWorkflowTaskFailed", 6),
    ("WorkflowService", "RespondQueryTaskCompleted", 6),
    ("WorkflowService", "RecordActivityTaskHeartbeat", 4),
    ("WorkflowService", "RespondActivityTaskCompleted", 4),
    ("OperatorService", "AddSearchAttributes", 2),
    ("WorkflowService", "StartWorkflowExecution", 1),
])
def test_namespace_is_not_always_field_one(service: str, name: str, number: int) -> None:
    """Token-based and operator requests carry `namespace` at 9, 6, 4 or 2, not at 1."""
    entry = methods.by_name(f"{service}/{name}")
    assert entry is not None
    assert entry.method.namespace_field == number
    assert entry.plan.fields[number].extract is Extract.NAMESPACE


def test_only_real_namespace_ids_are_namespace_id_fields(
    reference_dir: Path, method_table: dict[str, methods.MethodEntry]
) -> None:
    """DescribeNamespace.id and DeleteNamespace.namespace_id name a namespace by id; a Nexus
    endpoint's id (Get/Update/DeleteNexusEndpoint) stands for the namespace it targets, which
    the request does not show, so it is read the same way (deny rules with namespaces apply).

    The reference's id column also lists fields that are merely called ``id`` (an activity id,
    a workflow rule id); those must not be read as a namespace id.
    """
    by_id = {e.method.short: e.method.namespace_id_field
             for e in method_table.values() if e.method.namespace_id_field is not None}
    assert by_id == {"WorkflowService/DescribeNamespace": 2, "OperatorService/DeleteNamespace": 2,
                     "OperatorService/GetNexusEndpoint": 1,
                     "OperatorService/UpdateNexusEndpoint": 1,
                     "OperatorService/DeleteNexusEndpoint": 1}
    listed = {f"{r['service']}/{r['method']}" for r in
              _rows(reference_dir / "temporal-request-fields.csv") if r["namespace_id_field"]}
    assert set(by_id) <= listed


@pytest.mark.parametrize("path", [
    f"//{methods.WORKFLOW_SERVICE}/StartWorkflowExecution",
    f"/{methods.WORKFLOW_SERVICE}//StartWorkflowExecution",
    f"/{methods.WORKFLOW_SERVICE}%2FStartWorkflowExecution",
    f"/{methods.WORKFLOW_SERVICE}/%53tartWorkflowExecution",
    f"/{methods.WORKFLOW_SERVICE}/../{methods.WORKFLOW_SERVICE}/StartWorkflowExecution",
    f"/{methods.WORKFLOW_SERVICE}/./StartWorkflowExecution",
    f"/./{methods.WORKFLOW_SERVICE}/StartWorkflowExecution",
    f"{START}?x",
    f"{START}?",
    f"{START}#x",
    f"{START}/",
    f"{START} ",
    f"{START}\x00",
    START.lower(),
    START.replace("StartWorkflowExecution", "startWorkflowExecution"),
    START.lstrip("/"),
    "/temporal.api.workflowservice.v2.WorkflowService/StartWorkflowExecution",
    "/WorkflowService/StartWorkflowExecution",
    f"/{methods.WORKFLOW_SERVICE}/",
    f"/{methods.WORKFLOW_SERVICE}",
    f"/{methods.WORKFLOW_SERVICE}/NoSuchMethod",
    "/grpc.health.v1.Health/Watch",
    "/",
    "",
])
def test_near_miss_paths_are_unknown(path: str) -> None:
    """A path that is not byte-for-byte a method's path is unknown (no normalisation)."""
    assert methods.lookup(path) is None


def test_exact_path_is_found() -> None:
    """The exact ``/<package>.<Service>/<Method>`` path is found (the near-miss control)."""
    entry = methods.lookup(START)
    assert entry is not None
    assert entry.method.path == START
    assert (entry.method.scope, entry.method.access) == (Scope.NAMESPACE, Access.WRITE)


def test_by_name_accepts_short_and_full_names() -> None:
    """`by_name` finds a method by ``Service/Method``, full service name, or exact path."""
    for name in ("WorkflowService/StartWorkflowExecution",
                 f"{methods.WORKFLOW_SERVICE}/StartWorkflowExecution", START):
        entry = methods.by_name(name)
        assert entry is not None and entry.method.path == START
    assert methods.by_name("WorkflowService/NoSuchMethod") is None
    assert methods.by_name("workflowservice/startworkflowexecution") is None


def test_nested_namespaces_outside_targets_are_not_planned() -> None:
    """Links and failures carry a `namespace` that is data, not a target: not in any plan."""

    def other_namespace_paths(plan: methods.MessagePlan, prefix: str) -> list[str]:
        found = []
        for number, p in plan.fields.items():
            here = f"{prefix}.{p.name}({number})"
            if p.extract is Extract.OTHER_NAMESPACE:
                found.append(here)
            found += other_namespace_paths(p.children, here)
        return found

    found = {}
    for entry in methods.table().values():
        paths = other_namespace_paths(entry.plan, "")
        if paths:
            found[entry.method.name] = sorted(paths)
    assert found == {
        "RespondWorkflowTaskCompleted": [
            ".commands(2).request_cancel_external_workflow_execution_command_attributes(9)"
            ".namespace(1)",
            ".commands(2).signal_external_workflow_execution_command_attributes(13).namespace(1)",
            ".commands(2).start_child_workflow_execution_command_attributes(12).namespace(1)",
        ],
        "ExecuteMultiOperation": [
            ".operations(2).start_workflow(1).namespace(1)",
            ".operations(2).update_workflow(2).namespace(1)",
        ],
        "CreateNexusEndpoint": [".spec(1).target(3).worker(1).namespace(1)"],
        "UpdateNexusEndpoint": [".spec(3).target(3).worker(1).namespace(1)"],
    }
