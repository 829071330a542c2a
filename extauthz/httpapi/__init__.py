"""Temporal's HTTP/JSON API mapped onto its gRPC methods. Pure: no I/O.

Temporal's frontend serves an HTTP API (port 7243 by default) through grpc-gateway: every
``google.api.http`` binding of WorkflowService and OperatorService, the ``/api/v1/...`` ones
*and* the older ``/namespaces/...``, ``/cluster/...``, ``/system-info`` ones, runs the same
handler as the gRPC method. This package turns one HTTP request into the protobuf request message
the server will build, so the pipeline judges it exactly like the gRPC call (``wire.scan`` on the
serialized message, the same plan, the same policy).

Every rule below was checked against a real ``temporal server start-dev`` (Server 1.32;
``tests/e2e/test_http_api.py`` keeps checking it):

- **Matching** (grpc-gateway, "legacy" unescaping): the path (before ``?``) is percent-decoded as
  a whole and *then* split at ``/``, so ``%2F`` separates segments (``/api%2Fv1/...`` is served)
  and a variable is one decoded segment (``def%61ult`` is ``default``, ``%25`` decodes once). No
  ``.``/``..``/``//`` normalisation reaches the handler: Go's ServeMux answers a raw ``//``,
  ``.`` or ``..`` segment with a 301 and acts on nothing, so those are refused here. A trailing
  ``/``, another case or an unknown literal matches nothing. The HTTP method is exact. A raw
  ``#``, space, control character or non-ASCII byte in the request target matches nothing.
- We refuse more than the server in one place: the *first* raw segment must be a literal without
  ``%`` (``api``, ``namespaces``, ``cluster``, ``system-info``), because Envoy routes on it (the
  raw path) to the HTTP port; ``/api%2Fv1/...`` would go to the gRPC port there.
- **Body** (bindings with ``body: "*"``): JSON, decoded like Temporal's ``temporalproto``
  (protojson): field names in JSON (camelCase) or proto (snake_case) form, a field named twice
  (either form) is an error, ``null`` means unset, enums by name, number or Temporal's shorthand
  (``"Sticky"``), payloads in shorthand (any JSON: never read here). Unknown fields are ignored
  here (the server rejects them). Text after the first JSON value is refused here (the server
  ignores it).
- **Path over body**: path variables are set after the body is decoded and overwrite it (a body
  ``namespace`` that disagrees with the path is ignored by the server, so it is here).
- **Query** (bindings without a body only; a ``body: "*"`` binding ignores the query):
  ``url.ParseQuery`` rules (``&`` only, a ``;`` is an error, ``+`` is a space); a key naming a
  path-bound field (``?namespace=``) is ignored; a singular field given twice is an error; keys
  are field paths in proto or JSON names (``task_queue.kind``, ``taskQueue.kind``).

Only the fields the scan plan reads (namespace, namespace id, task queues, cross-namespace
targets) are carried into the message; everything else cannot change the decision.

The package: ``routes`` (the bindings table, ``Binding``, ``Route``, the errors),
``matching`` (``Router``, ``router()``, query and percent decoding) and ``message``
(``request_message``: the protobuf request to scan). Every public name is importable from
``extauthz.httpapi``.
"""

from __future__ import annotations

from extauthz.httpapi.matching import (
    JSON_MEDIA_TYPES,
    Router,
    ambiguous,
    media_type,
    parse_query,
    router,
)
from extauthz.httpapi.message import request_message
from extauthz.httpapi.routes import (
    HTTP_VERBS,
    Binding,
    RequestError,
    Route,
    UnsupportedBindingError,
)

__all__ = [
    "HTTP_VERBS", "JSON_MEDIA_TYPES", "Binding", "RequestError", "Route", "Router",
    "UnsupportedBindingError", "ambiguous", "media_type", "parse_query", "request_message",
    "router",
]
