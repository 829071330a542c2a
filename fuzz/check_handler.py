"""Coverage-guided fuzzing of the whole Check handler with ``atheris`` (libFuzzer).

    python -m fuzz.check_handler -atheris_runs=100000        # a fixed number of inputs
    python -m fuzz.check_handler -max_total_time=60 CORPUS/  # a time budget, keeping a corpus
    ./dev fuzz [libFuzzer flags]                              # the same, from the dev script

Every input becomes an Envoy CheckRequest (``fuzz.harness.request_from_bytes``) answered by
the real ``AuthorizationService``; an exception escaping the handler or an outcome that breaks
an invariant (``fuzz.harness.verify_outcome``) is a crash: libFuzzer stops, writes the input
to ``crash-*`` and exits non-zero. ``--seed-corpus DIR`` writes the seed inputs to DIR and
exits. After 1024, 2048, 4096, ... inputs a line ``fuzz: <runs> runs, <outcomes>`` tells
what was exercised (libFuzzer ends the process without running Python's exit handlers).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import atheris

_outcomes: Counter[str] = Counter()


def _summary() -> None:
    runs = sum(_outcomes.values())
    top = ", ".join(f"{k}={v}" for k, v in _outcomes.most_common())
    print(f"fuzz: {runs} runs, {top}", file=sys.stderr, flush=True)


def _target() -> Callable[[bytes], None]:
    with atheris.instrument_imports(include=["extauthz", "fuzz"]):
        from fuzz import harness

    harness.handlers()  # build the method table and the policy once, outside the loop

    def test_one_input(data: bytes) -> None:
        _outcomes[harness.one_input(data).split(":", 1)[0]] += 1
        runs = _outcomes.total()
        if runs >= 1024 and runs & (runs - 1) == 0:
            _summary()

    return test_one_input


def write_seeds(directory: Path) -> int:
    """Write the seed corpus to ``directory``; the number of files."""
    from fuzz import harness

    directory.mkdir(parents=True, exist_ok=True)
    seeds = harness.seeds()
    for i, seed in enumerate(seeds):
        (directory / f"seed-{i:04d}").write_bytes(seed)
    return len(seeds)


def main(argv: list[str] | None = None) -> None:
    """Run libFuzzer with ``argv`` (sys.argv by default)."""
    args = list(sys.argv if argv is None else argv)
    if len(args) >= 3 and args[1] == "--seed-corpus":
        print(f"wrote {write_seeds(Path(args[2]))} seeds to {args[2]}")
        return
    target = _target()
    atheris.Setup(args, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
