"""One feed request's stages, from the origin's body to the re-ordered response; fail-open at every
step.

    stages      resolve the user, choose the arm, call the origin, gate, read the body
    state       FeedRequest (what the stages fill in) and FeedServices (what they use)
    rerank      decode, find items, vectors, score, arrange, encode
    respond     the response: applied, or the origin's bytes with the reason
    budget      the per-request deadline every wait goes through
    ranking     scores to an order (stable)
    interleave  team-draft interleaving of two models
"""

__all__ = ["budget", "interleave", "ranking", "rerank", "respond", "stages", "state"]
