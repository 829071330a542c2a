"""Temporal's HTTP/JSON API mapped onto its gRPC methods. Pure: no I/O.

Temporal's frontend serves an HTTP API (port 7243 by default) through grpc-gateway: every
``google.api.http`` binding of WorkflowService and OperatorService, the ``/api/v1/...`` ones
*and* the older ``/namespaces/...``, ``/cluster/...``, ``/system-info`` ones, runs the same
handler as the gRPC method. This module turns one HTTP request into the protobuf request message
the server will build, so the pipeline judges it exactly like the gRPC call (``wire.scan`` on the
serialized message, the same plan, the same policy).

Every rule below was checked against a real ``temporal server start-dev`` (Server 1.32;
``tests/e2e/test_http_api.py`` keeps checking it):

- **Matching** (grpc-gateway, "legacy" unescaping): the path (before ``?``) is percent-decoded as
  a whole and *then* split at ``/``, so ``%2F`` separates segments (``/api%2Fv1/...`` is served)
  and a variable is one decoded segment (``def%61ult`` is ``default``, ``%25`` decodes once). No
  ``.``/``..``/``//`` normalisation reaches the handler: Go's ServeMux answers a raw ``//``,
  ``.`` or ``..`` segment with a 301 and acts on nothing, so those are refused here. A trailing
  ``/``, another case or an unknown literal matches nothing. The HTTP method is exact. A raw
  ``#``, space, control character or non-ASCII byte in the request target matches nothing.
- We refuse more than the server in one place: the *first* raw segment must be a literal without
  ``%`` (``api``, ``namespaces``, ``cluster``, ``system-info``), because Envoy routes on it (the
  raw path) to the HTTP port; ``/api%2Fv1/...`` would go to the gRPC port there.
- **Body** (bindings with ``body: "*"``): JSON, decoded like Temporal's ``temporalproto``
  (protojson): field names in JSON (camelCase) or proto (snake_case) form, a field named twice
  (either form) is an error, ``null`` means unset, enums by name, number or Temporal's shorthand
  (``"Sticky"``), payloads in shorthand (any JSON: never read here). Unknown fields are ignored
  here (the server rejects them). Text after the first JSON value is refused here (the server
  ignores it).
- **Path over body**: path variables are set after the body is decoded and overwrite it (a body
  ``namespace`` that disagrees with the path is ignored by the server, so it is here).
- **Query** (bindings without a body only; a ``body: "*"`` binding ignores the query):
  ``url.ParseQuery`` rules (``&`` only, a ``;`` is an error, ``+`` is a space); a key naming a
  path-bound field (``?namespace=``) is ignored; a singular field given twice is an error; keys
  are field paths in proto or JSON names (``task_queue.kind``, ``taskQueue.kind``).

Only the fields the scan plan reads (namespace, namespace id, task queues, cross-namespace
targets) are carried into the message; everything else cannot change the decision.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from extauthz import methods
from extauthz.methods import Extract, MessagePlan, MethodEntry
from extauthz.model import Reason

HTTP_VERBS = ("get", "put", "post", "delete", "patch")
JSON_MEDIA_TYPES = frozenset({"application/json", "application/json+no-payload-shorthand"})
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_MAP_KEY = re.compile(r"^(.*)\[(.*)\]$")
_PRINTABLE_ASCII = re.compile(r"[!-\"$-~]*")  # printable ASCII but '#' (and no space)
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_QUERY_PAIRS = 1000


class RequestError(Exception):
    """The request cannot be judged; ``reason`` says why, ``message`` what to do."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnsupportedBindingError(RuntimeError):
    """The installed temporalio has an HTTP binding this router cannot reproduce."""


@dataclass(frozen=True, slots=True)
class Binding:
    """One ``google.api.http`` rule of one method."""

    verb: str  # "GET", "POST", "DELETE", ...
    template: str  # "/api/v1/namespaces/{namespace}/workflows/{workflow_id}"
    segments: tuple[str | None, ...]  # a literal, or None for a variable
    variables: tuple[tuple[str, ...], ...]  # the field path of each variable, in order
    body: bool  # body: "*" (the whole message from JSON), else query parameters
    entry: MethodEntry

    @property
    def method_name(self) -> str:
        """``WorkflowService/StartWorkflowExecution``."""
        return self.entry.method.short


@dataclass(frozen=True, slots=True)
class Route:
    """A matched request: the binding, its decoded path variables and its raw query."""

    binding: Binding
    params: tuple[tuple[tuple[str, ...], str], ...]
    query: str

    @property
    def entry(self) -> MethodEntry:
        """The gRPC method the request is."""
        return self.binding.entry


def _http_rules(md: Any) -> Iterator[http_pb2.HttpRule]:
    opts = md.GetOptions()
    if not opts.HasExtension(annotations_pb2.http):
        return
    rule: http_pb2.HttpRule = opts.Extensions[annotations_pb2.http]
    yield rule
    yield from rule.additional_bindings


def _method_descriptors() -> Iterator[tuple[str, Any]]:
    from temporalio.api.operatorservice.v1 import service_pb2 as operator_pb2
    from temporalio.api.workflowservice.v1 import service_pb2 as workflow_pb2

    for module, service in ((workflow_pb2, methods.WORKFLOW_SERVICE),
                            (operator_pb2, methods.OPERATOR_SERVICE)):
        sd = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[-1]]
        for md in sd.methods:
            yield service, md


def _field_path(desc: Descriptor, path: tuple[str, ...], where: str) -> None:
    """A path variable must name a singular string field through singular messages."""
    current = desc
    for i, name in enumerate(path):
        fd = current.fields_by_name.get(name)
        if fd is None or methods._is_repeated(fd):
            raise UnsupportedBindingError(f"{where}: {'.'.join(path)} is not a singular field")
        if i == len(path) - 1:
            if fd.type != FieldDescriptor.TYPE_STRING:
                raise UnsupportedBindingError(f"{where}: {'.'.join(path)} is not a string")
        else:
            if fd.message_type is None:
                raise UnsupportedBindingError(f"{where}: {name} is not a message")
            current = fd.message_type


def _binding(rule: http_pb2.HttpRule, entry: MethodEntry, desc: Descriptor) -> Binding:
    verb = rule.WhichOneof("pattern")
    where = f"{entry.method.short}"
    if verb not in HTTP_VERBS:
        raise UnsupportedBindingError(f"{where}: HTTP pattern {verb!r} is not supported")
    template: str = getattr(rule, verb)
    if rule.body not in ("", "*"):
        raise UnsupportedBindingError(f"{where}: body {rule.body!r} (only '*' or none)")
    if not template.startswith("/") or ":" in template or "*" in template:
        raise UnsupportedBindingError(f"{where}: template {template!r} is not supported")
    segments: list[str | None] = []
    variables: list[tuple[str, ...]] = []
    for part in template[1:].split("/"):
        var = _VARIABLE.fullmatch(part)
        if var is not None:
            path = tuple(var.group(1).split("."))
            _field_path(desc, path, where)
            segments.append(None)
            variables.append(path)
        elif part and "{" not in part and "}" not in part and "%" not in part:
            segments.append(part)
        else:
            raise UnsupportedBindingError(f"{where}: template {template!r} is not supported")
    if segments[0] is None:
        raise UnsupportedBindingError(f"{where}: template {template!r} starts with a variable")
    return Binding(verb.upper(), template, tuple(segments), tuple(variables),
                   rule.body == "*", entry)


def ambiguous(a: Binding, b: Binding) -> bool:
    """Whether some request could match both bindings."""
    if a.verb != b.verb or len(a.segments) != len(b.segments):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a.segments, b.segments,
                                                                strict=True))


class Router:
    """(HTTP method, path) → the binding and its variables. Build once; ``match`` is pure."""

    def __init__(self, bindings: Sequence[Binding]):
        self.bindings = tuple(bindings)
        self._by_shape: dict[tuple[str, int, str], list[Binding]] = {}
        for b in self.bindings:
            first = b.segments[0]
            assert first is not None
            self._by_shape.setdefault((b.verb, len(b.segments), first), []).append(b)
        self.first_segments = frozenset(b.segments[0] for b in self.bindings
                                        if b.segments[0] is not None)

    def looks_like_http_api(self, raw: str) -> bool:
        """Whether Envoy routes this path to the HTTP API (its first raw segment is one of the
        bindings' first literals)."""
        first = raw.partition("?")[0][1:].split("/", 1)[0]
        return first in self.first_segments

    def match(self, verb: str, raw: str) -> Route | None:
        """The route for a request, or None (no binding: deny as an unknown method).

        Raises:
            RequestError: the path or query cannot be decoded the way the server decodes it.
        """
        path, _, query = raw.partition("?")
        if not path.startswith("/") or not _PRINTABLE_ASCII.fullmatch(raw):
            return None  # '#', spaces, controls, raw non-ASCII: no client sends these
        raw_segments = path[1:].split("/")
        if raw_segments[0] not in self.first_segments:
            return None
        if any(s in ("", ".", "..") for s in raw_segments):
            return None  # Go's ServeMux redirects these (301) and acts on nothing
        segments = _unescape(path, "path", reason=Reason.UNKNOWN_METHOD).split("/")[1:]
        for b in self._by_shape.get((verb, len(segments), segments[0]), ()):
            params: list[tuple[tuple[str, ...], str]] = []
            variables = iter(b.variables)
            for want, got in zip(b.segments, segments, strict=True):
                if want is None:
                    params.append((next(variables), got))
                elif want != got:
                    break
            else:
                return Route(b, tuple(params), query)
        return None


@functools.cache
def router() -> Router:
    """The router over every HTTP binding of the installed temporalio. Built once per process.

    Raises:
        UnsupportedBindingError: a binding this module cannot reproduce exactly.
    """
    table = methods.table()
    bindings: list[Binding] = []
    for service, md in _method_descriptors():
        entry = table[f"/{service}/{md.name}"]
        for rule in _http_rules(md):
            bindings.append(_binding(rule, entry, md.input_type))
    return Router(bindings)


# ---- decoding -------------------------------------------------------------------------------


def _unescape(text: str, what: str, *, plus: bool = False,
              reason: Reason = Reason.MALFORMED_BODY) -> str:
    """Go's ``url.PathUnescape`` (``plus``: ``QueryUnescape``): every ``%XX`` decoded, a bad
    escape is an error; the result must be UTF-8 (Temporal's names are)."""
    if "%" not in text and not (plus and "+" in text):
        return text
    data = text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x25:  # %
            if i + 2 >= len(data) or data[i + 1] not in _HEX or data[i + 2] not in _HEX:
                raise RequestError(reason, f"bad percent-escape in the {what}")
            out.append(int(data[i + 1:i + 3], 16))
            i += 3
        elif plus and c == 0x2B:
            out.append(0x20)
            i += 1
        else:
            out.append(c)
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(reason, f"the {what} decodes to bytes that are not UTF-8") from None


def parse_query(query: str) -> list[tuple[str, list[str]]]:
    """Go's ``url.ParseQuery``: keys in first-seen order with their values; any error (a ``;``,
    a bad escape) refuses the request, as the server does (400)."""
    values: dict[str, list[str]] = {}
    pairs = 0
    for piece in query.split("&"):
        if ";" in piece:
            raise RequestError(Reason.MALFORMED_BODY, "a ';' in the query string (use '&')")
        if not piece:
            continue
        pairs += 1
        if pairs > _MAX_QUERY_PAIRS:
            raise RequestError(Reason.BODY_TOO_LARGE,
                               f"more than {_MAX_QUERY_PAIRS} query parameters")
        key, _, value = piece.partition("=")
        values.setdefault(_unescape(key, "query", plus=True), []).append(
            _unescape(value, "query", plus=True))
    return list(values.items())


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
    desc = _message_class_descriptor(route.entry)
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
    desc = _message_class_descriptor(entry)
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


@functools.cache
def _descriptors() -> Mapping[str, Descriptor]:
    return {f"/{service}/{md.name}": md.input_type for service, md in _method_descriptors()}


def _message_class_descriptor(entry: MethodEntry) -> Descriptor:
    return _descriptors()[entry.method.path]


def media_type(content_type: str) -> str:
    """The media type of a content-type header, lower-cased, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()
