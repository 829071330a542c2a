"""The local development stack: Temporal behind Envoy and temporal-extauthz, on loopback.

``./dev stack`` (or ``python -m devkit stack``, ``python -m devkit.stack``) starts, in order:

1. a Temporal dev server (``temporal server start-dev --headless``) on 127.0.0.1:7234 with the
   namespaces ``default`` and ``payroll``, persisted in ``.stack/temporal.db``;
2. the development OIDC issuer (``devkit.issuer``) on 127.0.0.1:8899 (its default, so
   ``./dev token`` finds it), keys in ``.stack/issuer/``;
3. the authz server (``python -m extauthz serve``) on 127.0.0.1:9191, trusting that issuer for
   audience ``temporal``;
   (``--transport http``: Envoy's HTTP ext_authz protocol on 127.0.0.1:9192 instead);
4. Envoy from ``envoy/envoy.yaml`` (``--transport http``: ``envoy/envoy-http.yaml``) on
   127.0.0.1:7233, so the ``temporal`` CLI's default address
   goes through authorization (admin on 127.0.0.1:9901, internal listener on 127.0.0.1:7235).

It checks that an allowed call passes and a denied one is refused, prints what runs where with
copy-paste examples, and runs until Ctrl-C or SIGTERM, then stops everything (Envoy first).
Logs, rendered config and state are in ``.stack/`` (gitignored); ``.stack/stack.json`` records
the addresses. If a component dies, the others are stopped and the exit status is 1.

Development only: the issuer mints any token for anyone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from devkit import components, plain, tokens
from devkit.ports import LOOPBACK, port_open
from devkit.procs import ManagedProcess, StartupError

DESCRIBE_NAMESPACE = "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace"


@dataclass(frozen=True)
class StackConfig:
    """Where the stack's components listen, and where its state goes."""

    state_dir: Path = field(default_factory=lambda: Path(".stack"))
    host: str = LOOPBACK
    envoy_port: int = 7233
    temporal_port: int = 7234
    # Temporal's HTTP API (`--http-port`), reached through Envoy's external listener
    temporal_http_port: int = 7243
    internal_port: int = 7235
    authz_port: int = 9191
    admin_port: int = 9901
    issuer_port: int = tokens.DEFAULT_PORT
    namespaces: tuple[str, ...] = ("default", "payroll")
    persist: bool = True
    # Envoy's ext_authz protocol: grpc (authz_port) or http (authz_http_port)
    transport: str = "grpc"
    authz_http_port: int = 9192

    @property
    def check_port(self) -> int:
        """Where Envoy sends checks for this transport."""
        return self.authz_http_port if self.transport == "http" else self.authz_port

    @property
    def issuer_url(self) -> str:
        """The dev issuer's URL (its ``iss``)."""
        return f"http://{self.host}:{self.issuer_port}"

    def address(self, port: int) -> tuple[str, int]:
        """``(host, port)``."""
        return (self.host, port)


def _check_ports_free(config: StackConfig) -> None:
    taken = [
        f"{config.host}:{port} ({what})"
        for what, port in (
            ("Envoy", config.envoy_port),
            ("Temporal", config.temporal_port),
            ("Temporal HTTP API", config.temporal_http_port),
            ("Envoy internal", config.internal_port),
            ("extauthz", config.check_port),
            ("Envoy admin", config.admin_port),
            ("dev issuer", config.issuer_port),
        )
        if port_open(config.host, port)
    ]
    if taken:
        raise RuntimeError(
            "ports already in use: " + ", ".join(taken)
            + " (another stack or `temporal server start-dev` running?)"
        )


def _describe(target: str, token: str | None, namespace: str) -> str:
    """DescribeNamespace through ``target``: the gRPC status name."""
    import grpc
    from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(DESCRIBE_NAMESPACE)
        try:
            call(rr.DescribeNamespaceRequest(namespace=namespace).SerializeToString(),
                 timeout=10, metadata=metadata)
        except grpc.RpcError as err:
            code = err.code()
            return str(code.name)
    return "OK"


def self_check(config: StackConfig) -> list[str]:
    """Problems found by one allowed and two denied calls through Envoy (empty: all good)."""
    target = f"{config.host}:{config.envoy_port}"
    reader = tokens.mint(config.issuer_url, {"sub": "stack-check",
                                             "permissions": ["default:read"]})
    problems = []
    expected = (
        (reader, "default", "OK"),
        (reader, "payroll", "PERMISSION_DENIED"),
        (None, "default", "UNAUTHENTICATED"),
    )
    for token, namespace, want in expected:
        got = _describe(target, token, namespace)
        if got != want:
            who = "a default:read token" if token else "no token"
            problems.append(f"DescribeNamespace {namespace} with {who}: {got}, expected {want}")
    return problems


def tour(config: StackConfig) -> str:
    """The README's five-minute tour, for this stack's addresses: every step shows something
    (a write token starts a workflow first, so the allowed list has a row)."""
    token = "./dev token"
    if config.issuer_url != tokens.default_url():
        token += f" --issuer {config.issuer_url}"
    address = ""
    if (config.host, config.envoy_port) != ("127.0.0.1", 7233):
        address = f" --address {config.host}:{config.envoy_port}"
    return f"""source .venv/bin/activate
export TEMPORAL_TLS=false
WRITER=$({token} --sub alice --permissions default:write)   # dev issuer: development only
READER=$({token} --sub bob --permissions default:read)

# allowed: alice may write in default, so she starts a workflow (no worker runs it)
temporal workflow start{address} --namespace default --api-key "$WRITER" \\
  --task-queue hello --type Hello --workflow-id hello-1
# allowed: bob may read default, so he sees it
temporal workflow list{address} --namespace default --api-key "$READER"
# PERMISSION_DENIED: bob may only read
temporal workflow terminate{address} --namespace default --api-key "$READER" --workflow-id hello-1
# PERMISSION_DENIED: bob has no role in payroll
temporal workflow list{address} --namespace payroll --api-key "$READER"
# UNAUTHENTICATED: no token
temporal workflow list{address} --namespace default
"""


def banner(config: StackConfig) -> str:
    """What runs where, and the tour to copy into a second shell (from the repository root)."""
    h = config.host
    steps = "\n".join(f"  {line}" if line else "" for line in tour(config).splitlines())
    cli_default = " (the temporal CLI default)" if (h, config.envoy_port) == (
        "127.0.0.1", 7233) else ""
    return f"""
temporal-extauthz local stack is up (development only).

  Envoy (authorized)    {h}:{config.envoy_port}   <- point clients here{cli_default}
  Temporal frontend     {h}:{config.temporal_port}   (direct, NO authorization)
  Temporal HTTP API     {h}:{config.temporal_http_port}   (direct, NO authorization)
  Envoy internal        {h}:{config.internal_port}   (cluster-internal listener, NO authorization)
  {f"extauthz ({config.transport})":22}{h}:{config.check_port}
  dev OIDC issuer       {config.issuer_url}
  Envoy admin           http://{h}:{config.admin_port}
  namespaces            {", ".join(config.namespaces)}
  logs and state        {config.state_dir}/

The README's tour, in a second shell from the repository root (the CLI turns TLS on with an
API key unless TEMPORAL_TLS=false; this loopback stack speaks plain h2c):

{steps}

Temporal's HTTP API through Envoy (same policy):
  curl -s http://{h}:{config.envoy_port}/api/v1/namespaces/default \\
    -H "authorization: Bearer $READER"

Ctrl-C stops everything.
"""


class Stack:
    """The running components, started in order and stopped in reverse."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: list[ManagedProcess] = []

    def start(self, say: Callable[[str], None]) -> None:
        """Start every component; on failure stop the ones already started and re-raise."""
        c = self.config
        state = c.state_dir.resolve()
        logs = state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        _check_ports_free(c)
        try:
            say(f"starting Temporal dev server on {c.host}:{c.temporal_port} ...")
            self.processes.append(components.start_temporal(
                state, address=c.address(c.temporal_port), namespaces=c.namespaces,
                log_path=logs / "temporal.log",
                db_filename=state / "temporal.db" if c.persist else None,
                http_address=c.address(c.temporal_http_port),
            ).proc)
            say(f"starting dev issuer on {c.issuer_url} ...")
            self.processes.append(components.start_issuer(
                state, address=c.address(c.issuer_port), state_dir=state / "issuer",
                log_path=logs / "issuer.log",
            ).proc)
            say(f"starting extauthz ({c.transport}) on {c.host}:{c.check_port} ...")
            authz = components.start_extauthz(
                state, c.issuer_url, transport=c.transport, listen=c.address(c.authz_port),
                http_listen=c.address(c.authz_http_port), log_path=logs / "extauthz.log",
                # as before: in HTTP mode, health is the HTTP /healthz only
                extra_env={"EXTAUTHZ_HEALTH_LISTEN": ""})
            self.processes.append(authz.proc)
            say(f"starting Envoy on {c.host}:{c.envoy_port} ...")
            self.processes.append(components.start_envoy(
                state, authz=authz.address, upstream=c.address(c.temporal_port),
                transport=c.transport, http_upstream=c.address(c.temporal_http_port),
                listen=c.address(c.envoy_port), internal_listen=c.address(c.internal_port),
                admin=c.address(c.admin_port), config_path=state / "envoy.yaml",
                log_path=logs / "envoy.log",
            ).proc)
        except BaseException:
            self.stop()
            raise
        info = {key: str(value) if isinstance(value, Path) else value
                for key, value in asdict(c).items()}
        info["state_dir"] = str(state)
        info["issuer_url"] = c.issuer_url
        info["pids"] = {p.name: p.pid for p in self.processes}
        (state / "stack.json").write_text(json.dumps(info, indent=2) + "\n")

    def dead(self) -> list[ManagedProcess]:
        """Components that exited."""
        return [p for p in self.processes if not p.running()]

    def stop(self) -> None:
        """Stop every component, the last started first."""
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()


def run(config: StackConfig | None = None, *, check: bool = True) -> int:
    """Run the stack in the foreground until Ctrl-C/SIGTERM (0) or a component dies (1)."""
    config = config or StackConfig()

    def say(text: str) -> None:
        print(text, flush=True)

    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(config)
    try:
        try:
            stack.start(say)
        except (StartupError, RuntimeError, FileNotFoundError) as exc:
            print(f"stack: could not start: {exc}", file=sys.stderr)
            return 1
        if check:
            problems = self_check(config)
            if problems:
                print("stack: self-check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
                return 1
            say("self-check: allowed call passed, denied calls refused")
        say(banner(config))
        while not stop.wait(0.5):
            dead = stack.dead()
            if dead:
                for proc in dead:
                    print(f"stack: {proc.name} exited with status {proc.returncode}\n"
                          f"{proc.log_tail()}", file=sys.stderr)
                return 1
        say("stopping ...")
        return 0
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devkit.stack``."""
    defaults = StackConfig()
    args = parser().parse_args(argv)
    namespaces = tuple(dict.fromkeys(["default", *(args.namespaces or defaults.namespaces)]))
    config = StackConfig(
        state_dir=args.state_dir,
        envoy_port=args.envoy_port,
        temporal_port=args.temporal_port,
        temporal_http_port=args.temporal_http_port,
        internal_port=args.internal_port,
        authz_port=args.authz_port,
        authz_http_port=args.authz_http_port,
        transport=args.transport,
        admin_port=args.admin_port,
        issuer_port=args.issuer_port,
        namespaces=namespaces,
        persist=not args.in_memory,
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run(config, check=not args.no_check)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m devkit.stack`` (``./dev stack``)."""
    defaults = StackConfig()
    parser = argparse.ArgumentParser(prog="python -m devkit.stack", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=defaults.state_dir,
                        help="logs, rendered config, keys and Temporal's database "
                        f"(default: {defaults.state_dir})")
    ports = {
        "envoy": "Envoy's authorized listener (point clients here)",
        "temporal": "the Temporal frontend (gRPC, no authorization)",
        "temporal_http": "the Temporal frontend's HTTP API (no authorization)",
        "internal": "Envoy's cluster-internal listener (no authorization)",
        "authz": "extauthz's gRPC listen (the Check service with --transport grpc)",
        "authz_http": "extauthz's HTTP ext_authz listen (with --transport http)",
        "admin": "Envoy's admin interface",
        "issuer": "the development OIDC issuer",
    }
    for name, what in ports.items():
        default = getattr(defaults, f"{name}_port")
        parser.add_argument(f"--{name.replace('_', '-')}-port", type=int, default=default,
                            metavar="PORT", help=f"{what} (default: {default})")
    parser.add_argument("--transport", choices=["grpc", "http"], default=defaults.transport,
                        help="Envoy's ext_authz protocol (default: %(default)s; "
                        "docs/transports.md)")
    parser.add_argument("--namespace", action="append", dest="namespaces", metavar="NAME",
                        help="a namespace to create (repeatable; default: default, payroll)")
    parser.add_argument("--in-memory", action="store_true",
                        help="do not persist Temporal state in the state dir")
    parser.add_argument("--no-check", action="store_true", help="skip the start-up self-check")
    return parser


if __name__ == "__main__":
    sys.exit(main())
