"""Building the protobuf request the server builds from one HTTP request (JSON body, path
variables, query parameters), for ``wire.scan``: only the fields the scan plan reads. Pure.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from extauthz import methods
from extauthz.httpapi.matching import parse_query
from extauthz.httpapi.routes import RequestError, Route, request_descriptor
from extauthz.methods import Extract, MessagePlan
from extauthz.model import Reason

_MAP_KEY = re.compile(r"^(.*)\[(.*)\]$")


def _field(desc: Descriptor, name: str) -> FieldDescriptor | None:
    fd = desc.fields_by_name.get(name)
    if fd is None:
        fd = _by_json_name(desc).get(name)
    return fd


@functools.cache
def _by_json_name(desc: Descriptor) -> Mapping[str, FieldDescriptor]:
    return {fd.json_name: fd for fd in desc.fields}


@functools.cache
def _enum_shorthand(enum: EnumDescriptor) -> Mapping[str, str]:
    """Temporal's enum shorthand (``Sticky`` for ``TASK_QUEUE_KIND_STICKY``) → the full name."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    out: dict[str, str] = {}
    for value in enum.values:
        if value.name.startswith(prefix):
            short = "".join(p.capitalize() for p in value.name[len(prefix):].split("_"))
            out[short] = value.name
    return out


# ---- body -----------------------------------------------------------------------------------


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in order (duplicates kept, to be judged)."""


def _loads(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(Reason.MALFORMED_BODY, "the JSON body is not UTF-8") from None
    if not text.strip():
        return _Pairs()
    try:
        return json.loads(text, object_pairs_hook=_Pairs)
    except RecursionError:
        raise RequestError(Reason.MALFORMED_BODY, "the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise RequestError(Reason.MALFORMED_BODY,
                           f"the body is not one JSON value ({str(exc)[:80]})") from None


def _prune(obj: Any, desc: Descriptor, plan: MessagePlan, where: str) -> dict[str, Any]:
    """The part of a JSON object the plan reads, keyed by proto field name, ready for
    ``json_format.ParseDict``. A field named twice (in either spelling) is an error."""
    if not isinstance(obj, _Pairs):
        raise RequestError(Reason.MALFORMED_BODY, f"{where or 'the body'} is not a JSON object")
    seen: set[int] = set()
    out: dict[str, Any] = {}
    for key, value in obj:
        fd = _field(desc, key)
        if fd is None:
            continue  # unknown: the server refuses it; it cannot name what we read
        if fd.number in seen:
            raise RequestError(Reason.MALFORMED_BODY, f"field {key!r} appears twice in {where}")
        seen.add(fd.number)
        p = plan.fields.get(fd.number)
        if p is None or value is None:
            continue  # not read by the plan, or null (= unset)
        name = f"{where}.{fd.name}" if where else fd.name
        if p.extract is Extract.MESSAGE:
            assert fd.message_type is not None
            if p.repeated:
                if not isinstance(value, list):
                    raise RequestError(Reason.MALFORMED_BODY, f"{name} must be a JSON array")
                out[fd.name] = [_prune(v, fd.message_type, p.children, name) for v in value]
            else:
                out[fd.name] = _prune(value, fd.message_type, p.children, name)
        elif p.extract is Extract.TASK_QUEUE:
            assert fd.message_type is not None
            if p.repeated:
                if not isinstance(value, list):
                    raise RequestError(Reason.MALFORMED_BODY, f"{name} must be a JSON array")
                out[fd.name] = [_task_queue(v, fd.message_type, name) for v in value]
            else:
                out[fd.name] = _task_queue(value, fd.message_type, name)
        else:
            out[fd.name] = value
    return out


def _task_queue(obj: Any, desc: Descriptor, where: str) -> dict[str, Any]:
    if not isinstance(obj, _Pairs):
        raise RequestError(Reason.MALFORMED_BODY, f"{where} is not a JSON object")
    seen: set[int] = set()
    out: dict[str, Any] = {}
    for key, value in obj:
        fd = _field(desc, key)
        if fd is None:
            continue
        if fd.number in seen:
            raise RequestError(Reason.MALFORMED_BODY, f"field {key!r} appears twice in {where}")
        seen.add(fd.number)
        if value is None:
            continue
        if fd.enum_type is not None and isinstance(value, str):
            out[fd.name] = _enum_shorthand(fd.enum_type).get(value, value)
        else:
            out[fd.name] = value
    return out


# ---- the request message --------------------------------------------------------------------


@functools.cache
def _message_class(desc: Descriptor) -> type[Message]:
    cls: type[Message] = message_factory.GetMessageClass(desc)
    return cls


def _set_path(msg: Message, path: tuple[str, ...], value: str) -> None:
    """grpc-gateway's ``PopulateFieldFromPath``: set (overwrite) a string field, creating the
    messages on the way; setting a oneof member another member already holds is an error."""
    current = msg
    for i, name in enumerate(path):
        fd = current.DESCRIPTOR.fields_by_name[name]
        oneof = fd.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:
            held = current.WhichOneof(oneof.name)
            if held is not None and (held != name or fd.message_type is None):
                raise RequestError(Reason.MALFORMED_BODY,
                                   f"{'.'.join(path)} conflicts with {held} (one of)")
        if i == len(path) - 1:
            setattr(current, name, value)
        else:
            current = getattr(current, name)


def _apply_query(msg: Message, route: Route, plan: MessagePlan) -> None:
    """Query parameters of a body-less binding, as grpc-gateway's ``PopulateQueryParameters``
    applies them, for the fields the plan reads (other keys cannot change the decision)."""
    desc = request_descriptor(route.entry)
    bound = route.binding.variables
    singular: dict[tuple[str, ...], str] = {}
    for raw_key, raw_values in parse_query(route.query):
        key, values = raw_key, raw_values
        mapped = _MAP_KEY.match(key)
        if mapped is not None:
            key, values = mapped.group(1), [mapped.group(2), *values]
        names = key.split(".")
        normal = _normalise(desc, names)
        if any(tuple(normal[:len(b)]) == b for b in bound):
            continue  # a path-bound field: the server ignores it
        target = _resolve(desc, plan, names)
        if target is None:
            continue
        fds, is_queue_field = target
        leaf = fds[-1]
        proto_path = tuple(fd.name for fd in fds)
        if methods._is_repeated(leaf):
            holder = _holder(msg, fds)
            getattr(holder, leaf.name).extend(values)
            continue
        if len(values) != 1:
            raise RequestError(Reason.MALFORMED_BODY,
                               f"query parameter {raw_key!r} given {len(values)} times")
        if proto_path in singular:
            raise RequestError(Reason.MALFORMED_BODY,
                               f"query names {'.'.join(proto_path)} twice "
                               f"({singular[proto_path]!r} and {raw_key!r})")
        singular[proto_path] = raw_key
        holder = _holder(msg, fds)
        value: Any = values[0]
        if leaf.enum_type is not None:
            value = _enum_value(leaf.enum_type, value, raw_key)
        elif is_queue_field and leaf.type != FieldDescriptor.TYPE_STRING:
            continue  # not something the scan reads
        setattr(holder, leaf.name, value)


def _normalise(desc: Descriptor, names: list[str]) -> list[str]:
    """grpc-gateway's ``normalizeFieldPath``: JSON names → proto names, or the path unchanged."""
    out: list[str] = []
    current: Descriptor | None = desc
    for i, name in enumerate(names):
        fd = _field(current, name) if current is not None else None
        if fd is None:
            return names
        out.append(fd.name)
        if i == len(names) - 1:
            break
        if fd.message_type is None or methods._is_repeated(fd):
            return names
        current = fd.message_type
    return out


def _resolve(desc: Descriptor, plan: MessagePlan,
             names: list[str]) -> tuple[list[FieldDescriptor], bool] | None:
    """The fields a query key walks to, if it ends on a field the plan reads; else None."""
    fds: list[FieldDescriptor] = []
    current = desc
    current_plan: MessagePlan | None = plan
    in_queue = False
    for i, name in enumerate(names):
        fd = _field(current, name)
        if fd is None:
            return None  # unknown: the server ignores it
        fds.append(fd)
        last = i == len(names) - 1
        if in_queue:
            return (fds, True) if last and fd.number in (1, 2, 3) else None
        p = current_plan.fields.get(fd.number) if current_plan is not None else None
        if p is None:
            return None
        if last:
            if p.extract in (Extract.MESSAGE, Extract.TASK_QUEUE):
                raise RequestError(Reason.MALFORMED_BODY,
                                   f"query parameter {'.'.join(names)!r} names a message")
            return fds, False
        if fd.message_type is None or methods._is_repeated(fd):
            raise RequestError(Reason.MALFORMED_BODY,
                               f"query parameter {'.'.join(names)!r}: {name} is not a message")
        current = fd.message_type
        if p.extract is Extract.TASK_QUEUE:
            in_queue, current_plan = True, None
        else:
            current_plan = p.children
    return None


def _holder(msg: Message, fds: list[FieldDescriptor]) -> Message:
    current = msg
    for fd in fds[:-1]:
        current = getattr(current, fd.name)
    return current


def _enum_value(enum: EnumDescriptor, text: str, key: str) -> int:
    """grpc-gateway's enum query value: a value name or a known number (no shorthand)."""
    value = enum.values_by_name.get(text)
    if value is not None:
        return int(value.number)
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is not None and number in enum.values_by_number:
        return number
    raise RequestError(Reason.MALFORMED_BODY, f"query parameter {key!r}: not a valid value")


def request_message(route: Route, body: bytes) -> bytes:
    """The serialized protobuf request the server builds from this HTTP request (the fields the
    scan plan reads), for ``wire.scan``.

    Raises:
        RequestError: the body or query is not something the server would act on as we read it.
    """
    entry = route.entry
    desc = request_descriptor(entry)
    msg = _message_class(desc)()
    plan = entry.plan
    if route.binding.body:
        pruned = _prune(_loads(body), desc, plan, "")
        try:
            json_format.ParseDict(pruned, msg)  # strict: an unknown enum name is an error
        except json_format.ParseError as exc:
            raise RequestError(Reason.MALFORMED_BODY,
                               f"the JSON body does not fit {desc.name}: {str(exc)[:120]}"
                               ) from None
    for path, value in route.params:
        _set_path(msg, path, value)
    if not route.binding.body and route.query:
        _apply_query(msg, route, plan)
    try:
        return bytes(msg.SerializeToString())
    except Exception as exc:  # e.g. a string that is not valid UTF-8
        raise RequestError(Reason.MALFORMED_BODY,
                           f"the request does not encode as {desc.name} ({type(exc).__name__})"
                           ) from None

