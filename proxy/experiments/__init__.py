"""The experiment loop on the request path: exposures, click tokens and events, shadows, the
live split.

    exposure     one record per list served to a known user
    tokens       X-Rankgate-Id: signed request id, time, route, arm
    events       POST /_rankgate/events: verified, bounded, refused with a clear status
    limiter      events per click token, exact until the token expires (Redis and local)
    sink         the bounded queue and flusher to a Redis Stream or JSONL files
    shadow       shadow models scored after the response
    assignments  the live split per arm and its sample ratio test
    guardrails   guardrails that act: an arm surely worse than its limits is moved to the
                 default
    guardtest    their one-sided sequential tests against the default arm
    guardstore   their live counts and trips, shared in Redis
    bandit       Thompson sampling on each model's CTR by unit
    weights      a bandit's live weights, per period, for the whole fleet
"""

__all__ = [
    "assignments",
    "bandit",
    "events",
    "exposure",
    "guardrails",
    "guardstore",
    "guardtest",
    "limiter",
    "shadow",
    "sink",
    "tokens",
    "weights",
]
