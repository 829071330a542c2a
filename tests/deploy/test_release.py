"""The release artifacts: `./dev release` builds the sdist, the wheel and the chart package at
the one version of pyproject.toml; the wheel installs into a clean venv and runs; the chart
renders, lints and checks values from its .tgz alone (nothing outside the package is read); the
chart's README and NOTES stand alone once packaged; the forge workflow builds what the guide
says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from helmchart import CHART, REPO, VALUE_SETS

VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output of `./dev release --out DIR`."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([str(REPO / "dev"), "release", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def chart_tgz(dist: Path) -> Path:
    return dist / f"temporal-extauthz-{VERSION}.tgz"


def test_one_version_everywhere() -> None:
    """pyproject.toml's version is Chart.yaml's version and appVersion (so the default image
    tag) and the Dockerfile's default VERSION label, and CHANGELOG.md has its entry."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == VERSION
    assert f"## [{VERSION}]" in (REPO / "CHANGELOG.md").read_text()
    # the image's default label (the release workflow passes the tag's version explicitly)
    assert f"ARG VERSION={VERSION}\n" in (REPO / "Dockerfile").read_text()


def test_release_builds_the_three_artifacts_at_that_version(dist: Path) -> None:
    """sdist, wheel and chart .tgz, named with the version; the packaged Chart.yaml says it."""
    assert sorted(p.name for p in dist.iterdir()) == sorted([
        f"temporal-extauthz-{VERSION}.tgz", f"temporal_extauthz-{VERSION}.tar.gz",
        f"temporal_extauthz-{VERSION}-py3-none-any.whl"])
    with tarfile.open(dist / f"temporal-extauthz-{VERSION}.tgz") as tgz:
        member = tgz.extractfile("temporal-extauthz/Chart.yaml")
        assert member is not None
        packaged = yaml.safe_load(member.read())
    assert packaged["version"] == packaged["appVersion"] == VERSION


@pytest.fixture(scope="module")
def clean_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv (no system site-packages) with the wheel installed from the package index."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    wheel = dist / f"temporal_extauthz-{VERSION}-py3-none-any.whl"
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
                            capture_output=True, text=True, timeout=600, check=False, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv


def test_wheel_installs_into_a_clean_venv_and_runs(clean_venv: Path, tmp_path: Path) -> None:
    """The installed `extauthz` reports the release's version and validates the example policy
    (its method table ships as package data); a bad policy fails with the key named."""
    exe = str(clean_venv / "bin" / "extauthz")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60,
                             check=True, cwd=tmp_path)
    assert version.stdout.strip() == f"extauthz {VERSION}"
    ok = subprocess.run([exe, "validate", "--policy", str(REPO / "examples" / "policy.yaml")],
                        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nbindings: [{name: a, match: {groups: [x]}, roles: [writer], "
                   "namespaces: ['*']}]\n")
    refused = subprocess.run([exe, "validate", "--policy", str(bad)], capture_output=True,
                             text=True, timeout=60, check=False, cwd=tmp_path)
    assert refused.returncode != 0 and "bindings[0].roles[0]" in refused.stderr


@pytest.mark.parametrize("name", ["defaults", "standalone", "istio", "monitoring"])
def test_chart_renders_and_lints_from_its_package(chart_tgz: Path, name: str) -> None:
    """The packaged chart alone (files/, schema, templates) renders every object of the value
    set as the source chart does, with the image tag = the version, and lints clean."""
    values = VALUE_SETS[name]
    with helm.Chart.load(chart_tgz) as packaged, helm.Chart.load(CHART) as source:
        from_tgz = packaged.render(values=values, name="temporal-extauthz",
                                   namespace="temporal", is_install=True)
        from_dir = source.render(values=values, name="temporal-extauthz",
                                 namespace="temporal", is_install=True)
    assert from_tgz == from_dir
    if name == "defaults":
        deployment = from_tgz["temporal-extauthz/templates/extauthz-deployment.yaml"]
        assert f"ghcr.io/temporal-extauthz/temporal-extauthz:{VERSION}" in deployment
    report = helm.lint(chart_tgz, values, strict=True, namespace="temporal")
    assert report["errors"] == [] and report["messages"] == [], report


def test_packaged_chart_still_refuses_bad_values(chart_tgz: Path) -> None:
    """values.schema.json (and the embedded policy schema) travel in the package."""
    with helm.Chart.load(chart_tgz) as packaged, pytest.raises(helm.HelmValuesError):
        packaged.validate_schema({"extauthz": {"policy": {"profile": "strict"}}})


def test_chart_readme_and_notes_stand_alone() -> None:
    """Once packaged the chart has no repository around it: its README and NOTES link to no
    relative path outside the chart (absolute URLs only)."""
    for path in (CHART / "README.md", CHART / "templates" / "NOTES.txt"):
        text = path.read_text()
        assert "../" not in text, path
        for target in re.findall(r"\]\(([^)]+)\)", text):
            assert target.startswith(("https://", "#")), (path, target)


def test_release_workflow_builds_multi_arch_image_and_pushes_the_chart_on_a_tag() -> None:
    """The forge workflow runs on v* tags, checks the tag is the version, builds the image for
    amd64 and arm64 from the Dockerfile and pushes it, packages the chart with `./dev release`
    and pushes it as an OCI artifact."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    triggers = wf.get("on", wf.get(True))
    assert triggers["push"]["tags"] == ["v*"]
    text = WORKFLOW.read_text()
    assert "linux/amd64,linux/arm64" in text
    assert "docker/build-push-action" in text and "push: true" in text
    assert "./dev release" in text
    assert "helm push" in text and "oci://" in text
    assert "pyproject.toml" in text  # the tag must equal the one version


def test_release_refuses_when_the_versions_disagree(tmp_path: Path) -> None:
    """`./dev release` stops before building anything when Chart.yaml's appVersion is not
    pyproject.toml's version, naming the file and both values."""
    (tmp_path / "helm" / "temporal-extauthz").mkdir(parents=True)
    for name in ("dev", "pyproject.toml", "CHANGELOG.md"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / "dev").chmod(0o755)
    (tmp_path / ".venv").symlink_to(REPO / ".venv")  # same pyproject: no reinstall
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    chart["appVersion"] = "9.9.9"
    (tmp_path / "helm" / "temporal-extauthz" / "Chart.yaml").write_text(yaml.safe_dump(chart))
    result = subprocess.run([str(tmp_path / "dev"), "release", "--out", str(tmp_path / "out")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode != 0
    assert f"pyproject.toml's version is {VERSION}" in result.stderr
    assert "Chart.yaml: appVersion is '9.9.9'" in result.stderr
    assert not (tmp_path / "out").exists()
