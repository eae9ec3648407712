"""One exception type for user-facing failures: the CLI prints its message and exits non-zero.

Raise `DomtokError` (or a subclass) with a message that names the file and the fix; never
let a user see a traceback for bad input.
"""


class DomtokError(Exception):
    """A failure caused by input or environment, with a readable message."""
