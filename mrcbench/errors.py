"""User-facing errors: one line, naming the problem and the file or config key."""


class MrcbenchError(Exception):
    """An error caused by the user's input (config, data, missing file, no network).

    The CLI prints ``error: <message>`` on one line and exits with status 2, without a traceback.
    """
