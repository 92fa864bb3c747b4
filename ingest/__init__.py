"""Articles from outside into documents: the formats (formats.py), parsing in a bounded child
process (isolation.py), the file limits and their settings (limits.py), and files, folders and URLs
(sources.py). Below the faces, above the index, which only saves and searches."""
