"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""


class UserError(Exception):
    """A problem with the user's input (a file, a field, an adapter), reported without a traceback."""
