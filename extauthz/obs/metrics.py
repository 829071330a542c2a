"""Prometheus metrics: definitions, the per-check hot path, and the ``/metrics`` HTTP server.

Every metric lives in a ``Metrics`` object with its own ``CollectorRegistry`` (tests build as
many as they like). The process-wide instance, if any, is ``installed()``; the policy engine
reports reloads through the module-level ``policy_reloaded(result, policy_hash)``, which is a
no-op until a server installs its metrics.

Multi-process mode (``extauthz serve --workers N``): the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` before it starts the workers, so prometheus-client stores every
value in per-process mmap files there; the supervisor alone serves ``/metrics`` and sums the
files (``MultiProcessCollector``). Gauges declare how they aggregate across workers
(``multiprocess_mode``); a worker that exits is marked dead so its live gauges disappear.

Hot path: ``Metrics.observe`` resolves its label children once per distinct label set and
caches them, so a check costs a dict lookup, a counter increment and a histogram observation.
"""

from __future__ import annotations

import os
import platform
import re
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    start_http_server,
)

from extauthz import __version__
from extauthz.interfaces import IssuerSource
from extauthz.model import STATUS_UNAVAILABLE, Access, Decision, Method, Reason, Scope

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# no `*_created` series: they double the exposition and no dashboard or alert uses them
disable_created_metrics()  # type: ignore[no-untyped-call]

# Check latency: resolves 50 µs … 100 ms (and a little beyond, for the timeouts).
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)
RESULT_ALLOW, RESULT_DENY, RESULT_ERROR = "allow", "deny", "error"
OTHER = "other"
UNKNOWN = "unknown"
POLICY_RELOAD_RESULTS = frozenset({"ok", "error"})
# distinct label sets cached per Metrics object; past this, children are resolved per call
_MAX_CACHED_CHILDREN = 20_000

Partition = Mapping[str, Collection[str]]

# unknown_method by path: a Temporal upgrade that adds RPCs shows them by name (denied until the
# image is rebuilt with a newer temporalio). Only well-formed Temporal gRPC paths are named, the
# first UNKNOWN_PATH_CAP of them; any other path is one of three fixed values.
UNKNOWN_PATH_CAP = 50
_TEMPORAL_GRPC_PATH = re.compile(r"/temporal\.[A-Za-z0-9_.]{1,120}/[A-Za-z0-9_]{1,80}")
UNKNOWN_PATH_HTTP_API, UNKNOWN_PATH_OTHER = "http_api", "other_path"


def multiprocess_dir() -> str | None:
    """The multi-process directory when this process is one of several workers."""
    return os.environ.get(MULTIPROC_ENV) or None


def category(method: Method | None, partition: Partition | None = None) -> str:
    """The API category of a method, one per method: read, write, admin, cluster, health, or
    unknown. ``partition`` (category name → method paths) is the policy engine's
    ``extauthz.rules.categories.categories()``, passed in by whoever builds the metrics (its
    overlapping ``worker``/``cluster-read`` sets are not metric labels); without it, or for a
    method it does not place, Temporal's scope/access classification (the same partition).
    Called once per label set, never per check."""
    if method is None:
        return UNKNOWN
    if method.scope is Scope.HEALTH:
        return "health"
    if partition is not None:
        for name in ("cluster", "admin", "write", "read"):
            if method.path in partition.get(name, ()):
                return name
    return default_category(method)


def default_category(method: Method) -> str:
    """Category from ``Method.scope``/``access`` alone."""
    if method.scope is Scope.HEALTH:
        return "health"
    if method.scope is Scope.CLUSTER:
        return "cluster"
    return {Access.READ_ONLY: "read", Access.WRITE: "write"}.get(method.access, "admin")


def result_of(decision: Decision) -> str:
    """``allow``, ``deny``, or ``error`` (a 503: keys unavailable, internal error)."""
    if decision.allowed:
        return RESULT_ALLOW
    return RESULT_ERROR if decision.status == STATUS_UNAVAILABLE else RESULT_DENY


class _CappedLabel:
    """The first ``cap`` distinct values keep their name; later ones become ``other``."""

    __slots__ = ("_cap", "_lock", "_seen")

    def __init__(self, cap: int):
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._cap:
                self._seen.add(value)
                return value
        return OTHER


@dataclass(frozen=True, slots=True)
class MetricsOptions:
    """What the operator chose to label (cardinality is theirs to opt into)."""

    namespace_labels: bool = False
    namespace_label_cap: int = 50
    subject_label_cap: int = 50  # denied subjects; 0 turns the counter off


class Metrics:
    """Every metric of one server process."""

    def __init__(
        self,
        options: MetricsOptions | None = None,
        registry: CollectorRegistry | None = None,
        categories: Partition | None = None,
    ):
        self.options = options or MetricsOptions()
        self._categories = categories
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        r = self.registry
        decision_labels = ["result", "reason", "category", "method", "dry_run"]
        if self.options.namespace_labels:
            decision_labels.append("namespace")
        self.decisions = Counter(
            "extauthz_decisions", "Checks decided, by result (allow/deny/error), reason code, "
            "API category and method; dry_run=true when the policy only reported.",
            decision_labels, registry=r)
        self.check_duration = Histogram(
            "extauthz_check_duration_seconds", "Time to decide one Check, by result.",
            ["result"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "extauthz_checks_in_flight", "Checks being decided right now.",
            registry=r, multiprocess_mode="livesum")
        # counted in a plain int (checks run on the event loop thread): read at scrape time in
        # one process, published by ``sync_auth`` every second by a worker (an mmap write
        # per check would double the cost of an observation)
        self._in_flight = 0
        if not self.multiprocess:
            self.in_flight.set_function(lambda: self._in_flight)
        self.denied_subjects = Counter(
            "extauthz_denied_subjects",
            'Denied checks by subject (capped; later subjects count as subject="other").',
            ["subject"], registry=r)
        self.token_cache_hits = Counter(
            "extauthz_token_cache_hits", "Token verifications served from the cache.",
            registry=r)
        self.token_cache_misses = Counter(
            "extauthz_token_cache_misses", "Token verifications that had to verify a signature.",
            registry=r)
        self.token_cache_negative_hits = Counter(
            "extauthz_token_cache_negative_hits",
            "Refused tokens answered from the negative cache.", registry=r)
        self.token_cache_entries = Gauge(
            "extauthz_token_cache_entries", "Tokens in the positive cache.",
            registry=r, multiprocess_mode="livesum")
        self.jwks_fetches = Counter(
            "extauthz_jwks_fetches", "JWK Set / discovery fetches by issuer and result.",
            ["issuer", "result"], registry=r)
        self.jwks_age = Gauge(
            "extauthz_jwks_seconds_since_last_success",
            "Seconds since the last good JWK Set fetch per issuer (worst worker); absent "
            "until the first good fetch.", ["issuer"], registry=r, multiprocess_mode="livemax")
        self.jwks_last_success = Gauge(
            "extauthz_jwks_last_success_timestamp_seconds",
            "Unix time of the last good JWK Set fetch per issuer (oldest worker).",
            ["issuer"], registry=r, multiprocess_mode="livemin")
        self.jwks_keys = Gauge(
            "extauthz_jwks_keys", "Usable keys loaded per issuer (fewest of any worker).",
            ["issuer"], registry=r, multiprocess_mode="livemin")
        self.jwks_usable = Gauge(
            "extauthz_jwks_usable",
            "1 when the issuer's keys are usable (loaded, not stale), else 0 (any worker).",
            ["issuer"], registry=r, multiprocess_mode="livemin")
        self.policy_reloads = Counter(
            "extauthz_policy_reloads", "Policy reloads by result (ok/error).",
            ["result"], registry=r)
        self.policy_info = Gauge(
            "extauthz_policy_info", "1 for the hash of the policy in force.",
            ["hash"], registry=r, multiprocess_mode="livemax")
        self.policy_last_reload_success = Gauge(
            "extauthz_policy_last_reload_success",
            "1 when the last policy reload succeeded, 0 when it failed (any worker); absent "
            "until the first reload.", ["policy"], registry=r, multiprocess_mode="livemin")
        self.unknown_paths = Counter(
            "extauthz_unknown_method_paths",
            "Checks denied as unknown_method, by path: Temporal gRPC paths by name (the first "
            f'{UNKNOWN_PATH_CAP}; later ones count as path="other"), HTTP API routes as '
            f'"{UNKNOWN_PATH_HTTP_API}", anything else as "{UNKNOWN_PATH_OTHER}".',
            ["path"], registry=r)
        self.build_info = Gauge(
            "extauthz_build_info", "Always 1; the version of the running server.",
            ["version", "python_version"], registry=r, multiprocess_mode="livemax")
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self._children: dict[tuple[Any, ...], tuple[Any, Any, Method | None]] = {}
        self._namespace = _CappedLabel(self.options.namespace_label_cap)
        self._subject = _CappedLabel(self.options.subject_label_cap)
        self._unknown_path = _CappedLabel(UNKNOWN_PATH_CAP)
        self._policy_hash: str | None = None
        self._auth_seen = (0, 0, 0)
        self._lock = threading.Lock()

    # -- the hot path ------------------------------------------------------------------------

    def observe(self, decision: Decision, method: Method | None, seconds: float,
                path: str | None = None) -> None:
        """Count one decided check and its latency (``path``: the request's, for
        unknown_method denials)."""
        if self.options.namespace_labels:
            target = decision.target
            ns = self._namespace(target.namespace) if target and target.namespace else ""
            key: tuple[Any, ...] = (id(method), id(decision.reason), decision.allowed,
                                    decision.dry_run, decision.status, ns)
        else:
            ns = ""
            # ids, not the objects: hashing a frozen dataclass or an Enum runs Python code.
            # The cached value holds the method, so its id cannot be reused while cached.
            key = (id(method), id(decision.reason), decision.allowed, decision.dry_run,
                   decision.status)
        children = self._children.get(key)
        if children is None:
            children = self._resolve(key, decision, method, ns)
        children[0].inc()
        children[1].observe(seconds)
        if decision.reason is Reason.UNKNOWN_METHOD and path is not None:
            self.unknown_paths.labels(self.unknown_path_label(path)).inc()
        if not decision.allowed and self.options.subject_label_cap > 0:
            principal = decision.principal
            if principal is not None and principal.subject:
                self.denied_subjects.labels(self._subject(principal.subject)).inc()

    def _resolve(
        self, key: tuple[Any, ...], decision: Decision, method: Method | None, ns: str
    ) -> tuple[Any, Any, Method | None]:
        result = result_of(decision)
        labels = [result, str(decision.reason), category(method, self._categories),
                  method.short if method is not None else UNKNOWN,
                  "true" if decision.dry_run else "false"]
        if self.options.namespace_labels:
            labels.append(ns or "none")
        children = (self.decisions.labels(*labels), self.check_duration.labels(result), method)
        if len(self._children) < _MAX_CACHED_CHILDREN:
            self._children[key] = children
        return children

    def unknown_path_label(self, path: str) -> str:
        """The bounded ``path`` label of an unknown_method denial."""
        if _TEMPORAL_GRPC_PATH.fullmatch(path):
            return self._unknown_path(path)
        if path.startswith("/api/"):
            return UNKNOWN_PATH_HTTP_API
        return UNKNOWN_PATH_OTHER

    def check_started(self) -> None:
        """One more check in flight."""
        self._in_flight += 1

    def check_finished(self) -> None:
        """One check fewer in flight."""
        self._in_flight -= 1

    # -- the rest ----------------------------------------------------------------------------

    def jwks_fetched(self, issuer: str, result: str) -> None:
        """``on_fetch`` callback of the key stores."""
        self.jwks_fetches.labels(issuer, result).inc()

    def policy_reloaded(self, result: str, policy_hash: str | None = None) -> None:
        """A policy (re)load finished: ``result`` is ``ok`` or ``error``; on ``ok``,
        ``policy_hash`` identifies the policy now in force."""
        result = result if result in POLICY_RELOAD_RESULTS else "error"
        self.policy_reloads.labels(result).inc()
        self.policy_last_reload_success.labels("default").set(1 if result == "ok" else 0)
        if result == "ok" and policy_hash is not None:
            with self._lock:
                if self._policy_hash is not None and self._policy_hash != policy_hash:
                    self.policy_info.labels(self._policy_hash).set(0)
                    if not self.multiprocess:
                        self.policy_info.remove(self._policy_hash)
                self._policy_hash = policy_hash
            self.policy_info.labels(policy_hash).set(1)

    def sync_auth(self, auth: IssuerSource, now: float | None = None) -> None:
        """Copy the authenticator's counters and per-issuer key state into the metrics."""
        now = time.time() if now is None else now
        if self.multiprocess:
            self.in_flight.set(self._in_flight)
        stats = auth.stats
        seen = (stats.hits, stats.misses, stats.negative_hits)
        with self._lock:
            before, self._auth_seen = self._auth_seen, seen
        for counter, new, old in zip(
            (self.token_cache_hits, self.token_cache_misses, self.token_cache_negative_hits),
            seen, before, strict=True,
        ):
            if new > old:
                counter.inc(new - old)
        self.token_cache_entries.set(auth.cache_size)
        for issuer, state in auth.issuer_states().items():
            self.jwks_keys.labels(issuer).set(state.get("keys_loaded", 0))
            self.jwks_usable.labels(issuer).set(1 if state.get("usable") else 0)
            last = state.get("last_good_fetch")
            if last is not None:
                self.jwks_last_success.labels(issuer).set(last)
                self.jwks_age.labels(issuer).set(max(0.0, now - last))


# -- the process-wide instance -----------------------------------------------------------------

_installed: Metrics | None = None


def install(metrics: Metrics | None) -> None:
    """Make ``metrics`` the process-wide instance (``None`` uninstalls)."""
    global _installed  # noqa: PLW0603
    _installed = metrics


def installed() -> Metrics | None:
    """The process-wide instance, if a server installed one."""
    return _installed


def policy_reloaded(result: str, policy_hash: str | None = None) -> None:
    """For the policy engine: report a reload (``ok``/``error``) and the hash now in force."""
    if _installed is not None:
        _installed.policy_reloaded(result, policy_hash)


# -- exposition --------------------------------------------------------------------------------


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry that sums the workers' files under ``path``."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> tuple[Any, int]:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread; returns (server, bound port)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)


def mark_worker_dead(pid: int, path: str) -> None:
    """Drop the live gauges of a worker that exited."""
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
