"""Errors a user can fix (bad config, structure, incompatible resume): the CLI prints them in one line, exit 2."""


class EeltError(Exception):
    """A problem with the user's input or run directory, reported without a traceback."""
