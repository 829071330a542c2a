"""The bounded HTTP/1.1 server (``server.http1``) with a handler of its own, no ext_authz."""

from __future__ import annotations

import asyncio

import pytest

from extauthz.server.http1 import Http1Server, Request, Response, plain

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _echo(req: Request) -> Response:
    if req.url == b"/slow":
        await asyncio.sleep(0.01)
    return plain(200, f"{req.method} {req.url.decode()} {len(req.body)}\n")


async def test_any_handler_answers_in_order_sync_or_suspended() -> None:
    """Pipelined requests reach the handler and come back in order, suspending or not."""
    srv = Http1Server(_echo)
    port = await srv.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"
                     b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
                     b"GET /b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert data.count(b"HTTP/1.1 200 OK") == 3
        bodies = [chunk.split(b"\n")[0] for chunk in data.split(b"\r\n\r\n")[1:]]
        assert bodies == [b"GET /a 0", b"POST /slow 3", b"GET /b 0"]
        assert b"connection: close" in data.split(b"\r\n\r\n")[-2]
    finally:
        await srv.drain(0.5)
