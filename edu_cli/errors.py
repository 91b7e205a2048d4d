"""Errors the ``edu`` command prints as sentences instead of tracebacks."""

#: Docker's exit code when the runtime itself failed before the command ran.
EXIT_RUNTIME_ERROR = 125


class UserError(Exception):
    """An error the user can fix: printed as one sentence, with a Docker-like exit code."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME_ERROR):
        super().__init__(message)
        self.code = code
