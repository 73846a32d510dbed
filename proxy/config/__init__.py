"""The two configuration files as frozen, validated models, and the YAML loading behind them.

settings     rankgate.yaml (read at start): listen, origin, redis, embeddings, admin,
             logging, and the sections below
experiments  its exposures: and events: sections
control      its routes_redis:, models:, routes_limits: and plugins: sections
routes       routes.yaml (reloaded while serving): the model registry and the feed
             routes
yamlload     YAML into a model with errors that name the YAML path; the Strict base
keys         embedding key templates and the hash-tag buckets of item keys
guardrails   routes.yaml's guardrails: on an arm or a route
bandit       routes.yaml's bandit: on an experiment
"""

__all__ = [
    "bandit",
    "control",
    "experiments",
    "guardrails",
    "keys",
    "routes",
    "settings",
    "yamlload",
]
