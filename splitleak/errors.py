"""One exception type for bad input, so every command can turn it into a one-line reason."""


class SplitleakError(ValueError):
    """Bad input from a user or a peer: the message is meant to be shown as is."""
