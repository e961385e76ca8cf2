"""The one exception type users see: a message that names the problem and the fix."""


class TinyshipError(Exception):
    """Bad input or a failed check; the CLI prints the message without a traceback."""
