"""The exception for problems with the user's input, shown as one line by the entry points."""


class SegkitError(Exception):
    """What is wrong, where (file, value, config key) and how to fix it; no traceback shown."""
