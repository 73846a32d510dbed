"""The routes as a Cloudflare Worker: build and KV files.

build   compiling routes, models and the Worker into a directory
config  the Worker's config from the routes
kv      embeddings as Workers KV bulk files
"""

__all__ = ["build", "config", "kv"]
