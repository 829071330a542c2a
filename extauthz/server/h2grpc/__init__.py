"""A unary gRPC server framed by hand on asyncio (HTTP/2 per RFC 9113, HPACK by ``hpack``),
serving Envoy's ext_authz ``Check`` and ``grpc.health.v1`` at a fraction of grpc.aio's CPU per
call (``grpc_server: h2``, the default; measured by ``bench.grpc_servers``)."""
