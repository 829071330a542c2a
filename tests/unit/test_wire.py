"""gRPC unframing, gzip and the protobuf body scanner, checked against the real parser."""

from __future__ import annotations

import gzip
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.command.v1 import message_pb2 as command_pb2
from temporalio.api.common.v1 import message_pb2 as common_pb2
from temporalio.api.enums.v1 import task_queue_pb2 as tq_enums
from temporalio.api.failure.v1 import message_pb2 as failure_pb2
from temporalio.api.schedule.v1 import message_pb2 as schedule_pb2
from temporalio.api.taskqueue.v1 import message_pb2 as taskqueue_pb2
from temporalio.api.workflow.v1 import message_pb2 as workflow_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame, varint
from extauthz import methods, wire
from extauthz.model import Reason

STICKY = tq_enums.TASK_QUEUE_KIND_STICKY
NORMAL = tq_enums.TASK_QUEUE_KIND_NORMAL
MiB = 1024 * 1024


# --- hand-made protobuf wire bytes -----------------------------------------------------------

def tag(number: int, wire_type: int) -> bytes:
    """A field key."""
    return varint(number << 3 | wire_type)


def ld(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field."""
    data = payload.encode() if isinstance(payload, str) else payload
    return tag(number, 2) + varint(len(data)) + data


def plan(name: str) -> methods.MessagePlan:
    """The scan plan of ``WorkflowService/<name>``."""
    entry = methods.by_name(f"WorkflowService/{name}")
    assert entry is not None
    return entry.plan


def scan(name: str, body: bytes) -> wire.Extracted:
    """Scan an unframed request body of a WorkflowService method."""
    return wire.scan(memoryview(body), plan(name))


def body_error(fn, *args) -> wire.BodyError:  # type: ignore[no-untyped-def]
    """The BodyError ``fn(*args)`` raises."""
    with pytest.raises(wire.BodyError) as info:
        fn(*args)
    return info.value


def judged(q: taskqueue_pb2.TaskQueue) -> list[str]:
    """The queues a parsed TaskQueue names: `name` whatever the kind, and normal_name if set."""
    return [q.name] + ([q.normal_name] if q.normal_name else [])


def queues_of(found: wire.Extracted) -> list[str]:
    """Every queue the scanner judged, sticky ones included."""
    return [*found.task_queues, *found.sticky_queues]


# --- unframe ---------------------------------------------------------------------------------

def test_unframe_returns_the_one_message() -> None:
    """An uncompressed single frame yields exactly its message bytes."""
    msg = rr.StartWorkflowExecutionRequest(namespace="ns").SerializeToString()
    assert bytes(wire.unframe(frame(msg), None)) == msg


def test_unframe_accepts_an_empty_message() -> None:
    """A zero-length frame is a valid (all-default) message."""
    assert bytes(wire.unframe(frame(b""), None)) == b""


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x00\x00\x00"])
def test_unframe_rejects_a_body_shorter_than_the_frame_header(body: bytes) -> None:
    """Fewer than 5 bytes is not a gRPC frame."""
    assert body_error(wire.unframe, body, None).reason is Reason.MALFORMED_BODY


def test_unframe_rejects_declared_length_longer_than_the_body() -> None:
    """A frame that declares more bytes than arrived (a truncated body) is refused."""
    body = b"\x00" + (10).to_bytes(4, "big") + b"\x0a\x02ns"
    err = body_error(wire.unframe, body, None)
    assert err.reason is Reason.MALFORMED_BODY
    assert "10" in err.message and "4" in err.message


def test_unframe_rejects_bytes_beyond_the_declared_length() -> None:
    """Bytes after the declared message (smuggled data) are refused."""
    body = frame(b"\x0a\x02ns") + b"\x0a\x02xx"
    assert body_error(wire.unframe, body, None).reason is Reason.MALFORMED_BODY


def test_unframe_rejects_two_frames() -> None:
    """Two gRPC messages in one unary request body are refused (one frame only)."""
    body = frame(ld(1, "a")) + frame(ld(1, "b"))
    assert body_error(wire.unframe, body, None).reason is Reason.MALFORMED_BODY


@pytest.mark.parametrize("flag", [2, 3, 0x80, 0xFF])
def test_unframe_rejects_unknown_frame_flags(flag: int) -> None:
    """A frame flag other than 0 (plain) or 1 (compressed) is refused."""
    err = body_error(wire.unframe, frame(ld(1, "ns"), flag), None)
    assert err.reason is Reason.MALFORMED_BODY
    assert str(flag) in err.message


@pytest.mark.parametrize("encoding", [None, "identity", "", " identity "])
def test_compressed_flag_without_a_compressor_is_unsupported(encoding: str | None) -> None:
    """Flag 1 with no/identity grpc-encoding cannot be read: UNSUPPORTED_ENCODING."""
    body = frame(gzip.compress(ld(1, "ns")), 1)
    assert body_error(wire.unframe, body, encoding).reason is Reason.UNSUPPORTED_ENCODING


@pytest.mark.parametrize("encoding", ["deflate", "snappy", "zstd", "gzip, deflate", "x-gzip"])
def test_compressed_with_another_encoding_is_unsupported(encoding: str) -> None:
    """Any grpc-encoding but gzip on a compressed frame is denied with a clear reason."""
    body = frame(zlib.compress(ld(1, "ns")), 1)
    err = body_error(wire.unframe, body, encoding)
    assert err.reason is Reason.UNSUPPORTED_ENCODING
    assert "gzip" in err.message


def test_uncompressed_frame_ignores_grpc_encoding() -> None:
    """Flag 0 means uncompressed whatever grpc-encoding says (gRPC semantics)."""
    msg = ld(1, "ns")
    assert bytes(wire.unframe(frame(msg), "snappy")) == msg


def test_gzip_single_member_is_decoded() -> None:
    """A gzip-compressed frame is inflated to the original message."""
    msg = rr.StartWorkflowExecutionRequest(namespace="ns", workflow_id="w").SerializeToString()
    assert bytes(wire.unframe(frame(gzip.compress(msg), 1), "gzip")) == msg


@pytest.mark.parametrize("encoding", ["GZIP", " gzip ", "Gzip"])
def test_gzip_is_matched_exactly_like_grpc_go(encoding: str) -> None:
    """Temporal (grpc-go) refuses any spelling but `gzip`, so the authorizer refuses it too."""
    msg = rr.StartWorkflowExecutionRequest(namespace="ns").SerializeToString()
    with pytest.raises(wire.BodyError) as err:
        wire.unframe(frame(gzip.compress(msg), 1), encoding)
    assert err.value.reason is Reason.UNSUPPORTED_ENCODING


def test_gzip_multi_member_is_the_concatenation() -> None:
    """Every gzip member is decoded in order (as grpc-go does): the result is their join."""
    a, b = ld(1, "first"), ld(2, "wf-id")
    out = bytes(wire.unframe(frame(gzip.compress(a) + gzip.compress(b), 1), "gzip"))
    assert out == a + b


def test_gzip_multi_member_namespace_last_wins() -> None:
    """Two members each carrying `namespace`: the namespace is the second member's."""
    a = rr.StartWorkflowExecutionRequest(namespace="allowed").SerializeToString()
    b = rr.StartWorkflowExecutionRequest(namespace="victim").SerializeToString()
    message = wire.unframe(frame(gzip.compress(a) + gzip.compress(b), 1), "gzip")
    parsed = rr.StartWorkflowExecutionRequest.FromString(gzip.decompress(gzip.compress(a)
                                                                         + gzip.compress(b)))
    assert parsed.namespace == "victim"
    assert scan("StartWorkflowExecution", bytes(message)).namespace == "victim"


def test_gzip_bomb_over_the_cap_is_too_large() -> None:
    """A small gzip message that inflates past the cap is BODY_TOO_LARGE, not decoded fully."""
    bomb = gzip.compress(b"\x00" * (5 * MiB))
    assert len(bomb) < 64 * 1024
    err = body_error(wire.unframe, frame(bomb, 1), "gzip", 4 * MiB)
    assert err.reason is Reason.BODY_TOO_LARGE


def test_gzip_members_that_together_exceed_the_cap_are_too_large() -> None:
    """The cap counts all members together: two members of 3 MiB each exceed 4 MiB."""
    member = gzip.compress(b"\x00" * (3 * MiB))
    err = body_error(wire.unframe, frame(member + member, 1), "gzip", 4 * MiB)
    assert err.reason is Reason.BODY_TOO_LARGE


def test_gzip_exactly_at_the_cap_is_accepted() -> None:
    """A message that inflates to exactly the cap is accepted (the boundary is inclusive)."""
    data = ld(2, b"x" * 1000)
    assert bytes(wire.unframe(frame(gzip.compress(data), 1), "gzip", len(data))) == data
    err = body_error(wire.unframe, frame(gzip.compress(data), 1), "gzip", len(data) - 1)
    assert err.reason is Reason.BODY_TOO_LARGE


def test_uncompressed_frame_over_the_cap_is_too_large() -> None:
    """A plain frame longer than the message limit is BODY_TOO_LARGE."""
    err = body_error(wire.unframe, frame(ld(2, b"x" * 100)), None, 50)
    assert err.reason is Reason.BODY_TOO_LARGE


def test_truncated_gzip_is_malformed() -> None:
    """A gzip stream cut short is MALFORMED_BODY, never a partial message."""
    z = gzip.compress(ld(1, "namespace") * 50)
    err = body_error(wire.unframe, frame(z[: len(z) // 2], 1), "gzip")
    assert err.reason is Reason.MALFORMED_BODY
    assert "truncated" in err.message


def test_gzip_missing_its_trailer_is_malformed() -> None:
    """A member without its CRC/size trailer is not a complete gzip member."""
    z = gzip.compress(ld(1, "ns"))
    assert body_error(wire.unframe, frame(z[:-8], 1), "gzip").reason is Reason.MALFORMED_BODY


@pytest.mark.parametrize("data", [
    b"not gzip at all",
    b"\x1f\x8b\x08\x00" + b"\xff" * 20,
    gzip.compress(b"\x0a\x02ns") + b"trailing garbage",
    gzip.compress(b"\x0a\x02ns") + b"\x00\x00\x00\x00",
])
def test_corrupt_gzip_is_malformed(data: bytes) -> None:
    """Bytes that are not (only) gzip members are MALFORMED_BODY."""
    assert body_error(wire.unframe, frame(data, 1), "gzip").reason is Reason.MALFORMED_BODY


def test_gzip_with_a_bad_crc_is_malformed() -> None:
    """A member whose CRC does not match its content is refused."""
    z = bytearray(gzip.compress(ld(1, "ns")))
    z[-8] ^= 0xFF
    assert body_error(wire.unframe, frame(bytes(z), 1), "gzip").reason is Reason.MALFORMED_BODY


def test_empty_compressed_message_is_malformed() -> None:
    """A compressed frame with no bytes is not a gzip message."""
    assert body_error(wire.unframe, frame(b"", 1), "gzip").reason is Reason.MALFORMED_BODY


# --- scan: namespace -------------------------------------------------------------------------

def test_namespace_sent_twice_last_one_wins() -> None:
    """`namespace` twice on the wire: the scanner, like protobuf, keeps the last."""
    body = ld(1, "allowed") + ld(2, "wf") + ld(1, "victim")
    assert rr.StartWorkflowExecutionRequest.FromString(body).namespace == "victim"
    assert scan("StartWorkflowExecution", body).namespace == "victim"


def test_namespace_absent_is_empty() -> None:
    """A request without `namespace` yields an empty namespace (the policy denies it)."""
    body = rr.StartWorkflowExecutionRequest(workflow_id="w").SerializeToString()
    assert scan("StartWorkflowExecution", body).namespace == ""


def _huge_commands_request(namespace: str) -> bytes:
    command = command_pb2.Command(
        schedule_activity_task_command_attributes=command_pb2.ScheduleActivityTaskCommandAttributes(
            activity_id="a",
            task_queue=taskqueue_pb2.TaskQueue(name="acts"),
            input=common_pb2.Payloads(payloads=[common_pb2.Payload(data=b"x" * (4 * MiB))]),
        )
    )
    req = rr.RespondWorkflowTaskCompletedRequest(
        task_token=b"t", commands=[command], namespace=namespace)
    return req.SerializeToString()


def test_namespace_field_nine_after_a_4mib_command_is_found_fast() -> None:
    """RespondWorkflowTaskCompleted's namespace (field 9) after 4 MiB of commands: found, <50 ms.

    The scanner skips the payload by length instead of decoding it.
    """
    body = _huge_commands_request("ns-after-commands")
    assert len(body) > 4 * MiB
    assert body.index(b"ns-after-commands") > 4 * MiB  # really after the commands
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        found = scan("RespondWorkflowTaskCompleted", body)
        best = min(best, time.perf_counter() - t0)
    assert found.namespace == "ns-after-commands"
    assert found.task_queues == ["acts"]
    assert best < 0.05


def test_namespace_field_one_is_not_namespace_for_respond_workflow_task_completed() -> None:
    """For RespondWorkflowTaskCompleted, field 1 is the task token, not the namespace."""
    body = ld(1, "victim") + ld(9, "mine")
    assert scan("RespondWorkflowTaskCompleted", body).namespace == "mine"
    assert scan("RespondWorkflowTaskCompleted", ld(1, "victim")).namespace == ""


@pytest.mark.parametrize(("name", "body"), [
    ("StartWorkflowExecution", tag(1, 0) + varint(5)),
    ("StartWorkflowExecution", tag(1, 1) + b"\x00" * 8),
    ("StartWorkflowExecution", tag(1, 5) + b"\x00" * 4),
    ("StartWorkflowExecution", ld(1, "ok") + tag(1, 0) + varint(1)),
    ("RespondWorkflowTaskCompleted", tag(9, 0) + varint(1)),
    ("StartWorkflowExecution", tag(4, 0) + varint(1)),  # task_queue as a varint
    ("RespondWorkflowTaskCompleted", tag(2, 5) + b"\x00" * 4),  # commands as fixed32
])
def test_wrong_wire_type_on_a_read_field_is_malformed(name: str, body: bytes) -> None:
    """A field the scanner reads with a wire type protobuf would not accept there is refused."""
    assert body_error(scan, name, body).reason is Reason.MALFORMED_BODY


def test_wrong_wire_type_in_task_queue_kind_is_malformed() -> None:
    """TaskQueue.kind sent length-delimited is refused."""
    body = ld(1, "ns") + ld(4, ld(1, "q") + ld(2, "x"))
    assert body_error(scan, "StartWorkflowExecution", body).reason is Reason.MALFORMED_BODY


def test_non_utf8_namespace_is_malformed() -> None:
    """A namespace that is not UTF-8 is refused (protobuf rejects it too)."""
    body = ld(1, b"ns\xff\xfe")
    assert body_error(scan, "StartWorkflowExecution", body).reason is Reason.MALFORMED_BODY


def test_non_utf8_nested_namespace_is_malformed() -> None:
    """A non-UTF-8 cross-namespace target inside a command is refused."""
    cmd = ld(13, ld(1, b"\xc3\x28"))
    body = ld(9, "ns") + ld(2, cmd)
    assert body_error(scan, "RespondWorkflowTaskCompleted", body).reason is Reason.MALFORMED_BODY


@pytest.mark.parametrize("body", [
    b"\x80",  # key varint cut off
    ld(1, "ns") + b"\x12\x80",  # length varint cut off
    ld(1, "ns") + tag(20, 0) + b"\xff\xff",  # value varint cut off
    ld(1, "ns") + tag(20, 0) + b"\xff" * 10 + b"\x01",  # varint longer than 10 bytes
])
def test_truncated_varint_is_malformed(body: bytes) -> None:
    """A varint that never ends (or is too long) is refused."""
    assert body_error(scan, "StartWorkflowExecution", body).reason is Reason.MALFORMED_BODY


@pytest.mark.parametrize("body", [
    tag(1, 2) + varint(10) + b"ns",  # the namespace itself
    ld(1, "ns") + tag(2, 2) + varint(100) + b"wf",  # a field the scanner skips
    ld(1, "ns") + tag(6, 1) + b"\x00" * 7,  # fixed64 cut short
    ld(1, "ns") + tag(6, 5) + b"\x00" * 3,  # fixed32 cut short
    ld(1, "ns") + ld(4, tag(1, 2) + varint(9) + b"q"),  # inside an embedded message
])
def test_field_running_past_the_end_is_malformed(body: bytes) -> None:
    """A field whose declared size runs past its message is refused."""
    assert body_error(scan, "StartWorkflowExecution", body).reason is Reason.MALFORMED_BODY


@pytest.mark.parametrize("body", [
    ld(1, "ns") + tag(30, 3) + tag(30, 4),  # an (empty) group on an unknown field
    tag(1, 3) + ld(1, "x") + tag(1, 4),
    ld(1, "ns") + tag(30, 4),
    ld(1, "ns") + tag(30, 6),
    ld(1, "ns") + tag(30, 7),
])
def test_group_and_invalid_wire_types_are_malformed(body: bytes) -> None:
    """Group start/end and the undefined wire types 6 and 7 are refused, wherever they sit."""
    assert body_error(scan, "StartWorkflowExecution", body).reason is Reason.MALFORMED_BODY


def test_field_number_zero_is_malformed() -> None:
    """Field number 0 is invalid protobuf."""
    body = tag(0, 2) + varint(1) + b"x" + ld(1, "ns")
    assert body_error(scan, "StartWorkflowExecution", body).reason is Reason.MALFORMED_BODY


def test_namespace_id_is_read_for_describe_namespace() -> None:
    """DescribeNamespace{id} yields the id as the namespace id, not as a namespace."""
    found = scan("DescribeNamespace", rr.DescribeNamespaceRequest(id="uuid-1").SerializeToString())
    assert (found.namespace, found.namespace_id) == ("", "uuid-1")


# --- scan: task queues -----------------------------------------------------------------------

def test_start_workflow_task_queue() -> None:
    """StartWorkflowExecution: the task_queue name."""
    req = rr.StartWorkflowExecutionRequest(
        namespace="ns", task_queue=taskqueue_pb2.TaskQueue(name="orders"))
    found = scan("StartWorkflowExecution", req.SerializeToString())
    assert (found.namespace, found.task_queues) == ("ns", ["orders"])


def test_signal_with_start_task_queue() -> None:
    """SignalWithStartWorkflowExecution: the task_queue name."""
    req = rr.SignalWithStartWorkflowExecutionRequest(
        namespace="ns", signal_name="s", task_queue=taskqueue_pb2.TaskQueue(name="sws"))
    assert scan("SignalWithStartWorkflowExecution", req.SerializeToString()).task_queues == ["sws"]


def test_sticky_workflow_poll_judges_name_as_the_sticky_queue() -> None:
    """A STICKY-kind workflow poll reaches `name` (the server acts on it): `name` is judged as
    the worker's sticky queue, and normal_name as a queue too."""
    req = rr.PollWorkflowTaskQueueRequest(namespace="ns", task_queue=taskqueue_pb2.TaskQueue(
        name="host-1-sticky", kind=STICKY, normal_name="orders"))
    found = scan("PollWorkflowTaskQueue", req.SerializeToString())
    assert (found.sticky_queues, found.task_queues) == (["host-1-sticky"], ["orders"])


def test_sticky_kind_outside_sticky_fields_is_an_ordinary_queue() -> None:
    """STICKY kind on an activity poll or a start is not a sticky queue: `name` is judged as
    an ordinary queue (the server gives that queue's tasks / runs the workflow there)."""
    tq = taskqueue_pb2.TaskQueue(name="payroll-q7", kind=STICKY, normal_name="billing-a")
    poll = rr.PollActivityTaskQueueRequest(namespace="ns", task_queue=tq)
    start = rr.StartWorkflowExecutionRequest(namespace="ns", task_queue=tq)
    for method, req in (("PollActivityTaskQueue", poll), ("StartWorkflowExecution", start)):
        found = scan(method, req.SerializeToString())
        assert (found.task_queues, found.sticky_queues) == (["payroll-q7", "billing-a"], [])


def test_poll_normal_queue_judges_name_and_normal_name() -> None:
    """A normal-kind poll is for `name`; a stray normal_name is judged too (stricter)."""
    req = rr.PollWorkflowTaskQueueRequest(namespace="ns", task_queue=taskqueue_pb2.TaskQueue(
        name="orders", kind=NORMAL, normal_name="other"))
    assert scan("PollWorkflowTaskQueue", req.SerializeToString()).task_queues == [
        "orders", "other"]


def test_shutdown_worker_sticky_queue_is_judged() -> None:
    """ShutdownWorker's sticky_task_queue is read as the worker's sticky queue."""
    req = rr.ShutdownWorkerRequest(namespace="ns", sticky_task_queue="host:abc",
                                   task_queue="orders")
    found = scan("ShutdownWorker", req.SerializeToString())
    assert (found.sticky_queues, found.task_queues) == (["host:abc"], ["orders"])


def test_poll_activity_task_queue() -> None:
    """PollActivityTaskQueue: the task_queue name."""
    req = rr.PollActivityTaskQueueRequest(namespace="ns",
                                          task_queue=taskqueue_pb2.TaskQueue(name="acts"))
    assert scan("PollActivityTaskQueue", req.SerializeToString()).task_queues == ["acts"]


def test_task_queue_kind_is_read_as_int32_like_protobuf() -> None:
    """A kind varint of 2 + 2**32 is STICKY to protobuf (int32); the scanner agrees."""
    tq = ld(1, "host-sticky") + tag(2, 0) + varint(2 + 2**32) + ld(3, "orders")
    body = ld(1, "ns") + ld(2, tq)
    parsed = rr.PollWorkflowTaskQueueRequest.FromString(body)
    assert parsed.task_queue.kind == STICKY
    found = scan("PollWorkflowTaskQueue", body)
    assert (found.sticky_queues, found.task_queues) == (["host-sticky"], ["orders"])


def test_task_queue_sent_twice_is_merged() -> None:
    """task_queue twice: name from the last, kind/normal_name from the first when omitted."""
    first = taskqueue_pb2.TaskQueue(name="s1", kind=STICKY, normal_name="n1").SerializeToString()
    last = taskqueue_pb2.TaskQueue(name="s2").SerializeToString()
    body = ld(1, "ns") + ld(2, first) + ld(2, last)
    parsed = rr.PollWorkflowTaskQueueRequest.FromString(body)
    assert (parsed.task_queue.name, parsed.task_queue.kind) == ("s2", STICKY)
    found = scan("PollWorkflowTaskQueue", body)
    assert (found.sticky_queues, found.task_queues) == (["s2"], ["n1"])


def test_task_queue_sent_twice_name_from_last() -> None:
    """task_queue twice with plain names: the last name is the queue, only one queue is read."""
    body = ld(1, "ns") + ld(4, ld(1, "first")) + ld(4, ld(1, "second"))
    assert rr.StartWorkflowExecutionRequest.FromString(body).task_queue.name == "second"
    assert scan("StartWorkflowExecution", body).task_queues == ["second"]


def _task_completed(*commands: command_pb2.Command, **kw: object) -> bytes:
    return rr.RespondWorkflowTaskCompletedRequest(
        namespace="ns", commands=list(commands), **kw).SerializeToString()  # type: ignore[arg-type]


def test_workflow_task_completed_command_task_queues() -> None:
    """Schedule activity, start child and continue-as-new commands each name their queue."""
    body = _task_completed(
        command_pb2.Command(schedule_activity_task_command_attributes=(
            command_pb2.ScheduleActivityTaskCommandAttributes(
                task_queue=taskqueue_pb2.TaskQueue(name="acts")))),
        command_pb2.Command(start_child_workflow_execution_command_attributes=(
            command_pb2.StartChildWorkflowExecutionCommandAttributes(
                task_queue=taskqueue_pb2.TaskQueue(name="child")))),
        command_pb2.Command(continue_as_new_workflow_execution_command_attributes=(
            command_pb2.ContinueAsNewWorkflowExecutionCommandAttributes(
                task_queue=taskqueue_pb2.TaskQueue(name="next")))),
        sticky_attributes=taskqueue_pb2.StickyExecutionAttributes(
            worker_task_queue=taskqueue_pb2.TaskQueue(
                name="host-sticky", kind=STICKY, normal_name="wf")),
    )
    found = scan("RespondWorkflowTaskCompleted", body)
    assert sorted(found.task_queues) == ["acts", "child", "next", "wf"]
    assert found.sticky_queues == ["host-sticky"]


def test_command_with_empty_task_queue_yields_an_empty_queue() -> None:
    """A command whose TaskQueue is present but unnamed yields "" (the server's default queue).

    Temporal fills an empty activity/child queue with the workflow's own queue; the scanner
    does not guess it and reports "" so a task-queue rule can treat it explicitly.
    """
    body = _task_completed(command_pb2.Command(schedule_activity_task_command_attributes=(
        command_pb2.ScheduleActivityTaskCommandAttributes(
            activity_id="a", task_queue=taskqueue_pb2.TaskQueue(name="")))))
    assert scan("RespondWorkflowTaskCompleted", body).task_queues == [""]
    without = _task_completed(command_pb2.Command(schedule_activity_task_command_attributes=(
        command_pb2.ScheduleActivityTaskCommandAttributes(activity_id="a"))))
    assert scan("RespondWorkflowTaskCompleted", without).task_queues == []


def _schedule(queue: str) -> schedule_pb2.Schedule:
    return schedule_pb2.Schedule(action=schedule_pb2.ScheduleAction(
        start_workflow=workflow_pb2.NewWorkflowExecutionInfo(
            workflow_id="w", task_queue=taskqueue_pb2.TaskQueue(name=queue))))


def test_create_and_update_schedule_start_workflow_queue() -> None:
    """CreateSchedule and UpdateSchedule: the scheduled start_workflow's queue."""
    create = rr.CreateScheduleRequest(namespace="ns", schedule_id="s", schedule=_schedule("cq"))
    update = rr.UpdateScheduleRequest(namespace="ns", schedule_id="s", schedule=_schedule("uq"))
    assert scan("CreateSchedule", create.SerializeToString()).task_queues == ["cq"]
    assert scan("UpdateSchedule", update.SerializeToString()).task_queues == ["uq"]


def _multi(*ops: rr.ExecuteMultiOperationRequest.Operation, namespace: str = "ns") -> bytes:
    return rr.ExecuteMultiOperationRequest(
        namespace=namespace, operations=list(ops)).SerializeToString()


def test_execute_multi_operation_inner_start_queue() -> None:
    """ExecuteMultiOperation: the inner start's task queue is read."""
    body = _multi(rr.ExecuteMultiOperationRequest.Operation(
        start_workflow=rr.StartWorkflowExecutionRequest(
            namespace="ns", task_queue=taskqueue_pb2.TaskQueue(name="inner"))))
    assert scan("ExecuteMultiOperation", body).task_queues == ["inner"]


def test_worker_control_task_queue_string() -> None:
    """A queue named by a plain string field (worker_control_task_queue) is read."""
    req = rr.PollWorkflowTaskQueueRequest(namespace="ns", worker_control_task_queue="ctl",
                                          task_queue=taskqueue_pb2.TaskQueue(name="q"))
    assert sorted(scan("PollWorkflowTaskQueue", req.SerializeToString()).task_queues) == [
        "ctl", "q"]


# --- scan: cross-namespace targets -----------------------------------------------------------

def test_commands_cross_namespace_targets() -> None:
    """Signal external, start child and cancel external commands name other namespaces."""
    body = _task_completed(
        command_pb2.Command(signal_external_workflow_execution_command_attributes=(
            command_pb2.SignalExternalWorkflowExecutionCommandAttributes(namespace="sig"))),
        command_pb2.Command(start_child_workflow_execution_command_attributes=(
            command_pb2.StartChildWorkflowExecutionCommandAttributes(namespace="child"))),
        command_pb2.Command(request_cancel_external_workflow_execution_command_attributes=(
            command_pb2.RequestCancelExternalWorkflowExecutionCommandAttributes(
                namespace="cancel"))),
    )
    found = scan("RespondWorkflowTaskCompleted", body)
    assert found.namespace == "ns"
    assert sorted(found.other_namespaces) == ["cancel", "child", "sig"]


def test_execute_multi_operation_inner_namespaces() -> None:
    """ExecuteMultiOperation's inner start and update requests' namespaces are targets."""
    body = _multi(
        rr.ExecuteMultiOperationRequest.Operation(
            start_workflow=rr.StartWorkflowExecutionRequest(namespace="start-ns")),
        rr.ExecuteMultiOperationRequest.Operation(
            update_workflow=rr.UpdateWorkflowExecutionRequest(namespace="update-ns")),
    )
    found = scan("ExecuteMultiOperation", body)
    assert found.namespace == "ns"
    assert sorted(found.other_namespaces) == ["start-ns", "update-ns"]


def test_nested_start_child_namespace_sent_twice_last_wins() -> None:
    """A start-child namespace sent twice within one command: the last one is the target."""
    attrs = ld(1, "first") + ld(1, "second")
    body = ld(9, "ns") + ld(2, ld(12, attrs))
    parsed = rr.RespondWorkflowTaskCompletedRequest.FromString(body)
    assert parsed.commands[0].start_child_workflow_execution_command_attributes.namespace == (
        "second")
    assert scan("RespondWorkflowTaskCompleted", body).other_namespaces == ["second"]


def test_nested_namespaces_in_links_and_failures_are_not_targets() -> None:
    """A `namespace` inside links or failure details is data, not a target."""
    start = rr.StartWorkflowExecutionRequest(namespace="ns", links=[common_pb2.Link(
        workflow_event=common_pb2.Link.WorkflowEvent(namespace="linked"))])
    found = scan("StartWorkflowExecution", start.SerializeToString())
    assert (found.namespace, found.other_namespaces) == ("ns", [])

    failure = failure_pb2.Failure(
        message="m",
        child_workflow_execution_failure_info=failure_pb2.ChildWorkflowExecutionFailureInfo(
            namespace="child-failed"),
        cause=failure_pb2.Failure(
            child_workflow_execution_failure_info=failure_pb2.ChildWorkflowExecutionFailureInfo(
                namespace="deeper")),
    )
    failed = rr.RespondWorkflowTaskFailedRequest(namespace="ns", failure=failure)
    found = scan("RespondWorkflowTaskFailed", failed.SerializeToString())
    assert (found.namespace, found.other_namespaces) == ("ns", [])

    completed = _task_completed(command_pb2.Command(
        fail_workflow_execution_command_attributes=(
            command_pb2.FailWorkflowExecutionCommandAttributes(failure=failure))))
    assert scan("RespondWorkflowTaskCompleted", completed).other_namespaces == []


def test_oneof_switch_discards_the_earlier_member_like_protobuf() -> None:
    """start_child, then signal, then start_child again: only the last start_child counts.

    Protobuf clears a oneof's other member when one is set, so the first start_child's sticky
    task queue is gone and the child's queue is "z"; the scanner still merges in "n1".
    Harmless for namespaces (the scanner then checks more, not fewer), wrong for task queues.
    """
    sticky = taskqueue_pb2.TaskQueue(name="s1", kind=STICKY, normal_name="n1").SerializeToString()
    plain = taskqueue_pb2.TaskQueue(name="z").SerializeToString()
    command = ld(12, ld(4, sticky)) + ld(13, ld(1, "sig")) + ld(12, ld(4, plain))
    body = ld(9, "ns") + ld(2, command)
    parsed = rr.RespondWorkflowTaskCompletedRequest.FromString(body)
    child = parsed.commands[0].start_child_workflow_execution_command_attributes
    assert judged(child.task_queue) == ["z"]
    assert scan("RespondWorkflowTaskCompleted", body).task_queues == ["z"]


# --- differential: the scanner reads what protobuf parses -------------------------------------

names = st.text(max_size=12)
kinds = st.sampled_from([0, NORMAL, STICKY, 3])


@st.composite
def task_queues(draw: st.DrawFn) -> taskqueue_pb2.TaskQueue:
    return taskqueue_pb2.TaskQueue(name=draw(names), normal_name=draw(names),
                                   kind=draw(kinds))  # type: ignore[arg-type]


@st.composite
def commands(draw: st.DrawFn) -> command_pb2.Command:
    which = draw(st.sampled_from(["activity", "child", "can", "signal", "cancel", "timer"]))
    if which == "activity":
        return command_pb2.Command(schedule_activity_task_command_attributes=(
            command_pb2.ScheduleActivityTaskCommandAttributes(
                activity_id=draw(names), task_queue=draw(task_queues()))))
    if which == "child":
        return command_pb2.Command(start_child_workflow_execution_command_attributes=(
            command_pb2.StartChildWorkflowExecutionCommandAttributes(
                namespace=draw(names), task_queue=draw(task_queues()))))
    if which == "can":
        return command_pb2.Command(continue_as_new_workflow_execution_command_attributes=(
            command_pb2.ContinueAsNewWorkflowExecutionCommandAttributes(
                task_queue=draw(task_queues()))))
    if which == "signal":
        return command_pb2.Command(signal_external_workflow_execution_command_attributes=(
            command_pb2.SignalExternalWorkflowExecutionCommandAttributes(
                namespace=draw(names), signal_name=draw(names))))
    if which == "cancel":
        return command_pb2.Command(request_cancel_external_workflow_execution_command_attributes=(
            command_pb2.RequestCancelExternalWorkflowExecutionCommandAttributes(
                namespace=draw(names))))
    return command_pb2.Command(start_timer_command_attributes=(
        command_pb2.StartTimerCommandAttributes(timer_id=draw(names))))


@st.composite
def task_completed(draw: st.DrawFn) -> rr.RespondWorkflowTaskCompletedRequest:
    req = rr.RespondWorkflowTaskCompletedRequest(
        task_token=draw(st.binary(max_size=8)), namespace=draw(names),
        commands=draw(st.lists(commands(), max_size=4)),
        worker_control_task_queue=draw(names))
    if draw(st.booleans()):
        req.sticky_attributes.worker_task_queue.CopyFrom(draw(task_queues()))
    return req


def _completed_expected(m: rr.RespondWorkflowTaskCompletedRequest
                        ) -> tuple[str, list[str], list[str]]:
    others, queues = [], []
    for c in m.commands:
        which = c.WhichOneof("attributes")
        attrs = getattr(c, which) if which else None
        if which in ("signal_external_workflow_execution_command_attributes",
                     "request_cancel_external_workflow_execution_command_attributes",
                     "start_child_workflow_execution_command_attributes"):
            others.append(attrs.namespace)  # type: ignore[union-attr]
        if which in ("schedule_activity_task_command_attributes",
                     "start_child_workflow_execution_command_attributes",
                     "continue_as_new_workflow_execution_command_attributes") and (
                attrs.HasField("task_queue")):  # type: ignore[union-attr]
            queues.extend(judged(attrs.task_queue))  # type: ignore[union-attr]
    if m.HasField("sticky_attributes") and m.sticky_attributes.HasField("worker_task_queue"):
        queues.extend(judged(m.sticky_attributes.worker_task_queue))
    if m.worker_control_task_queue:
        queues.append(m.worker_control_task_queue)
    return m.namespace, sorted(ns for ns in others if ns), sorted(queues)


DIFF = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@DIFF
@given(a=st.tuples(names, st.none() | task_queues()), b=st.tuples(names, st.none() | task_queues()),
       concat=st.booleans())
def test_differential_start_workflow(a: tuple, b: tuple, concat: bool) -> None:  # type: ignore[type-arg]
    """StartWorkflowExecution: scanned namespace/queue equal the parsed message's (also merged)."""
    def build(ns: str, tq: taskqueue_pb2.TaskQueue | None) -> bytes:
        req = rr.StartWorkflowExecutionRequest(namespace=ns, workflow_id="w")
        if tq is not None:
            req.task_queue.CopyFrom(tq)
        return req.SerializeToString()

    body = build(*a) + build(*b) if concat else build(*a)
    parsed = rr.StartWorkflowExecutionRequest.FromString(body)
    found = scan("StartWorkflowExecution", body)
    assert found.namespace == parsed.namespace
    expected = judged(parsed.task_queue) if parsed.HasField("task_queue") else []
    assert sorted(queues_of(found)) == sorted(expected)


@DIFF
@given(ns=st.lists(names, min_size=1, max_size=3), tqs=st.lists(task_queues(), max_size=3))
def test_differential_poll_merged_task_queue(ns: list[str], tqs: list[taskqueue_pb2.TaskQueue]
                                             ) -> None:
    """PollWorkflowTaskQueue as concatenated messages: same namespace and merged queue."""
    body = b"".join(rr.PollWorkflowTaskQueueRequest(namespace=n).SerializeToString() for n in ns)
    body += b"".join(rr.PollWorkflowTaskQueueRequest(task_queue=t).SerializeToString()
                     for t in tqs)
    parsed = rr.PollWorkflowTaskQueueRequest.FromString(body)
    found = scan("PollWorkflowTaskQueue", body)
    assert found.namespace == parsed.namespace
    expected = judged(parsed.task_queue) if parsed.HasField("task_queue") else []
    assert sorted(queues_of(found)) == sorted(expected)


@DIFF
@given(a=task_completed(), b=st.none() | task_completed())
def test_differential_respond_workflow_task_completed(
    a: rr.RespondWorkflowTaskCompletedRequest, b: rr.RespondWorkflowTaskCompletedRequest | None
) -> None:
    """RespondWorkflowTaskCompleted (alone or two merged): namespace, targets, queues agree."""
    body = a.SerializeToString() + (b.SerializeToString() if b is not None else b"")
    parsed = rr.RespondWorkflowTaskCompletedRequest.FromString(body)
    found = scan("RespondWorkflowTaskCompleted", body)
    namespace, others, queues = _completed_expected(parsed)
    assert found.namespace == namespace
    assert sorted(ns for ns in found.other_namespaces if ns) == others
    assert sorted(queues_of(found)) == queues


@DIFF
@given(ns=names, inner=st.lists(st.tuples(st.booleans(), names, st.none() | task_queues()),
                                max_size=3))
def test_differential_execute_multi_operation(
    ns: str, inner: list[tuple[bool, str, taskqueue_pb2.TaskQueue | None]]
) -> None:
    """ExecuteMultiOperation: outer namespace, inner start/update namespaces and queues agree."""
    ops = []
    for is_start, inner_ns, tq in inner:
        if is_start:
            start = rr.StartWorkflowExecutionRequest(namespace=inner_ns)
            if tq is not None:
                start.task_queue.CopyFrom(tq)
            ops.append(rr.ExecuteMultiOperationRequest.Operation(start_workflow=start))
        else:
            ops.append(rr.ExecuteMultiOperationRequest.Operation(
                update_workflow=rr.UpdateWorkflowExecutionRequest(namespace=inner_ns)))
    body = _multi(*ops, namespace=ns)
    parsed = rr.ExecuteMultiOperationRequest.FromString(body)
    found = scan("ExecuteMultiOperation", body)
    assert found.namespace == parsed.namespace
    expected_ns, expected_q = [], []
    for op in parsed.operations:
        inner_msg = op.start_workflow if op.HasField("start_workflow") else op.update_workflow
        expected_ns.append(inner_msg.namespace)
        if op.HasField("start_workflow") and op.start_workflow.HasField("task_queue"):
            expected_q.extend(judged(op.start_workflow.task_queue))
    assert sorted(n for n in found.other_namespaces if n) == sorted(n for n in expected_ns if n)
    assert sorted(found.task_queues) == sorted(expected_q)


# --- workflow-id policies that terminate ------------------------------------------------------


@pytest.mark.parametrize(("fields", "terminates"), [
    ({"workflow_id_conflict_policy": 3}, True),  # TERMINATE_EXISTING
    ({"workflow_id_reuse_policy": 4}, True),  # TERMINATE_IF_RUNNING
    ({"workflow_id_conflict_policy": 2, "workflow_id_reuse_policy": 3}, False),
    ({}, False),
])
def test_start_with_a_terminating_policy_is_flagged(fields: dict[str, int],
                                                    terminates: bool) -> None:
    """A start whose id policy terminates the running workflow (seen on the server) is flagged;
    other policies are not."""
    for method, cls in (("StartWorkflowExecution", rr.StartWorkflowExecutionRequest),
                        ("SignalWithStartWorkflowExecution",
                         rr.SignalWithStartWorkflowExecutionRequest)):
        body = cls(namespace="ns", **fields).SerializeToString()  # type: ignore[arg-type]
        assert scan(method, body).terminates_existing is terminates


def test_terminating_policy_last_occurrence_wins_as_int32() -> None:
    """The policy enum sent twice: the last wins; a varint of 3 + 2**32 is 3 to an int32
    parser (Go's), so it terminates."""
    body = ld(1, "ns") + tag(22, 0) + varint(3) + tag(22, 0) + varint(2)
    assert rr.StartWorkflowExecutionRequest.FromString(body).workflow_id_conflict_policy == 2
    assert scan("StartWorkflowExecution", body).terminates_existing is False
    wrapped = ld(1, "ns") + tag(22, 0) + varint(3 + 2**32)
    assert scan("StartWorkflowExecution", wrapped).terminates_existing is True


def test_terminating_policy_with_the_wrong_wire_type_is_refused() -> None:
    """A length-delimited value where the policy enum belongs is malformed (denied)."""
    err = body_error(scan, "StartWorkflowExecution", ld(1, "ns") + ld(22, "x"))
    assert err.reason is Reason.MALFORMED_BODY


def test_child_and_multi_operation_starts_are_flagged() -> None:
    """A child started with TERMINATE_IF_RUNNING and a multi-operation start with
    TERMINATE_EXISTING are flagged too."""
    child = _task_completed(command_pb2.Command(
        start_child_workflow_execution_command_attributes=(
            command_pb2.StartChildWorkflowExecutionCommandAttributes(
                workflow_id="x", workflow_id_reuse_policy=4))))  # type: ignore[arg-type]
    assert scan("RespondWorkflowTaskCompleted", child).terminates_existing is True
    multi = _multi(rr.ExecuteMultiOperationRequest.Operation(
        start_workflow=rr.StartWorkflowExecutionRequest(
            namespace="ns", workflow_id_conflict_policy=3)), namespace="ns")  # type: ignore[arg-type]
    assert scan("ExecuteMultiOperation", multi).terminates_existing is True


# --- task tokens that name their queue --------------------------------------------------------


def _queue_token(queue: str, task_id: str = "t1") -> bytes:
    """A QueryTask / NexusTask token as the server serializes it (namespace_id, task_queue,
    task_id: fields 1-3)."""
    return ld(1, "ns-uuid") + ld(2, queue) + ld(3, task_id)


@pytest.mark.parametrize("method", [
    "RespondQueryTaskCompleted", "RespondNexusTaskCompleted", "RespondNexusTaskFailed"])
def test_query_and_nexus_task_tokens_name_their_queue(method: str) -> None:
    """The queue inside a query or Nexus task token is where the server routes the answer:
    it is judged (as the worker's own, possibly sticky, queue)."""
    cls = getattr(rr, f"{method}Request")
    body = cls(namespace="ns", task_token=_queue_token("payroll-q")).SerializeToString()
    assert scan(method, body).sticky_queues == ["payroll-q"]


def test_a_malformed_queue_token_is_refused() -> None:
    """A task token that is not such a message is refused, as the server could not read it."""
    err = body_error(scan, "RespondQueryTaskCompleted", ld(6, "ns") + ld(1, b"\x12\xff"))
    assert err.reason is Reason.MALFORMED_BODY


def test_activity_task_tokens_are_not_read_as_queue_tokens() -> None:
    """An activity task token carries no queue: nothing is judged from it."""
    body = rr.RespondActivityTaskCompletedRequest(
        namespace="ns", task_token=_queue_token("payroll-q")).SerializeToString()
    found = scan("RespondActivityTaskCompleted", body)
    assert (found.task_queues, found.sticky_queues) == ([], [])


def test_many_gzip_members_are_refused_cheaply() -> None:
    """A message of thousands of empty gzip members (each a decompressor and a copy of the
    rest) is refused after a handful: gRPC clients send one member."""
    import gzip

    few = gzip.compress(rr.StartWorkflowExecutionRequest(namespace="ns").SerializeToString())
    assert bytes(wire.unframe(b"\x01" + len(few).to_bytes(4, "big") + few, "gzip"))
    many = gzip.compress(b"") * 50_000
    err = body_error(wire.unframe, b"\x01" + len(many).to_bytes(4, "big") + many, "gzip")
    assert err.reason is Reason.BODY_TOO_LARGE and "members" in err.message
