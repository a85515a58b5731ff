"""User-facing errors: one line, naming the problem and the file or config key."""


class MrcbenchError(Exception):
    """An error caused by the user's input (config, data, missing file, no network).

    The CLI prints ``error: <message>`` on one line and exits with status 2, without a traceback.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or a termination request (SIGINT, SIGTERM): the CLI prints ``error: interrupted`` on one
    line and exits with the usual status, 128 + the signal number (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
