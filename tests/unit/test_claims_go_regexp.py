r"""`claims.permissions_regex` behaves as Go's `regexp`, which Temporal's server compiles it with.

Every expected result below is what Go gives, not what we think it gives: each row was run
through Go's `regexp` (go1.19.8, Debian's `golang-go`) by a 40-line program doing what
Temporal's claim mapper does — `regexp.Compile(pattern)`, `FindStringSubmatch(entry)`, the
`namespace` and `role` groups picked by walking `SubexpNames()` — with the entry decoded from
JSON by `encoding/json`, as Temporal decodes claims. One row cannot run on Go 1.19:
`(?<name>re)`, which Go accepts since 1.22 (regexp/syntax), the Go Temporal's server is built
with; its expectation is from that documentation. A random differential run of 20,000
patterns and entries (Go against `extauthz.goregexp`) agreed on every case but that syntax.
Neither the tests nor CI need Go.

The rows are the cases where Python's `re` (the previous engine) and Go differ; the principal
each row asserts is the one Temporal derives from Go's groups.
"""

from __future__ import annotations

import pytest

from extauthz.claims import ROLE_NAMES, ClaimMapper, ClaimMapping, validate_regex
from extauthz.model import Role

README = r"^(?P<namespace>[\w-]+)\.(?P<role>\w+)$"  # docs/configuration.md's example
COLON = r"(?P<namespace>\w+):(?P<role>\w+)"

# (pattern, permissions entry, Go's FindStringSubmatch: (namespace, role), or None: no match)
GO_MATCHES: list[tuple[str, str, tuple[str, str] | None]] = [
    # `$` without (?m) is the end of the text in Go; Python's also matches before a final "\n"
    (README, "payroll.admin\n", None),
    (COLON + r"\z", "ns:admin\n", None),  # \z: Go's end of text (Python has no \z)
    # \w \d \s \b are ASCII in Go, Unicode in Python
    (COLON, "café:admin", None),
    (COLON, "ünits:admin", ("nits", "admin")),
    (r"(?P<namespace>ns\d+):(?P<role>\w+)", "ns٣:admin", None),
    (r"(?P<namespace>\w+)\s(?P<role>\w+)", "ns\u00a0admin", None),
    (r"(?P<namespace>\w+)\s(?P<role>\w+)", "ns\u2003admin", None),
    (r"(?P<namespace>\w+)\s(?P<role>\w+)", "ns\vadmin", None),  # Go's \s has no \v, even ASCII
    (r"(?P<namespace>\w+)\s(?P<role>\w+)", "ns\x1cadmin", None),
    (r"\bns-(?P<namespace>[a-z]+):(?P<role>[a-z]+)", "éns-x:read", ("x", "read")),
    (r"(?P<namespace>\S+):(?P<role>\w+)", "\u00a0:read", ("\u00a0", "read")),
    (r"(?P<namespace>\W+):(?P<role>\w+)", "é:read", ("é", "read")),
    (r"(?P<namespace>\D+):(?P<role>\w+)", "٣:read", ("٣", "read")),
    # (?i): Go folds by Unicode simple case folding; Python also folds U+0131/U+0130 into i
    (r"(?i)(?P<namespace>billing):(?P<role>\w+)", "bıllıng:read", None),
    (r"(?i)(?P<namespace>billing):(?P<role>\w+)", "BİLLİNG:read", None),
    # syntax Go reads and Python reads otherwise
    (r"(?P<namespace>a{,2}):(?P<role>\w+)", "a{,2}:read", ("a{,2}", "read")),  # a literal
    (r"(?U)(?P<namespace>\w+):(?P<role>\w+)", "ns:admin", ("ns", "a")),  # (?U) is ungreedy
    (r"(?P<namespace>[[:alpha:]]+):(?P<role>\w+)", "billing:read", ("billing", "read")),
    (r"(?P<namespace>[[:word:]]+):(?P<role>\w+)", "a_1:read", ("a_1", "read")),
    # syntax Go has and Python refuses
    (COLON + r"\z", "ns:admin", ("ns", "admin")),
    (r"\Qns.\E(?P<namespace>\w+):(?P<role>\w+)", "ns.billing:read", ("billing", "read")),
    (COLON + r"\Qxyz", "ns:readxyz", ("ns", "read")),  # \Q without \E runs to the end
    (r"(?P<namespace>\pL+):(?P<role>\w+)", "café:read", ("café", "read")),
    (r"(?P<namespace>\p{Greek}+):(?P<role>\w+)", "αβ:read", ("αβ", "read")),
    (r"(?P<namespace>\x{6E}s):(?P<role>\w+)", "ns:read", ("ns", "read")),
    (r"(?P<namespace>\w+)\12(?P<role>\w+)", "ns\nread", ("ns", "read")),  # octal, not a group
    (r"(?P<namespace>[\d-z]+):(?P<role>\w+)", "1-z:read", ("1-z", "read")),
    (r"(?P<1a>x)?(?P<namespace>\w+):(?P<role>\w+)", "ns:read", ("ns", "read")),
    (r"(?)(?P<namespace>\w+):(?P<role>\w+)", "ns:read", ("ns", "read")),
    (r"(?<namespace>\w+):(?<role>\w+)", "ns:read", ("ns", "read")),  # Go >= 1.22, see above
    # a group that took no part is "" in FindStringSubmatch: an empty namespace gets the role
    (r"(?P<namespace>x)?:(?P<role>\w+)", ":admin", ("", "admin")),
    # a name used twice: Temporal's loop over SubexpNames keeps the last group of that name
    (r"(?P<namespace>a):(?P<role>\w+)|(?P<namespace>b):(?P<role>\w+)", "a:read", ("", "")),
    (r"(?P<namespace>a):(?P<role>\w+)|(?P<namespace>b):(?P<role>\w+)", "b:read", ("b", "read")),
    # Go's JSON decoder turns a lone surrogate into U+FFFD before the regexp sees it
    (r"(?P<namespace>[^:]+):(?P<role>\w+)", "a\ud800b:read", ("a\ufffdb", "read")),
]

# Python's `re` compiles these; Go's regexp.Compile refuses every one (go1.19.8, as above)
GO_REFUSES = [
    r"(?P<namespace>\w+):(?P<role>\w+):(?P=role)",  # backreferences
    r"(?P<namespace>\w)\1:(?P<role>\w+)",
    r"(?P<namespace>\w+)(?=:):(?P<role>\w+)",  # lookaround
    r"(?P<namespace>\w+)(?!x):(?P<role>\w+)",
    r"(?<=ns=)(?P<namespace>\w+):(?P<role>\w+)",
    r"(?<!x)(?P<namespace>\w+):(?P<role>\w+)",
    r"(?>(?P<namespace>\w+)):(?P<role>\w+)",  # atomic group
    r"(?P<namespace>\w++):(?P<role>\w+)",  # possessive
    r"(?P<namespace>\w+)(:)?(?(2)(?P<role>\w+)|x)",  # conditional
    r"(?#comment)(?P<namespace>\w+):(?P<role>\w+)",
    r"(?x)(?P<namespace>\w+) : (?P<role>\w+)",
    r"(?a)(?P<namespace>\w+):(?P<role>\w+)",
    r"(?P<namespace>\w+):(?P<role>\w+)\Z",
    r"(?P<namespace>\w+)\u003a(?P<role>\w+)",
    r"(?P<namespace>\w+)\U0000003a(?P<role>\w+)",
    r"(?P<namespace>\w+)\N{COLON}(?P<role>\w+)",
    r"(?P<namespace>a{1001}):(?P<role>\w+)",  # a repeat count over 1000
    r"(?P<namespace>(?:a{100}){100}):(?P<role>\w+)",  # nested counts over 1000 in all
    r"(?P<namespace>\w+):(?P<role>\w+)(?P<namé>x)?",  # a group name beyond [A-Za-z0-9_]
]


def principal_of(pattern: str, entry: str) -> tuple[Role, dict[str, Role]]:
    """System role and namespace roles for a token whose `permissions` is ``[entry]``."""
    p = ClaimMapper(ClaimMapping(permissions_regex=pattern)).principal({"permissions": [entry]})
    return p.system, dict(p.namespaces)


def temporal_roles(go: tuple[str, str] | None) -> dict[str, Role]:
    """The namespace roles Temporal's claim mapper derives from Go's groups."""
    if go is None:
        return {}
    role = ROLE_NAMES.get(go[1].lower())
    return {go[0]: role} if role is not None else {}


@pytest.mark.parametrize(("pattern", "entry", "go"), GO_MATCHES)
def test_permissions_regex_maps_like_go(pattern: str, entry: str,
                                        go: tuple[str, str] | None) -> None:
    """Each entry gets the roles Temporal gets from Go's match, where Python's `re` differs."""
    assert principal_of(pattern, entry) == (Role.NONE, temporal_roles(go))


@pytest.mark.parametrize(("pattern", "entry", "go"), GO_MATCHES)
def test_permissions_regex_groups_are_gos(pattern: str, entry: str,
                                          go: tuple[str, str] | None) -> None:
    """The namespace and role strings themselves are Go's (FindStringSubmatch)."""
    from extauthz.claims import compile_regex

    regex = compile_regex(pattern)
    match = regex.find_string_submatch(entry)
    got = None if match is None else (match[regex.subexp_index("namespace")],
                                      match[regex.subexp_index("role")])
    assert got == go


@pytest.mark.parametrize("pattern", GO_REFUSES)
def test_regex_go_refuses_is_refused(pattern: str) -> None:
    """A pattern Go's regexp.Compile refuses is a config error, saying it is not Go syntax."""
    problem = validate_regex(pattern)
    assert problem is not None and "not a valid Go (RE2) regular expression" in problem


@pytest.mark.parametrize("pattern", [
    r"(?P<namespace>\C+):(?P<role>\w+)",
    r"(?P<namespace>[^:]+):(?P<role>\w+)(?P<nam€>x)?",
])
def test_re2_syntax_go_lacks_is_refused(pattern: str) -> None:
    """RE2 takes `\\C` and non-ASCII group names; Go does not, so neither do we."""
    problem = validate_regex(pattern)
    assert problem is not None and "Go" in problem


@pytest.mark.parametrize(("pattern", "entry", "go"), [
    (r"(?P<namespace>.+):(?P<role>\w+)", "a\nb:admin", ("b", "admin")),
    (r"(?s)(?P<namespace>.+):(?P<role>\w+)", "a\nb:admin", ("a\nb", "admin")),
    (r"(?m)^(?P<namespace>\w+):(?P<role>\w+)$", "x\nns:read\n", ("ns", "read")),
    (r"(?P<namespace>a|ab)(?P<role>c|bcd)", "abcd", ("a", "bcd")),
    (r"(?P<namespace>ab|a)(?P<role>read|bread)", "abread", ("ab", "read")),
    (r"(?i)(?P<namespace>k8s):(?P<role>READ)", "\u212a8S:read", ("\u212a8S", "read")),
])
def test_engine_keeps_gos_defaults(pattern: str, entry: str, go: tuple[str, str]) -> None:
    """RE2 runs with Go's defaults: `.` stops at a newline unless (?s), (?m) anchors at lines,
    alternation is leftmost-first (not leftmost-longest), (?i) folds the Kelvin sign."""
    from extauthz.claims import compile_regex

    regex = compile_regex(pattern)
    match = regex.find_string_submatch(entry)
    assert match is not None
    assert (match[regex.subexp_index("namespace")], match[regex.subexp_index("role")]) == go
