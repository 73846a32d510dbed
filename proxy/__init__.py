"""rankgate: a reverse proxy that re-ranks JSON feeds per user on their way out.

Its packages, lowest first (each imports only those before it; tests/unit/test_layout.py
holds it): outcome, config, http and store, routing, feed, readout, experiments, serve,
preflight, edge, cli. docs/architecture.md walks a request through them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
