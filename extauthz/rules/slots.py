"""The engine's compiled index: the rules that can apply to one method (``Slot``), role-bit
tables, and the small shared pieces of its decisions (``Step``, quoting). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from extauthz.model import MAX_SHOWN_CHARS, Role, quote
from extauthz.rules.document import Binding, DenyRule
from extauthz.rules.matchers import Facts

R = TypeVar("R", Binding, DenyRule)
_ROLE_BITS = ((Role.READER, "read"), (Role.WRITER, "write"), (Role.WORKER, "worker"),
              (Role.ADMIN, "admin"))


@dataclass(frozen=True, slots=True)
class Step:
    """One line of an explanation (collected only when explaining)."""

    kind: str  # "deny-rule" | "binding" | "permission" | "namespace" | "queue" | "result" ...
    name: str
    outcome: str
    detail: str = ""


def q(text: str) -> str:
    """``quote`` without json.dumps for the common plain-ASCII case (hot path)."""
    if (len(text) <= MAX_SHOWN_CHARS and text.isascii() and text.isprintable()
            and '"' not in text and "\\" not in text):
        return f'"{text}"'
    return quote(text)


def role_names(role: Role) -> str:
    """``read|write`` for role flags (``none`` for no role)."""
    return "|".join(n for bit, n in _ROLE_BITS if role & bit) or "none"


def by_bits(sets: Mapping[str, frozenset[str]]) -> tuple[frozenset[str], ...]:
    """The union of the named sets for each of the 16 role-bit values."""
    out: list[frozenset[str]] = []
    for v in range(16):
        acc: frozenset[str] = frozenset()
        for bit, name in _ROLE_BITS:
            if v & bit:
                acc |= sets[name]
        out.append(acc)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Slot(Generic[R]):
    """The rules that can apply to one method: ungated ones (always evaluated) and gated
    ones by id (evaluated only when the principal passes their gate)."""

    ungated: tuple[tuple[int, R], ...]
    gated: Mapping[int, R]
    every: tuple[tuple[int, R], ...]  # all, in file order (for explanations)

    @staticmethod
    def of(rules: list[tuple[int, R]], gated: frozenset[int]) -> Slot[R]:
        """The slot of ``rules`` (id, rule), in file order; ``gated``: ids evaluated by gate."""
        return Slot(tuple(x for x in rules if x[0] not in gated),
                     {rid: r for rid, r in rules if rid in gated}, tuple(rules))

    def select(self, facts: Facts, possible: set[int]) -> list[R]:
        """The rules whose matcher holds for ``facts``, in file order."""
        out = [(rid, r) for rid, r in self.ungated if r.matcher(facts)]
        gated = self.gated
        if possible and gated:
            for rid in possible:
                r = gated.get(rid)
                if r is not None and r.matcher(facts):
                    out.append((rid, r))
            if len(out) > 1:
                out.sort(key=rule_id)
        return [r for _, r in out]


def rule_id(item: tuple[int, object]) -> int:
    """The id of an (id, rule) pair: the sort key of file order."""
    return item[0]


EMPTY: Slot[Any] = Slot((), {}, ())
