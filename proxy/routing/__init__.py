"""What serves a request: the routes snapshot, its models and arms, and how new ones are
swapped in.

    snapshot  one immutable snapshot: compiled routes, model sessions, plugins
    current   the snapshot being served and the swap (SnapshotStore)
    reload    watching routes.yaml (and SIGHUP) and rebuilding off the event loop
    sources   where routes come from: the file, or Redis for a fleet
    versions  routes versions kept in Redis (push, head, validate)
    sessions  ONNX Runtime sessions: loaded once per file, warmed, shared
    arms      choosing the arm: header, cookie, query, sticky percentage
    plugins   a route's plugins by kind
    limits    bounds on what a routes version can make a process do
    signing   signed routes versions in Redis
    reads     what a route reads of a feed body (compiled once: the parse-only-what-it-needs plan)
"""

__all__ = [
    "arms",
    "current",
    "limits",
    "plugins",
    "reads",
    "reload",
    "sessions",
    "signing",
    "snapshot",
    "sources",
    "versions",
]
