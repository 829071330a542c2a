"""Hot reload: atomic swap under concurrent decisions, invalid files keep the old policy."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import pytest
from rules_helpers import principal, target

from extauthz.rules.document import PolicyError
from extauthz.rules.reload import PolicyHolder, PolicyStatus

ALLOW_QUERY = """
bindings: [{name: v1, match: {groups: [g]}, roles: [read], namespaces: [a]}]
"""
DENY_QUERY = """
bindings: [{name: v2, match: {groups: [g]}, roles: [read], namespaces: [a]}]
deny: [{name: no-query, match: {groups: [g]}, methods: [QueryWorkflow]}]
"""
INVALID = """
bindings: [{name: v3, match: {groups: [g]}, roles: [reader], namespaces: [a]}]
"""

P = principal(sub="x", groups=["g"])
QUERY = target("QueryWorkflow", namespace="a")


def test_invalid_file_at_start_raises(tmp_path: Path) -> None:
    """Start-up with an invalid policy fails loudly (no server without a policy)."""
    f = tmp_path / "p.yaml"
    f.write_text(INVALID)
    with pytest.raises(PolicyError, match="unknown role 'reader'"):
        PolicyHolder(f)


def test_reload_swaps_and_invalid_keeps_old(tmp_path: Path) -> None:
    """A valid file is swapped in; an invalid one keeps the policy in force and says why."""
    f = tmp_path / "p.yaml"
    f.write_text(ALLOW_QUERY)
    seen: list[PolicyStatus] = []
    holder = PolicyHolder(f, on_reload=seen.append)
    assert holder(P, QUERY).allowed
    f.write_text(DENY_QUERY)
    assert holder.reload()
    d = holder(P, QUERY)
    assert (d.allowed, d.rule) == (False, "no-query")
    digest = holder.status.digest
    f.write_text(INVALID)
    assert not holder.reload()
    assert holder(P, QUERY).rule == "no-query"  # old policy still decides
    assert not holder.status.ok
    assert "unknown role 'reader'" in holder.status.error
    assert holder.status.digest == digest
    assert holder.status.failures == 1
    f.write_text(ALLOW_QUERY)
    assert holder.reload()
    assert holder.status.ok and holder(P, QUERY).allowed
    assert [s.ok for s in seen] == [True, True, False, True]


def test_concurrent_decisions_during_reloads(tmp_path: Path) -> None:
    """Decisions running while the file flips between versions never fail or see a mix."""
    f = tmp_path / "p.yaml"
    f.write_text(ALLOW_QUERY)
    holder = PolicyHolder(f)
    stop = threading.Event()
    errors: list[BaseException] = []
    outcomes: set[tuple[bool, str | None]] = set()
    list_target = target("ListWorkflowExecutions", namespace="a")

    def decide() -> None:
        while not stop.is_set():
            try:
                d = holder(P, QUERY)
                outcomes.add((d.allowed, d.rule))
                # every version allows listing: a half-loaded policy would show here
                assert holder(P, list_target).allowed
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(60):
            f.write_text((ALLOW_QUERY, DENY_QUERY, INVALID)[i % 3])
            holder.reload()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert outcomes <= {(True, "v1"), (False, "no-query")}
    f.write_text(DENY_QUERY)
    holder.reload()
    assert holder(P, QUERY).rule == "no-query"  # the new rule applies from the reload on


def test_polling_waits_for_a_stable_file(tmp_path: Path) -> None:
    """A change is loaded once the file is unchanged for one more poll."""
    f = tmp_path / "p.yaml"
    f.write_text(ALLOW_QUERY)
    holder = PolicyHolder(f)
    assert holder.poll_once(None) is None  # unchanged
    f.write_text(DENY_QUERY + "\n# edit\n")
    pending = holder.poll_once(None)
    assert pending is not None and holder(P, QUERY).allowed  # seen, not yet loaded
    assert holder.poll_once(pending) is None
    assert not holder(P, QUERY).allowed  # loaded


async def test_watch_and_sighup(tmp_path: Path) -> None:
    """The watcher picks up a change; SIGHUP reloads at once."""
    f = tmp_path / "p.yaml"
    f.write_text(ALLOW_QUERY)
    holder = PolicyHolder(f)
    stop = asyncio.Event()
    watcher = asyncio.create_task(holder.watch(0.02, stop))
    try:
        f.write_text(DENY_QUERY)
        for _ in range(200):
            if not holder(P, QUERY).allowed:
                break
            await asyncio.sleep(0.01)
        assert holder(P, QUERY).rule == "no-query"
        loop = asyncio.get_running_loop()
        holder.install_sighup(loop)
        try:
            # write in place without changing size/mtime granularity concerns: SIGHUP forces it
            f.write_text(ALLOW_QUERY + "#" * 3)
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(200):
                if holder(P, QUERY).allowed:
                    break
                await asyncio.sleep(0.01)
            assert holder(P, QUERY).allowed
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
    finally:
        stop.set()
        await watcher


async def test_async_load_under_concurrent_checks(tmp_path: Path) -> None:
    """Many asyncio tasks deciding while reloads happen: zero errors."""
    f = tmp_path / "p.yaml"
    f.write_text(ALLOW_QUERY)
    holder = PolicyHolder(f)
    done = asyncio.Event()

    async def worker() -> int:
        n = 0
        while not done.is_set():
            holder(P, QUERY)
            n += 1
            await asyncio.sleep(0)
        return n

    tasks = [asyncio.create_task(worker()) for _ in range(20)]
    for i in range(30):
        f.write_text((DENY_QUERY, ALLOW_QUERY)[i % 2])
        holder.reload()
        await asyncio.sleep(0.001)
    done.set()
    counts = await asyncio.gather(*tasks)
    assert all(c > 0 for c in counts)
    assert holder(P, QUERY).allowed
