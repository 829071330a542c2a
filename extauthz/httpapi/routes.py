"""The HTTP routes table: every ``google.api.http`` binding of WorkflowService and
OperatorService in the installed temporalio, as ``Binding``s, and the request types. Pure.

A binding this package cannot reproduce exactly (a template with ``*`` or ``:``, a partial
body, a variable that is not a singular string field) raises ``UnsupportedBindingError``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from extauthz import methods
from extauthz.methods import MethodEntry
from extauthz.model import Reason

HTTP_VERBS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


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


def all_bindings() -> list[Binding]:
    """Every HTTP binding of the installed temporalio, in descriptor order.

    Raises:
        UnsupportedBindingError: a binding this package cannot reproduce exactly.
    """
    table = methods.table()
    bindings: list[Binding] = []
    for service, md in _method_descriptors():
        entry = table[f"/{service}/{md.name}"]
        bindings.extend(_binding(rule, entry, md.input_type) for rule in _http_rules(md))
    return bindings


@functools.cache
def _descriptors() -> Mapping[str, Descriptor]:
    return {f"/{service}/{md.name}": md.input_type for service, md in _method_descriptors()}


def request_descriptor(entry: MethodEntry) -> Descriptor:
    """The descriptor of ``entry``'s request message."""
    return _descriptors()[entry.method.path]
