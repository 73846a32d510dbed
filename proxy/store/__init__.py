"""Redis (or Valkey, single node or cluster) behind one link contract: embeddings, the item
cache, the embedded Valkey.

    link        the link contract and the single-node pipelined connection
    autopipe    the feed path's GET and MGET: one turn's commands in one write, hiredis
    cluster     the Redis Cluster link: one batch per node, in parallel
    slots       the cluster slot map
    connect     one place that opens the right link (or sync client) for a URL
    embeddings  user and item vectors: lookups within the budget, through the item cache
    itemcache   item vectors shared by all users, bounded in bytes
    valkey      the embedded Valkey (no redis.url): started, found, shared, stopped
    valkeydir   its data directory, port record and locks
    pubsub      a resilient subscription (re-read on reconnect)
    loader      bulk loading of vectors from .npz/.npy/.csv files
"""

__all__ = [
    "autopipe",
    "cluster",
    "connect",
    "embeddings",
    "itemcache",
    "link",
    "loader",
    "pubsub",
    "slots",
    "valkey",
    "valkeydir",
]
