"""Executing a method's scan plan over its message: the fields it names, read as protobuf reads
them (last scalar wins, singular messages merge, oneof members discard each other). Pure.

``scan`` is the entry point; ``_scan_message`` is the hot loop (locals and literals on purpose).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

from extauthz.methods import Extract, FieldPlan, MessagePlan
from extauthz.model import Reason
from extauthz.wire.protobuf import (
    CHUNK_COST,
    MESSAGE_COST,
    TASK_QUEUE_COST,
    WATCHED_COST,
    WT_I32,
    WT_I64,
    WT_LEN,
    WT_VARINT,
    BodyError,
    Extracted,
    bad_wire_type,
    over_budget,
    past_end,
    string,
    varint,
    walk_fields,
)

TASK_QUEUE_KIND_STICKY = 2


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
        for number, wt, vs, ve in walk_fields(buf, start, end, out):
            if number in (1, 3):
                if wt != WT_LEN:
                    raise BodyError(Reason.MALFORMED_BODY, "task queue name has the wrong type")
                value = string(buf, vs, ve, "task queue name")
                if number == 1:
                    name = value
                else:
                    normal = value
            elif number == 2:
                if wt != WT_VARINT:
                    raise BodyError(Reason.MALFORMED_BODY, "task queue kind has the wrong type")
                # an enum is an int32 on the wire: parsers keep the low 32 bits
                kind = varint(buf, vs, ve)[0] & 0xFFFFFFFF
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
    for number, wt, vs, ve in walk_fields(buf, start, end, out):
        if number == 2:
            if wt != WT_LEN:
                raise BodyError(Reason.MALFORMED_BODY, "the task token's queue has the wrong type")
            queue = string(buf, vs, ve, "the task token's queue")
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
        raise over_budget()
    for i in range(0, len(chunks), 2):
        pos, end = chunks[i], chunks[i + 1]
        while pos < end:
            key = buf[pos]
            pos += 1
            if key > 0x7F:
                key, pos = varint(buf, pos - 1, end)
            budget -= 1  # FIELD_COST (literals and locals: this loop is the hot path)
            if budget < 0:
                out.budget = budget
                raise over_budget()
            wt = key & 7
            if wt == 2:  # WT_LEN
                size = buf[pos]
                pos += 1
                if size > 0x7F:
                    size, pos = varint(buf, pos - 1, end)
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
                raise bad_wire_type(wt)
            if key not in watched:
                continue
            if pos > end:
                raise past_end()
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
            raise past_end()
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
        if varint(buf, chunks[-2], chunks[-1])[0] & 0xFFFFFFFF in p.terminating:
            out.terminates_existing = True
    else:
        start, end = chunks[-2], chunks[-1]  # a singular string: the last occurrence wins
        value = string(buf, start, end, p.name)
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
