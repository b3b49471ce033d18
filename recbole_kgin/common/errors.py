"""The error raised for bad user input.

Its message is one line that names the file or config field at fault and the fix.
The CLI prints it as ``error: <message>`` and exits with status 2, with no traceback.
"""


class UserInputError(Exception):
    """Bad input from the user: a missing dataset, a malformed file, a bad config value."""
