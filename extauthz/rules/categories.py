"""API categories, derived from the method table once per process. Pure: no I/O.

A category is a frozenset of method paths (``Method.path``). Categories:

``read``
    every namespace-scoped method Temporal classifies ReadOnly (describe, list, count, query,
    get history, describe schedule, ...).
``write``
    every namespace-scoped Write method (start, signal, cancel, terminate, reset, delete,
    update, schedules, polls and task completions: Temporal classifies those as Write too).
``admin``
    every namespace-scoped Admin method (namespace and operator administration: update or
    deprecate a namespace, search attributes).
``worker``
    exactly what a worker process needs: poll/respond/heartbeat for workflow, activity and
    Nexus tasks, query-task answers, sticky-queue reset, worker heartbeat/shutdown, worker
    config fetch, DescribeNamespace (the SDK checks its namespace at start-up) and
    DescribeTaskQueue. Nothing that starts, signals or ends a workflow.
``cluster-read``
    ListNamespaces, GetClusterInfo, GetSearchAttributes: what the Web UI needs to load.
``cluster``
    every cluster-scoped method (OperatorService cluster calls, AdminService). Only a binding
    with ``cluster: true`` can grant these.

Intent categories, from a method-by-method review recorded in ``INTENT_REVIEW`` (every method
of the table is listed there with the intent categories it belongs to, possibly none; a test
fails, naming the method, when the installed ``temporalio`` has a method nobody reviewed, and a
policy naming an intent category refuses to load then):

``starts-workflows``
    every method by whose call the caller makes a workflow run, or run again: start,
    signal-with-start, multi-operation (update-with-start), schedule create/update/patch
    (trigger, backfill, unpause), reset, batch operations (batch reset), and the standalone
    activity and Nexus operation starts. Not ``RespondWorkflowTaskCompleted``: its child and
    continue-as-new commands are the namespace's own workflow code, answered by every worker;
    the ``worker`` category and task-queue restrictions govern it.
``destroys``
    every method that ends an execution (terminate, cancel, reset's end of the current run) or
    deletes a namespace-scoped object (workflow, activity and Nexus executions, schedules, worker
    deployments and versions, workflow rules, search attributes, the namespace), and batch
    operations (batch terminate/cancel/delete/reset).

Intent categories hold namespace-scoped methods only: cluster-scoped ones (AdminService's
DeleteWorkflowExecution included) are the ``cluster`` category's, which only ``cluster: true``
bindings grant.

Built-in roles are unions of categories; see ``BUILTIN_ROLES``. In the ``temporal-compatible``
profile ``worker`` grants nothing on its own, as in Temporal (``Role.WORKER`` < ``Reader``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from extauthz import methods
from extauthz.model import Access, Scope

WORKER_METHODS = (
    "PollWorkflowTaskQueue",
    "RespondWorkflowTaskCompleted",
    "RespondWorkflowTaskFailed",
    "RespondQueryTaskCompleted",
    "PollActivityTaskQueue",
    "RecordActivityTaskHeartbeat",
    "RecordActivityTaskHeartbeatById",
    "RespondActivityTaskCompleted",
    "RespondActivityTaskCompletedById",
    "RespondActivityTaskFailed",
    "RespondActivityTaskFailedById",
    "RespondActivityTaskCanceled",
    "RespondActivityTaskCanceledById",
    "PollNexusTaskQueue",
    "RespondNexusTaskCompleted",
    "RespondNexusTaskFailed",
    "ResetStickyTaskQueue",
    "ShutdownWorker",
    "RecordWorkerHeartbeat",
    "FetchWorkerConfig",
    "DescribeNamespace",
    "DescribeTaskQueue",
)
CLUSTER_READ_METHODS = ("ListNamespaces", "GetClusterInfo", "GetSearchAttributes")

STARTS_WORKFLOWS = "starts-workflows"
DESTROYS = "destroys"
INTENT_NAMES = (STARTS_WORKFLOWS, DESTROYS)
CATEGORY_NAMES = ("read", "write", "admin", "worker", "cluster-read", "cluster", *INTENT_NAMES)

_S = (STARTS_WORKFLOWS,)
_D = (DESTROYS,)
_SD = (STARTS_WORKFLOWS, DESTROYS)
_NONE: tuple[str, ...] = ()

# The intent review: every method of the table → its intent categories (possibly none),
# decided method by method; docs/policy.md says why for the borderline ones. A method that a
# newer temporalio adds is missing here until someone reviews it (see ``unreviewed``).
INTENT_REVIEW: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    methods.WORKFLOW_SERVICE: {
        # namespaces: DeprecateNamespace blocks new starts but ends nothing
        "RegisterNamespace": _NONE,
        "DescribeNamespace": _NONE,
        "ListNamespaces": _NONE,
        "UpdateNamespace": _D,  # can set the namespace's state to Deleted (seen on the server)
        "DeprecateNamespace": _NONE,
        # workflow executions
        "StartWorkflowExecution": _S,
        "SignalWithStartWorkflowExecution": _S,
        "ExecuteMultiOperation": _S,  # update-with-start (and start + update)
        "ResetWorkflowExecution": _SD,  # ends the current run, runs again from the reset point
        "TerminateWorkflowExecution": _D,
        "RequestCancelWorkflowExecution": _D,
        "DeleteWorkflowExecution": _D,
        "SignalWorkflowExecution": _NONE,  # input to a running workflow; starts nothing
        "UpdateWorkflowExecution": _NONE,  # idem; update-with-start is ExecuteMultiOperation
        "PollWorkflowExecutionUpdate": _NONE,
        "PauseWorkflowExecution": _NONE,  # the run stays, resumable
        "UnpauseWorkflowExecution": _NONE,  # resumes the same run; starts no new one
        "UpdateWorkflowExecutionOptions": _NONE,  # versioning override of an existing run
        "QueryWorkflow": _NONE,
        "DescribeWorkflowExecution": _NONE,
        "GetWorkflowExecutionHistory": _NONE,
        "GetWorkflowExecutionHistoryReverse": _NONE,
        "ListOpenWorkflowExecutions": _NONE,
        "ListClosedWorkflowExecutions": _NONE,
        "ListWorkflowExecutions": _NONE,
        "ListArchivedWorkflowExecutions": _NONE,
        "ScanWorkflowExecutions": _NONE,
        "CountWorkflowExecutions": _NONE,
        "PollWorkflowExecutionTimeSkipping": _NONE,
        # workers: RespondWorkflowTaskCompleted's StartChildWorkflowExecution/ContinueAsNew
        # commands start workflows, but every worker of the namespace sends them for the
        # namespace's own workflow code; the `worker` category and task queues govern it
        "PollWorkflowTaskQueue": _NONE,
        "RespondWorkflowTaskCompleted": _NONE,
        "RespondWorkflowTaskFailed": _NONE,
        "RespondQueryTaskCompleted": _NONE,
        "PollActivityTaskQueue": _NONE,
        "RecordActivityTaskHeartbeat": _NONE,
        "RecordActivityTaskHeartbeatById": _NONE,
        "RespondActivityTaskCompleted": _NONE,
        "RespondActivityTaskCompletedById": _NONE,
        "RespondActivityTaskFailed": _NONE,
        "RespondActivityTaskFailedById": _NONE,
        "RespondActivityTaskCanceled": _NONE,
        "RespondActivityTaskCanceledById": _NONE,
        "PollNexusTaskQueue": _NONE,
        "RespondNexusTaskCompleted": _NONE,
        "RespondNexusTaskFailed": _NONE,
        "ResetStickyTaskQueue": _NONE,
        "ShutdownWorker": _NONE,
        "RecordWorkerHeartbeat": _NONE,
        "FetchWorkerConfig": _NONE,
        "UpdateWorkerConfig": _NONE,
        "ListWorkers": _NONE,
        "CountWorkers": _NONE,
        "DescribeWorker": _NONE,
        # task queues
        "DescribeTaskQueue": _NONE,
        "ListTaskQueuePartitions": _NONE,
        "UpdateTaskQueueConfig": _NONE,
        # cluster-scoped
        "GetSearchAttributes": _NONE,
        "GetClusterInfo": _NONE,
        "GetSystemInfo": _NONE,
        # schedules: a schedule starts workflows with the server's authority, so writing one,
        # and patching it (trigger_immediately, backfill, unpause), is starting them
        "CreateSchedule": _S,
        "UpdateSchedule": _S,
        "PatchSchedule": _S,
        "DeleteSchedule": _D,
        "DescribeSchedule": _NONE,
        "ListScheduleMatchingTimes": _NONE,
        "ListSchedules": _NONE,
        "CountSchedules": _NONE,
        # worker versioning and deployments: route tasks to worker code, start no run
        "UpdateWorkerBuildIdCompatibility": _NONE,
        "GetWorkerBuildIdCompatibility": _NONE,
        "UpdateWorkerVersioningRules": _NONE,
        "GetWorkerVersioningRules": _NONE,
        "GetWorkerTaskReachability": _NONE,
        "DescribeDeployment": _NONE,
        "DescribeWorkerDeploymentVersion": _NONE,
        "ListDeployments": _NONE,
        "GetDeploymentReachability": _NONE,
        "GetCurrentDeployment": _NONE,
        "SetCurrentDeployment": _NONE,
        "SetWorkerDeploymentCurrentVersion": _NONE,
        "DescribeWorkerDeployment": _NONE,
        "DeleteWorkerDeployment": _D,
        "DeleteWorkerDeploymentVersion": _D,
        "SetWorkerDeploymentRampingVersion": _NONE,
        "ListWorkerDeployments": _NONE,
        "CreateWorkerDeployment": _NONE,
        "CreateWorkerDeploymentVersion": _NONE,
        "UpdateWorkerDeploymentVersionComputeConfig": _NONE,
        "ValidateWorkerDeploymentVersionComputeConfig": _NONE,
        "UpdateWorkerDeploymentVersionMetadata": _NONE,
        "SetWorkerDeploymentManager": _NONE,
        # batch operations: terminate, cancel, delete and reset many workflows (and activities)
        "StartBatchOperation": _SD,
        "StopBatchOperation": _NONE,
        "DescribeBatchOperation": _NONE,
        "ListBatchOperations": _NONE,
        # activities inside workflows: re-attempting one activity starts no workflow run
        "UpdateActivityOptions": _NONE,
        "PauseActivity": _NONE,
        "UnpauseActivity": _NONE,
        "ResetActivity": _NONE,
        # workflow rules: their only action pauses activities
        "CreateWorkflowRule": _NONE,
        "DescribeWorkflowRule": _NONE,
        "DeleteWorkflowRule": _D,
        "ListWorkflowRules": _NONE,
        "TriggerWorkflowRule": _NONE,
        # standalone activities and Nexus operations: top-level executions the caller starts
        # and the namespace's workers (or a Nexus handler's workflow) run
        "StartActivityExecution": _S,
        "StartNexusOperationExecution": _S,
        "RequestCancelActivityExecution": _D,
        "RequestCancelNexusOperationExecution": _D,
        "TerminateActivityExecution": _D,
        "TerminateNexusOperationExecution": _D,
        "DeleteActivityExecution": _D,
        "DeleteNexusOperationExecution": _D,
        "PauseActivityExecution": _NONE,
        "UnpauseActivityExecution": _NONE,
        "ResetActivityExecution": _NONE,  # re-attempts the same activity, as ResetActivity
        "UpdateActivityExecutionOptions": _NONE,
        "DescribeActivityExecution": _NONE,
        "DescribeNexusOperationExecution": _NONE,
        "PollActivityExecution": _NONE,
        "PollNexusOperationExecution": _NONE,
        "ListActivityExecutions": _NONE,
        "ListNexusOperationExecutions": _NONE,
        "CountActivityExecutions": _NONE,
        "CountNexusOperationExecutions": _NONE,
    },
    methods.OPERATOR_SERVICE: {
        "AddSearchAttributes": _NONE,
        "RemoveSearchAttributes": _D,
        "ListSearchAttributes": _NONE,
        "DeleteNamespace": _D,
        # cluster-scoped: the `cluster` category's (DeleteNexusEndpoint included)
        "AddOrUpdateRemoteCluster": _NONE,
        "RemoveRemoteCluster": _NONE,
        "ListClusters": _NONE,
        "CreateNexusEndpoint": _NONE,
        "UpdateNexusEndpoint": _NONE,
        "DeleteNexusEndpoint": _NONE,
        "GetNexusEndpoint": _NONE,
        "ListNexusEndpoints": _NONE,
    },
    # cluster-scoped as a whole (its bodies are not read): the `cluster` category's, even
    # DeleteWorkflowExecution, ImportWorkflowExecution and StartAdminBatchOperation
    methods.ADMIN_SERVICE: dict.fromkeys((
        "RebuildMutableState", "ImportWorkflowExecution", "DescribeMutableState",
        "DescribeHistoryHost", "GetShard", "CloseShard", "ListHistoryTasks", "RemoveTask",
        "GetWorkflowExecutionRawHistoryV2", "GetWorkflowExecutionRawHistory",
        "GetReplicationMessages", "GetNamespaceReplicationMessages",
        "GetDLQReplicationMessages", "ReapplyEvents", "AddSearchAttributes",
        "RemoveSearchAttributes", "GetSearchAttributes", "DescribeCluster", "ListClusters",
        "ListClusterMembers", "AddOrUpdateRemoteCluster", "RemoveRemoteCluster",
        "GetDLQMessages", "PurgeDLQMessages", "MergeDLQMessages", "RefreshWorkflowTasks",
        "StartAdminBatchOperation", "ResendReplicationTasks", "GetTaskQueueTasks",
        "DeleteWorkflowExecution", "StreamWorkflowReplicationMessages", "GetNamespace",
        "GetDLQTasks", "PurgeDLQTasks", "MergeDLQTasks", "DescribeDLQJob", "CancelDLQJob",
        "AddTasks", "ListQueues", "DeepHealthCheck", "SyncWorkflowState",
        "GenerateLastHistoryReplicationTasks", "DescribeTaskQueuePartition",
        "ForceUnloadTaskQueuePartition", "GetTaskQueueUserData", "MigrateSchedule",
    ), _NONE),
    methods.HEALTH_SERVICE: {"Check": _NONE},
}
BUILTIN_ROLE_NAMES = ("read", "write", "worker", "admin")


def _workflow_service(name: str) -> str:
    return f"/{methods.WORKFLOW_SERVICE}/{name}"


@functools.cache
def categories() -> Mapping[str, frozenset[str]]:
    """Category name → method paths. Built once from the method table."""
    table = methods.table()

    def pick(scope: Scope, access: Access) -> frozenset[str]:
        return frozenset(
            p for p, e in table.items() if e.method.scope is scope and e.method.access is access
        )

    worker = frozenset(_workflow_service(n) for n in WORKER_METHODS) & table.keys()
    cluster_read = frozenset(_workflow_service(n) for n in CLUSTER_READ_METHODS) & table.keys()
    review = intent_review()
    intents = {
        name: frozenset(p for p in table if name in review.get(p, ())) for name in INTENT_NAMES
    }
    return {
        "read": pick(Scope.NAMESPACE, Access.READ_ONLY),
        "write": pick(Scope.NAMESPACE, Access.WRITE),
        "admin": pick(Scope.NAMESPACE, Access.ADMIN),
        "worker": worker,
        "cluster-read": cluster_read,
        "cluster": frozenset(p for p, e in table.items() if e.method.scope is Scope.CLUSTER),
        **intents,
    }


@functools.cache
def intent_review() -> Mapping[str, frozenset[str]]:
    """``INTENT_REVIEW`` by method path: path → its intent categories (possibly none)."""
    return {
        f"/{service}/{name}": frozenset(cats)
        for service, by_name in INTENT_REVIEW.items()
        for name, cats in by_name.items()
    }


def unreviewed() -> tuple[str, ...]:
    """Methods of the table that ``INTENT_REVIEW`` does not list (``Service/Method``, sorted):
    a newer temporalio's, which nobody has placed in or out of the intent categories yet."""
    review = intent_review()
    return tuple(sorted(e.method.short for p, e in methods.table().items() if p not in review))


@functools.cache
def cluster_by_access() -> Mapping[Access, frozenset[str]]:
    """Cluster-scoped methods by access: what a cluster-level role grants (as Temporal's
    system role does: read → ReadOnly, write → ReadOnly+Write, admin → everything)."""
    table = methods.table()
    return {
        a: frozenset(
            p for p, e in table.items() if e.method.scope is Scope.CLUSTER and e.method.access is a
        )
        for a in Access
    }


@functools.cache
def builtin_roles(profile: str) -> Mapping[str, frozenset[str]]:
    """Built-in role → namespace-scoped method paths for a profile.

    ``read`` = read; ``write`` = read + write; ``admin`` = read + write + admin;
    ``worker`` = worker (``extended``) or nothing (``temporal-compatible``).
    """
    c = categories()
    read = c["read"]
    write = read | c["write"]
    admin = write | c["admin"]
    worker = c["worker"] if profile == "extended" else frozenset()
    return {"read": read, "write": write, "worker": worker, "admin": admin}


@functools.cache
def builtin_cluster_roles() -> Mapping[str, frozenset[str]]:
    """Built-in role → cluster-scoped method paths, for bindings with ``cluster: true``."""
    by = cluster_by_access()
    read = by[Access.READ_ONLY]
    write = read | by[Access.WRITE]
    return {"read": read, "write": write, "worker": frozenset(), "admin": write | by[Access.ADMIN]}


class UnknownMethodError(ValueError):
    """A method name that is not in the method table."""


def resolve_method(name: str) -> frozenset[str]:
    """Method paths for a name: a full path, ``Service/Method`` or a bare method name.

    A bare name means every method of that name in any service (``DeleteWorkflowExecution``
    is in WorkflowService and AdminService); qualify it (``WorkflowService/...``) to pick one.
    """
    table = methods.table()
    if name.startswith("/"):
        if name in table:
            return frozenset({name})
        raise UnknownMethodError(name)
    if "/" in name:
        entry = methods.by_name(name)
        if entry is None:
            raise UnknownMethodError(name)
        return frozenset({entry.method.path})
    found = frozenset(p for p, e in table.items() if e.method.name == name)
    if not found:
        raise UnknownMethodError(name)
    return found


def suggest(name: str) -> list[str]:
    """Up to three known method names close to ``name`` (for error messages)."""
    import difflib

    names = sorted({e.method.name for e in methods.table().values()})
    return difflib.get_close_matches(name.rsplit("/", 1)[-1], names, n=3)
