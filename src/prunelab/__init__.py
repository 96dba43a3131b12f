"""prunelab: how much of a trained network can be deleted, and what it costs."""

__version__ = "0.1.0"
