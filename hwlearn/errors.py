"""The one exception type for bad input.

Anything the user can cause (a missing file, an unreadable image, a corpus with no usable word,
a checkpoint with another charset) raises :class:`HwlearnError` with a one-line message that
names the file and the problem. The CLI prints it as ``Error: <message>`` and exits with
:data:`EXIT_BAD_INPUT`; library users catch it like any exception.
"""

EXIT_BAD_INPUT = 2


class HwlearnError(Exception):
    """Bad input: the message is one line, names the path (if any) and says what is wrong."""
