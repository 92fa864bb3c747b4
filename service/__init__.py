"""The HTTP face, the chat page and the command line."""
