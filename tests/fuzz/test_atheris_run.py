"""A short coverage-guided run of the ``atheris`` target in CI (``python -m
fuzz.check_handler``): it must finish without a crash. ``EXTAUTHZ_FUZZ_SECONDS`` (default 20)
or ``EXTAUTHZ_FUZZ_RUNS`` makes it longer; the run's figures go to the report directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_atheris_target_runs_clean(tmp_path: Path) -> None:
    """libFuzzer runs the Check handler target for the time budget and finds no crash."""
    seconds = int(os.environ.get("EXTAUTHZ_FUZZ_SECONDS", "20"))
    runs = os.environ.get("EXTAUTHZ_FUZZ_RUNS", "")
    corpus = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seeded = subprocess.run([sys.executable, "-m", "fuzz.check_handler", "--seed-corpus",
                             str(corpus)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert seeded.returncode == 0, seeded.stderr
    argv = [sys.executable, "-m", "fuzz.check_handler", f"-max_total_time={seconds}",
            "-rss_limit_mb=2048", "-timeout=10", f"-artifact_prefix={tmp_path}/", str(corpus)]
    if runs:
        argv.insert(3, f"-atheris_runs={runs}")
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=seconds + 300, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert not list(tmp_path.glob("crash-*")), out[-4000:]
    done = re.search(r"Done (\d+) (?:runs )?in (\d+) second", out)
    summary = re.findall(r"fuzz: (\d+) runs, (.*)", out)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", out)
    assert done and summary and cov, out[-2000:]
    executions = int(done.group(1))
    assert executions > 1000
    report = {"executions": executions, "seconds": int(done.group(2)),
              "coverage_edges": int(cov[-1][0]), "features": int(cov[-1][1]),
              "outcomes_sample": f"{summary[-1][0]} runs: {summary[-1][1]}", "crashes": 0}
    out_dir = Path(os.environ.get("EXTAUTHZ_REPORT_DIR", tmp_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "atheris.json").write_text(json.dumps(report, indent=2))
    print(f"atheris: {report}")
