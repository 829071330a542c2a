"""Observability config keys and the worker count: parsed, validated, overridable."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz import config
from extauthz.config import ConfigError
from extauthz.server import workers


def test_defaults_are_quiet_and_safe() -> None:
    """No metrics server, info level, auto format, 1 % of allows audited, workers from CPUs."""
    s = config.Settings()
    assert (s.metrics_listen, s.log_level, s.log_format) == ("", "info", "auto")
    assert s.audit_allow_sample_rate == 0.01
    assert not s.metrics_namespace_labels
    assert s.workers == 0


def test_keys_are_read_from_the_file() -> None:
    """Every observability key is read."""
    s = config.from_mapping({
        "metrics_listen": "0.0.0.0:9464", "metrics_namespace_labels": True,
        "metrics_namespace_label_cap": 10, "metrics_subject_label_cap": 0,
        "log_level": "WARNING", "log_format": "json", "audit_allow_sample_rate": 1,
        "workers": 3,
    }, "c.yaml")
    assert s.metrics_listen == "0.0.0.0:9464"
    assert s.metrics_namespace_labels and s.metrics_namespace_label_cap == 10
    assert s.metrics_subject_label_cap == 0
    assert (s.log_level, s.log_format, s.audit_allow_sample_rate, s.workers) == (
        "warning", "json", 1.0, 3)


@pytest.mark.parametrize(("data", "key"), [
    ({"metrics_listen": "nope"}, "metrics_listen"),
    ({"log_level": "loud"}, "log_level"),
    ({"log_format": "xml"}, "log_format"),
    ({"audit_allow_sample_rate": 2}, "audit_allow_sample_rate"),
    ({"metrics_namespace_label_cap": 0}, "metrics_namespace_label_cap"),
    ({"workers": -1}, "workers"),
])
def test_bad_values_name_the_key(data: dict[str, object], key: str) -> None:
    """A bad value is a ConfigError naming the file and the key."""
    with pytest.raises(ConfigError, match=f"c.yaml: {key}:"):
        config.from_mapping(data, "c.yaml")


def test_environment_overrides() -> None:
    """EXTAUTHZ_METRICS_LISTEN (``off`` disables), log level/format, sample rate, workers."""
    s = config.apply_env(config.Settings(metrics_listen="0.0.0.0:1"), {
        "EXTAUTHZ_METRICS_LISTEN": "off", "EXTAUTHZ_LOG_LEVEL": "debug",
        "EXTAUTHZ_LOG_FORMAT": "console", "EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE": "0.5",
        "EXTAUTHZ_WORKERS": "2"})
    assert (s.metrics_listen, s.log_level, s.log_format, s.audit_allow_sample_rate,
            s.workers) == ("", "debug", "console", 0.5, 2)
    with pytest.raises(ConfigError, match="EXTAUTHZ_WORKERS"):
        config.apply_env(config.Settings(), {"EXTAUTHZ_WORKERS": "many"})
    with pytest.raises(ConfigError, match="log_level"):
        config.apply_env(config.Settings(), {"EXTAUTHZ_LOG_LEVEL": "loud"})


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    """cpu.max "150000 100000" is 1.5 CPUs → 1 worker; "max" is no limit."""
    root = _cgroup(tmp_path, {"cpu.max": "150000 100000\n"})
    assert workers.cgroup_cpu_limit(root) == 1.5
    assert workers.default_workers(root) == 1
    (root / "cpu.max").write_text("max 100000\n")
    assert workers.cgroup_cpu_limit(root) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    """cfs_quota_us/cfs_period_us; -1 is no limit."""
    root = _cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"})
    assert workers.cgroup_cpu_limit(root) == 2.0
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert workers.cgroup_cpu_limit(root) is None


def test_default_workers_is_capped_by_affinity(tmp_path: Path) -> None:
    """Without a quota the default is the CPUs this process may run on (at least 1)."""
    import os

    assert workers.default_workers(tmp_path) == max(1, len(os.sched_getaffinity(0)))
    root = _cgroup(tmp_path / "big", {"cpu.max": "6400000 100000"})
    assert workers.default_workers(root) == max(1, len(os.sched_getaffinity(0)))


def test_resolve_workers_prefers_the_flag_then_the_key() -> None:
    """--workers beats the ``workers`` key, which beats the CPU default."""
    assert workers.resolve_workers(3, config.Settings(workers=2)) == 3
    assert workers.resolve_workers(None, config.Settings(workers=2)) == 2
    assert workers.resolve_workers(None, config.Settings()) == workers.default_workers()
