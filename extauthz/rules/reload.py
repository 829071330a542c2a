"""The policy in force, swapped atomically on reload (SIGHUP or a change of the file).

``PolicyHolder`` is an ``Authorizer``: each call reads ``self.engine`` once (one attribute
load, atomic under the GIL) and decides with that compiled, immutable engine, so no request
ever sees a half-loaded policy. A reload reads and compiles the whole file first and swaps only
a valid result; an invalid file keeps the old policy, logs why (``policy_reload_failed``),
reports ``error`` to the metrics hook and sets ``status.ok = False`` (the server shows it as
the ``extauthz.policy`` health service going NOT_SERVING while the old policy keeps serving).

File watching polls ``os.stat`` every ``poll_seconds``: a change of mtime, size, inode or
ctime is acted on once the file has been stable for one more poll (an editor that writes in
place is not read half-written); identical content (same SHA-256) is not recompiled. Writing
the file atomically (write elsewhere, ``rename``: what Kubernetes ConfigMap mounts do) is still
the safe way to deploy. SIGHUP reloads immediately.

The only module of ``extauthz.rules`` that does I/O or touches asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from extauthz.model import Decision, Principal, Target
from extauthz.rules.document import Policy, PolicyError, load_bytes
from extauthz.rules.engine import Engine

log = structlog.get_logger("extauthz.policy")
StatSignature = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """What health and metrics show about the policy."""

    path: str
    ok: bool  # the file on disk is the policy in force
    digest: str = ""  # of the policy in force
    loaded_at: float = 0.0  # wall clock of the last successful load
    error: str = ""  # why the last attempt failed (when not ok)
    attempts: int = 0
    failures: int = 0


def _signature(path: Path) -> StatSignature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


class PolicyHolder:
    """Holds the compiled policy in force; an ``Authorizer`` that always uses the latest."""

    def __init__(self, path: str | os.PathLike[str],
                 on_reload: Callable[[PolicyStatus], None] | None = None):
        """Load ``path`` now; raises ``PolicyError`` if it is invalid (fail at start-up)."""
        self.path = Path(path)
        self._listeners: list[Callable[[PolicyStatus], None]] = []
        if on_reload is not None:
            self._listeners.append(on_reload)
        self._signature = _signature(self.path)
        raw = self._read()
        policy = load_bytes(raw, str(self.path))
        self.engine = Engine(policy)
        self.status = PolicyStatus(str(self.path), True, policy.digest, time.time(), "", 1, 0)
        log.info("policy_loaded", path=str(self.path), digest=policy.digest,
                 profile=policy.profile, bindings=len(policy.bindings),
                 deny_rules=len(policy.deny), dry_run=policy.dry_run)
        self._notify()

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self.engine.policy

    def __call__(self, principal: Principal, target: Target) -> Decision:
        """Decide with the policy in force (one atomic read of the engine)."""
        return self.engine.decide(principal, target)

    def subscribe(self, listener: Callable[[PolicyStatus], None]) -> None:
        """Call ``listener(status)`` after every load attempt."""
        self._listeners.append(listener)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"{self.path}: cannot read the policy file: {exc.strerror}"
                              ) from None

    def reload(self, why: str = "request") -> bool:
        """Load the file again; swap only if valid. Returns whether the policy in force is
        now the file's content. Never raises."""
        self._signature = _signature(self.path)
        attempts = self.status.attempts + 1
        try:
            raw = self._read()
            policy = load_bytes(raw, str(self.path))
        except PolicyError as exc:
            self.status = replace(self.status, ok=False, error=str(exc), attempts=attempts,
                                  failures=self.status.failures + 1)
            log.error("policy_reload_failed", path=str(self.path), trigger=why, error=str(exc),
                      kept_digest=self.status.digest)
            self._notify()
            return False
        except Exception as exc:  # a bug must not take the server down: keep the old policy
            self.status = replace(self.status, ok=False, attempts=attempts,
                                  error=f"internal error: {type(exc).__name__}: {exc}",
                                  failures=self.status.failures + 1)
            log.exception("policy_reload_failed", path=str(self.path), trigger=why)
            self._notify()
            return False
        if policy.digest == self.status.digest and self.status.ok:
            self.status = replace(self.status, attempts=attempts)
            log.info("policy_unchanged", path=str(self.path), trigger=why, digest=policy.digest)
            return True
        self.engine = Engine(policy)  # the swap: one attribute store
        self.status = PolicyStatus(str(self.path), True, policy.digest, time.time(), "",
                                   attempts, self.status.failures)
        log.info("policy_reloaded", path=str(self.path), trigger=why, digest=policy.digest,
                 bindings=len(policy.bindings), deny_rules=len(policy.deny),
                 dry_run=policy.dry_run)
        self._notify()
        return True

    def _notify(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener(self.status)

    def poll_once(self, pending: StatSignature | None) -> StatSignature | None:
        """One polling step. Returns the signature seen changing (to confirm next time)."""
        now = _signature(self.path)
        if now == self._signature:
            return None
        if now == pending:  # stable for one poll (or gone): act on it
            self.reload("file-change")
            return None
        return now

    async def watch(self, poll_seconds: float, stop: asyncio.Event) -> None:
        """Poll the file until ``stop`` is set."""
        pending: StatSignature | None = None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_seconds)
            if stop.is_set():
                return
            try:
                pending = self.poll_once(pending)
            except Exception:  # keep watching whatever happens
                log.exception("policy_watch_error", path=str(self.path))

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP (Unix)."""
        loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")


def metrics_listener(status: PolicyStatus) -> None:
    """Report a load attempt to the process-wide metrics, if installed."""
    from extauthz.obs import metrics

    metrics.policy_reloaded("ok" if status.ok else "error", status.digest if status.ok else None)
