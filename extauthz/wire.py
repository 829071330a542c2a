"""Reading what a request will act on from its raw gRPC body. Pure: no I/O.

The scanner reads only the fields the method table's plan names and skips the rest by length,
so a 4 MiB body costs a walk over its top-level fields, not a decode. It follows protobuf's
rules exactly where they decide the outcome:

- a singular scalar sent twice means the last one (``namespace`` twice: the last wins);
- a singular embedded message sent twice is merged, so its fields are read across every
  occurrence in order;
- each occurrence of a repeated message is its own element.

Anything a conforming parser would reject, or read differently from us (a wrong wire type on a
field we read, a non-UTF-8 string, a truncated varint), raises ``BodyError``: the caller denies.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from extauthz.methods import Extract, FieldPlan, MessagePlan
from extauthz.model import Method, Reason, Target

FRAME_HEADER = 5
WT_VARINT, WT_I64, WT_LEN, WT_SGROUP, WT_EGROUP, WT_I32 = 0, 1, 2, 3, 4, 5
TASK_QUEUE_KIND_STICKY = 2
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# ~0.3 s of CPU at worst; a real RespondWorkflowTaskCompleted with 10,000 commands uses ~150,000
DEFAULT_SCAN_BUDGET = 1_000_000


class BodyError(Exception):
    """The body cannot be judged; ``reason`` says why, ``message`` what to do."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class Extracted:
    """What the scanner found. Mutable while scanning, then read once."""

    namespace: str = ""
    namespace_id: str = ""
    other_namespaces: list[str] = field(default_factory=list)
    task_queues: list[str] = field(default_factory=list)
    # queues a worker names as its own sticky queue (a STICKY-kind poll, sticky attributes)
    sticky_queues: list[str] = field(default_factory=list)
    # a start's workflow-id policy terminates the running workflow of that id
    terminates_existing: bool = False
    # fields and messages the scan may still visit: bounds the CPU one request can cost
    budget: int = DEFAULT_SCAN_BUDGET

    def target(self, method: Method) -> Target:
        """What was found, as the decision's ``Target`` for ``method``."""
        return Target(
            method,
            namespace=self.namespace,
            other_namespaces=tuple(self.other_namespaces),
            task_queues=tuple(self.task_queues),
            sticky_queues=tuple(self.sticky_queues),
            terminates_existing=self.terminates_existing,
            by_namespace_id=bool(self.namespace_id),
        )

    def spend(self, units: int) -> None:
        """Charge the scan budget; a request over it is refused, never half-read."""
        self.budget -= units
        if self.budget < 0:
            raise BodyError(
                Reason.BODY_TOO_LARGE,
                f"the request has more than {DEFAULT_SCAN_BUDGET} protobuf fields to inspect",
            )


def unframe(
    body: bytes | memoryview,
    encoding: str | None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> memoryview:
    """Return the one protobuf message of a gRPC request body.

    Args:
        body: the raw HTTP/2 request body: 5-byte frame header(s) and message(s).
        encoding: the ``grpc-encoding`` header value, or None.
        max_message_bytes: cap on the (decompressed) message.

    Raises:
        BodyError: not exactly one well-formed frame, an unsupported encoding, or too large.
    """
    view = memoryview(body)
    if len(view) < FRAME_HEADER:
        raise BodyError(Reason.MALFORMED_BODY, "request body is not a gRPC message frame")
    flag = view[0]
    length = int.from_bytes(view[1:5], "big")
    if flag not in (0, 1):
        raise BodyError(Reason.MALFORMED_BODY, f"gRPC frame flag {flag} is not 0 or 1")
    if length != len(view) - FRAME_HEADER:
        raise BodyError(
            Reason.MALFORMED_BODY,
            f"gRPC frame declares {length} bytes but the body holds {len(view) - FRAME_HEADER}"
            " (one unary message per request)",
        )
    if length > max_message_bytes:
        raise BodyError(Reason.BODY_TOO_LARGE, f"message of {length} bytes is over the limit")
    message = view[FRAME_HEADER:]
    if flag == 0:
        return message
    enc = encoding or "identity"
    if enc != "gzip":  # exactly, as grpc-go matches it: Temporal refuses "GZIP" (UNIMPLEMENTED)
        raise BodyError(
            Reason.UNSUPPORTED_ENCODING,
            f"compressed message with grpc-encoding {enc[:32]!r}: only gzip is accepted",
        )
    return memoryview(gunzip_all(message, max_message_bytes))


def gunzip_all(data: memoryview | bytes, cap: int) -> bytes:
    """Decompress every gzip member in order, as grpc-go does, stopping at ``cap`` bytes."""
    out = bytearray()
    rest = bytes(data)
    if not rest:
        raise BodyError(Reason.MALFORMED_BODY, "empty gzip message")
    while rest:
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(rest, cap + 1 - len(out))
        except zlib.error as exc:
            raise BodyError(Reason.MALFORMED_BODY, f"gzip message is corrupt: {exc}") from None
        if len(out) > cap or d.unconsumed_tail:
            raise BodyError(Reason.BODY_TOO_LARGE, f"gzip message inflates past {cap} bytes")
        if not d.eof:
            raise BodyError(Reason.MALFORMED_BODY, "gzip message is truncated")
        rest = d.unused_data
    return bytes(out)


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise BodyError(Reason.MALFORMED_BODY, "protobuf varint is truncated or too long")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _skip(buf: memoryview, pos: int, end: int, wire_type: int) -> int:
    if wire_type == WT_VARINT:
        return _varint(buf, pos, end)[1]
    if wire_type == WT_I64:
        pos += 8
    elif wire_type == WT_I32:
        pos += 4
    elif wire_type == WT_LEN:
        size, pos = _varint(buf, pos, end)
        pos += size
    else:
        raise BodyError(Reason.MALFORMED_BODY, f"protobuf wire type {wire_type} is not accepted")
    if pos > end:
        raise BodyError(Reason.MALFORMED_BODY, "protobuf field runs past the end of the message")
    return pos


def _fields(
    buf: memoryview, start: int, end: int, out: Extracted
) -> list[tuple[int, int, int, int]]:
    """Every (field number, wire type, value start, value end) of a message, in order."""
    fields: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        key = buf[pos]  # one-byte varints (fields 1-15, lengths < 128) without a call
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise BodyError(Reason.MALFORMED_BODY, "protobuf field number 0 is invalid")
        if wire_type == WT_LEN:
            if pos < end and buf[pos] < 0x80:
                size, vstart = buf[pos], pos + 1
            else:
                size, vstart = _varint(buf, pos, end)
            pos = vstart + size
            if pos > end:
                raise BodyError(Reason.MALFORMED_BODY, "protobuf field runs past the message end")
            fields.append((number, wire_type, vstart, pos))
        else:
            vstart = pos
            pos = _skip(buf, pos, end, wire_type)
            fields.append((number, wire_type, vstart, pos))
    out.spend(len(fields) + 1)
    return fields


def _string(buf: memoryview, start: int, end: int, what: str) -> str:
    try:
        return str(buf[start:end], "utf-8")
    except UnicodeDecodeError:
        raise BodyError(Reason.MALFORMED_BODY, f"{what} is not valid UTF-8") from None


def _wrong_type(plan: FieldPlan) -> BodyError:
    return BodyError(
        Reason.MALFORMED_BODY, f"field {plan.name!r} has the wrong protobuf wire type"
    )


def _task_queue(
    buf: memoryview, chunks: list[tuple[int, int]], out: Extracted, sticky_field: bool
) -> None:
    """Record the queues a ``TaskQueue`` message names, its occurrences merged.

    Temporal acts on ``name`` whatever ``kind`` says: a STICKY-kind poll of another team's
    queue receives its tasks, a STICKY-kind start runs on ``name`` (tests/e2e/
    test_exact_targets.py). So ``name`` is always judged. ``normal_name`` is judged too when set
    (stricter than needed: the server refuses it outside sticky polls). Only where a worker
    names its own sticky queue (``sticky_field``) does a STICKY ``name`` count as a sticky
    queue, which a policy may cover by the SDKs' generated shape.
    """
    name = normal = ""
    kind = 0
    for start, end in chunks:
        for number, wt, vs, ve in _fields(buf, start, end, out):
            if number in (1, 3):
                if wt != WT_LEN:
                    raise BodyError(Reason.MALFORMED_BODY, "task queue name has the wrong type")
                value = _string(buf, vs, ve, "task queue name")
                if number == 1:
                    name = value
                else:
                    normal = value
            elif number == 2:
                if wt != WT_VARINT:
                    raise BodyError(Reason.MALFORMED_BODY, "task queue kind has the wrong type")
                # an enum is an int32 on the wire: parsers keep the low 32 bits
                kind = _varint(buf, vs, ve)[0] & 0xFFFFFFFF
    if sticky_field and kind == TASK_QUEUE_KIND_STICKY:
        out.sticky_queues.append(name)
    else:
        out.task_queues.append(name)
    if normal:
        out.task_queues.append(normal)


def scan(buf: memoryview, plan: MessagePlan) -> Extracted:
    """Extract namespace, namespace id, other namespaces and task queues per ``plan``."""
    out = Extracted()
    _scan_message(buf, [(0, len(buf))], plan, out)
    return out


def _scan_message(
    buf: memoryview, chunks: list[tuple[int, int]], plan: MessagePlan, out: Extracted
) -> None:
    """Scan one message given as the chunks of all its occurrences (merged in order).

    Singular fields are gathered across occurrences (last scalar wins, messages merge);
    setting a member of a oneof discards what an earlier, different member gathered.
    """
    fields, oneofs = plan.fields, plan.oneofs
    singular: dict[int, list[tuple[int, int]]] = {}
    current: dict[int, int] = {}  # oneof index -> member last set
    for start, end in chunks:
        for number, wt, vs, ve in _fields(buf, start, end, out):
            group = oneofs.get(number)
            if group is not None:
                previous = current.get(group)
                if previous is not None and previous != number:
                    singular.pop(previous, None)
                current[group] = number
            p = fields.get(number)
            if p is None:
                continue
            if p.extract is Extract.TERMINATES:
                if wt != WT_VARINT:
                    raise _wrong_type(p)
                singular.setdefault(number, []).append((vs, ve))
                continue
            if wt != WT_LEN:
                raise _wrong_type(p)
            if p.repeated:
                _take(buf, p, [(vs, ve)], out)
            else:
                singular.setdefault(number, []).append((vs, ve))
    for number, occurrences in singular.items():
        _take(buf, fields[number], occurrences, out)


def _take(buf: memoryview, p: FieldPlan, chunks: list[tuple[int, int]], out: Extracted) -> None:
    kind = p.extract
    if kind is Extract.MESSAGE:
        _scan_message(buf, chunks, p.children, out)
    elif kind is Extract.TASK_QUEUE or kind is Extract.STICKY_TASK_QUEUE:
        _task_queue(buf, chunks, out, kind is Extract.STICKY_TASK_QUEUE)
    elif kind is Extract.TERMINATES:
        start, end = chunks[-1]  # a singular enum: the last occurrence wins, as int32
        if _varint(buf, start, end)[0] & 0xFFFFFFFF in p.terminating:
            out.terminates_existing = True
    else:
        start, end = chunks[-1]  # a singular string: the last occurrence wins
        value = _string(buf, start, end, p.name)
        if kind is Extract.NAMESPACE:
            out.namespace = value
        elif kind is Extract.OTHER_NAMESPACE:
            out.other_namespaces.append(value)
        elif kind is Extract.NAMESPACE_ID:
            out.namespace_id = value
        elif kind is Extract.STICKY_QUEUE_NAME:
            out.sticky_queues.append(value)
        else:
            out.task_queues.append(value)
