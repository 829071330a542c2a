"""The oracle: what a Temporal request acts on, read from the message ``temporalio`` decodes.

Independent of ``extauthz.wire`` (no wire scanning) and of the scan plans in
``extauthz.methods`` (no depth limit, no plan): it walks the decoded message by its
descriptors with the rules docs/architecture.md states, so comparing it with the scanner checks
that the scanner reads the bytes as protobuf does (last one wins, merged messages, oneofs, repeats).

- the request's own ``namespace`` (top level), or its namespace id where the method names one;
- ``namespace`` of nested messages listed in ``methods.CROSS_NAMESPACE_MESSAGES``;
- every ``temporal.api.taskqueue.v1.TaskQueue``: its ``name`` whatever its kind (the server acts
  on ``name``), and its ``normal_name`` too when set; every string field named in
  ``methods.TASK_QUEUE_STRING_FIELDS``, and the string fields of ``methods.STICKY_QUEUE_FIELDS``
  (sticky queues are counted with the others: the oracle does not tell them apart).

Empty values are dropped: an empty string and an absent one decode alike.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import symbol_database
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from extauthz import methods


@dataclass(frozen=True)
class Found:
    """Namespace, namespace id, other namespaces and task queues (multisets, no empties)."""

    namespace: str
    namespace_id: str
    other_namespaces: Counter[str]
    task_queues: Counter[str]


@functools.cache
def message_class(full_name: str) -> Any:
    """The generated ``temporalio`` class of a protobuf message name (``Any``: its fields are
    known only at run time)."""
    _ensure_loaded()
    cls: type[Message] = symbol_database.Default().GetSymbol(full_name)
    return cls


@functools.cache
def _ensure_loaded() -> None:
    # the request/response modules register every request message with the symbol database
    from temporalio.api.operatorservice.v1 import request_response_pb2 as _op  # noqa: F401
    from temporalio.api.workflowservice.v1 import request_response_pb2 as _wf  # noqa: F401


def _repeated(fd: Any) -> bool:  # upb and pure-python descriptors differ
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


def _judged_queues(tq: Any) -> list[str]:
    """The queues one TaskQueue names: ``name``, and ``normal_name`` when set."""
    return [str(tq.name)] + ([str(tq.normal_name)] if tq.normal_name else [])


def extract(message: Message) -> Found:
    """What ``message`` (a top-level request) acts on."""
    desc: Any = message.DESCRIPTOR
    namespace = ""
    if "namespace" in desc.fields_by_name:
        fd = desc.fields_by_name["namespace"]
        if fd.type == FieldDescriptor.TYPE_STRING and not _repeated(fd):
            namespace = str(getattr(message, "namespace"))  # noqa: B009
    id_field = methods.NAMESPACE_ID_FIELDS.get(desc.name)
    namespace_id = str(getattr(message, id_field)) if id_field else ""
    others: Counter[str] = Counter()
    queues: Counter[str] = Counter()
    _walk(message, True, others, queues)
    if desc.full_name in methods.QUEUE_TOKEN_REQUESTS and (task_token := _task_token(message)):
        token = queue_token_class().FromString(task_token)
        queues[str(getattr(token, "task_queue"))] += 1  # noqa: B009
    others.pop("", None)
    queues.pop("", None)
    return Found(namespace, namespace_id, others, queues)


def _task_token(message: Message) -> bytes:
    """The request's ``task_token`` bytes (empty when it has none)."""
    value: Any = getattr(message, "task_token", b"")
    return bytes(value)


@functools.cache
def queue_token_class() -> Any:
    """The server's QueryTask / NexusTask token shape (``temporal.server.api.token.v1``:
    namespace_id = 1, task_queue = 2, task_id = 3), built here as a protobuf class so the
    oracle decodes tokens with the real parser."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="extauthz_fuzz_token.proto",
                                             package="extauthz.fuzz", syntax="proto3")
    msg = fdp.message_type.add(name="QueueToken")
    for number, name in ((1, "namespace_id"), (2, "task_queue"), (3, "task_id")):
        msg.field.add(name=name, number=number, type=FieldDescriptor.TYPE_STRING,
                      label=FieldDescriptor.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("extauthz.fuzz.QueueToken"))
    return cls


def _walk(message: Message, top: bool, others: Counter[str], queues: Counter[str]) -> None:
    desc: Any = message.DESCRIPTOR
    if desc.full_name == methods.TASK_QUEUE_MESSAGE:
        queues.update(_judged_queues(message))
        return
    fields: Sequence[tuple[Any, Any]] = message.ListFields()
    for fd, value in fields:
        if fd.type == FieldDescriptor.TYPE_STRING:
            values = list(value) if _repeated(fd) else [value]
            if (fd.name == "namespace" and not top and not _repeated(fd)
                    and desc.full_name in methods.CROSS_NAMESPACE_MESSAGES):
                others.update(values)
            if (fd.name in methods.TASK_QUEUE_STRING_FIELDS
                    or (desc.full_name, fd.name) in methods.STICKY_QUEUE_FIELDS):
                queues.update(values)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value.values():
                        _walk(item, False, others, queues)
                continue
            for item in (value if _repeated(fd) else [value]):
                _walk(item, False, others, queues)


def scanned(found: Any) -> Found:
    """The scanner's ``wire.Extracted`` in the oracle's shape."""
    others = Counter(str(x) for x in found.other_namespaces)
    queues = Counter(str(x) for x in (*found.task_queues, *found.sticky_queues))
    others.pop("", None)
    queues.pop("", None)
    return Found(found.namespace, found.namespace_id, others, queues)
