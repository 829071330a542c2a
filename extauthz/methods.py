"""The method table: every gRPC method of Temporal's frontend, keyed by its exact ``:path``.

Built once at start-up from two sources:

- the ``temporalio.api`` descriptors (which methods exist, their request messages, the field
  number of ``namespace`` and where task queues and cross-namespace targets sit);
- ``data/temporal-api-access.csv``: the scope and access of each method, read from Temporal's
  own method table (``common/api/metadata.go``); AdminService is cluster/admin as a whole.

Lookups are exact: a path that is not byte-for-byte in the table is unknown, and unknown is deny.
"""

from __future__ import annotations

import csv
import enum
import functools
import importlib.resources
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from extauthz.model import Access, Method, Scope

WORKFLOW_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
OPERATOR_SERVICE = "temporal.api.operatorservice.v1.OperatorService"
ADMIN_SERVICE = "temporal.server.api.adminservice.v1.AdminService"
HEALTH_SERVICE = "grpc.health.v1.Health"

# Temporal's default authorizer allows these for anyone, with or without claims.
ALWAYS_ALLOWED = frozenset({
    f"/{HEALTH_SERVICE}/Check",
    f"/{WORKFLOW_SERVICE}/GetSystemInfo",
})

TASK_QUEUE_MESSAGE = "temporal.api.taskqueue.v1.TaskQueue"
# string fields that name a task queue directly (`task_queue_name`: a Nexus handler callback)
TASK_QUEUE_STRING_FIELDS = frozenset({
    "task_queue", "task_queues", "worker_control_task_queue", "task_queue_name",
})
# Where a worker legitimately names its own sticky queue: (message, field). A ``TaskQueue`` here
# with kind STICKY has its ``name`` judged as a sticky queue (a policy may cover it by the
# SDK's generated shape); everywhere else the server acts on ``name`` whatever the kind says
# (tests/e2e/test_exact_targets.py shows it), so ``name`` is judged as an ordinary queue.
STICKY_QUEUE_FIELDS = frozenset({
    ("temporal.api.workflowservice.v1.PollWorkflowTaskQueueRequest", "task_queue"),
    ("temporal.api.taskqueue.v1.StickyExecutionAttributes", "worker_task_queue"),
    ("temporal.api.workflowservice.v1.ShutdownWorkerRequest", "sticky_task_queue"),
})
# request fields that identify a namespace by id rather than by name, or an object by an id
# that could stand for any namespace: a Nexus endpoint named by id targets a namespace the
# request does not show (update and delete re-point or remove payroll's endpoint). Such a
# request meets every deny rule with `namespaces`.
NAMESPACE_ID_FIELDS: Mapping[str, str] = {
    "DescribeNamespaceRequest": "id",
    "DeleteNamespaceRequest": "namespace_id",
    "GetNexusEndpointRequest": "id",
    "UpdateNexusEndpointRequest": "id",
    "DeleteNexusEndpointRequest": "id",
}
# nested messages whose `namespace` is a target the request acts on (the server reaches it
# with the caller's authority); any other nested `namespace` (links, failure details) is data
CROSS_NAMESPACE_MESSAGES = frozenset({
    "temporal.api.command.v1.SignalExternalWorkflowExecutionCommandAttributes",
    "temporal.api.command.v1.RequestCancelExternalWorkflowExecutionCommandAttributes",
    "temporal.api.command.v1.StartChildWorkflowExecutionCommandAttributes",
    "temporal.api.workflowservice.v1.StartWorkflowExecutionRequest",
    "temporal.api.workflowservice.v1.UpdateWorkflowExecutionRequest",
    # a Nexus endpoint's target: its tasks go to this namespace's workers
    "temporal.api.nexus.v1.EndpointTarget.Worker",
})
_MAX_DEPTH = 6
# requests whose `task_token` is a token that carries its task queue (field 2 of the server's
# temporal.server.api.token.v1.QueryTask and NexusTask); other task tokens carry none
QUEUE_TOKEN_REQUESTS = frozenset({
    "temporal.api.workflowservice.v1.RespondQueryTaskCompletedRequest",
    "temporal.api.workflowservice.v1.RespondNexusTaskCompletedRequest",
    "temporal.api.workflowservice.v1.RespondNexusTaskFailedRequest",
})
# enum fields of a start whose value terminates the running workflow with the same id:
# WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING, WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING
TERMINATING_POLICIES: Mapping[str, frozenset[int]] = {
    "workflow_id_conflict_policy": frozenset({3}),
    "workflow_id_reuse_policy": frozenset({4}),
}


class Extract(enum.Enum):
    """What a field of a request carries, for the body scanner."""

    NAMESPACE = "namespace"  # the request's own namespace (top level, last one wins)
    OTHER_NAMESPACE = "other_namespace"  # a nested namespace the request also reaches
    NAMESPACE_ID = "namespace_id"  # a namespace named by id
    TASK_QUEUE = "task_queue"  # a temporal.api.taskqueue.v1.TaskQueue message
    # a TaskQueue message where a worker names its own sticky queue (``STICKY_QUEUE_FIELDS``)
    STICKY_TASK_QUEUE = "sticky_task_queue"
    TASK_QUEUE_NAME = "task_queue_name"  # a string naming a task queue
    STICKY_QUEUE_NAME = "sticky_queue_name"  # a string naming the caller's own sticky queue
    # a workflow-id policy enum whose value in ``FieldPlan.terminating`` makes a start terminate
    # the running workflow of that id (seen on the server for both policies below)
    TERMINATES = "terminates"
    # a task token that names its task queue (the server's QueryTask / NexusTask tokens): the
    # queue the response is routed to, judged like the worker's own (possibly sticky) queue
    QUEUE_TOKEN = "queue_token"
    MESSAGE = "message"  # descend: something below matters


@dataclass(frozen=True, slots=True)
class MessagePlan:
    """What the scanner reads in one message.

    ``oneofs`` maps every field number that belongs to a oneof holding a planned field to that
    oneof's index, planned or not: setting another member discards the earlier one, exactly as
    a protobuf parser does, so the scanner must see those members too.
    """

    fields: Mapping[int, FieldPlan] = field(default_factory=dict)
    oneofs: Mapping[int, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.fields)


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """How the scanner treats one field number of one message."""

    extract: Extract
    repeated: bool = False
    children: MessagePlan = field(default_factory=MessagePlan)
    name: str = ""
    terminating: frozenset[int] = frozenset()  # Extract.TERMINATES: the values that terminate


@dataclass(frozen=True, slots=True)
class MethodEntry:
    """A method with the scan plan of its request message."""

    method: Method
    plan: MessagePlan
    request_type: str = ""  # full protobuf name of the request message


def _is_string(fd: FieldDescriptor) -> bool:
    return fd.type == FieldDescriptor.TYPE_STRING


def _is_repeated(fd: FieldDescriptor) -> bool:
    # upb descriptors expose `is_repeated`; older pure-python ones only `label`
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return bool(getattr(fd, "label", 0) == FieldDescriptor.LABEL_REPEATED)


def _plan(desc: Descriptor, top: bool, stack: tuple[str, ...]) -> MessagePlan:
    fields: dict[int, FieldPlan] = {}
    for fd in desc.fields:
        entry = _plan_field(desc, fd, top, stack)
        if entry is not None:
            fields[fd.number] = entry
    oneofs: dict[int, int] = {}
    for index, oneof in enumerate(desc.oneofs):
        numbers = [fd.number for fd in oneof.fields]
        if len(numbers) > 1 and any(n in fields for n in numbers):
            oneofs.update(dict.fromkeys(numbers, index))
    return MessagePlan(fields, oneofs)


def _plan_field(
    desc: Descriptor, fd: FieldDescriptor, top: bool, stack: tuple[str, ...]
) -> FieldPlan | None:
    repeated = _is_repeated(fd)
    if (top and fd.name == "task_token" and fd.type == FieldDescriptor.TYPE_BYTES
            and desc.full_name in QUEUE_TOKEN_REQUESTS):
        return FieldPlan(Extract.QUEUE_TOKEN, name=fd.name)
    if fd.type == FieldDescriptor.TYPE_ENUM and fd.name in TERMINATING_POLICIES and not repeated:
        return FieldPlan(Extract.TERMINATES, name=fd.name,
                         terminating=TERMINATING_POLICIES[fd.name])
    if _is_string(fd):
        if fd.name == "namespace" and not repeated:
            if top:
                return FieldPlan(Extract.NAMESPACE, name=fd.name)
            if desc.full_name in CROSS_NAMESPACE_MESSAGES:
                return FieldPlan(Extract.OTHER_NAMESPACE, name=fd.name)
            return None
        if top and NAMESPACE_ID_FIELDS.get(desc.name) == fd.name:
            return FieldPlan(Extract.NAMESPACE_ID, name=fd.name)
        if (desc.full_name, fd.name) in STICKY_QUEUE_FIELDS:
            return FieldPlan(Extract.STICKY_QUEUE_NAME, repeated, name=fd.name)
        if fd.name in TASK_QUEUE_STRING_FIELDS:
            return FieldPlan(Extract.TASK_QUEUE_NAME, repeated, name=fd.name)
        return None
    if fd.type != FieldDescriptor.TYPE_MESSAGE or fd.message_type is None:
        return None
    msg = fd.message_type
    if msg.full_name == TASK_QUEUE_MESSAGE:
        sticky = (desc.full_name, fd.name) in STICKY_QUEUE_FIELDS
        return FieldPlan(Extract.STICKY_TASK_QUEUE if sticky else Extract.TASK_QUEUE, repeated,
                         name=fd.name)
    if msg.GetOptions().map_entry or msg.full_name in stack or len(stack) >= _MAX_DEPTH:
        return None
    children = _plan(msg, False, (*stack, msg.full_name))
    if not children.fields:
        return None
    return FieldPlan(Extract.MESSAGE, repeated, children, name=fd.name)


def _access_facts() -> dict[tuple[str, str], tuple[Scope, Access]]:
    text = importlib.resources.files("extauthz").joinpath("data/temporal-api-access.csv")
    facts: dict[tuple[str, str], tuple[Scope, Access]] = {}
    with text.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["scope"] not in ("Namespace", "Cluster"):
                continue
            facts[(row["service"], row["method"])] = (Scope(row["scope"]), Access(row["access"]))
    return facts


def _service_descriptors() -> Iterator[tuple[str, Descriptor | None, str, str]]:
    from temporalio.api.operatorservice.v1 import service_pb2 as operator_pb2
    from temporalio.api.workflowservice.v1 import service_pb2 as workflow_pb2

    for module, service in ((workflow_pb2, WORKFLOW_SERVICE), (operator_pb2, OPERATOR_SERVICE)):
        sd = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[-1]]
        for md in sd.methods:
            yield service, md.input_type, md.name, md.input_type.full_name


class UnclassifiedMethodError(RuntimeError):
    """The installed temporalio knows a method the access facts do not classify."""


@functools.cache
def table() -> Mapping[str, MethodEntry]:
    """The method table, keyed by exact ``:path``. Built once per process."""
    facts = _access_facts()
    entries: dict[str, MethodEntry] = {}
    for service, desc, name, req_type in _service_descriptors():
        fact = facts.get((service, name))
        if fact is None:
            raise UnclassifiedMethodError(
                f"{service}/{name} is in the installed temporalio but has no scope/access fact; "
                "update extauthz/data/temporal-api-access.csv"
            )
        plan = _plan(desc, True, (desc.full_name,)) if desc is not None else MessagePlan()
        tops = plan.fields.items()
        ns_field = next((n for n, p in tops if p.extract is Extract.NAMESPACE), None)
        id_field = next((n for n, p in tops if p.extract is Extract.NAMESPACE_ID), None)
        method = Method(service, name, fact[0], fact[1], ns_field, id_field)
        entries[method.path] = MethodEntry(method, plan, req_type)
    for (service, name), (scope, access) in facts.items():
        if service == ADMIN_SERVICE:  # no descriptors shipped; cluster/admin as a whole
            method = Method(service, name, scope, access)
            entries[method.path] = MethodEntry(method, MessagePlan())
    health = Method(HEALTH_SERVICE, "Check", Scope.HEALTH, Access.READ_ONLY)
    entries[health.path] = MethodEntry(health, MessagePlan())
    return entries


# Calls that act on executions that already exist, named by id, whatever queue they run on:
# by-id activity completions and heartbeats (SDK activity ids are 1, 2, 3...), activity
# options that move an activity to another queue (the new queue is in the request, the old one
# is not), and batch operations (terminate, reset, update options... over any workflows). A
# queue-restricted grant does not include them unless a binding opts in (`allow_by_id`).
BY_ID_METHODS = frozenset(
    f"/{WORKFLOW_SERVICE}/{name}" for name in (
        "RespondActivityTaskCompletedById", "RespondActivityTaskFailedById",
        "RespondActivityTaskCanceledById", "RecordActivityTaskHeartbeatById",
        "UpdateActivityOptions", "UpdateActivityExecutionOptions", "StartBatchOperation",
    )
)
_QUEUE_EXTRACTS = frozenset({Extract.TASK_QUEUE, Extract.STICKY_TASK_QUEUE,
                             Extract.TASK_QUEUE_NAME, Extract.STICKY_QUEUE_NAME,
                             Extract.QUEUE_TOKEN})


def _plan_reads(plan: MessagePlan, extracts: frozenset[Extract]) -> bool:
    """Whether ``plan`` reads, at any depth, a field of one of ``extracts``."""
    return any(p.extract in extracts or _plan_reads(p.children, extracts)
               for p in plan.fields.values())


@functools.cache
def queue_methods() -> frozenset[str]:
    """Paths of the methods whose request can name a task queue (a queue restriction binds
    them); every other method acts wherever its namespace allows."""
    return frozenset(p for p, e in table().items() if _plan_reads(e.plan, _QUEUE_EXTRACTS))


@functools.cache
def queue_bound_methods() -> frozenset[str]:
    """Paths whose work a queue restriction really binds: the request names the queue of the
    work it creates or takes (polls, starts, schedules, task-queue calls). Not the calls that
    name a queue beside existing work found by id or task token: an update's callback queue,
    a workflow task completion's commands (the task itself comes by token), the by-id calls."""
    by_token_or_id = {f"/{WORKFLOW_SERVICE}/{n}" for n in (
        "UpdateWorkflowExecution", "RespondWorkflowTaskCompleted")}
    return queue_methods() - BY_ID_METHODS - by_token_or_id


TERMINATE_PATH = f"/{WORKFLOW_SERVICE}/TerminateWorkflowExecution"
_TERMINATES = frozenset({Extract.TERMINATES})


@functools.cache
def terminating_methods() -> frozenset[str]:
    """Paths of the methods whose request can carry a terminating workflow-id policy."""
    return frozenset(p for p, e in table().items() if _plan_reads(e.plan, _TERMINATES))


def lookup(path: str) -> MethodEntry | None:
    """The entry for an exact ``:path``, or None (unknown: deny)."""
    return table().get(path)


def by_name(name: str) -> MethodEntry | None:
    """Find a method by ``Service/Method`` (short service name) or its full path."""
    if name.startswith("/"):
        return lookup(name)
    for entry in table().values():
        if name in (entry.method.short, f"{entry.method.service}/{entry.method.name}"):
            return entry
    return None
