"""Turns text into a searchable, saved index."""

__version__ = "0.5.0"
