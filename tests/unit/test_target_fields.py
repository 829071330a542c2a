"""Every request field that can name a namespace, a namespace id or a task queue, found by
walking the installed ``temporalio`` descriptors, is either read by the scan plans or reviewed
here as data; a field added by a newer ``temporalio`` fails until someone decides which."""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from extauthz import methods, skew
from extauthz.methods import Extract

# Nested fields that name a namespace or queue the request acts on: each must be planned.
TARGETS = {
    ("temporal.api.command.v1.RequestCancelExternalWorkflowExecutionCommandAttributes",
     "namespace"): Extract.OTHER_NAMESPACE,
    ("temporal.api.command.v1.SignalExternalWorkflowExecutionCommandAttributes",
     "namespace"): Extract.OTHER_NAMESPACE,
    ("temporal.api.command.v1.StartChildWorkflowExecutionCommandAttributes",
     "namespace"): Extract.OTHER_NAMESPACE,
    ("temporal.api.nexus.v1.EndpointTarget.Worker", "namespace"): Extract.OTHER_NAMESPACE,
    ("temporal.api.workflowservice.v1.StartWorkflowExecutionRequest",
     "namespace"): Extract.OTHER_NAMESPACE,  # inside ExecuteMultiOperation
    ("temporal.api.workflowservice.v1.UpdateWorkflowExecutionRequest",
     "namespace"): Extract.OTHER_NAMESPACE,  # inside ExecuteMultiOperation
    ("temporal.api.operatorservice.v1.DeleteNamespaceRequest",
     "namespace_id"): Extract.NAMESPACE_ID,
    ("temporal.api.workflowservice.v1.DescribeNamespaceRequest", "id"): Extract.NAMESPACE_ID,
    # a Nexus endpoint by id: its target namespace is not in the request
    ("temporal.api.operatorservice.v1.GetNexusEndpointRequest", "id"): Extract.NAMESPACE_ID,
    ("temporal.api.operatorservice.v1.UpdateNexusEndpointRequest", "id"): Extract.NAMESPACE_ID,
    ("temporal.api.operatorservice.v1.DeleteNexusEndpointRequest", "id"): Extract.NAMESPACE_ID,
    ("temporal.api.common.v1.Callback.NexusHandler", "task_queue_name"): Extract.TASK_QUEUE_NAME,
    ("temporal.api.nexus.v1.EndpointTarget.Worker", "task_queue"): Extract.TASK_QUEUE_NAME,
    ("temporal.api.worker.v1.WorkerHeartbeat", "task_queue"): Extract.TASK_QUEUE_NAME,
    ("temporal.api.workflowservice.v1.ShutdownWorkerRequest",
     "sticky_task_queue"): Extract.STICKY_QUEUE_NAME,
    ("temporal.api.workflowservice.v1.PollWorkflowTaskQueueRequest",
     "task_queue"): Extract.STICKY_TASK_QUEUE,
    ("temporal.api.taskqueue.v1.StickyExecutionAttributes",
     "worker_task_queue"): Extract.STICKY_TASK_QUEUE,
}
# Nested fields that carry a namespace as data: the request does not act there.
DATA = {
    ("temporal.api.common.v1.Link.Activity", "namespace"): "a link: where an event came from",
    ("temporal.api.common.v1.Link.Callback", "namespace"): "a link",
    ("temporal.api.common.v1.Link.NexusOperation", "namespace"): "a link",
    ("temporal.api.common.v1.Link.Workflow", "namespace"): "a link",
    ("temporal.api.common.v1.Link.WorkflowEvent", "namespace"): "a link",
    ("temporal.api.failure.v1.ChildWorkflowExecutionFailureInfo", "namespace"):
        "a failure's description of a child that ran",
}


def _paths(desc: Descriptor, path: tuple[FieldDescriptor, ...], seen: frozenset[str]
           ) -> Iterator[tuple[FieldDescriptor, ...]]:
    """Every field path below ``desc`` (recursion cut at a repeated message type) that ends in
    a field naming a namespace, a namespace id or a queue."""
    for fd in desc.fields:
        here = (*path, fd)
        if skew.names_a_target(fd, desc):
            yield here
        elif (fd.type == FieldDescriptor.TYPE_MESSAGE and (sub := fd.message_type) is not None
              and sub.full_name not in seen):
            yield from _paths(sub, here, seen | {sub.full_name})


def _planned(entry: methods.MethodEntry, path: tuple[FieldDescriptor, ...]) -> Extract | None:
    plan = entry.plan
    for i, fd in enumerate(path):
        p = plan.fields.get(fd.number)
        if p is None:
            return None
        if i == len(path) - 1:
            return p.extract
        plan = p.children
    return None


def _all_paths() -> Iterator[tuple[methods.MethodEntry, tuple[FieldDescriptor, ...]]]:
    pool = descriptor_pool.Default()
    for entry in methods.table().values():
        if entry.request_type:
            desc = pool.FindMessageTypeByName(entry.request_type)
            for path in _paths(desc, (), frozenset({desc.full_name})):
                yield entry, path


def _show(entry: methods.MethodEntry, path: tuple[FieldDescriptor, ...]) -> str:
    return f"{entry.method.short} .{'.'.join(fd.name for fd in path)}"


def test_every_target_field_is_planned_or_reviewed() -> None:
    """Each field path naming a namespace, namespace id or queue is read by the plan with the
    expected meaning, or is reviewed as data; the list of misses names each path."""
    unreviewed, unplanned, wrong = [], [], []
    count = 0
    for entry, path in _all_paths():
        count += 1
        last = path[-1]
        key = (last.containing_type.full_name, last.name)
        got = _planned(entry, path)
        if len(path) == 1 and last.name == "namespace":
            expected: Extract | None = Extract.NAMESPACE
        elif last.type == FieldDescriptor.TYPE_MESSAGE:
            expected = TARGETS.get(key, Extract.TASK_QUEUE)
        elif key in TARGETS:
            expected = TARGETS[key]
        elif key in DATA:
            expected = None
        elif last.name in methods.TASK_QUEUE_STRING_FIELDS:
            expected = Extract.TASK_QUEUE_NAME
        else:
            unreviewed.append(_show(entry, path))
            continue
        if expected is not None and got is None:
            unplanned.append(_show(entry, path))
        elif got != expected:
            wrong.append(f"{_show(entry, path)}: planned {got}, expected {expected}")
    assert not unreviewed, f"review these fields (target or data?): {unreviewed}"
    assert not unplanned, f"the scan plans do not read: {unplanned}"
    assert not wrong, wrong
    assert count > 250  # the walk really ran over the API (272 paths with temporalio 1.35)


def test_the_reviewed_lists_name_real_fields() -> None:
    """Every reviewed (message, field) exists in the installed API: no stale entries."""
    pool = descriptor_pool.Default()
    for message, name in [*TARGETS, *DATA]:
        assert name in pool.FindMessageTypeByName(message).fields_by_name, (message, name)
