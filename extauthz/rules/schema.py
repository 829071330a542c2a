"""The policy document's JSON Schema, built from the loader's own names (keys, profiles,
categories, principal kinds), for tools that check a policy before it reaches a server: the
Helm chart embeds it in ``values.schema.json`` under ``extauthz.policy``.

The schema checks shape only (keys, types, enumerations); the loader stays the judge of
meaning (role names, method names, glob syntax), which ``extauthz validate`` applies. Every
subschema is inlined (no ``$ref``) so it can be embedded anywhere in another schema.
"""

from __future__ import annotations

import json
from typing import Any

from extauthz.rules.categories import BUILTIN_ROLE_NAMES, CATEGORY_NAMES
from extauthz.rules.compiled import PROFILES
from extauthz.rules.matchers import KINDS
from extauthz.rules.read_rules import BINDING_KEYS

Schema = dict[str, Any]

DENY_KEYS = ("name", "description", "match", "unless", "methods", "categories", "namespaces",
             "task_queues", "dry_run", "message")
MATCH_KEYS = ("anyone", "groups", "scopes", "subject", "client_id", "issuer", "kind", "claims",
              "spiffe", "x509_subject")


def _strings(description: str = "", *, enum: tuple[str, ...] = ()) -> Schema:
    """A string or a non-empty list of strings (the loader reads both)."""
    item: Schema = {"type": "string", "enum": list(enum)} if enum else {"type": "string"}
    out: Schema = {"oneOf": [item, {"type": "array", "items": item, "minItems": 1}]}
    if description:
        out["description"] = description
    return out


def _object(properties: dict[str, Schema], *, required: tuple[str, ...] = (),
            description: str = "") -> Schema:
    out: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def _scalar() -> Schema:
    return {"type": ["string", "number", "boolean"]}


def _condition(*, allow_kind: bool) -> Schema:
    props: dict[str, Schema] = {
        "anyone": {"const": True},
        "groups": _strings(), "scopes": _strings(), "subject": _strings(),
        "client_id": _strings(), "issuer": _strings(),
        "spiffe": _strings("SPIFFE ID patterns of the client certificate (spiffe://td/ns/*/sa/*)"),
        "x509_subject": _strings("subject DNs of the client certificate, RFC 4514 text"),
        "claims": {"type": "object", "minProperties": 1, "additionalProperties": {
            "oneOf": [_scalar(), {"type": "array", "items": _scalar(), "minItems": 1}]}},
    }
    if allow_kind:
        props["kind"] = {"type": "string", "enum": list(KINDS)}
    assert set(props) <= set(MATCH_KEYS)
    out = _object(props)
    out["minProperties"] = 1
    return out


def _matcher(*, allow_kind: bool = True) -> Schema:
    """One mapping of conditions, or a non-empty list of alternatives."""
    one = _condition(allow_kind=allow_kind)
    return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1}]}


def _role() -> Schema:
    grants = {"categories": _strings(enum=CATEGORY_NAMES), "methods": _strings()}
    return _object({
        **grants,
        "roles": _strings(enum=BUILTIN_ROLE_NAMES),
        "except": _object(dict(grants)),
        "description": {"type": "string"},
    })


def _binding() -> Schema:
    props: dict[str, Schema] = {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "match": _matcher(),
        "roles": _strings(),
        "namespaces": _strings(),
        "task_queues": _strings(),
        "sticky_task_queues": {"oneOf": [{"type": "string"},
                                         {"type": "array", "items": {"type": "string"}}]},
        "allow_by_id": {"type": "boolean"},
        "cluster": {"type": "boolean"},
    }
    assert tuple(props) == BINDING_KEYS
    return _object(props, required=("name", "match", "roles"))


def _deny() -> Schema:
    props: dict[str, Schema] = {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "match": _matcher(),
        "unless": _matcher(),
        "methods": _strings(),
        "categories": _strings(enum=CATEGORY_NAMES),
        "namespaces": _strings(),
        "task_queues": _strings(),
        "dry_run": {"type": "boolean"},
        "message": {"type": "string"},
    }
    assert tuple(props) == DENY_KEYS
    return _object(props, required=("name", "match"))


def policy_schema() -> Schema:
    """The JSON Schema (draft-07 keywords, no ``$ref``) of a policy document."""
    return _object({
        "version": {"const": 1},
        "profile": {"type": "string", "enum": list(PROFILES)},
        "dry_run": {"type": "boolean"},
        "options": _object({"temporal_permissions": {"type": "boolean"},
                            "cluster_read_for_namespace_users": {"type": "boolean"}}),
        "claims": _object({"groups": _strings(), "scopes": _strings(),
                           "client_id": _strings()}),
        "principal_kind": _object({"service": _matcher(allow_kind=False)},
                                  required=("service",)),
        "roles": {"type": "object", "additionalProperties": _role()},
        "bindings": {"type": "array", "items": _binding()},
        "deny": {"type": "array", "items": _deny()},
    }, description="the policy file (docs/policy.md); shape only, `extauthz validate` "
                   "checks the rest (generated by extauthz.rules.schema)")


def policy_schema_json() -> str:
    """``policy_schema()`` as stable, indented JSON text."""
    return json.dumps(policy_schema(), indent=2, ensure_ascii=False) + "\n"
