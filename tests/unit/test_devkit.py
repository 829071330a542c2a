"""The development kit's pure helpers: the port allocator, the gRPC frame, the token command's
role check and help texts (no processes started, no network beyond binding loopback ports)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from devkit import cli, plain
from devkit.grpcframe import frame
from devkit.ports import LOOPBACK, free_addresses, free_port, free_ports
from extauthz.claims import ROLE_NAMES


def test_free_ports_returns_distinct_ports_in_one_call() -> None:
    """200 ports from one call are 200 different ports (every socket is held until all are
    picked), each one bindable right after."""
    ports = free_ports(200)
    assert len(ports) == 200
    assert len(set(ports)) == 200
    with socket.socket() as sock:
        sock.bind((LOOPBACK, ports[0]))


def test_free_addresses_and_free_port_are_loopback_ports() -> None:
    """``free_addresses`` pairs distinct ports with the host; ``free_port`` is one port."""
    addresses = free_addresses(3)
    assert [a[0] for a in addresses] == [LOOPBACK] * 3
    assert len({a[1] for a in addresses}) == 3
    assert 0 < free_port() < 65536


def test_frame_prefixes_flag_and_big_endian_length() -> None:
    """A frame is the flag byte, the 4-byte big-endian length (or a declared one) and the
    message."""
    assert frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert frame(b"abc", 1) == b"\x01\x00\x00\x00\x03abc"
    assert frame(b"abc", declared=9) == b"\x00\x00\x00\x00\x09abc"


@pytest.mark.parametrize(("permissions", "unknown"), [
    (["default:read", "payroll:write", "x:worker", "temporal-system:admin"], []),
    (["default:READ"], []),
    (["default:reader", "default:writer"], ["default:reader", "default:writer"]),
    (["default"], ["default"]),
])
def test_token_flags_permissions_temporal_ignores(permissions: list[str],
                                                  unknown: list[str]) -> None:
    """Entries without a colon or with a role Temporal does not know are reported."""
    assert cli.unknown_permissions(permissions) == unknown


def test_token_warns_on_unknown_roles_and_still_mints(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``token --permissions default:reader`` warns on stderr, naming the known roles, and
    still prints the minted token."""
    minted: list[dict[str, object]] = []

    def fake_mint(url: str, claims: dict[str, object], timeout: float = 10.0) -> str:
        minted.append(claims)
        return "TOKEN"

    monkeypatch.setattr("devkit.tokens.mint", fake_mint)
    assert cli.main(["token", "--sub", "alice", "--permissions", "default:reader",
                     "--issuer", "http://127.0.0.1:1"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "TOKEN"
    assert "'default:reader'" in err and all(role in err for role in ROLE_NAMES)
    assert minted[0]["permissions"] == ["default:reader"]


def test_help_texts_have_no_rst_literals(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` of the shipped CLI, the devkit commands and the stack shows no ``\\`\\```."""
    from devkit import stack
    from extauthz import cli as shipped

    mains: list[tuple[Callable[[list[str]], object], list[str]]] = [
        (shipped.main, ["--help"]), (cli.main, ["token", "--help"]), (cli.main, ["--help"]),
        (stack.main, ["--help"])]
    for main, argv in mains:
        with pytest.raises(SystemExit):
            main(argv)
        assert "``" not in capsys.readouterr().out
    assert plain("run ``x``") == "run x"


def test_stack_flags_all_have_help() -> None:
    """Every ``./dev stack`` flag is explained in ``--help``."""
    from devkit import stack

    actions = [a for a in stack.parser()._actions if a.option_strings]
    assert len(actions) >= 13
    assert [a.option_strings for a in actions if not a.help] == []


def test_the_readme_tour_is_the_one_the_stack_prints() -> None:
    """The README's five-minute tour is, line for line, what `./dev stack` prints for its
    default addresses (one set of examples, not two)."""
    from devkit import stack

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert stack.tour(stack.StackConfig()) in readme
