"""Hypothesis strategies for random *valid* Temporal request messages, from the descriptors.

``requests(entry)`` draws an instance of the method's request class with random values in
random fields. Fields on a path to something the authorizer reads (a namespace, a task queue,
a cross-namespace target) are drawn at any depth; other message fields only near the top, so
examples stay small while every field the scanner must find is exercised, inside repeated
fields, oneofs and maps too.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from extauthz import methods
from fuzz import reference

NAMES = st.sampled_from(["default", "payroll", "other", "", "q", "billing-1"]) | st.text(
    max_size=6)
_MAX_DEPTH = 9
_BORING_DEPTH = 1

_I32 = st.integers(-(2**31), 2**31 - 1)
_I64 = st.integers(-(2**63), 2**63 - 1)
_U32 = st.integers(0, 2**32 - 1)
_U64 = st.integers(0, 2**64 - 1)
_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_INT32: _I32, FieldDescriptor.TYPE_SINT32: _I32,
    FieldDescriptor.TYPE_SFIXED32: _I32, FieldDescriptor.TYPE_INT64: _I64,
    FieldDescriptor.TYPE_SINT64: _I64, FieldDescriptor.TYPE_SFIXED64: _I64,
    FieldDescriptor.TYPE_UINT32: _U32, FieldDescriptor.TYPE_FIXED32: _U32,
    FieldDescriptor.TYPE_UINT64: _U64, FieldDescriptor.TYPE_FIXED64: _U64,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=False),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=False),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=6),
    FieldDescriptor.TYPE_STRING: NAMES,
}


def _repeated(fd: Any) -> bool:  # upb and pure-python descriptors differ
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


@functools.cache
def interesting(full_name: str) -> frozenset[str]:
    """Names of the fields of a message that lead to something the authorizer reads."""
    return _interesting(full_name, ())


def _desc(full_name: str) -> Any:
    return reference.message_class(full_name).DESCRIPTOR


def _interesting(full_name: str, stack: tuple[str, ...]) -> frozenset[str]:
    desc = _desc(full_name)
    out = set()
    for fd in desc.fields:
        if fd.type == FieldDescriptor.TYPE_STRING:
            if fd.name in ("namespace", "namespace_id", "id") or (
                    fd.name in methods.TASK_QUEUE_STRING_FIELDS):
                out.add(fd.name)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            child: Any = fd.message_type
            if child.GetOptions().map_entry:
                value = child.fields_by_name["value"]
                if value.type != FieldDescriptor.TYPE_MESSAGE:
                    continue
                child = value.message_type
            if child.full_name == methods.TASK_QUEUE_MESSAGE or (
                    child.full_name not in stack
                    and _interesting(child.full_name, (*stack, full_name))):
                out.add(fd.name)
    return frozenset(out)


def _value(draw: st.DrawFn, fd: Any, _depth: int, _wanted: bool) -> Any:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in fd.enum_type.values]
        return draw(st.sampled_from(numbers))
    return draw(_SCALARS[fd.type])


def _fill(draw: st.DrawFn, msg: Message, depth: int) -> None:
    desc: Any = msg.DESCRIPTOR
    wanted = interesting(desc.full_name)
    for fd in desc.fields:
        hot = fd.name in wanted
        if fd.type == FieldDescriptor.TYPE_MESSAGE and not hot and depth >= _BORING_DEPTH:
            continue
        if depth >= _MAX_DEPTH or not draw(st.booleans()):
            continue
        container = getattr(msg, fd.name)
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 2))):
                key = _value(draw, key_fd, depth, hot)
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    _fill(draw, container[key], depth + 1)
                else:
                    container[key] = _value(draw, value_fd, depth, hot)
            continue
        if _repeated(fd):
            for _ in range(draw(st.integers(0, 2))):
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    _fill(draw, container.add(), depth + 1)
                else:
                    container.append(_value(draw, fd, depth, hot))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            container.SetInParent()
            _fill(draw, container, depth + 1)
        elif fd.name == "task_token" and desc.full_name in methods.QUEUE_TOKEN_REQUESTS:
            # a token the server could have issued: it names the task's queue
            token = reference.queue_token_class()(
                namespace_id=draw(st.text(max_size=4)), task_queue=draw(st.text(max_size=8)))
            setattr(msg, fd.name, token.SerializeToString())
        else:
            setattr(msg, fd.name, _value(draw, fd, depth, hot))


@st.composite
def requests(draw: st.DrawFn, request_type: str) -> Message:
    """A random request message of ``request_type`` (a full protobuf name)."""
    msg = reference.message_class(request_type)()
    _fill(draw, msg, 0)
    return msg
