"""Upgrade an accepted TCP connection to TLS inside ``connection_made``, for both listeners
that serve TLS on asyncio (``server.http1`` and ``server.h2grpc``).

``loop.start_tls`` is run up to its wait for the handshake right there: the TLS layer must own
the socket before the loop reads from it (uvloop starts reading right after
``connection_made`` and ignores a ``pause_reading()`` made in it; a ClientHello read before
``start_tls`` would be lost and the handshake would hang). The rest of the handshake finishes
in a task the caller tracks (drain cancels it); a handshake that fails or stalls past its
timeout closes the connection and is logged by ``log_event``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from extauthz.server.coroutines import resume, step


def start_tls_now(transport: asyncio.Transport, protocol: asyncio.BaseProtocol,
                  context: ssl.SSLContext, timeout: float, handshakes: set[asyncio.Task[None]],
                  log: Any, log_event: str,
                  on_ready: Callable[[asyncio.Transport], None]) -> None:
    """Start the server side of a TLS handshake on ``transport`` for ``protocol``; once it is
    done, ``on_ready`` gets the TLS transport."""
    loop = asyncio.get_running_loop()
    upgrade = loop.start_tls(transport, protocol, context, server_side=True,
                             ssl_handshake_timeout=timeout)
    try:
        finished, waiting = step(upgrade)
    except Exception as exc:  # pragma: no cover (a closed transport)
        log.info(log_event, error=type(exc).__name__)
        transport.abort()
        return
    if finished:  # pragma: no cover (start_tls always waits for the handshake)
        transport.abort()
        return
    task = loop.create_task(_finish(upgrade, waiting, log, log_event, on_ready))
    handshakes.add(task)
    task.add_done_callback(handshakes.discard)


async def _finish(upgrade: Coroutine[Any, Any, asyncio.Transport | None], waiting: Any,
                  log: Any, log_event: str,
                  on_ready: Callable[[asyncio.Transport], None]) -> None:
    """Finish ``start_tls`` (``waiting``: the future its coroutine yielded), then hand over."""
    try:
        tls = await resume(upgrade, waiting)
    except asyncio.CancelledError:  # drain: start_tls closes the connection
        upgrade.close()
        raise
    except Exception as exc:  # refused certificate, timeout, reset: start_tls closed it
        log.info(log_event, error=type(exc).__name__,
                 reason=getattr(exc, "reason", None) or str(exc)[:200])
        return
    if tls is not None:
        on_ready(tls)
