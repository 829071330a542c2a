"""Name patterns for namespaces and task queues, compiled once. Pure: no I/O.

Syntax (deliberately small):

- ``*`` matches any run of characters, including none: ``billing-*`` matches ``billing-`` and
  ``billing-eu``, never ``billing`` (the ``-`` is literal) nor ``xbilling-a`` (patterns are
  anchored at both ends);
- ``?`` matches exactly one character;
- ``\\`` escapes the next character (``\\*`` is a literal star);
- everything else is literal and case-sensitive, like Temporal's own namespace and queue names.

A pattern set (a list of patterns) is split into an exact-name ``frozenset`` and one anchored
alternation regex, so a match is a set lookup plus at most one ``fullmatch``.

Rejected at load (``GlobError``, the message says what to write instead): the empty pattern,
``**`` (write ``*``), a trailing lone ``\\``, and, for namespaces, characters no Temporal
namespace name can contain (anything outside ``A-Z a-z 0-9 . _ -``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

NAMESPACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class GlobError(ValueError):
    """A pattern that cannot be used; the message says why and what to write."""


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` has a wildcard (an unescaped ``*`` or ``?``)."""
    escaped = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "*?":
            return True
    return False


def literal(pattern: str) -> str:
    """The name an escape-only pattern stands for (``a\\*b`` → ``a*b``)."""
    return re.sub(r"\\(.)", r"\1", pattern)


def to_regex(pattern: str, *, namespace: bool = False) -> str:
    """The regex source (unanchored) for one pattern; raises ``GlobError``."""
    if pattern == "":
        raise GlobError("empty pattern matches nothing; write a name or `*`")
    if "**" in pattern.replace("\\*", "\0"):
        raise GlobError(f"{pattern!r}: `**` means the same as `*`; write a single `*`")
    out: list[str] = []
    escaped = False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
            continue
        if ch == "\\":
            escaped = True
        elif ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            if namespace and ch not in NAMESPACE_CHARS:
                raise GlobError(
                    f"{pattern!r}: {ch!r} cannot occur in a Temporal namespace name, so the "
                    "pattern matches nothing; namespace names use A-Z a-z 0-9 . _ -"
                )
            out.append(re.escape(ch))
    if escaped:
        raise GlobError(f"{pattern!r}: ends with a lone `\\`; escape it as `\\\\` or remove it")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class NameSet:
    """A compiled list of name patterns. ``everything`` short-cuts a lone ``*``."""

    patterns: tuple[str, ...]
    exact: frozenset[str]
    regex: re.Pattern[str] | None
    everything: bool

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if self.everything:
            return name != ""
        if name in self.exact:
            return True
        return self.regex is not None and self.regex.fullmatch(name) is not None

    def __str__(self) -> str:
        return ", ".join(self.patterns)


def compile_names(patterns: Iterable[str], *, namespace: bool = False) -> NameSet:
    """Compile patterns into a ``NameSet``; raises ``GlobError`` naming the bad pattern."""
    pats = tuple(patterns)
    exact: set[str] = set()
    sources: list[str] = []
    everything = False
    for p in pats:
        src = to_regex(p, namespace=namespace)
        if p == "*":
            everything = True
        elif is_glob(p):
            sources.append(src)
        else:
            exact.add(literal(p))
    regex = re.compile("|".join(f"(?:{s})" for s in sources), re.DOTALL) if sources else None
    return NameSet(pats, frozenset(exact), regex, everything)
