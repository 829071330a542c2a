"""Reading ``roles``: method grants by category, method name and built-in role."""

from __future__ import annotations

from extauthz.rules import categories as cat
from extauthz.rules.compiled import PolicyError, RoleDef
from extauthz.rules.reading import reader, strings, text
from extauthz.yamlread import Reader


def methods_at(r: Reader, name: str) -> frozenset[str]:
    """The method paths listed under ``name`` (names, Service/Method or full paths)."""
    values = strings(r, name) or ()
    out: set[str] = set()
    for i, v in enumerate(values):
        try:
            out |= cat.resolve_method(v)
        except cat.UnknownMethodError:
            hint = cat.suggest(v)
            did = f"; did you mean {', '.join(hint)}?" if hint else ""
            raise PolicyError(
                f"{r.source}: {r.key(name)}[{i}]: unknown method {v!r}{did} (write a method "
                "name like StartWorkflowExecution, Service/Method, or a full path)"
            ) from None
    return frozenset(out)


def categories_at(r: Reader, name: str) -> frozenset[str]:
    """The method paths of the categories listed under ``name``."""
    values = strings(r, name) or ()
    out: set[str] = set()
    cats = cat.categories()
    for i, v in enumerate(values):
        if v not in cats:
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: unknown category {v!r}; "
                              f"known: {', '.join(cat.CATEGORY_NAMES)}")
        missing = cat.unreviewed() if v in cat.INTENT_NAMES else ()
        if missing:  # a newer temporalio: a method might belong here and would be left out
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: category {v!r} is not "
                              "reviewed for methods of the installed temporalio: "
                              f"{', '.join(missing)}; add them to INTENT_REVIEW in "
                              "extauthz/rules/categories.py, or list methods instead")
        out |= cats[v]
    return frozenset(out)


def roles_of(r: Reader, profile: str) -> dict[str, RoleDef]:
    """The built-in roles of ``profile`` and the ``roles`` block's own."""
    builtin = cat.builtin_roles(profile)
    roles: dict[str, RoleDef] = {
        n: RoleDef(n, builtin[n], builtin=True) for n in cat.BUILTIN_ROLE_NAMES
    }
    raw = r.raw("roles") or {}
    rr = reader(raw, "roles", r.source, "a mapping of role name → definition")
    for name in rr.data:
        rr.used.add(name)
        if not isinstance(name, str) or not name:
            raise rr.error(str(name), "role names are non-empty strings")
        if name in roles:
            raise rr.error(name, f"{name!r} is a built-in role and cannot be redefined; pick "
                           "another name")
        d = reader(rr.data[name], rr.key(name), r.source)
        grants = categories_at(d, "categories") | methods_at(d, "methods")
        for i, inner in enumerate(strings(d, "roles") or ()):
            if inner not in builtin:
                raise PolicyError(f"{r.source}: {d.key('roles')}[{i}]: {inner!r}: a role can "
                                  f"include only built-in roles ({', '.join(builtin)})")
            grants |= builtin[inner]
        if d.has("except"):
            e = reader(d.raw("except"), d.key("except"), r.source)
            grants -= categories_at(e, "categories") | methods_at(e, "methods")
            e.done()
        description = text(d, "description")
        if not grants:
            raise d.error("", "grants no method; give `categories`, `methods` or `roles`")
        d.done()
        roles[name] = RoleDef(name, frozenset(grants), description=description)
    return roles
