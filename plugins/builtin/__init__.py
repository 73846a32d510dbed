"""The built-in plugins, named by short name in routes.yaml (plugins.registry maps them).

sources    user: the first of cookie:/header:/query: present (a route's user:)
jwt_user   user: a claim of a verified JSON Web Token (jwt)
dotted     items: the array and ids at dotted paths (a route's items:/item_id:)
pin        rule: matching items keep their origin slot
filter     rule: drop items (field condition, cookie list, Redis set)
boost      rule: score += weight * field
diversify  rule: maximal marginal relevance over the item embeddings
annotate   rule: write the final score into each item
"""

__all__ = ["annotate", "boost", "diversify", "dotted", "filter", "jwt_user", "pin", "sources"]
