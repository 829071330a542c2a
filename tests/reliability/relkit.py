"""Tools for the reliability suite: a raw HTTP/2 (h2c) gRPC client that can send what no gRPC
library will (lying frame lengths, two frames, any ``grpc-encoding``, any ``:path``), the
authz server's audit log as "what the authorizer decided on", a TCP proxy that resets or
stalls connections on demand, a bounded load driver, process RSS/fd readings and the report
files RELIABILITY.md quotes."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events

# --------------------------------------------------------------------------------------------
# raw h2c gRPC calls
# --------------------------------------------------------------------------------------------


@dataclass
class RawResult:
    """What came back: HTTP status, gRPC status/message (headers or trailers), the body."""

    http_status: int
    grpc_status: int | None
    grpc_message: str
    body: bytes
    headers: dict[str, str]
    reset: bool = False


def raw_call(address: tuple[str, int], path: str, body: bytes,
             headers: Sequence[tuple[str, str]] = (), *, timeout: float = 15.0,
             content_type: str = "application/grpc", method: str = "POST",
             chunk: int = 16_384) -> RawResult:
    """One HTTP/2 request over a fresh cleartext connection, headers sent verbatim."""
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                       validate_outbound_headers=False,
                                       normalize_outbound_headers=False,
                                       validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    sock = socket.create_connection(address, timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        conn.initiate_connection()
        conn.increment_flow_control_window(2**30)
        sock.sendall(conn.data_to_send())
        stream = conn.get_next_available_stream_id()
        req = [(":method", method), (":scheme", "http"), (":path", path),
               (":authority", f"{address[0]}:{address[1]}")]
        if content_type:
            req.append(("content-type", content_type))
        req += [("te", "trailers"), *headers]
        conn.send_headers(stream, req, end_stream=not body)
        sock.sendall(conn.data_to_send())
        pending = memoryview(body)
        resp_headers: dict[str, str] = {}
        trailers: dict[str, str] = {}
        data = bytearray()
        done = reset = False
        while not done:
            # send as much of the body as flow control allows
            while pending:
                window = min(conn.local_flow_control_window(stream), conn.max_outbound_frame_size,
                             chunk)
                if window <= 0:
                    break
                piece, pending = pending[:window], pending[window:]
                conn.send_data(stream, bytes(piece), end_stream=not pending)
            sock.sendall(conn.data_to_send())
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                incoming = sock.recv(1 << 16)
            except TimeoutError:
                raise TimeoutError(f"no answer to {path} within {timeout}s") from None
            except ConnectionResetError:
                reset = True
                break
            if not incoming:
                reset = True
                break
            for event in conn.receive_data(incoming):
                if isinstance(event, h2.events.ResponseReceived):
                    resp_headers = {_s(k): _s(v) for k, v in event.headers}
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = {_s(k): _s(v) for k, v in event.headers}
                elif isinstance(event, h2.events.StreamEnded | h2.events.ConnectionTerminated):
                    done = True
                elif isinstance(event, h2.events.StreamReset):
                    done = reset = True
            with contextlib.suppress(OSError):
                sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    status_src = trailers if "grpc-status" in trailers else resp_headers
    grpc_status = int(status_src["grpc-status"]) if "grpc-status" in status_src else None
    return RawResult(int(resp_headers.get(":status", "0")), grpc_status,
                     status_src.get("grpc-message", ""), bytes(data), resp_headers, reset)


def _s(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def unframe_response(body: bytes) -> bytes:
    """The message of a one-frame gRPC response body (gzip-compressed or not)."""
    assert len(body) >= 5 and body[0] in (0, 1), body[:16]
    message = body[5:5 + int.from_bytes(body[1:5], "big")]
    return gzip.decompress(message) if body[0] == 1 else message


# --------------------------------------------------------------------------------------------
# the authorizer's view: the audit log (JSON lines, every decision sampled)
# --------------------------------------------------------------------------------------------


AUDIT_ENV = {"EXTAUTHZ_LOG_FORMAT": "json", "EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE": "1"}


def audit_events(log_path: Path) -> dict[str, dict[str, Any]]:
    """Audit events of the authz server's log, keyed by request id."""
    out: dict[str, dict[str, Any]] = {}
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "authz.decision" and event.get("request_id"):
            out[str(event["request_id"])] = event
    return out


def wait_audit(log_path: Path, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The audit event of ``request_id`` (it is written right after the decision)."""
    deadline = time.monotonic() + timeout
    while True:
        event = audit_events(log_path).get(request_id)
        if event is not None:
            return event
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit event for request {request_id}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# a TCP proxy that can reset or stall the connections through it (Envoy ↔ authz)
# --------------------------------------------------------------------------------------------


class ChaosProxy:
    """Forwards loopback TCP to ``upstream``; ``reset_all`` tears down every connection with a
    TCP RST; ``stalled`` stops forwarding (bytes are held, not lost) until cleared."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closing = False
        self.accepted = 0
        self.resets = 0
        self.stalled = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> ChaosProxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                _rst(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
                self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                while self.stalled.is_set() and not self._closing:
                    time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def reset_all(self) -> int:
        """RST every open connection (both sides); how many pairs were reset."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            _rst(client)
            _rst(server)
        self.resets += len(pairs)
        return len(pairs)

    def close(self) -> None:
        self._closing = True
        self.stalled.clear()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset_all()


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()


# --------------------------------------------------------------------------------------------
# bounded load
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One call of a load run."""

    kind: str  # what the caller was doing ("authorized", "forbidden", ...)
    started: float
    ended: float
    code: str  # grpc status name


@dataclass
class Load:
    """``threads`` callers looping ``call(kind) -> status name`` until stopped (or ``limit``
    seconds pass: the run always ends by itself)."""

    call: Callable[[str], str]
    kinds: Sequence[str]
    threads: int = 4
    limit: float = 120.0
    pause: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self._deadline = time.monotonic() + self.limit
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, index: int) -> None:
        n = index
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            kind = self.kinds[n % len(self.kinds)]
            n += 1
            started = time.monotonic()
            code = self.call(kind)
            with self._lock:
                self.outcomes.append(Outcome(kind, started, time.monotonic(), code))
            if self.pause:
                time.sleep(self.pause)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)
        return self.snapshot()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def wait_calls(load: Load, since: float, count: int = 8, kind: str | None = None,
               timeout: float = 30.0) -> None:
    """Wait until ``count`` calls (of ``kind``) that started at or after ``since`` have ended:
    a phase of the run bounded by calls made, not by a clock that a loaded machine stretches."""
    deadline = time.monotonic() + timeout
    while True:
        done = sum(1 for o in load.snapshot()
                   if o.started >= since and (kind is None or o.kind == kind))
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {count} {kind or 'any'} calls since the "
                                 f"phase began ended within {timeout}s")
        time.sleep(0.05)


def tally(outcomes: Iterable[Outcome], start: float = 0.0, end: float = float("inf"),
          ) -> Counter[tuple[str, str]]:
    """(kind, code) counts of the calls that started in [start, end)."""
    return Counter((o.kind, o.code) for o in outcomes if start <= o.started < end)


# --------------------------------------------------------------------------------------------
# process resources
# --------------------------------------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (the authz server and its workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return sorted(pids)


def rss_bytes(pids: Iterable[int]) -> int:
    """Summed resident set size."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def open_fds(pids: Iterable[int]) -> int:
    """Summed open file descriptors."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def report_dir(default: Path) -> Path:
    """Where figures go: ``EXTAUTHZ_REPORT_DIR`` or ``default``."""
    out = Path(os.environ.get("EXTAUTHZ_REPORT_DIR", str(default)))
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_report(directory: Path, name: str, data: dict[str, Any]) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    return path
