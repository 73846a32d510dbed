"""One feed request's stages, from the origin's body to the re-ordered response; fail-open at
every step.

    stages       resolve the user, choose the arm, call the origin, gate, read the body
    state        FeedRequest (what the stages fill in) and FeedServices (what they use)
    rerank       decode, find items, vectors, score, arrange, encode
    splice       a body read by its route's plan: the items' own bytes spliced in the new order
    offload      big feeds parsed and spliced in a pool of re-rank processes
    pooled       what those processes run: a body kept between a feed's two trips
    respond      the response: applied, or the origin's bytes with the reason
    budget       the per-request deadline every wait goes through
    ranking      scores to an order (stable)
    interleave   team-draft interleaving of two models, multileaving of up to six
    sample       one GET of a feed page, judged as the feed path would (check, init, reload
                 probes)
    explain      a page explained on request: the stages run with the rules watched
    explanation  the explanation, item by item
"""

__all__ = [
    "budget",
    "explain",
    "explanation",
    "interleave",
    "offload",
    "pooled",
    "ranking",
    "rerank",
    "respond",
    "sample",
    "splice",
    "stages",
    "state",
]
