"""Domain errors: each carries the bad value and what to do about it."""


class GroundQAError(Exception):
    """Base of the errors the CLI and HTTP layers turn into one clear message."""


class InvalidDocument(GroundQAError):
    pass


class InvalidQuery(GroundQAError):
    pass


class DocumentNotFound(GroundQAError):
    pass


class DocumentConflict(GroundQAError):
    pass


class ModelError(GroundQAError):
    pass


class IndexMismatch(GroundQAError):
    pass
