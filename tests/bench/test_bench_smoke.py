"""The benchmark harness still runs: ``python -m bench --tiny`` (seconds, figures meaningless).

Asserts only that it runs and writes the JSON schema the README table is made from; never speed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiny_bench_emits_the_json_schema(tmp_path: Path) -> None:
    """Handler and server parts run in tiny mode and produce every documented key."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--parts", "handler,server", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["schema"] == "extauthz-bench/1"
    assert {"mode", "repeats", "transport", "machine", "targets", "skipped"} <= data.keys()
    rows = {row["case"]: row for row in data["handler"]["rows"]}
    assert "baseline always-allow" in rows and "allow, cache miss RS256" in rows
    assert {"median", "min", "max", "spread", "values"} <= rows["gzip body"]["us"].keys()
    assert {"cached_minus_baseline_us", "miss_rs256_minus_cached_us",
            "token_cache_hit_us"} <= data["handler"]["derived"].keys()
    if shutil.which("h2load") is None:
        assert "server" in data["skipped"]
    else:
        labels = {row["label"] for row in data["server"]["rows"]}
        assert {"baseline w1", "extauthz w1", "extauthz w2"} <= labels
        assert data["server"]["ratios"]["cpu_per_check_extauthz_over_baseline"] > 0
    assert "extauthz bench" in proc.stdout
