"""The rankgate command line: one module per command, one --config rule.

main                the parser and the entry point
options             the one --config rule
serve               rankgate serve
init                rankgate init
check               rankgate check
embeddings          rankgate embeddings load
model               rankgate model ...
routes              rankgate routes push|status
experiments         rankgate experiments report
edge                rankgate edge build|kv
experiments_plan    rankgate experiments plan
explain             rankgate explain
report_text         the report's text
experiments_status  rankgate experiments status and resume
"""

__all__ = [
    "check",
    "edge",
    "embeddings",
    "experiments",
    "experiments_plan",
    "experiments_status",
    "explain",
    "init",
    "main",
    "model",
    "options",
    "report_text",
    "routes",
    "serve",
]
