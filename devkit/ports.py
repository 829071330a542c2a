"""Loopback TCP ports for development components: pick free ones, and probe or await them.

:func:`free_ports` picks every port a component (or one rendered config) needs in one call and
keeps each socket bound until all are chosen, so one call never returns the same port twice.
The ports are free when returned; another process may still take one before the component binds
it (callers that pick ports retry on that race, see ``devkit.components``).
"""

from __future__ import annotations

import contextlib
import socket

from devkit.procs import wait_until

LOOPBACK = "127.0.0.1"
Address = tuple[str, int]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (the OS picks them; every socket
    stays bound until all are chosen, so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_addresses(count: int, host: str = LOOPBACK) -> list[Address]:
    """``count`` distinct free ``(host, port)`` addresses (see :func:`free_ports`)."""
    return [(host, port) for port in free_ports(count, host)]


def free_port(host: str = LOOPBACK) -> int:
    """One TCP port that is free on ``host`` right now; for several use :func:`free_ports`."""
    return free_ports(1, host)[0]


def target(address: Address) -> str:
    """``host:port`` for a gRPC client."""
    return f"{address[0]}:{address[1]}"


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Wait until ``host:port`` accepts TCP connections; raise ``TimeoutError`` otherwise."""
    wait_until(lambda: port_open(host, port), timeout, f"{host}:{port} to accept connections")
