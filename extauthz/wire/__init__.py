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

The package: ``frame`` (gRPC framing and gzip), ``protobuf`` (the field walker, the budget,
``BodyError`` and ``Extracted``) and ``extract`` (the plan execution, ``scan``). Every public
name is importable from ``extauthz.wire``.
"""

from __future__ import annotations

from extauthz.wire.extract import TASK_QUEUE_KIND_STICKY, scan
from extauthz.wire.frame import (
    DEFAULT_MAX_GZIP_RATIO,
    DEFAULT_MAX_MESSAGE_BYTES,
    FRAME_HEADER,
    GZIP_RATIO_FLOOR,
    GZIP_STEP,
    MAX_GZIP_MEMBERS,
    gunzip_all,
    unframe,
)
from extauthz.wire.protobuf import (
    CHUNK_COST,
    DEFAULT_SCAN_BUDGET,
    FIELD_COST,
    MESSAGE_COST,
    TASK_QUEUE_COST,
    TASK_QUEUE_FIELD_COST,
    WATCHED_COST,
    WT_EGROUP,
    WT_I32,
    WT_I64,
    WT_LEN,
    WT_SGROUP,
    WT_VARINT,
    BodyError,
    Extracted,
    Field,
)

__all__ = [
    "CHUNK_COST", "DEFAULT_MAX_GZIP_RATIO", "DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_SCAN_BUDGET",
    "FIELD_COST", "FRAME_HEADER", "GZIP_RATIO_FLOOR", "GZIP_STEP", "MAX_GZIP_MEMBERS",
    "MESSAGE_COST", "TASK_QUEUE_COST", "TASK_QUEUE_FIELD_COST", "TASK_QUEUE_KIND_STICKY",
    "WATCHED_COST", "WT_EGROUP", "WT_I32", "WT_I64", "WT_LEN", "WT_SGROUP", "WT_VARINT",
    "BodyError", "Extracted", "Field", "gunzip_all", "scan", "unframe",
]
