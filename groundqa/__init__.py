"""groundqa: grounded answers over articles, with exact character offsets.

One package over the repository's layers, each importing only those below it: groundqa.index
(text to a saved, searchable index), groundqa.ingest (files, folders and URLs to documents),
groundqa.service (the HTTP face, MCP and the chat page), groundqa.eval (measures it) and
groundqa.cli (the command line over both faces).
"""

__version__ = "0.12.0"
