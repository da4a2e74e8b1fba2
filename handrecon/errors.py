"""User-facing errors: the command-line tools print these as one line, without a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input or setup the user can fix (arguments, files, configs, data).

    Tools report it as a single ``error: <message>`` line without a traceback
    (see :func:`handrecon.cli.run_tool`), so the message says what is wrong and what to do.
    """


def refused_pickle_reason(exc: BaseException) -> str:
    """The line of a `torch.load(weights_only=True)` refusal that names what was refused (torch's
    message around it is several paragraphs of advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line or "but got" in line), lines[-1] if lines else type(exc).__name__)
