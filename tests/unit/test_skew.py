"""Version skew: the server's API (as gRPC reflection gives it) against ours."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool

from extauthz import skew


def test_our_api_has_every_method_of_the_table() -> None:
    """The local API lists the WorkflowService and OperatorService methods of the table, each
    with the target paths the descriptor walk finds."""
    api = skew.local_api()
    assert ".task_queue" in api["WorkflowService/StartWorkflowExecution"]
    assert ".namespace_id" in api["OperatorService/DeleteNamespace"]
    assert (".commands.schedule_activity_task_command_attributes.task_queue"
            in api["WorkflowService/RespondWorkflowTaskCompleted"])


def test_same_api_is_safe() -> None:
    """Comparing our API with itself reports nothing and is safe."""
    report = skew.compare(skew.local_api())
    assert report.safe and not report.local_only_methods and not report.local_only_fields


def test_a_newer_server_is_reported_unsafe_with_what_we_lack() -> None:
    """A server with a method and a target field we do not know is unsafe; both are named."""
    server = dict(skew.local_api())
    start = "WorkflowService/StartWorkflowExecution"
    server[start] = server[start] | {".new_target.task_queue"}
    server["WorkflowService/StealEverything"] = frozenset({".namespace"})
    del server["WorkflowService/GetSystemInfo"]
    report = skew.compare(server)
    assert not report.safe
    assert report.server_only_methods == ("WorkflowService/StealEverything",)
    assert report.server_only_fields == (f"{start} .new_target.task_queue",)
    assert report.local_only_methods == ("WorkflowService/GetSystemInfo",)
    assert report.as_dict()["safe"] is False


def test_api_of_reads_a_pool_built_from_file_descriptors() -> None:
    """A service given as raw file descriptors (what reflection returns) is read, its request
    fields walked: a string `namespace` and a nested queue name count, other fields do not."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="t.proto", package="temporal.api.workflowservice.v1", syntax="proto3")
    inner = fdp.message_type.add(name="Inner")
    inner.field.add(name="task_queue", number=1, type=9, label=1)
    req = fdp.message_type.add(name="DoRequest")
    req.field.add(name="namespace", number=1, type=9, label=1)
    req.field.add(name="payload", number=2, type=12, label=1)
    req.field.add(name="inner", number=3, type=11, label=1,
                  type_name=".temporal.api.workflowservice.v1.Inner")
    fdp.message_type.add(name="DoResponse")
    service = fdp.service.add(name="WorkflowService")
    service.method.add(name="Do", input_type=".temporal.api.workflowservice.v1.DoRequest",
                       output_type=".temporal.api.workflowservice.v1.DoResponse")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    assert skew.api_of(pool) == {"WorkflowService/Do": frozenset({".namespace",
                                                                   ".inner.task_queue"})}
