"""rankgate: a reverse proxy that re-ranks JSON feeds per user on their way out."""

__version__ = "0.1.0"
