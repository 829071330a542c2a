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

Cost is bounded before authorization: every field walked, message entered and occurrence
gathered is charged to a budget as it is met (``DEFAULT_SCAN_BUDGET`` units; a body over it is
refused ``body_too_large``); fields the plan does not read are skipped and never stored, and
the occurrences of a merged message are kept as a flat ``array`` of offsets. gzip inflates in
steps, up to ``max_message_bytes`` and ``DEFAULT_MAX_GZIP_RATIO`` times the compressed size.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from extauthz.methods import Extract, FieldPlan, MessagePlan
from extauthz.model import Method, Reason, Target

FRAME_HEADER = 5
WT_VARINT, WT_I64, WT_LEN, WT_SGROUP, WT_EGROUP, WT_I32 = 0, 1, 2, 3, 4, 5
TASK_QUEUE_KIND_STICKY = 2
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Budget units one request may spend (README, "Cost of one body"). A workflow task scheduling
# 2,000 SDK-sized activities (Temporal's default cap on pending activities) spends ~98,000;
# 120,000 leaves ~20% headroom and bounds any body to ~20-25 ms of CPU on a slow, shared core.
DEFAULT_SCAN_BUDGET = 120_000
# Budget units, calibrated so that one unit is about the CPU of skipping one two-byte field
# (``python -m bench.worst_body``; README "Cost of one body"): a field the plan reads costs
# more than one it skips, entering a message (a call, two dicts) more still.
FIELD_COST = 1  # a field skipped by its length
WATCHED_COST = 3  # extra for a field the plan reads (or a member of its oneof)
CHUNK_COST = 2  # one occurrence of a message, to walk
MESSAGE_COST = 5  # entering a message's scan
TASK_QUEUE_COST = 3  # reading one TaskQueue (on top of its chunks)
TASK_QUEUE_FIELD_COST = 5  # a field of a TaskQueue (read through ``_fields``)
# gzip: inflate at most this many times the compressed size (never less than the floor).
# Measured: real traffic inflates 12-37x (SDK commands, histories and records as JSON), the
# most repetitive legit payloads ~290-400x (identical JSON records, a repeated CSV line);
# zeros reach deflate's ceiling, ~1000x. A bomb is refused once past the limit.
DEFAULT_MAX_GZIP_RATIO = 512
GZIP_RATIO_FLOOR = 64 * 1024  # small messages: the ratio of a tiny stream means nothing
GZIP_STEP = 256 * 1024
# gzip members one message may hold: gRPC clients send one; grpc-go reads any number, but each
# member costs a decompressor and a copy of the rest of the body (an outside review sent 200 k
# empty members: ~13 s of CPU before this cap)
MAX_GZIP_MEMBERS = 4  # inflate in steps: a refused bomb never holds more than the limit
Field = tuple[int, int, int, int]


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
            raise _over_budget()


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


def gunzip_all(
    data: memoryview | bytes, cap: int, max_ratio: int = DEFAULT_MAX_GZIP_RATIO
) -> bytearray:
    """Decompress every gzip member in order, as grpc-go does, stopping at the inflation limit.

    The limit is ``cap`` bytes and ``max_ratio`` times the compressed size (never less than
    ``GZIP_RATIO_FLOOR``): inflation runs in steps of ``GZIP_STEP`` bytes into one buffer, so
    a bomb is refused after allocating at most the limit, never more.
    """
    if not data:
        raise BodyError(Reason.MALFORMED_BODY, "empty gzip message")
    limit = min(cap, max(GZIP_RATIO_FLOOR, max_ratio * len(data)))
    out = bytearray()
    rest: memoryview | bytes = data
    members = 0
    while rest:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise BodyError(Reason.BODY_TOO_LARGE,
                            f"gzip message has more than {MAX_GZIP_MEMBERS} members")
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(rest, min(GZIP_STEP, limit + 1 - len(out)))
            while d.unconsumed_tail and not d.eof and len(out) <= limit:
                out += d.decompress(d.unconsumed_tail, min(GZIP_STEP, limit + 1 - len(out)))
        except zlib.error as exc:
            raise BodyError(Reason.MALFORMED_BODY, f"gzip message is corrupt: {exc}") from None
        if len(out) > limit:
            if limit < cap:
                raise BodyError(
                    Reason.BODY_TOO_LARGE,
                    f"gzip message inflates more than {max_ratio} times its {len(data)} bytes",
                )
            raise BodyError(Reason.BODY_TOO_LARGE, f"gzip message inflates past {cap} bytes")
        if not d.eof:
            raise BodyError(Reason.MALFORMED_BODY, "gzip message is truncated")
        rest = d.unused_data
    return out


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


def _over_budget() -> BodyError:
    return BodyError(
        Reason.BODY_TOO_LARGE,
        "the request has too many protobuf fields and messages to inspect "
        f"(over the scan budget of {DEFAULT_SCAN_BUDGET} units)",
    )


def _past_end() -> BodyError:
    return BodyError(Reason.MALFORMED_BODY, "protobuf field runs past the end of the message")


def _bad_wire_type(wire_type: int) -> BodyError:
    return BodyError(Reason.MALFORMED_BODY, f"protobuf wire type {wire_type} is not accepted")


def _fields(buf: memoryview, start: int, end: int, out: Extracted) -> Iterator[Field]:
    """Every (field number, wire type, value start, value end) of a message, in order.

    A generator: nothing is kept, and the budget is charged one unit per field as it goes.
    """
    budget = out.budget
    pos = start
    while pos < end:
        key = buf[pos]  # one-byte varints (fields 1-15, lengths < 128) without a call
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos, end)
        budget -= TASK_QUEUE_FIELD_COST
        if budget < 0:
            out.budget = budget
            raise _over_budget()
        wire_type = key & 7
        if key < 8:
            raise BodyError(Reason.MALFORMED_BODY, "protobuf field number 0 is invalid")
        vstart = pos
        if wire_type == WT_LEN:
            size = buf[pos] if pos < end else 0x80
            if size < 0x80:
                vstart = pos + 1
            else:
                size, vstart = _varint(buf, pos, end)
            pos = vstart + size
        elif wire_type == WT_VARINT:
            pos = _varint(buf, pos, end)[1]
            # the value's bytes only: ``_task_queue`` reads the varint again
        elif wire_type == WT_I64:
            pos += 8
        elif wire_type == WT_I32:
            pos += 4
        else:
            raise _bad_wire_type(wire_type)
        if pos > end:
            raise _past_end()
        out.budget = budget
        yield key >> 3, wire_type, vstart, pos
        budget = out.budget
    out.budget = budget


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
    buf: memoryview, chunks: Iterable[tuple[int, int]], out: Extracted, sticky_field: bool
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


def _queue_token(buf: memoryview, start: int, end: int, out: Extracted) -> None:
    """The task queue a QueryTask / NexusTask token names (its field 2, the last one wins).

    The server routes the response to that queue's pending task, so it is the queue acted on;
    a worker answers queries from its sticky queue too, so it is judged as one (a token that
    is not such a message is refused: the server could not read it either)."""
    queue = None
    for number, wt, vs, ve in _fields(buf, start, end, out):
        if number == 2:
            if wt != WT_LEN:
                raise BodyError(Reason.MALFORMED_BODY, "the task token's queue has the wrong type")
            queue = _string(buf, vs, ve, "the task token's queue")
    if queue:
        out.sticky_queues.append(queue)


def scan(buf: memoryview, plan: MessagePlan) -> Extracted:
    """Extract namespace, namespace id, other namespaces and task queues per ``plan``."""
    out = Extracted()
    try:
        _scan_message(buf, (0, len(buf)), plan, out)
    except IndexError:  # a varint or length read at the very end of the message
        raise BodyError(
            Reason.MALFORMED_BODY, "protobuf message is truncated (a varint runs past its end)"
        ) from None
    return out


def _watched(plan: MessagePlan) -> frozenset[int]:
    """The field keys (number and any wire type) the scan of ``plan`` must stop at: planned
    fields, members of their oneofs, and field number 0 (invalid)."""
    numbers = {0, *plan.fields, *plan.oneofs}
    keys = frozenset(n << 3 | wt for n in numbers for wt in range(8))
    _WATCHED[id(plan)] = (plan, keys)
    return keys


_WATCHED: dict[int, tuple[MessagePlan, frozenset[int]]] = {}
_MERGED = frozenset({Extract.MESSAGE, Extract.TASK_QUEUE, Extract.STICKY_TASK_QUEUE})


def _scan_message(  # noqa: PLR0915 (one function on purpose: the field loop is the hot path)
    buf: memoryview, chunks: Sequence[int], plan: MessagePlan, out: Extracted
) -> None:
    """Scan one message given as the chunks of all its occurrences (merged in order):
    ``chunks`` is flat, ``start, end, start, end, ...``.

    Singular fields are gathered across occurrences (last scalar wins, messages merge);
    setting a member of a oneof discards what an earlier, different member gathered. Fields
    the plan does not name are skipped by their length, one budget unit each, and never kept.
    """
    fields, oneofs = plan.fields, plan.oneofs
    hit = _WATCHED.get(id(plan))
    watched = hit[1] if hit is not None and hit[0] is plan else _watched(plan)
    singular: dict[int, tuple[int, int] | array[int]] = {}
    current: dict[int, int] = {}  # oneof index -> member last set
    budget = out.budget - MESSAGE_COST - CHUNK_COST * (len(chunks) >> 1)
    if budget < 0:
        out.budget = budget
        raise _over_budget()
    for i in range(0, len(chunks), 2):
        pos, end = chunks[i], chunks[i + 1]
        while pos < end:
            key = buf[pos]
            pos += 1
            if key > 0x7F:
                key, pos = _varint(buf, pos - 1, end)
            budget -= 1  # FIELD_COST (literals and locals: this loop is the hot path)
            if budget < 0:
                out.budget = budget
                raise _over_budget()
            wt = key & 7
            if wt == 2:  # WT_LEN
                size = buf[pos]
                pos += 1
                if size > 0x7F:
                    size, pos = _varint(buf, pos - 1, end)
                vs = pos
                pos += size
            elif wt == 0:  # WT_VARINT
                vs = pos
                if buf[pos] < 0x80:
                    pos += 1
                else:  # skip to the last byte; one unit per byte
                    pos += 1
                    while buf[pos] > 0x7F:
                        pos += 1
                    pos += 1
                    if pos - vs > 10:
                        raise BodyError(Reason.MALFORMED_BODY, "protobuf varint is too long")
                    budget -= (pos - vs) // 3  # ~4 units for the longest
            elif wt == WT_I64:
                pos += 8
            elif wt == WT_I32:
                pos += 4
            else:
                raise _bad_wire_type(wt)
            if key not in watched:
                continue
            if pos > end:
                raise _past_end()
            budget -= WATCHED_COST
            number = key >> 3
            if not number:
                raise BodyError(Reason.MALFORMED_BODY, "protobuf field number 0 is invalid")
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
                singular[number] = (vs, pos)  # a scalar: the last occurrence counts
                continue
            if wt != WT_LEN:
                raise _wrong_type(p)
            if p.repeated:
                out.budget = budget
                _take(buf, p, (vs, pos), out)
                budget = out.budget
            else:
                occurrences = singular.get(number)
                if occurrences is None or p.extract not in _MERGED:
                    singular[number] = (vs, pos)  # the first, or a string: the last counts
                else:  # a message sent again: merged, so every occurrence counts
                    if type(occurrences) is tuple:
                        occurrences = singular[number] = array("q", occurrences)
                    occurrences.append(vs)  # type: ignore[union-attr]
                    occurrences.append(pos)  # type: ignore[union-attr]
        if pos != end:
            raise _past_end()
    out.budget = budget
    for number, occurrences in singular.items():
        _take(buf, fields[number], occurrences, out)


def _take(buf: memoryview, p: FieldPlan, chunks: Sequence[int], out: Extracted) -> None:
    kind = p.extract
    if kind is Extract.MESSAGE:
        _scan_message(buf, chunks, p.children, out)
    elif kind is Extract.TASK_QUEUE or kind is Extract.STICKY_TASK_QUEUE:
        out.spend(TASK_QUEUE_COST + CHUNK_COST * (len(chunks) >> 1))
        it = iter(chunks)
        _task_queue(buf, zip(it, it, strict=False), out, kind is Extract.STICKY_TASK_QUEUE)
    elif kind is Extract.QUEUE_TOKEN:
        _queue_token(buf, chunks[-2], chunks[-1], out)  # bytes: the last occurrence wins
    elif kind is Extract.TERMINATES:
        # a singular enum: the last occurrence wins, read as int32 (the low 32 bits)
        if _varint(buf, chunks[-2], chunks[-1])[0] & 0xFFFFFFFF in p.terminating:
            out.terminates_existing = True
    else:
        start, end = chunks[-2], chunks[-1]  # a singular string: the last occurrence wins
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
