"""The benchmark harness still runs: ``python -m bench --tiny`` (seconds, figures meaningless).

Asserts only that it runs, in both transports (gRPC and HTTP ext_authz mode) in the same run, and
writes the JSON schema docs/measurements.md's tables are made from; never speed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiny_bench_emits_the_json_schema(tmp_path: Path) -> None:
    """Handler, candidates and server parts run in tiny mode, every transport, and produce every
    key."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--parts", "handler,candidates,server",
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["schema"] == "extauthz-bench/2"
    assert {"mode", "repeats", "transports", "machine", "targets", "skipped"} <= data.keys()
    assert data["transports"] == ["grpc", "http", "grpc-h2"]
    rows = {row["case"]: row for row in data["handler"]["rows"]}
    assert "baseline always-allow" in rows and "allow, cache miss RS256" in rows
    assert "HTTP adapter: allow, cached token" in rows
    assert {"median", "min", "max", "spread", "values"} <= rows["gzip body"]["us"].keys()
    assert {"cached_minus_baseline_us", "miss_rs256_minus_cached_us", "token_cache_hit_us",
            "http_cached_minus_adapter_us"} <= data["handler"]["derived"].keys()
    if shutil.which("h2load") is None:
        assert "server" in data["skipped"]
    else:
        candidates = {row["candidate"]: row for row in data["candidates"]["rows"]}
        assert {"grpc.aio", "grpclib", "h2", "h2grpc", "extauthz grpcio", "extauthz h2"} <= \
            candidates.keys()
        assert all(row["failed"] == 0 and row["cpu_us_per_check"]["median"] > 0
                   for row in candidates.values()), candidates
        server = data["server"]
        for name in ("grpc", "http", "grpc-h2"):
            section = server["by_transport"][name]
            labels = {row["label"] for row in section["rows"]}
            assert {"baseline w1", "extauthz w1", "extauthz w2"} <= labels
            assert all(row["failed"] == 0 for row in section["rows"]), section["rows"]
            assert section["ratios"]["cpu_per_check_extauthz_over_baseline"] > 0
        assert server["by_transport"]["http"]["load"]["protocol"].startswith("HTTP/1.1")
        assert server["http_over_grpc"]["extauthz_w1_cpu_per_check"] > 0
        assert any(t["target"].startswith("#9 [http] server CPU") for t in data["targets"])
    assert "extauthz bench" in proc.stdout
