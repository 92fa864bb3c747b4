"""Measures retrieval and answers against gold character spans."""
