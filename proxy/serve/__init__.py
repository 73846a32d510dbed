"""The running process: the app, its lifespan, the server, workers and supervisor, admin,
metrics and logs.

    app         the public request handler: events, pass-through or the feed path
    runtime     the lifespan: everything a serving process opens, released in reverse
    warmup      connections and models warmed before the port accepts
    server      one serving process: public and admin listeners, signals, drain
    supervisor  rankgate serve --workers N: the parent process
    worker      one worker process
    admin       /metrics /healthz /readyz /admin/...
    fleet       the supervisor's admin answers, summed over workers
    metrics     Prometheus metrics from request records
    logs        structured logs and the access log
    eventloop   running on uvloop where installed
    tracing     W3C trace context in, a server span per request out
    otlp        the spans built after the response, sent over OTLP/HTTP
    probes      after a reload, each route's sample page probed
"""

__all__ = [
    "admin",
    "app",
    "eventloop",
    "fleet",
    "logs",
    "metrics",
    "otlp",
    "probes",
    "runtime",
    "server",
    "supervisor",
    "tracing",
    "warmup",
    "worker",
]
