"""Reading ``bindings`` (who gets which roles where) and ``deny`` rules (who is refused what)."""

from __future__ import annotations

from collections.abc import Mapping

from extauthz import methods
from extauthz.rules import categories as cat
from extauthz.rules.compiled import Binding, DenyRule, PolicyError, RoleDef
from extauthz.rules.globs import compile_names
from extauthz.rules.read_matchers import matcher
from extauthz.rules.read_roles import categories_at, methods_at
from extauthz.rules.reading import flag, items, names, reader, rule_name, strings, text
from extauthz.yamlread import Reader

BINDING_KEYS = ("name", "description", "match", "roles", "namespaces", "task_queues",
                "sticky_task_queues", "allow_by_id", "cluster")


def bindings_of(r: Reader, roles: Mapping[str, RoleDef], seen: set[str],
                warnings: list[str]) -> tuple[Binding, ...]:
    """The ``bindings`` list, compiled; ``warnings`` gets what is legal but likely wrong."""
    out: list[Binding] = []
    cluster_cat = cat.categories()["cluster"]
    cluster_read = cat.categories()["cluster-read"]
    builtin_cluster = cat.builtin_cluster_roles()
    for i, item in enumerate(items(r, "bindings")):
        b = reader(item, f"bindings[{i}]", r.source)
        # a misspelt key first: `namespace:` must not read as a missing `namespaces`
        b.expect_only(BINDING_KEYS)
        name = rule_name(b, seen)
        if not b.has("match"):
            raise b.error("match", "required: who this binding is for (e.g. `groups: [team]`)")
        who = matcher(b.raw("match"), b.key("match"), r.source)
        role_names = strings(b, "roles", required=True) or ()
        for j, rn in enumerate(role_names):
            if rn not in roles:
                raise PolicyError(f"{r.source}: {b.key('roles')}[{j}]: unknown role {rn!r}; "
                                  f"known roles: {', '.join(sorted(roles))} (define it under "
                                  "`roles`)")
        cluster = flag(b, "cluster", False)
        namespaces = names(b, "namespaces", namespace=True)
        if namespaces is None and not cluster:
            raise b.error("namespaces", "required: namespace names or patterns (`*` for all); "
                          "or `cluster: true` for a cluster-level binding")
        queues = names(b, "task_queues", namespace=False)
        granted: frozenset[str] = frozenset().union(*(roles[n].methods for n in role_names))
        ns_methods = granted - cluster_cat
        if cluster:
            cl = granted & cluster_cat
            for n in role_names:
                if roles[n].builtin:
                    cl |= builtin_cluster[n]
        else:
            cl = granted & cluster_read
        if namespaces is None:
            ns_methods = frozenset()
        # `[]` is meaningful here: no sticky queue beyond what task_queues covers
        sticky = (compile_names([]) if b.raw("sticky_task_queues") == []
                  else names(b, "sticky_task_queues", namespace=False))
        allow_by_id = flag(b, "allow_by_id", False)
        if queues is None:
            for key in ("sticky_task_queues", "allow_by_id"):
                if b.has(key):
                    raise b.error(key, "only means something with `task_queues` (a binding "
                                "without `task_queues` already covers every queue)")
        else:
            # methods the queue restriction cannot bind: they name no queue of their own (a
            # task token is not signed: it can be built for any task of the namespace)
            free = sorted(methods.table()[p].method.short for p in ns_methods
                          if p not in methods.queue_bound_methods()
                          and (allow_by_id or p not in methods.BY_ID_METHODS))
            if free:
                warnings.append(
                    f"{r.source}: {b.key('task_queues')}: binding {name!r} restricts task "
                    f"queues, but {len(free)} of its methods name no queue of the work they "
                    f"act on and reach every workflow of its namespaces (task tokens "
                    f"included: they are not signed): {', '.join(free)}")
        out.append(Binding(
            name=name, matcher=who, roles=tuple(role_names), namespaces=namespaces,
            task_queues=queues, cluster=cluster, methods=ns_methods, cluster_methods=cl,
            sticky_task_queues=sticky, allow_by_id=allow_by_id,
        ))
        text(b, "description")
        b.done()
    return tuple(out)


def deny_rules_of(r: Reader, seen: set[str]) -> tuple[DenyRule, ...]:
    """The ``deny`` list, compiled."""
    out: list[DenyRule] = []
    for i, item in enumerate(items(r, "deny")):
        d = reader(item, f"deny[{i}]", r.source)
        name = rule_name(d, seen)
        if not d.has("match"):
            raise d.error("match", "required: who this rule refuses (e.g. `groups: [team]`)")
        who = matcher(d.raw("match"), d.key("match"), r.source)
        paths = methods_at(d, "methods") | categories_at(d, "categories")
        if not paths:
            raise d.error("methods", "a deny rule needs `methods` and/or `categories`")
        out.append(DenyRule(
            name=name,
            matcher=who,
            methods=paths,
            namespaces=names(d, "namespaces", namespace=True),
            task_queues=names(d, "task_queues", namespace=False),
            unless=(matcher(d.raw("unless"), d.key("unless"), r.source)
                    if d.has("unless") else None),
            dry_run=flag(d, "dry_run", False),
            message=text(d, "message"),
        ))
        text(d, "description")
        d.done()
    return tuple(out)
