"""The one reader of YAML documents (server config and policy) into typed values.

A ``Reader`` walks one mapping, remembers the key path for messages and rejects unknown keys.
Both documents share the mechanism; each keeps its own wording (a ``Dialect``), which tests and
docs pin: the config file says ``expected int, got 'x'``, the policy ``expected a string, got
'x'``. ``ConfigError`` is the base of every document error (``PolicyError`` included); it lives
here so that the pure policy core and the server config can both raise it without importing
each other. Imports nothing of extauthz.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem; the message names the source and the key."""


def show(value: object) -> str:
    """``repr`` cut to 60 characters (a policy message quotes what the author wrote)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(kind: type) -> str:
    return kind.__name__


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one kind of document words the reader's messages, and which error it raises."""

    error: type[ConfigError] = ConfigError
    # "expected <this>, got <show(value)>" for a value of the wrong type
    type_name: Callable[[type], str] = _type_name
    show: Callable[[object], str] = repr
    # the message for a key nobody read; {known} lists the keys read here
    unknown_key: str = "unknown key (known keys here: {known})"
    # a mapping was expected: a policy says what it got, the config does not
    show_not_mapping: bool = False
    # key path → the name the user wrote it under (an environment variable), for messages
    labels: Mapping[str, str] = field(default_factory=dict)


CONFIG = Dialect()


class Reader:
    """Reads one mapping, remembering the key path for messages and rejecting unknown keys."""

    def __init__(self, data: object, path: str, source: str, dialect: Dialect = CONFIG,
                 what: str = "a mapping"):
        self.dialect = dialect
        self.path = path
        self.source = source
        if not isinstance(data, Mapping):
            got = f", got {dialect.show(data)}" if dialect.show_not_mapping else ""
            raise dialect.error(f"{source}: {self.label(path) or '<top>'}: expected {what}{got}")
        self.data: Mapping[Any, Any] = data
        self.used: set[str] = set()

    def key(self, name: str | int) -> str:
        """The key path of ``name`` here (``""``: this mapping itself)."""
        if isinstance(name, int):
            return f"{self.path}[{name}]"
        if not name:
            return self.path
        return f"{self.path}.{name}" if self.path else name

    def label(self, path: str) -> str:
        """``path`` as messages show it: with the variable it came from, if any."""
        probe = path  # the nearest labelled key: tls.cert_file, else tls
        while probe:
            if var := self.dialect.labels.get(probe):
                return f"{var}: {path}"
            probe = probe[:max(probe.rfind("."), probe.rfind("["), 0)]
        return path

    def error(self, name: str | int, problem: str) -> ConfigError:
        """An error at ``name`` (a key here, or ``""`` for this mapping)."""
        return self.dialect.error(f"{self.source}: {self.label(self.key(name))}: {problem}")

    def child(self, name: str, what: str = "a mapping") -> Reader:
        """The mapping under ``name`` (absent or null: empty)."""
        raw = self.raw(name)
        return Reader({} if raw is None else raw, self.key(name), self.source, self.dialect,
                      what)

    def has(self, name: str) -> bool:
        """Whether ``name`` is set (not null); marks it known."""
        self.used.add(name)
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        """The value of ``name`` as parsed (None if absent); marks it known."""
        self.used.add(name)
        return self.data.get(name)

    def get(self, name: str, kind: type[T], default: T) -> T:
        """A value of type ``kind`` (an int is a float too; a bool is never a number)."""
        value = self.raw(name)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(name, f"expected {self.dialect.type_name(kind)}, got "
                             f"{self.dialect.show(value)}")
        return value

    def positive(self, name: str, kind: type[T], default: T) -> T:
        """A number greater than 0."""
        value = self.get(name, kind, default)
        if isinstance(value, int | float) and value <= 0:
            raise self.error(name, f"must be greater than 0, got {value!r}")
        return value

    def string_list(self, name: str) -> list[str] | None:
        """A string or a list of strings (None if absent); whole-list message when not."""
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(name, f"expected a list of strings, got {self.dialect.show(value)}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A string or a list of strings (``default`` if absent)."""
        value = self.string_list(name)
        return default if value is None else tuple(value)

    def expect_only(self, known: tuple[str, ...]) -> None:
        """Reject an unknown key now, before any ``required`` check could hide it."""
        self.used.update(known)
        self.done()

    def done(self) -> None:
        """Reject the keys nobody read."""
        unknown = sorted(set(self.data) - self.used, key=str)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise self.error(str(unknown[0]), self.dialect.unknown_key.format(known=known))


def read_yaml(raw: str | bytes, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """The parsed document, or ``error`` naming the source."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from None


def read_bytes(path: Path, error: type[ConfigError], what: str) -> bytes:
    """A file's bytes, or ``error`` naming the file: ``<path>: cannot read<what>: <why>``."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read{what}: {exc.strerror}") from None
