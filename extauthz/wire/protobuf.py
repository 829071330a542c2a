"""The protobuf wire walker: field keys, varints, the scan budget and what a scan finds. Pure.

``walk_fields`` walks one message's fields by their lengths, charging every field to the request's
budget (``Extracted.spend``) as it is met; ``BodyError`` is what every reader raises for a body
that cannot be judged (the caller denies).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from extauthz.model import Method, Reason, Target

WT_VARINT, WT_I64, WT_LEN, WT_SGROUP, WT_EGROUP, WT_I32 = 0, 1, 2, 3, 4, 5
# Budget units one request may spend (docs/measurements.md, "Cost of one body"). A workflow
# task scheduling 2,000 SDK-sized activities (Temporal's default cap on pending activities)
# spends ~98,000; 120,000 leaves ~20% headroom and bounds any body to ~20-25 ms of CPU on a
# slow, shared core.
DEFAULT_SCAN_BUDGET = 120_000
# Budget units, calibrated so that one unit is about the CPU of skipping one two-byte field
# (``python -m bench.worst_body``; docs/measurements.md): a field the plan reads costs
# more than one it skips, entering a message (a call, two dicts) more still.
FIELD_COST = 1  # a field skipped by its length
WATCHED_COST = 3  # extra for a field the plan reads (or a member of its oneof)
CHUNK_COST = 2  # one occurrence of a message, to walk
MESSAGE_COST = 5  # entering a message's scan
TASK_QUEUE_COST = 3  # reading one TaskQueue (on top of its chunks)
TASK_QUEUE_FIELD_COST = 5  # a field of a TaskQueue (read through ``walk_fields``)
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
            raise over_budget()



def varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
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


def over_budget() -> BodyError:
    return BodyError(
        Reason.BODY_TOO_LARGE,
        "the request has too many protobuf fields and messages to inspect "
        f"(over the scan budget of {DEFAULT_SCAN_BUDGET} units)",
    )


def past_end() -> BodyError:
    return BodyError(Reason.MALFORMED_BODY, "protobuf field runs past the end of the message")


def bad_wire_type(wire_type: int) -> BodyError:
    return BodyError(Reason.MALFORMED_BODY, f"protobuf wire type {wire_type} is not accepted")


def walk_fields(buf: memoryview, start: int, end: int, out: Extracted) -> Iterator[Field]:
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
            key, pos = varint(buf, pos, end)
        budget -= TASK_QUEUE_FIELD_COST
        if budget < 0:
            out.budget = budget
            raise over_budget()
        wire_type = key & 7
        if key < 8:
            raise BodyError(Reason.MALFORMED_BODY, "protobuf field number 0 is invalid")
        vstart = pos
        if wire_type == WT_LEN:
            size = buf[pos] if pos < end else 0x80
            if size < 0x80:
                vstart = pos + 1
            else:
                size, vstart = varint(buf, pos, end)
            pos = vstart + size
        elif wire_type == WT_VARINT:
            pos = varint(buf, pos, end)[1]
            # the value's bytes only: ``_task_queue`` reads the varint again
        elif wire_type == WT_I64:
            pos += 8
        elif wire_type == WT_I32:
            pos += 4
        else:
            raise bad_wire_type(wire_type)
        if pos > end:
            raise past_end()
        out.budget = budget
        yield key >> 3, wire_type, vstart, pos
        budget = out.budget
    out.budget = budget


def string(buf: memoryview, start: int, end: int, what: str) -> str:
    try:
        return str(buf[start:end], "utf-8")
    except UnicodeDecodeError:
        raise BodyError(Reason.MALFORMED_BODY, f"{what} is not valid UTF-8") from None

