"""HTTP/2 framing (RFC 9113) and the HPACK encodings of the few header blocks a unary gRPC
server sends, built once: response headers, ``grpc-status: 0`` trailers, error trailers.

The encodings never use the dynamic table (literals without indexing), so a precomputed block
is valid on every connection whatever HPACK state the peer keeps; decoding uses ``hpack``.
"""

from __future__ import annotations

import struct
from typing import Final
from urllib.parse import quote

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# a frame header: (length << 8 | type) as 32 bits, flags, stream id
HEAD = struct.Struct(">IBI")
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
# flags
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB
# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65_535
DEFAULT_FRAME: Final = 16_384
MAX_FRAME_LIMIT: Final = 2**24 - 1


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header, then ``payload``."""
    return HEAD.pack(len(payload) << 8 | kind, flags, stream) + payload


def settings(values: dict[int, int]) -> bytes:
    """A SETTINGS frame carrying ``values``."""
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


def window_update(stream: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return frame(WINDOW_UPDATE, 0, stream, _U32.pack(increment))


def rst_stream(stream: int, code: int) -> bytes:
    """A RST_STREAM frame."""
    return frame(RST_STREAM, 0, stream, _U32.pack(code))


def goaway(last_stream: int, code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame."""
    return frame(GOAWAY, 0, 0, _U32.pack(last_stream) + _U32.pack(code) + debug)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) pairs of a SETTINGS payload (its length a multiple of 6)."""
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def u32(payload: bytes, offset: int = 0) -> int:
    """The big-endian 32-bit integer at ``offset``."""
    value: int = _U32.unpack_from(payload, offset)[0]
    return value


# ---- HPACK encoding (RFC 7541), literals without indexing only ------------------------------


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0) + data


def literal(name: bytes, value: bytes) -> bytes:
    """``name: value`` as a literal header field without indexing, new name (no Huffman)."""
    return b"\x00" + _string(name) + _string(value)


STATUS_200: Final = b"\x88"  # static table index 8
RESPONSE_HEADERS: Final = STATUS_200 + literal(b"content-type", b"application/grpc")
TRAILERS_OK: Final = literal(b"grpc-status", b"0")


def trailers(code: int, message: str = "") -> bytes:
    """The header block of gRPC trailers with status ``code`` and a percent-encoded message."""
    block = literal(b"grpc-status", str(code).encode())
    if message:
        block += literal(b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")
                         .encode("ascii"))
    return block


def trailers_only(code: int, message: str) -> bytes:
    """A trailers-only response (an error before any message): status, content type, status."""
    return RESPONSE_HEADERS + trailers(code, message)


def grpc_message(payload: bytes) -> bytes:
    """``payload`` as one uncompressed gRPC length-prefixed message."""
    return b"\x00" + _U32.pack(len(payload)) + payload
