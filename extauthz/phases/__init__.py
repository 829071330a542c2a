"""The phases of one check, in the order ``extauthz.pipeline.Pipeline`` runs them.

Like Authorino's labelled phases, a request flows down and never back up:

1. ``attributes``: read the request (method or HTTP API route, shape prechecks, the bearer
   token): no token is verified and no body is scanned yet;
2. ``authenticate``: token → verified token → ``Principal`` (and the Web UI's display identity);
3. ``target``: the body (gRPC message, or the HTTP API call made into one) → ``Target``;
4. ``authorize``: principal and target → ``Decision``;
5. ``respond``: transport-neutral shaping of a decision (internal errors, display labels).

Each phase returns its result or a ``Decision`` (a denial, or the health check's allow) that
ends the check. Only ``authenticate`` touches the authentication layer and the log; the others
are pure.
"""
