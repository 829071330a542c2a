"""The gRPC length-prefixed message frame (a flag byte, a 4-byte big-endian length, the message),
and the protobuf varint, as tests and the bench build request bodies for the Check handler and
Envoy."""

from __future__ import annotations


def frame(message: bytes, flag: int = 0, declared: int | None = None) -> bytes:
    """One gRPC length-prefixed message: ``flag`` 1 marks it compressed; ``declared`` may lie
    about the length (default: the message's own)."""
    length = len(message) if declared is None else declared
    return bytes([flag]) + length.to_bytes(4, "big") + message


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative ``n``."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)
