"""Task-queue coverage under queue-restricted grants: named queues, a worker's own sticky
queues (``sticky_task_queues`` or the SDKs' generated shape) and by-id calls
(``allow_by_id``). Pure: no I/O.
"""

from __future__ import annotations

from extauthz import methods
from extauthz.model import Decision, Principal, Reason, Target
from extauthz.rules.document import Binding
from extauthz.rules.slots import Step
from extauthz.rules.slots import q as _q
from extauthz.rules.sticky import sdk_sticky_name


def covers(b: Binding, queue: str, sticky: bool) -> bool:
    """Whether a queue-restricted binding covers ``queue`` (a worker's own sticky queue when
    ``sticky``: by ``sticky_task_queues``, else by the SDKs' generated shape)."""
    if b.task_queues is not None and queue in b.task_queues:
        return True
    if not sticky:
        return False
    if b.sticky_task_queues is not None:
        return queue in b.sticky_task_queues
    return sdk_sticky_name(queue)


def queues_refused(p: Principal, t: Target, ns: str, granting: list[Binding],
                   queues: tuple[str, ...], sticky: tuple[str, ...],
                   trace: list[Step] | None) -> Decision | None:
    """With every granting binding restricted to queues: the denial for a queue none of
    them covers, or for a by-id completion none of them opts into; else None."""
    path = t.method.path
    if path in methods.BY_ID_METHODS and not any(b.allow_by_id for b in granting):
        if trace is not None:
            trace.append(Step("queue", "", "not covered",
                              "by-id call names no queue; no binding has allow_by_id"))
        return Decision.deny(
            Reason.TASK_QUEUE_DENIED,
            f"subject {_q(p.subject)} may call {t.method.short} in namespace {_q(ns)} "
            "only on its task queues, and this call acts on existing executions by id, "
            "whatever queue they run on (a binding opts in with `allow_by_id: true`)",
            principal=p, target=t, rule=granting[0].name,
        )
    checks = [(q, False) for q in queues] + [(q, True) for q in sticky]
    for q, is_sticky in checks:
        covered = [b.name for b in granting if covers(b, q, is_sticky)]
        if trace is not None:
            trace.append(Step("queue", q, "covered" if covered else "not covered",
                              ", ".join(covered)))
        if not covered:
            allowed = "; ".join(f"{b.name}: {b.task_queues}" for b in granting)
            what = "sticky queue" if is_sticky else "queue"
            return Decision.deny(
                Reason.TASK_QUEUE_DENIED,
                f"subject {_q(p.subject)} may call {t.method.short} in namespace "
                f"{_q(ns)} only on task queues {allowed}; not on {what} {_q(q)}",
                principal=p, target=t, rule=granting[0].name,
            )
    return None
