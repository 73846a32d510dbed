"""The rankgate command line: one module per command, one --config rule.

    main         the parser and the entry point
    options      the one --config rule
    serve        rankgate serve
    init         rankgate init
    check        rankgate check
    embeddings   rankgate embeddings load
    model        rankgate model ...
    routes       rankgate routes push|status
    experiments  rankgate experiments report
    edge         rankgate edge build|kv
"""

__all__ = [
    "check",
    "edge",
    "embeddings",
    "experiments",
    "init",
    "main",
    "model",
    "options",
    "routes",
    "serve",
]
