"""gRPC framing: the one message of a request body, inflated when gzip. Pure: no I/O.

gzip inflates in steps, up to ``max_message_bytes`` and ``DEFAULT_MAX_GZIP_RATIO`` times the
compressed size, and at most ``MAX_GZIP_MEMBERS`` members.
"""

from __future__ import annotations

import zlib

from extauthz.model import Reason
from extauthz.wire.protobuf import BodyError

FRAME_HEADER = 5
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
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
