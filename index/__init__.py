"""Turns text into a searchable, saved index."""
