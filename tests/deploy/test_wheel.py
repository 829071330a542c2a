"""The wheel ships only the server: ``pip wheel --no-deps`` of the checkout holds the
``extauthz`` package and its data, and none of the development tooling (``devkit``: the dev
issuer and token minter, the local stack, the test components), tests, bench or fuzz."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEV_MODULES = ("issuer.py", "issuer_http.py", "tokens.py", "procs.py", "stack.py", "envoyconfig.py",
               "components.py")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The file names inside a wheel built from a copy of the checkout (devkit, tests, bench
    and fuzz included, but no stale ``build/`` or venv), as the Dockerfile's install does: an
    isolated build, the build backend from the configured index."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("wheel-src") / "checkout"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache",
        ".hypothesis", ".stack"))
    assert (src / "devkit" / "issuer.py").is_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(src)],
        capture_output=True, text=True, timeout=300, check=False, env=env, cwd=out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(out.glob("temporal_extauthz-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        yield wheel.namelist()


def test_wheel_holds_the_package_and_its_data(wheel_names: list[str]) -> None:
    """The server's modules, its CLI and the method-access CSV it reads at start-up are in."""
    assert "extauthz/__init__.py" in wheel_names
    assert "extauthz/cli.py" in wheel_names
    assert "extauthz/data/temporal-api-access.csv" in wheel_names


def test_wheel_holds_no_development_tooling(wheel_names: list[str]) -> None:
    """No devkit, no dev issuer / stack / process / Envoy-config module, no tests, bench or
    fuzz: every top-level entry is the package or its metadata."""
    tops = {name.split("/", 1)[0] for name in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"extauthz"}, tops
    assert not [n for n in wheel_names if n.rsplit("/", 1)[-1] in DEV_MODULES]
    assert not [n for n in wheel_names if "/tests/" in n or n.startswith("tests/")]
