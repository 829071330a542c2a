"""Version skew: the running Temporal server's API, asked through gRPC reflection, against the
method table this process built from its ``temporalio`` descriptors.

What matters for safety is one direction: a method or a target field (a namespace, namespace
id or task queue, at any depth of a request) that the **server** has and **we** lack. A method
we lack is denied as ``unknown_method`` (fail closed, but a feature users cannot reach); a
target field we lack is worse: the scanner never reads it, so a request can reach a namespace
or queue nobody judged. The other direction (we know more than an older server) is harmless
and reported for information. ``extauthz api-diff --address HOST:PORT`` prints the report.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from extauthz import methods

SERVICES = (methods.WORKFLOW_SERVICE, methods.OPERATOR_SERVICE)


@dataclass(frozen=True, slots=True)
class ApiReport:
    """Methods and target field paths on each side. Paths: ``Service/Method .a.b.c``."""

    server_only_methods: tuple[str, ...]
    server_only_fields: tuple[str, ...]
    local_only_methods: tuple[str, ...]
    local_only_fields: tuple[str, ...]
    temporalio_version: str

    @property
    def safe(self) -> bool:
        """Nothing the server has that this process cannot judge."""
        return not (self.server_only_methods or self.server_only_fields)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "safe": self.safe,
            "temporalio": self.temporalio_version,
            "server_only_methods": list(self.server_only_methods),
            "server_only_target_fields": list(self.server_only_fields),
            "local_only_methods": list(self.local_only_methods),
            "local_only_target_fields": list(self.local_only_fields),
        }


def names_a_target(fd: FieldDescriptor, container: Descriptor) -> bool:
    """Whether a field of ``container`` names a namespace, a namespace id or a task queue."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return fd.message_type is not None and (
            fd.message_type.full_name == methods.TASK_QUEUE_MESSAGE)
    return fd.type == FieldDescriptor.TYPE_STRING and (
        "namespace" in fd.name or "queue" in fd.name
        or methods.NAMESPACE_ID_FIELDS.get(container.name) == fd.name)


def target_paths(desc: Descriptor) -> Iterator[str]:
    """Every field path below a request message that names a namespace, a namespace id or a
    task queue (recursion cut where a message type repeats on the path)."""
    def walk(d: Descriptor, prefix: str, seen: frozenset[str]) -> Iterator[str]:
        for fd in d.fields:
            here = f"{prefix}.{fd.name}"
            sub = fd.message_type
            if names_a_target(fd, d):
                yield here
            elif sub is not None and sub.full_name not in seen:
                yield from walk(sub, here, seen | {sub.full_name})
    yield from walk(desc, "", frozenset({desc.full_name}))


def api_of(pool: descriptor_pool.DescriptorPool,
           services: Iterable[str] = SERVICES) -> Mapping[str, frozenset[str]]:
    """``Service/Method`` → the request's target field paths, for the services in ``pool``."""
    out: dict[str, frozenset[str]] = {}
    for service in services:
        try:
            sd = pool.FindServiceByName(service)
        except KeyError:
            continue
        short = service.rsplit(".", 1)[-1]
        for md in sd.methods:
            out[f"{short}/{md.name}"] = frozenset(target_paths(md.input_type))
    return out


@functools.cache
def local_api() -> Mapping[str, frozenset[str]]:
    """This process's API: the method table's services from the installed ``temporalio``."""
    methods.table()  # imports the service modules into the default pool
    return api_of(descriptor_pool.Default())


def compare(server: Mapping[str, frozenset[str]],
            local: Mapping[str, frozenset[str]] | None = None) -> ApiReport:
    """The skew between the server's API and ours."""
    from importlib.metadata import version

    ours = local_api() if local is None else local
    server_fields = sorted(f"{m} {p}" for m in server.keys() & ours.keys()
                           for p in server[m] - ours[m])
    local_fields = sorted(f"{m} {p}" for m in server.keys() & ours.keys()
                          for p in ours[m] - server[m])
    return ApiReport(
        server_only_methods=tuple(sorted(server.keys() - ours.keys())),
        server_only_fields=tuple(server_fields),
        local_only_methods=tuple(sorted(ours.keys() - server.keys())),
        local_only_fields=tuple(local_fields),
        temporalio_version=version("temporalio"),
    )


def server_pool(address: str, timeout: float = 10.0) -> descriptor_pool.DescriptorPool:
    """A descriptor pool of the server's services, fetched by gRPC reflection (plaintext)."""
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    pool = descriptor_pool.DescriptorPool()
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s)
                    for s in SERVICES]
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for answer in stub.ServerReflectionInfo(iter(requests), timeout=timeout):
            if answer.HasField("error_response"):
                continue  # an older server without that service
            for raw in answer.file_descriptor_response.file_descriptor_proto:
                fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
                files.setdefault(fdp.name, fdp)
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added or name not in files:
            return
        added.add(name)
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])

    for name in files:
        add(name)
    return pool


def compare_with_server(address: str, timeout: float = 10.0) -> ApiReport:
    """Ask the server at ``address`` for its API and compare it with ours."""
    return compare(api_of(server_pool(address, timeout)))
