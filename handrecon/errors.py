"""User-facing errors: the command-line tools print these as one line, without a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input or setup the user can fix (arguments, files, configs, data).

    Tools report it as a single ``error: <message>`` line without a traceback
    (see :func:`handrecon.cli.run_tool`), so the message says what is wrong and what to do.
    """
