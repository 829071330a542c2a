"""The body parser fed arbitrary bytes: only ``BodyError`` (a denial) ever escapes it, and on
arbitrary protobuf wire data that both it and protobuf accept, it reads what protobuf reads."""

from __future__ import annotations

import gzip

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.grpcframe import frame, varint
from extauthz import methods, wire
from fuzz import reference

FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
ENTRIES = sorted((e for e in methods.table().values() if e.request_type and e.plan),
                 key=lambda e: e.method.path)
ENCODINGS = st.sampled_from([None, "gzip", "identity", "deflate", "GZIP", ""])


@st.composite
def wire_fields(draw: st.DrawFn, depth: int = 0) -> bytes:
    """Protobuf-shaped bytes: fields with small numbers (where the planned fields are), any
    wire type, sometimes nested, sometimes corrupt."""
    out = b""
    for _ in range(draw(st.integers(0, 5))):
        number = draw(st.integers(1, 12) | st.integers(1, 2**29 - 1))
        wt = draw(st.sampled_from([0, 1, 2, 2, 2, 5, 3, 4, 6, 7]))
        out += varint(number << 3 | wt)
        if wt == 0:
            out += varint(draw(st.integers(0, 2**64 - 1)))
        elif wt == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wt == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        elif wt == 2:
            payload = (draw(wire_fields(depth + 1)) if depth < 3 and draw(st.booleans())
                       else draw(st.sampled_from([b"default", b"payroll", b"\xff\xfe", b""])
                                 | st.binary(max_size=8)))
            out += varint(len(payload)) + payload
    if draw(st.integers(0, 9)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out


@FUZZ
@given(body=st.binary(max_size=200), encoding=ENCODINGS, entry=st.sampled_from(ENTRIES))
def test_arbitrary_bytes_raise_only_body_error(body: bytes, encoding: str | None,
                                               entry: methods.MethodEntry) -> None:
    """Any body: unframe + scan return or raise BodyError with a reason and a message."""
    try:
        wire.scan(wire.unframe(body, encoding), entry.plan)
    except wire.BodyError as exc:
        assert exc.reason and exc.message


@FUZZ
@given(message=wire_fields(), flag=st.sampled_from([0, 1]), encoding=ENCODINGS,
       lie=st.sampled_from([0, 0, 0, 1, -1]), entry=st.sampled_from(ENTRIES))
def test_framed_protobuf_shapes_raise_only_body_error(
    message: bytes, flag: int, encoding: str | None, lie: int, entry: methods.MethodEntry
) -> None:
    """Framed (maybe gzipped, maybe lying) protobuf-shaped messages: only BodyError escapes,
    and a frame length that lies is always refused."""
    payload = gzip.compress(message) if flag else message
    declared = len(payload) + lie if len(payload) + lie >= 0 else 1
    body = frame(payload, flag, declared)
    try:
        wire.scan(wire.unframe(body, encoding), entry.plan)
    except wire.BodyError:
        return
    assert declared == len(payload)


@FUZZ
@given(message=wire_fields(), entry=st.sampled_from(ENTRIES))
def test_when_both_accept_arbitrary_wire_data_they_agree(message: bytes,
                                                         entry: methods.MethodEntry) -> None:
    """On arbitrary wire data, whenever the scanner and protobuf both accept the bytes, the
    scanner's namespace/id/targets/queues are protobuf's (where they disagree about
    accepting, the scanner refusing means a deny, protobuf refusing means Temporal refuses)."""
    try:
        found = reference.scanned(wire.scan(memoryview(message), entry.plan))
    except wire.BodyError:
        return
    try:
        parsed = reference.message_class(entry.request_type).FromString(message)
    except DecodeError:
        return
    assert found == reference.extract(parsed)


@pytest.mark.parametrize("members", [2, 3])
def test_multi_member_gzip_decodes_like_python_gzip(members: int) -> None:
    """Every gzip member is decoded, in order, as Python's gzip (and grpc-go) do."""
    parts = [f"part{i}".encode() for i in range(members)]
    data = b"".join(gzip.compress(p) for p in parts)
    assert wire.gunzip_all(data, 1 << 20) == gzip.decompress(data) == b"".join(parts)
