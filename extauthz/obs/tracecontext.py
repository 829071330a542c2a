"""W3C Trace Context (level 1): the ``traceparent`` and ``tracestate`` headers. Pure: no I/O.

Parsing follows the spec, with its rules for later versions: lower-case hex only, version
``ff`` invalid, all-zero ids invalid, version ``00`` exactly 55 characters. A malformed
``tracestate`` is dropped whole (the trace itself continues).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# header values longer than this are not parsed at all (tracestate's own limit is 32 members
# of at most 256 + 256 characters; propagators are asked to keep it under 512)
MAX_HEADER_CHARS = 8192
MAX_TRACESTATE_MEMBERS = 32

_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^,]*)?", re.ASCII)
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
# W3C tracestate list-member: key "=" value
_TRACESTATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])", re.ASCII)


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid ``traceparent``: the caller's trace and the id of its span (our parent)."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        """The caller recorded its span (flag bit 0)."""
        return bool(self.flags & 0x01)


def parse_traceparent(value: str | None) -> TraceParent | None:
    """``version-traceid-parentid-flags`` → TraceParent, or None when absent or invalid."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return TraceParent(int(trace_id, 16), int(span_id, 16), int(flags, 16))


def parse_tracestate(value: str | None) -> tuple[tuple[str, str], ...]:
    """``key=value,...`` → the members in order; () when absent or invalid (then the whole
    header is dropped, as the W3C spec allows: the trace itself continues)."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return ()
    members: dict[str, str] = {}
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None or match.group(1) in members:
            return ()
        members[match.group(1)] = match.group(2)
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return ()
    return tuple(members.items())
