"""The shape of the code base the layer contracts and the style rules promise: no hand-written
module over ~400 lines, and every module of the shipped package placed by a layer contract."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 420  # "none over ~400 lines"
# wiring and offline tools: they may import any layer, and nothing imports them but the CLI
WIRING = {"extauthz", "extauthz.__main__", "extauthz.cli", "extauthz.offline", "extauthz.skew",
          "extauthz.config"}


def _modules(package: str) -> list[tuple[str, Path]]:
    root = REPO / package
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


@pytest.mark.parametrize("package", ["extauthz", "devkit"])
def test_no_module_is_over_400_lines(package: str) -> None:
    """Every module of the server and of the development kit stays under ~400 lines."""
    long = {name: n for name, path in _modules(package)
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_shipped_module_is_placed_by_a_layer_contract() -> None:
    """Each module of `extauthz` is named by an import-linter contract (itself or a package
    above it), or is wiring: a new module cannot slip past the layer rules unnoticed."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    named: set[str] = set()
    for contract in config["contracts"]:
        named.update(contract.get("source_modules", []))
        for layer in contract.get("layers", []):
            named.update(part.strip() for part in layer.split(":"))
    unplaced = []
    for name, path in _modules("extauthz"):
        parents = {".".join(name.split(".")[:i]) for i in range(2, name.count(".") + 2)}
        wiring = name in WIRING or name.split(".")[:2] == ["extauthz", "config"]
        package_of_named = path.name == "__init__.py" and any(
            n.startswith(name + ".") for n in named)
        if not (wiring or parents & named or package_of_named):
            unplaced.append(name)
    assert not unplaced, unplaced
