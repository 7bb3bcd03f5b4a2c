"""The one exception type for bad input: the CLI turns it into one line on stderr and exit 2."""


class PlcError(Exception):
    """A problem with the user's input (files, flags, data), not a bug in plc."""
