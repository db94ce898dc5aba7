"""Scale-out on Ray Serve: model replicas across a cluster behind clipserve's own front-ends.

The front-end (``clipserve serve --ray ...``, or ``Frontend`` replicas inside the cluster)
keeps the whole single-process request path (gRPC bidirectional streams, HTTP, WebSocket,
TLS, auth, /v1/embeddings) and swaps the local engine for a ``RayEngine`` that sends chunks
of each request to ``Embedder`` replicas through a Serve ``DeploymentHandle``. Each replica
runs a real ``clipserve.engine.Engine``, so batching happens next to the model.

    settings            the ``ray`` config section and flags
    connect             join or start a cluster; deploy or attach to the app by name
    app                 the Serve application (Embedder [+ Frontend]) and its builder
    replica             the Embedder deployment class (one model + one Engine)
    frontend_replica    the Frontend deployment class (a ClipServer inside the cluster)
    engine              RayEngine: the engine seam over the handle; resends on replica loss
    calls               requests -> calls of whole chunks, as many as the replicas take
    monitor             replica states and per-replica engine metrics for /health, /metrics
    payload             what crosses the handle
    frontend            ``clipserve serve --ray``: ClusterServer

Only this package imports Ray; the plain server and the client never do (an import-linter
contract holds it). Install with ``pip install "clipserve[server,ray]"``.
"""
