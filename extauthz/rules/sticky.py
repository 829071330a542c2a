"""The shape of the sticky queue names Temporal's SDKs generate. Pure: no I/O.

A worker with a workflow cache polls, besides its task queue, a sticky queue of its own: a name
it generates at start-up and hands to the server in the sticky attributes of each completed
workflow task. The server treats that name like any queue name (a poll with
``kind: STICKY`` reaches whatever queue ``name`` says), so a queue-restricted policy judges it;
this module says whether a name is one the SDKs generate:

- Go (``internal_utils.go``, ``getWorkerTaskQueue``): ``<hostname>:<uuid>``;
- Java (``WorkerFactory.getStickyTaskQueueName``): ``<identity>:<uuid>``;
- Core SDKs: Python, TypeScript, .NET, Ruby (``sticky_q_name_for_worker``):
  ``<identity>-<uuid as 32 hex digits>``;

where ``<uuid>`` is a random (version 4) UUID in lower-case hex. The random part is 122 bits,
so a queue-restricted worker cannot guess another worker's sticky queue. It can *read* one:
workflow task events in a workflow's history name the sticky queue the task was sent to, so a
principal that may read another team's histories and poll sticky queues could poll that
team's sticky queue while its worker is alive. Policies that must rule that out give the
binding an explicit ``sticky_task_queues`` list (or ``[]``: no sticky polls).
"""

from __future__ import annotations

import re

_SDK_STICKY = re.compile(
    r".+(?::[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|-[0-9a-f]{32})",
    re.ASCII | re.DOTALL,
)


def sdk_sticky_name(name: str) -> bool:
    """Whether ``name`` has the shape of a sticky queue name an SDK generates."""
    return _SDK_STICKY.fullmatch(name) is not None
