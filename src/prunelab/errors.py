"""The project's errors: each carries one line a user can act on."""


class PrunelabError(Exception):
    """Base class: the message is one line naming what is wrong and what is allowed."""


class ParamsError(PrunelabError):
    """params.yaml is malformed or has a value out of range."""


class DataError(PrunelabError):
    """A data, model or metrics file is missing, damaged or fails its checksum."""


class DownloadError(PrunelabError):
    """No source produced MNIST files that pass their checksums."""
