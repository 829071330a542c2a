r"""Go ``regexp`` semantics, for the one pattern Temporal's server compiles with Go.

Temporal's default claim mapper compiles ``permissionsRegex`` with Go's ``regexp.Compile`` and
reads every ``permissions`` entry with ``FindStringSubmatch``. Python's ``re`` would give other
roles to the same token: its ``$`` also matches before a trailing newline, its ``\w \d \s \b``
are Unicode, ``(?i)`` folds the dotless and dotted I (U+0131, U+0130) into ``i``, ``{,2}`` is
a repetition, ``(?U)`` another flag; and it accepts what Go refuses (backreferences,
lookaround, ``\Z``, possessive and atomic groups) while refusing Go syntax (``\z``,
``\Q..\E``, ``\pL``, ``[[:alpha:]]``).

So the pattern runs on RE2 (PyPI ``google-re2``), the C++ library Go's package follows, with
RE2's defaults, which are Go's: UTF-8, leftmost-first (not leftmost-longest), ASCII Perl
classes and ``\b``, ``^``/``$`` at the ends of the text unless ``(?m)``, ``.`` not matching
``\n`` unless ``(?s)``. Where RE2 and Go still differ, this module does what Go does:

- ``\C`` (any byte) is RE2-only: refused;
- a capture name must be ``[A-Za-z0-9_]+`` (RE2 also takes other word characters): refused;
- a group that did not take part in the match is ``""`` (``FindStringSubmatch``), not None;
- ``names`` lists every group's name by index (Go's ``SubexpNames``); RE2's own map keeps only
  the first group of a name used twice, Temporal's loop over ``SubexpNames`` the last;
- a string with a lone surrogate (JSON ``"\ud800"``, which Python's decoder keeps) is matched
  with U+FFFD in its place, which is what Go's JSON decoder hands to the regexp.

Known gaps, both at the edges: RE2 and Go may ship different Unicode versions (``\pL`` on a
character added lately), and their size limits differ (RE2 refuses a compiled program over
``MAX_MEM`` as "pattern too large", Go counts instructions), so a huge pattern may be refused
here that Go would take, or the other way round; either way it is refused at start-up, never
at match time. ``(?<name>re)`` is accepted, as Go does since 1.22.
"""

from __future__ import annotations

import re
from typing import Any

# RE2's budget for one compiled pattern. Its default (8 MiB) refuses `\pL{1000}`, which Go takes
MAX_MEM = 32 << 20
_CAPTURE_NAME = re.compile(r"[A-Za-z0-9_]+")  # Go's isValidCaptureName
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class GoRegexpError(ValueError):
    """The pattern is one Go's ``regexp.Compile`` refuses; the message says why."""


class GoRegexp:
    """A pattern compiled to behave as Go's ``regexp.Compile(pattern)`` does."""

    __slots__ = ("_compiled", "names", "pattern")

    def __init__(self, pattern: str):
        import re2  # google-re2; imported here so a config without a regex never loads it

        try:
            pattern.encode("utf-8")
        except UnicodeEncodeError:
            raise GoRegexpError("invalid UTF-8 (a lone surrogate)") from None
        options = re2.Options()
        options.max_mem = MAX_MEM
        options.log_errors = False
        # the defaults, spelled out because Go's semantics depend on them
        options.encoding = re2.Options.Encoding.UTF8
        options.posix_syntax = False  # Perl syntax: \d \w \s \b, (?flags), non-greedy
        options.longest_match = False  # leftmost-first, like Go's regexp (not regexp/POSIX)
        options.never_nl = False
        options.dot_nl = False
        options.case_sensitive = True
        options.literal = False
        try:
            compiled: Any = re2.compile(pattern, options)
        except re2.error as exc:
            raise GoRegexpError(_message(exc)) from None
        names = _capture_names(pattern)
        # cross-check the scan above with RE2's own parse: the same groups, the same names
        first = {name: i for i, name in reversed(list(enumerate(names))) if name}
        if len(names) - 1 != compiled.groups or first != dict(compiled.groupindex):
            raise GoRegexpError("could not be read as Go syntax (capture groups disagree)")
        self._compiled = compiled
        self.pattern = pattern
        self.names: tuple[str, ...] = tuple(names)

    def subexp_index(self, name: str) -> int:
        """The index of the last group called ``name`` (Temporal's claim mapper keeps the last
        one it sees in ``SubexpNames``), 0 if there is none."""
        found = [i for i, n in enumerate(self.names) if n == name]
        return found[-1] if found else 0

    def find_string_submatch(self, text: str) -> list[str] | None:
        """Go's ``FindStringSubmatch``: the leftmost match and every group ("" when a group did
        not take part), or None."""
        if not text.isascii():
            text = _SURROGATE.sub("\ufffd", text)
        match: Any = self._compiled.search(text)
        if match is None:
            return None
        return [str(match.group(0)), *(g if isinstance(g, str) else "" for g in match.groups())]


def _message(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _capture_names(pattern: str) -> list[str]:
    """Every capture group's name by index (``""`` for unnamed; index 0 is the whole match),
    read from a pattern RE2 has accepted. Refuses the RE2 syntax Go does not have."""
    names = [""]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1:i + 2]
            if nxt == "Q":  # \Q...\E (or to the end): literal text
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            if nxt == "C":
                raise GoRegexpError("invalid escape sequence: `\\C` (RE2 has it, Go does not)")
            i += 2
        elif c == "[":
            i = _skip_class(pattern, i)
        elif c == "(" and pattern.startswith(("(?P<", "(?<"), i):
            start = pattern.index("<", i) + 1
            end = pattern.index(">", start)
            name = pattern[start:end]
            if not _CAPTURE_NAME.fullmatch(name):
                raise GoRegexpError(f"invalid named capture: `{pattern[i:end + 1]}` "
                                    "(Go allows only [A-Za-z0-9_] in a group name)")
            names.append(name)
            i = end + 1
        elif c == "(" and pattern.startswith("(?", i):
            i += 2  # non-capturing group or flags
        else:
            if c == "(":
                names.append("")
            i += 1
    return names


def _skip_class(pattern: str, i: int) -> int:
    """The index just past the character class opening at ``i``."""
    i += 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):  # a ']' first is a literal
        i += 1
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern.startswith("C", i + 1):
                raise GoRegexpError("invalid escape sequence: `\\C` (RE2 has it, Go does not)")
            i += 2
        elif c == "]":
            return i + 1
        elif (posix := _POSIX_CLASS.match(pattern, i)) is not None:
            i = posix.end()
        else:
            i += 1
    return n
