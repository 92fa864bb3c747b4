"""groundqa: grounded answers over articles, with exact character offsets.

One package over the repository's layers: groundqa.index (text to a saved, searchable index),
groundqa.eval (measures it) and groundqa.service (the HTTP face, the chat page and the CLI).
"""

__version__ = "0.9.0"
