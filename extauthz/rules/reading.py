"""Reading the policy document: the shared ``Reader`` in the policy's wording.

The policy says ``expected a string, got 1`` and ``unknown key; known keys here: ...``
(``docs/policy.md`` and the tests quote them); the mechanism is ``extauthz.yamlread``'s, the
same as the config file's. Helpers for the values every part of the document uses.
"""

from __future__ import annotations

from typing import Any

from extauthz.rules.compiled import SYSTEM_NAMESPACE, PolicyError
from extauthz.rules.globs import GlobError, NameSet, compile_names
from extauthz.yamlread import Dialect, Reader, show

_TYPE_NAMES = {str: "a string", bool: "true or false"}
POLICY = Dialect(error=PolicyError, type_name=lambda kind: _TYPE_NAMES[kind], show=show,
                 unknown_key="unknown key; known keys here: {known}", show_not_mapping=True)


def reader(data: object, path: str, source: str, what: str = "a mapping") -> Reader:
    """A reader of one mapping of the policy document at ``path``."""
    return Reader(data, path, source, POLICY, what)


def text(r: Reader, name: str, default: str = "", *, required: bool = False) -> str:
    """A string (``required``: an error when absent)."""
    if required and not r.has(name):
        raise r.error(name, "required")
    return r.get(name, str, default)


def flag(r: Reader, name: str, default: bool) -> bool:
    """``true`` or ``false``."""
    return r.get(name, bool, default)


def strings(r: Reader, name: str, *, required: bool = False, nonempty: bool = True
            ) -> tuple[str, ...] | None:
    """A string or a list of strings; None when absent (an error when ``required``)."""
    v = r.raw(name)
    if v is None:
        if required:
            raise r.error(name, "required: a list of strings")
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        raise r.error(name, f"expected a list of strings, got {show(v)}")
    for i, item in enumerate(v):
        if not isinstance(item, str):
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: expected a string, "
                              f"got {show(item)} (quote it)")
    if nonempty and not v:
        raise r.error(name, "an empty list matches nothing; list at least one value or "
                      "remove the key")
    return tuple(v)


def items(r: Reader, name: str) -> list[Any]:
    """A list (absent: empty)."""
    v = r.raw(name)
    if v is None:
        return []
    if not isinstance(v, list):
        raise r.error(name, "expected a list")
    return v


def names(r: Reader, name: str, *, namespace: bool) -> NameSet | None:
    """Namespace or queue names and patterns (None when absent)."""
    values = strings(r, name)
    if values is None:
        return None
    for i, v in enumerate(values):
        if namespace and v == SYSTEM_NAMESPACE:
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: {SYSTEM_NAMESPACE!r} is not a "
                              "namespace here; grant cluster-level roles with `cluster: true`")
        try:
            compile_names([v], namespace=namespace)
        except GlobError as exc:
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: {exc}") from None
    return compile_names(values, namespace=namespace)


def rule_name(r: Reader, seen: set[str]) -> str:
    """A binding's or deny rule's ``name``: required, unique among both."""
    name = text(r, "name", required=True)
    if not name.strip():
        raise r.error("name", "must not be empty")
    if name in seen:
        raise r.error("name", f"{name!r} is used twice; binding and deny rule names are unique "
                      "(they appear in decisions, logs and metrics)")
    seen.add(name)
    return name
