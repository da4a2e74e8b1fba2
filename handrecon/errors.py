"""User-facing errors: the command-line tools print these as one line, without a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input or setup the user can fix; the message says what is wrong and what to do."""
