"""Tracing of checks (``extauthz.obs.tracing``): W3C traceparent/tracestate parsing, what a span
carries, the ``tracing`` config block, and the SDK wiring with an in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from extauthz import config
from extauthz.config import ConfigError, TracingSettings
from extauthz.model import (
    STATUS_UNAUTHENTICATED,
    STATUS_UNAVAILABLE,
    Access,
    CheckInput,
    Decision,
    Method,
    Principal,
    Reason,
    Scope,
    Target,
)
from extauthz.obs.observer import Telemetry
from extauthz.obs.spans import span_attributes, traces_url
from extauthz.obs.tracecontext import TraceParent, parse_traceparent, parse_tracestate
from extauthz.obs.tracing import start_tracing
from extauthz.obs.tracing_config import otel_proto_clash
from extauthz.obs.tracing_otel import CheckTracer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{SPAN_ID}-01"
WS = "/temporal.api.workflowservice.v1.WorkflowService/"
START = Method("temporal.api.workflowservice.v1.WorkflowService", "StartWorkflowExecution",
               Scope.NAMESPACE, Access.WRITE, 1)
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
REPO = Path(__file__).resolve().parents[3]


# ---- traceparent -----------------------------------------------------------------------------

def test_valid_traceparent_gives_trace_id_parent_id_and_flags() -> None:
    """The example of the W3C spec parses to its trace id, parent id and sampled flag."""
    assert parse_traceparent(VALID) == TraceParent(int(TRACE_ID, 16), int(SPAN_ID, 16), 1)
    assert parse_traceparent(VALID).sampled  # type: ignore[union-attr]
    assert not parse_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-00").sampled  # type: ignore[union-attr]


def test_surrounding_whitespace_is_ignored() -> None:
    """Optional whitespace around a header value is not part of it."""
    assert parse_traceparent(f" {VALID}\t") is not None


@pytest.mark.parametrize("value", [
    f"ff-{TRACE_ID}-{SPAN_ID}-01",                 # version ff is forbidden
    f"00-{'0' * 32}-{SPAN_ID}-01",                 # all-zero trace id
    f"00-{TRACE_ID}-{'0' * 16}-01",                # all-zero parent id
    f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",         # upper-case hex
    f"00-{TRACE_ID}-{SPAN_ID.upper()}-01",
    f"0A-{TRACE_ID}-{SPAN_ID}-01",
    f"00-{TRACE_ID}-{SPAN_ID}-0A",
    f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",            # trace id one short
    f"00-{TRACE_ID}0-{SPAN_ID}-01",                # trace id one long
    f"00-{TRACE_ID}-{SPAN_ID[:-1]}-01",            # parent id one short
    f"00-{TRACE_ID}-{SPAN_ID}0-01",                # parent id one long
    f"00-{TRACE_ID}-{SPAN_ID}-1",                  # flags one short
    f"0-{TRACE_ID}-{SPAN_ID}-01",                  # version one short
    f"00-{TRACE_ID}-{SPAN_ID}-01-extra",           # version 00 is exactly 55 characters
    f"00-{TRACE_ID}-{SPAN_ID}-010",
    f"00_{TRACE_ID}_{SPAN_ID}_01",                 # wrong separators
    f"00-{TRACE_ID[:-1]}g-{SPAN_ID}-01",           # not hex
    f"{VALID},{VALID}",                            # two headers joined: invalid
    f"01-{TRACE_ID}-{SPAN_ID}-01x",                # later version: more must start with "-"
    "", "00", "garbage", "0" * 4096,
])
def test_invalid_traceparent_is_none(value: str) -> None:
    """Anything the W3C spec calls invalid gives no parent (the span becomes a root)."""
    assert parse_traceparent(value) is None


def test_a_later_version_with_more_fields_is_read_by_its_first_four() -> None:
    """Version 01+ may append fields after a dash: the first four are still read."""
    parsed = parse_traceparent(f"01-{TRACE_ID}-{SPAN_ID}-01-what-the-future-holds")
    assert parsed == TraceParent(int(TRACE_ID, 16), int(SPAN_ID, 16), 1)


def test_absent_or_huge_traceparent_is_none() -> None:
    """None and values over the size cap are not parsed."""
    assert parse_traceparent(None) is None
    assert parse_traceparent(VALID + "-" + "a" * 10_000) is None


# ---- tracestate ------------------------------------------------------------------------------

def test_tracestate_members_in_order_empty_ones_skipped() -> None:
    """``key=value`` members, tenant@system keys too; empty members and whitespace ignored."""
    assert parse_tracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7,,t@sys=x y") == (
        ("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7"), ("t@sys", "x y"))


@pytest.mark.parametrize("value", [
    "Congo=1",            # upper-case key
    "congo=1,congo=2",    # duplicate key
    "congo",              # no value
    "congo=a=b",          # '=' in the value
    ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
])
def test_invalid_tracestate_is_dropped_whole(value: str) -> None:
    """One invalid member drops the whole tracestate (the trace itself continues)."""
    assert parse_tracestate(value) == ()


# ---- span attributes -------------------------------------------------------------------------

def test_span_attributes_are_an_allow_list_without_secrets() -> None:
    """Method, namespaces, decision, reason, rule, principal kind, dry run, request id; never
    the token, the subject or other headers."""
    principal = Principal(subject="alice@example.com", issuer="https://idp", kind="service",
                          claims={"secret": "claim-value"})
    target = Target(START, "payroll", other_namespaces=("billing",))
    decision = Decision.deny(Reason.PERMISSION_DENIED, "no", principal=principal, target=target,
                             rule="deny-payroll")
    req = CheckInput(WS + "StartWorkflowExecution", {
        "authorization": f"Bearer {TOKEN}", "x-request-id": "req-1", "traceparent": VALID,
        "authorization-extras": TOKEN}, b"")
    attrs = span_attributes(req, decision)
    assert attrs == {
        "extauthz.decision": "deny", "extauthz.reason": "permission_denied",
        "extauthz.dry_run": False, "extauthz.method": "WorkflowService/StartWorkflowExecution",
        "temporal.namespace": "payroll", "temporal.other_namespaces": ("billing",),
        "extauthz.rule": "deny-payroll", "extauthz.principal.kind": "service",
        "extauthz.request_id": "req-1"}
    assert not any(TOKEN in str(v) or "alice" in str(v) or "claim-value" in str(v)
                   for v in attrs.values())


def test_denial_before_the_body_names_the_method_from_the_path() -> None:
    """A denial without a target (no token) still names a known method; an unknown path is
    named as sent, truncated."""
    decision = Decision.deny(Reason.MISSING_TOKEN, "no token", status=STATUS_UNAUTHENTICATED)
    known = span_attributes(CheckInput(WS + "StartWorkflowExecution", {}, b""), decision)
    assert known["extauthz.method"] == "WorkflowService/StartWorkflowExecution"
    unknown = span_attributes(CheckInput("/x" * 200, {}, b""), decision)
    assert unknown["extauthz.method"] == ("/x" * 200)[:160]
    assert span_attributes(None, decision) == {
        "extauthz.decision": "deny", "extauthz.reason": "missing_token", "extauthz.dry_run": False}


def test_an_unavailable_decision_is_an_error_and_dry_run_is_marked() -> None:
    """503 decisions read ``error``; a dry-run allow says so."""
    error = Decision.deny(Reason.KEYS_UNAVAILABLE, "no keys", status=STATUS_UNAVAILABLE)
    assert span_attributes(None, error)["extauthz.decision"] == "error"
    dry = Decision(True, Reason.ALLOWED, "ok", dry_run=True)
    assert span_attributes(None, dry)["extauthz.dry_run"] is True


@pytest.mark.parametrize(("endpoint", "url"), [
    ("http://collector:4318", "http://collector:4318/v1/traces"),
    ("http://collector:4318/", "http://collector:4318/v1/traces"),
    ("https://otlp.example.com/custom/path", "https://otlp.example.com/custom/path"),
    ("", None),
])
def test_endpoint_without_a_path_gets_v1_traces(endpoint: str, url: str | None) -> None:
    """A base URL gets OTLP's /v1/traces; a URL with a path is used as is; "" = exporter's own."""
    assert traces_url(endpoint) == url


# ---- the SDK wiring, in-memory exporter -------------------------------------------------------

def _record(tracer: CheckTracer, headers: dict[str, str], decision: Decision,
            exporter: InMemorySpanExporter) -> object:
    Telemetry(tracer=tracer).checked(CheckInput(WS + "StartWorkflowExecution", headers, b""),
                                     decision, 0.002)
    tracer.flush()
    spans = exporter.get_finished_spans()
    exporter.clear()
    assert len(spans) == 1
    return spans[0]


def test_span_is_a_child_of_the_traceparent_with_its_tracestate() -> None:
    """Telemetry with a tracer: one SERVER span ``extauthz.check``, child of the caller's span,
    its tracestate kept, lasting the check's latency."""
    exporter = InMemorySpanExporter()
    tracer = CheckTracer.start(TracingSettings(enabled=True), exporter=exporter)
    allow = Decision.allow(Reason.ALLOWED, "ok", target=Target(START, "default"))
    span = _record(tracer, {"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"}, allow,
                   exporter)
    assert span.name == "extauthz.check"  # type: ignore[attr-defined]
    assert span.kind == SpanKind.SERVER  # type: ignore[attr-defined]
    assert span.context.trace_id == int(TRACE_ID, 16)  # type: ignore[attr-defined]
    assert span.parent.span_id == int(SPAN_ID, 16)  # type: ignore[attr-defined]
    assert span.parent.is_remote  # type: ignore[attr-defined]
    assert span.context.trace_state.to_header() == "congo=t61rcWkgMzE"  # type: ignore[attr-defined]
    assert span.end_time - span.start_time == 2_000_000  # type: ignore[attr-defined]
    assert span.resource.attributes["service.name"] == "temporal-extauthz"  # type: ignore[attr-defined]
    tracer.shutdown()


def test_malformed_traceparent_gives_a_root_span_and_errors_are_marked() -> None:
    """An invalid traceparent starts a new trace; a 503 decision sets the span's error status."""
    exporter = InMemorySpanExporter()
    tracer = CheckTracer.start(TracingSettings(enabled=True), exporter=exporter)
    error = Decision.deny(Reason.INTERNAL_ERROR, "boom", status=STATUS_UNAVAILABLE)
    span = _record(tracer, {"traceparent": VALID.upper()}, error, exporter)
    assert span.parent is None  # type: ignore[attr-defined]
    assert span.context.trace_id != int(TRACE_ID, 16)  # type: ignore[attr-defined]
    assert span.status.status_code == StatusCode.ERROR  # type: ignore[attr-defined]
    assert span.status.description == "internal_error"  # type: ignore[attr-defined]
    tracer.shutdown()


def test_callers_unsampled_flag_is_followed_and_roots_use_the_ratio() -> None:
    """Parent-based sampling: an unsampled caller → no span; ratio 0 → no root spans; a
    sampled caller is traced whatever the ratio."""
    exporter = InMemorySpanExporter()
    tracer = CheckTracer.start(TracingSettings(enabled=True, sample_ratio=0.0), exporter=exporter)
    observer = Telemetry(tracer=tracer)
    allow = Decision.allow(Reason.ALLOWED, "ok")
    for headers in ({"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-00"}, {}):
        observer.checked(CheckInput(WS + "StartWorkflowExecution", headers, b""), allow, 0.001)
    tracer.flush()
    assert exporter.get_finished_spans() == ()
    observer.checked(CheckInput(WS + "StartWorkflowExecution", {"traceparent": VALID}, b""),
                     allow, 0.001)
    tracer.flush()
    assert len(exporter.get_finished_spans()) == 1
    tracer.shutdown()


def test_a_failing_tracer_never_fails_the_check() -> None:
    """``record`` swallows any error (the response is built after the observer returns)."""
    exporter = InMemorySpanExporter()
    tracer = CheckTracer.start(TracingSettings(enabled=True), exporter=exporter)
    tracer.shutdown()
    tracer._tracer = None  # type: ignore[assignment]  # any exception inside record
    Telemetry(tracer=tracer).checked(None, Decision.allow(Reason.ALLOWED, "ok"), 0.001)


def test_start_tracing_is_none_when_disabled() -> None:
    """Off: no tracer (``Telemetry.tracer`` stays None)."""
    assert start_tracing(TracingSettings()) is None


# ---- config ----------------------------------------------------------------------------------

def test_tracing_is_off_by_default_and_read_from_its_block() -> None:
    """No ``tracing`` block: off. The block's keys are read, headers kept as pairs, and the
    header values are not in the settings' repr."""
    assert config.from_mapping({}, "c.yaml").tracing == TracingSettings()
    s = config.from_mapping({"tracing": {
        "enabled": True, "endpoint": "http://collector:4318", "sample_ratio": 0.25,
        "headers": {"x-api-key": "s3cret"}}}, "c.yaml")
    assert s.tracing == TracingSettings(True, "http://collector:4318", (("x-api-key", "s3cret"),),
                                        0.25)
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(("block", "message"), [
    ({"enabled": "yes"}, "c.yaml: tracing.enabled: expected bool"),
    ({"endpoint": "collector:4318"}, "c.yaml: tracing.endpoint: expected an http://"),
    ({"endpoint": "ftp://collector"}, "c.yaml: tracing.endpoint: expected an http://"),
    ({"sample_ratio": 1.5}, "c.yaml: tracing.sample_ratio: expected a fraction"),
    ({"headers": ["x-api-key: v"]}, "c.yaml: tracing.headers: expected a mapping"),
    ({"headers": {"bad name": "v"}}, "c.yaml: tracing.headers: 'bad name' is not a valid"),
    ({"headers": {"x": "a\r\nb"}}, "c.yaml: tracing.headers.x: the value has a line break"),
    ({"endpiont": "http://c"}, "c.yaml: tracing.endpiont: unknown key"),
])
def test_bad_tracing_settings_name_the_file_and_key(block: dict[str, object],
                                                     message: str) -> None:
    """Every mistake in the block is a ConfigError naming the file and the key."""
    with pytest.raises(ConfigError) as err:
        config.from_mapping({"tracing": block}, "c.yaml")
    assert str(err.value).startswith(message)


def test_environment_overrides_the_tracing_block() -> None:
    """``EXTAUTHZ_TRACING_*`` on top of the file's block; bad values name the variable."""
    base = config.from_mapping({"tracing": {"endpoint": "http://a:4318"}}, "c.yaml")
    s = config.apply_env(base, {
        "EXTAUTHZ_TRACING_ENABLED": "true", "EXTAUTHZ_TRACING_ENDPOINT": "https://b",
        "EXTAUTHZ_TRACING_HEADERS": "x-api-key=s3cret, x-tenant = t1",
        "EXTAUTHZ_TRACING_SAMPLE_RATIO": "0.5"})
    assert s.tracing == TracingSettings(True, "https://b", (("x-api-key", "s3cret"),
                                                            ("x-tenant", "t1")), 0.5)
    for env, message in (
            ({"EXTAUTHZ_TRACING_ENABLED": "on"}, "EXTAUTHZ_TRACING_ENABLED: expected true"),
            ({"EXTAUTHZ_TRACING_SAMPLE_RATIO": "2"}, "sample_ratio: expected a fraction"),
            ({"EXTAUTHZ_TRACING_HEADERS": "s3cret"}, "EXTAUTHZ_TRACING_HEADERS: expected")):
        with pytest.raises(ConfigError, match=message) as err:
            config.apply_env(base, env)
        assert "s3cret" not in str(err.value)


_WITHOUT_EXTRA = textwrap.dedent("""
    import sys
    sys.modules["opentelemetry"] = None  # as if the `tracing` extra were not installed
    from extauthz.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("enabled", [True, False])
def test_enabled_without_the_extra_is_a_config_error_naming_the_extra(
        tmp_path: Path, enabled: bool) -> None:
    """``extauthz serve`` with ``tracing.enabled`` and no OpenTelemetry installed exits 2 with a
    message naming the file, the key and the extra; disabled, it gets past the config."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tracing:\n  enabled: {str(enabled).lower()}\n")
    out = subprocess.run([sys.executable, "-c", _WITHOUT_EXTRA, "serve", "--config", str(cfg)],
                         capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={"PATH": "/usr/bin:/bin"}, check=False)
    assert out.returncode == 2
    if enabled:
        assert f"{cfg}: tracing.enabled: tracing needs the OpenTelemetry packages" in out.stderr
        assert "pip install 'temporal-extauthz[tracing]'" in out.stderr
    else:  # the next problem: no issuer
        assert "tracing" not in out.stderr
        assert "issuers: no token issuer configured" in out.stderr


_WITH_XDS_COPY = textwrap.dedent("""
    import sys, types
    # the common module as the old copy xds-protos installs has it: no InstrumentationScope
    sys.modules["opentelemetry.proto.common.v1.common_pb2"] = types.ModuleType("common_pb2")
    from extauthz.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_the_xds_protos_copy_of_otel_proto_is_a_config_error_with_the_fix(tmp_path: Path) -> None:
    """xds-protos and opentelemetry-proto install the same files; when the old copy wins, the
    OTLP exporter cannot load. `extauthz validate` with tracing enabled says so and prints the
    pip command that puts the right files back, instead of failing later or tracing nothing."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tracing:\n  enabled: true\n")
    out = subprocess.run([sys.executable, "-c", _WITH_XDS_COPY, "validate", "--config", str(cfg)],
                         capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2, out.stderr
    assert f"{cfg}: tracing.enabled: the installed opentelemetry/proto modules" in out.stderr
    assert "pip install --no-deps --force-reinstall opentelemetry-proto==" in out.stderr


def test_this_environment_has_opentelemetry_protos_own_files() -> None:
    """The test environment (./dev test restores them after installing) loads the exporter."""
    assert otel_proto_clash() is None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    assert OTLPSpanExporter is not None
