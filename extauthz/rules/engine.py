"""The policy authorizer: ``Engine(policy)(principal, target) -> Decision``. Pure: no I/O.

It plugs into ``pipeline.Authorizer``. Order of evaluation, for one (principal, target):

1. Health checks and ``GetSystemInfo`` are allowed (as in Temporal).
2. A namespace-scoped call with no namespace (and no namespace id) is denied
   (``missing_namespace``), even in dry-run: that is an invariant, not policy.
3. **Deny rules** (in file order): a rule applies when its matcher holds (and its ``unless``
   matcher, if any, does not), the method is in its
   set, its ``namespaces`` (if given) match *any* namespace the request reaches (a request
   that names its namespace by id could reach any namespace: every such rule applies) and
   its ``task_queues`` (if given) match *any* queue the request names (``name`` and, when
   set, ``normal_name`` of every ``TaskQueue``, sticky queues included). The first applying
   rule denies (``explicit_deny``, ``rule=`` its name) whatever the bindings say. A deny rule
   without ``namespaces`` also covers cluster-scoped calls; one with ``namespaces`` covers a
   cluster-scoped call only when it names a matching namespace (a Nexus endpoint's target).
4. **Grants**, default deny:

   - cluster-scoped methods: a matching binding with ``cluster: true`` whose roles grant the
     method; or the Temporal system role (``temporal-system:<role>`` in ``permissions``, when
     ``temporal_permissions`` is on); or, for ``cluster-read`` methods, a matching binding
     whose role lists ``cluster-read`` explicitly, or (with
     ``cluster_read_for_namespace_users``) any principal that some binding or permission
     gives a role in some namespace. Otherwise ``permission_denied``.
   - namespace-scoped methods: *every* namespace the request reaches (``Target.namespaces``,
     cross-namespace commands included) needs a grant: a matching binding whose namespaces
     match and whose roles grant the method, or a Temporal permission. A request naming its
     namespace by id additionally needs a cluster-level grant of the method
     (``namespace_id_only``).
   - task queues: when the grants for a namespace all restrict queues, *every* non-empty queue
     the request names must match the ``task_queues`` of some granting binding
     (``task_queue_denied`` otherwise). A binding without ``task_queues``, or a Temporal
     permission, covers every queue. An empty queue name is not checked: Temporal fills it
     from the workflow's own queue (activities, children and continue-as-new inherit it), which
     the worker reached through a poll that was itself checked. A worker's own sticky queue
     (a STICKY-kind workflow poll, sticky attributes, ShutdownWorker) is covered by the
     binding's ``sticky_task_queues`` or, without that key, by the shape of the names the SDKs
     generate (``extauthz.rules.sticky``). Calls that act on existing executions by id
     whatever their queue (``methods.BY_ID_METHODS``: by-id completions, activity options,
     batch operations) are refused under such grants unless a granting binding sets
     ``allow_by_id: true``.

5. **Dry-run** (global ``dry_run``, or per deny rule): a would-be denial of steps 3-4 is
   returned as ``allowed=True, dry_run=True`` with the would-be ``reason`` and ``rule``, so
   logs and metrics count it; the message starts with ``dry-run:``.

Profile ``temporal-compatible``: built-in roles have Temporal's meaning (``worker`` alone grants
nothing; ``read`` < ``write`` < ``admin``), so a policy with no bindings decides exactly like
``extauthz.policy.authorize``. Profile ``extended``: ``worker`` grants the worker category.

Everything is precompiled: bindings and deny rules are indexed by method path, so a decision
looks only at rules that can apply to its method (``extauthz.rules.slots``). Deny-rule
applicability is ``extauthz.rules.deny``; queue coverage under queue-restricted grants is
``extauthz.rules.coverage``; ``check --explain`` re-walks the same order rule by rule
(``extauthz.rules.considered``, ``extauthz.rules.rewalk``).
"""

from __future__ import annotations

from extauthz import methods
from extauthz.claims import overage_note
from extauthz.model import (
    Decision,
    Principal,
    Reason,
    Role,
    Scope,
    Target,
)
from extauthz.rules import categories as cat
from extauthz.rules.coverage import queues_refused
from extauthz.rules.deny import deny_applies, explicit_deny
from extauthz.rules.document import Binding, DenyRule, Policy
from extauthz.rules.matchers import Facts
from extauthz.rules.slots import EMPTY, Slot, Step, by_bits, role_names, rule_id
from extauthz.rules.slots import q as _q

PERMISSIONS_RULE = "permissions"
CLUSTER_READ_RULE = "cluster_read_for_namespace_users"
DRY_RUNNABLE = frozenset({
    Reason.PERMISSION_DENIED, Reason.EXPLICIT_DENY, Reason.TASK_QUEUE_DENIED,
    Reason.NAMESPACE_ID_ONLY,
})


class Engine:
    """A compiled policy as an ``Authorizer``. Immutable; safe to share across tasks."""

    __slots__ = ("_by_client", "_by_group", "_by_subject", "_cl_index", "_cluster_read",
                 "_deny_index", "_deny_terminating", "_gated", "_ns_index", "_perm_cluster",
                 "_perm_ns", "policy")

    def __init__(self, policy: Policy):
        self.policy = policy
        # Gates: most rules name groups, client ids or subjects. A rule whose every alternative
        # needs one of those is "gated": it is evaluated only when the principal has one of
        # its tokens, found by set lookups, so a decision evaluates few matchers however
        # many bindings the policy has.
        self._by_group: dict[str, set[int]] = {}
        self._by_client: dict[str, set[int]] = {}
        self._by_subject: dict[str, set[int]] = {}
        gated: set[int] = set()
        rules: list[Binding | DenyRule] = [*policy.bindings, *policy.deny]
        for rid, rule in enumerate(rules):
            gate = rule.matcher.gate()
            if gate is None:
                continue
            gated.add(rid)
            for kind, value in gate:
                index = {"g": self._by_group, "c": self._by_client, "s": self._by_subject}[kind]
                index.setdefault(value, set()).add(rid)
        self._gated = frozenset(gated)
        ns_index: dict[str, list[tuple[int, Binding]]] = {}
        cl_index: dict[str, list[tuple[int, Binding]]] = {}
        for rid, b in enumerate(policy.bindings):
            for path in b.methods:
                ns_index.setdefault(path, []).append((rid, b))
            for path in b.cluster_methods:
                cl_index.setdefault(path, []).append((rid, b))
        deny_index: dict[str, list[tuple[int, DenyRule]]] = {}
        for rid, d in enumerate(policy.deny, start=len(policy.bindings)):
            for path in d.methods:
                deny_index.setdefault(path, []).append((rid, d))
        # a start that terminates the running workflow of its id meets the deny rules of
        # TerminateWorkflowExecution too (file order kept)
        terminate = deny_index.get(methods.TERMINATE_PATH, [])
        self._deny_terminating = {
            path: Slot.of(sorted(dict([*deny_index.get(path, []), *terminate]
                                 ).items(), key=rule_id), self._gated)
            for path in methods.terminating_methods() if terminate
        }
        self._ns_index = {k: Slot.of(v, self._gated) for k, v in ns_index.items()}
        self._cl_index = {k: Slot.of(v, self._gated) for k, v in cl_index.items()}
        self._deny_index = {k: Slot.of(v, self._gated) for k, v in deny_index.items()}
        self._perm_ns = by_bits(cat.builtin_roles(policy.profile))
        self._perm_cluster = by_bits(cat.builtin_cluster_roles())
        self._cluster_read = cat.categories()["cluster-read"]

    def __call__(self, principal: Principal, target: Target) -> Decision:
        """Decide one call."""
        return self.decide(principal, target)

    def facts(self, principal: Principal) -> Facts:
        """What matchers read about ``principal`` (kind per the policy's rule)."""
        return Facts(principal, self.policy.claim_sources, self.policy.kind_rule)

    def _possible(self, facts: Facts) -> set[int]:
        """Ids of gated rules whose gate the principal passes."""
        out: set[int] = set()
        by_group = self._by_group
        if by_group:
            for g in facts.groups:
                ids = by_group.get(g)
                if ids:
                    out |= ids
        if self._by_client:
            ids = self._by_client.get(facts.client_id)
            if ids:
                out |= ids
        if self._by_subject:
            ids = self._by_subject.get(facts.principal.subject)
            if ids:
                out |= ids
        return out

    def decide(self, principal: Principal, target: Target,
               trace: list[Step] | None = None) -> Decision:
        """Decide one call; with ``trace``, append the steps that led to the decision."""
        method = target.method
        path = method.path
        if method.scope is Scope.HEALTH or path in methods.ALWAYS_ALLOWED:
            return Decision.allow(Reason.HEALTH_CHECK, f"{method.short} is always allowed",
                                  principal, target)
        if method.scope is Scope.NAMESPACE and not target.namespace and not target.by_namespace_id:
            from extauthz.policy import missing_namespace

            return missing_namespace(target, principal)
        facts = self.facts(principal)
        pol = self.policy
        would: Decision | None = None
        possible = self._possible(facts)
        slot = self._deny_index.get(path, EMPTY)
        if target.terminates_existing:
            slot = self._deny_terminating.get(path, slot)
        selected = slot.select(facts, possible) if slot is not EMPTY else []
        if trace is not None:
            for _, rule in slot.every:
                if not any(rule is x for x in selected):
                    trace.append(Step("deny-rule", rule.name, "does not apply",
                                      rule.matcher.describe()))
        for rule in selected:
            if not deny_applies(rule, facts, target, trace):
                continue
            d = explicit_deny(rule, principal, target)
            if rule.dry_run or pol.dry_run:
                if would is None:
                    would = d
                continue
            return d
        result = self._grant(principal, facts, target, trace, possible)
        if not result.allowed and pol.dry_run and result.reason in DRY_RUNNABLE:
            would = would or result
        if would is not None and (result.allowed or pol.dry_run):
            if trace is not None:
                trace.append(Step("dry-run", would.rule or "", "allowed",
                                  f"would deny: {would.reason}"))
            return Decision(True, would.reason, f"dry-run: {would.message}", 200, principal,
                            target, would.rule, dry_run=True)
        return result

    # ---- grants ---------------------------------------------------------------------------

    def _grant(self, p: Principal, facts: Facts, t: Target,
               trace: list[Step] | None, possible: set[int]) -> Decision:
        if t.method.scope is Scope.CLUSTER:
            return self._grant_cluster(p, facts, t, trace, possible)
        path = t.method.path
        pol = self.policy
        perms = pol.temporal_permissions
        slot = self._ns_index.get(path, EMPTY)
        cands = slot.select(facts, possible) if slot is not EMPTY else []
        if trace is not None:
            for _, b in slot.every:
                trace.append(Step("binding", b.name,
                                  "matches" if any(b is x for x in cands)
                                  else "principal does not match",
                                  b.matcher.describe()))
        if t.by_namespace_id:
            cluster_ok = any(b.cluster and b.namespaces is not None and b.namespaces.everything
                             for b in cands) or (perms and path in self._perm_ns[int(p.system)])
            if not cluster_ok:
                if trace is not None:
                    trace.append(Step("namespace-id", "", "denied",
                                      "needs a cluster-level grant of the method"))
                return Decision.deny(
                    Reason.NAMESPACE_ID_ONLY,
                    f"subject {_q(p.subject)}: {t.method.short} names the namespace by id; "
                    "only a cluster-level grant (a `cluster: true` binding on `*`, or a "
                    "temporal-system role) may do that - send the namespace name",
                    principal=p, target=t,
                )
        queues = tuple(dict.fromkeys(q for q in t.task_queues if q)) if t.task_queues else ()
        sticky = tuple(dict.fromkeys(q for q in t.sticky_queues if q)) if t.sticky_queues else ()
        reached = t.namespaces
        first: str | None = None
        # Temporal permissions as plain ints (IntFlag arithmetic is slow on the hot path)
        has_perms = perms and bool(p.system or p.namespaces)
        system = int(p.system)
        for ns in reached:
            granting = [b for b in cands if b.namespaces is not None and ns in b.namespaces]
            role = (system | int(p.namespaces.get(ns, 0))) if has_perms else 0
            perm = has_perms and path in self._perm_ns[role]
            if first is None:
                first = granting[0].name if granting else (
                    f"{PERMISSIONS_RULE}:{ns}:{role_names(Role(role))}")
            if trace is not None:
                trace.append(Step(
                    "namespace", ns, "granted" if granting or perm else "no grant",
                    ", ".join([b.name for b in granting] + (
                        [f"{PERMISSIONS_RULE}:{role_names(Role(role))}"] if perm else [])),
                ))
            if not granting and not perm:
                return Decision.deny(
                    Reason.PERMISSION_DENIED,
                    f"subject {_q(p.subject)} has no role that allows {t.method.short} in "
                    f"namespace {_q(ns)}{overage_note(p.claims)}",
                    principal=p, target=t,
                )
            if perm or any(b.task_queues is None for b in granting):
                continue
            refused = queues_refused(p, t, ns, granting, queues, sticky, trace)
            if refused is not None:
                return refused
        if first is None:  # by id only, no name: the cluster-level grant decided (a cluster
            # binding on every namespace, else the temporal-system role)
            first = next((b.name for b in cands if b.cluster and b.namespaces is not None
                          and b.namespaces.everything), PERMISSIONS_RULE)
        where = ", ".join(_q(ns) for ns in reached) or "a namespace named by id"
        return Decision.allow(
            Reason.ALLOWED, f"subject {_q(p.subject)} may call {t.method.short} in {where}",
            p, t, rule=first,
        )

    def _grant_cluster(self, p: Principal, facts: Facts, t: Target,
                       trace: list[Step] | None, possible: set[int]) -> Decision:
        path = t.method.path
        pol = self.policy
        slot = self._cl_index.get(path, EMPTY)
        selected = slot.select(facts, possible) if slot is not EMPTY else []
        if trace is not None:
            for _, b in slot.every:
                ok = any(b is x for x in selected)
                trace.append(Step("binding", b.name,
                                  "matches" if ok else "principal does not match",
                                  b.matcher.describe()))
        if selected:
            return self._cluster_allowed(p, t, selected[0].name)
        if pol.temporal_permissions and path in self._perm_cluster[p.system]:
            return self._cluster_allowed(
                p, t, f"{PERMISSIONS_RULE}:temporal-system:{role_names(p.system)}")
        if pol.cluster_read_for_namespace_users and path in self._cluster_read:
            holder = self._some_namespace_role(p, facts, possible)
            if trace is not None:
                trace.append(Step("option", CLUSTER_READ_RULE,
                                  "applies" if holder else "no namespace role",
                                  holder or ""))
            if holder:
                return self._cluster_allowed(p, t, CLUSTER_READ_RULE)
        return Decision.deny(
            Reason.PERMISSION_DENIED,
            f"subject {_q(p.subject)} has no cluster-level role that allows {t.method.short}"
            f"{overage_note(p.claims)}",
            principal=p, target=t,
        )

    def _some_namespace_role(self, p: Principal, facts: Facts, possible: set[int]) -> str:
        for rid, b in enumerate(self.policy.bindings):
            if rid in self._gated and rid not in possible:
                continue
            if b.namespaces is not None and b.methods and b.matcher(facts):
                return b.name
        if self.policy.temporal_permissions:
            for ns, role in p.namespaces.items():
                if self._perm_ns[role]:
                    return f"{PERMISSIONS_RULE}:{ns}:{role_names(role)}"
        return ""

    @staticmethod
    def _cluster_allowed(p: Principal, t: Target, rule: str) -> Decision:
        return Decision.allow(
            Reason.ALLOWED, f"subject {_q(p.subject)} may call {t.method.short} (cluster)",
            p, t, rule=rule,
        )


__all__ = ["CLUSTER_READ_RULE", "DRY_RUNNABLE", "PERMISSIONS_RULE", "Engine", "Step",
           "role_names"]
