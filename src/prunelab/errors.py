"""The project's errors: each carries one line a user can act on."""


class PrunelabError(Exception):
    """Base class: the message is one line naming what is wrong and what is allowed."""


class ParamsError(PrunelabError):
    """params.yaml is malformed or has a value out of range."""


class DataError(PrunelabError):
    """A data, model or metrics file is missing, damaged or fails its checksum."""


class DownloadError(PrunelabError):
    """No source produced MNIST files that pass their checksums."""


class StageInterrupted(BaseException):  # noqa: N818 -- raised like KeyboardInterrupt
    """SIGTERM arrived: unwinds like Ctrl-C so every cleanup (temp files, MLflow status) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum
