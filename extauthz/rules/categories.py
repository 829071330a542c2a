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

Built-in roles are unions of categories; see ``BUILTIN_ROLES``. In the ``temporal-compatible``
profile ``worker`` grants nothing on its own, as in Temporal (``Role.WORKER`` < ``Reader``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from extauthz import methods
from extauthz.model import Access, Method, Scope

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

CATEGORY_NAMES = ("read", "write", "admin", "worker", "cluster-read", "cluster")
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
    return {
        "read": pick(Scope.NAMESPACE, Access.READ_ONLY),
        "write": pick(Scope.NAMESPACE, Access.WRITE),
        "admin": pick(Scope.NAMESPACE, Access.ADMIN),
        "worker": worker,
        "cluster-read": cluster_read,
        "cluster": frozenset(p for p, e in table.items() if e.method.scope is Scope.CLUSTER),
    }


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


def method_of(path: str) -> Method | None:
    """The Method for a path, if known."""
    entry = methods.table().get(path)
    return entry.method if entry is not None else None
