"""Name patterns: anchored, case-sensitive, `*` does not cross into other names."""

from __future__ import annotations

import pytest

from extauthz.rules.globs import GlobError, compile_names


@pytest.mark.parametrize(
    ("patterns", "name", "matches"),
    [
        (["billing-*"], "billing-eu", True),
        (["billing-*"], "billing-", True),
        (["billing-*"], "billing", False),
        (["billing-*"], "xbilling-a", False),
        (["billing-*"], "Billing-eu", False),
        (["billing-*"], "billing-eu\nx", True),  # `*` is any character, newline included
        (["*"], "anything", True),
        (["*"], "", False),
        (["payroll"], "payroll", True),
        (["payroll"], "payroll2", False),
        (["payroll"], "Payroll", False),
        (["dev-?"], "dev-a", True),
        (["dev-?"], "dev-ab", False),
        (["a.b"], "axb", False),  # `.` is literal
        (["*-prod"], "eu-prod", True),
        (["*-prod"], "eu-prod-2", False),
        (["a", "b-*"], "b-1", True),
        (["a", "b-*"], "c", False),
        ([r"q\*"], "q*", True),
        ([r"q\*"], "qx", False),
    ],
)
def test_glob_matching(patterns: list[str], name: str, matches: bool) -> None:
    """A name matches a pattern set exactly as the table says."""
    assert (name in compile_names(patterns)) is matches


@pytest.mark.parametrize("bad", ["", "a**", "ends\\"])
def test_impossible_patterns_rejected(bad: str) -> None:
    """Empty, `**` and a trailing lone backslash are rejected with advice."""
    with pytest.raises(GlobError):
        compile_names([bad])


@pytest.mark.parametrize("bad", ["pay roll", "a/b", "ns:*"])
def test_namespace_patterns_with_impossible_characters_rejected(bad: str) -> None:
    """A namespace pattern with characters no namespace name has matches nothing: rejected."""
    with pytest.raises(GlobError, match="namespace"):
        compile_names([bad], namespace=True)


def test_task_queue_patterns_allow_any_character() -> None:
    """Task queue names are free-form, so queue patterns are too."""
    assert "team/a b" in compile_names(["team/*"])
