"""The experiment loop on the request path: exposures, click tokens and events, shadows, the live
split.

    exposure     one record per list served to a known user
    tokens       X-Rankgate-Id: signed request id, time, route, arm
    events       POST /_rankgate/events: verified, bounded, refused with a clear status
    limiter      events per click token, exact until the token expires (Redis and local)
    sink         the bounded queue and flusher to a Redis Stream or JSONL files
    shadow       shadow models scored after the response
    assignments  the live split per arm and its sample ratio test
"""

__all__ = ["assignments", "events", "exposure", "limiter", "shadow", "sink", "tokens"]
