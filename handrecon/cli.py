"""Shared command-line plumbing for the scripts in ``tools/``.

Conventions every tool in ``tools/`` must follow:

* ``--help`` works and starts with a one-line purpose: pass it as the argparse ``description``.
* Configurable tools take an optional positional config path and repeatable ``--set`` overrides
  (:func:`add_config_args`), and build their config with :func:`config_from_args`.
* The entry point is wrapped by :func:`run_tool`, so user mistakes (bad config, missing file,
  :class:`UserError`) print one ``error: <message>`` line and exit with code 2, while bugs still
  show a traceback.

Template::

    def main(argv: Sequence[str] | None = None) -> int:
        parser = argparse.ArgumentParser(description="Train the hand reconstruction model.")
        add_config_args(parser, default_config="configs/train.yaml")
        args = parser.parse_args(argv)
        cfg = config_from_args(TrainConfig, args)
        ...
        return 0

    if __name__ == "__main__":
        run_tool(main)

Usage: ``tools/train.py configs/x.yaml --set optim.lr=1e-4 data.batch_size=32 --set train.seed=1``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from handrecon.config import ConfigError, UserError, commented_yaml, load_config
from handrecon.io import ensure_writable_dir

__all__ = ["ConfigError", "UserError", "add_config_args", "config_from_args", "int_at_least", "run_tool"]

T = TypeVar("T")

#: Exit status for user errors; matches argparse's status for bad command lines.
USER_ERROR_EXIT = 2


def add_config_args(parser: argparse.ArgumentParser, default_config: str | None = None, example: str | None = None) -> None:
    """Add an optional positional ``config`` path and ``--set KEY=VALUE [KEY=VALUE ...]``.

    ``--set`` may be repeated and take several items; all are collected, in order, into
    ``args.overrides`` (a list, empty when none are given). The config path must come before
    ``--set``, otherwise argparse reads it as one more override. `example` is shown in the help
    as ``e.g. --set EXAMPLE``: overrides that the tool's own schema accepts.
    """
    default_help = default_config if default_config else "built-in defaults"
    parser.add_argument(
        "config",
        nargs="?",
        default=default_config,
        metavar="CONFIG",
        help=f"YAML config file (default: {default_help})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example or 'SECTION.KEY=VALUE'}; "
        "values are YAML (true, 3, 1e-4, [1,2], null); later items win; give CONFIG before --set",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the merged config (defaults, CONFIG, --set) as YAML with each key's comment, and exit",
    )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type` for integers >= `minimum`: a smaller value is a usage error naming it."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def config_from_args(schema: type[T], args: argparse.Namespace, out_key: str | None = None) -> T:
    """Load `schema` from the ``config`` and ``overrides`` set up by :func:`add_config_args`; with
    ``--print-config``, print it (:func:`handrecon.config.commented_yaml`) and exit 0. With
    `out_key`, the config field naming the tool's output folder is checked to be writable
    (:func:`handrecon.io.ensure_writable_dir`) before the tool starts its work.

    A tool with a ``--resume RUN_DIR`` argument continues a run with the run's own config.yaml
    plus the overrides (and ``out`` = RUN_DIR); a CONFIG beside it is an error.
    """
    path, overrides = getattr(args, "config", None), list(getattr(args, "overrides", None) or ())
    resume = getattr(args, "resume", None)
    if resume is not None:
        if path is not None:
            raise UserError("--resume continues the run with its own config.yaml; give --set overrides only, not CONFIG")
        path, overrides = Path(resume) / "config.yaml", [*overrides, f"out={resume}"]
        if not path.is_file():
            raise UserError(f"{resume} is not a run folder: it has no config.yaml")
    cfg = load_config(schema, path, overrides)
    if getattr(args, "print_config", False):
        print(commented_yaml(cfg), end="")
        sys.exit(0)
    if out_key is not None:
        ensure_writable_dir(getattr(cfg, out_key), out_key)
    return cfg


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        message = f"{exc.strerror or type(exc).__name__}: {where}"
    else:
        message = str(exc) or type(exc).__name__
    message = _worker_error(message)
    return " ".join(message.split())  # the contract is a single line, whatever the raiser wrote


def _worker_error(message: str) -> str:
    """A DataLoader worker's error arrives as its whole traceback text ("Caught X in DataLoader
    worker process N. Original Traceback ..."): keep its last line, the error itself."""
    head, sep, trace = message.partition("Original Traceback (most recent call last):")
    if not sep:
        return message
    last = [line for line in trace.strip().splitlines() if line.strip() and not line.startswith(" ")][-1]
    _, colon, text = last.partition(": ")
    where = head.strip().split(" in ", 1)[-1].rstrip(".") if " in " in head else "a DataLoader worker"
    return f"{text if colon else last} (in {where})"


def run_tool(main_fn: Callable[..., int | None], *args: Any, **kwargs: Any) -> NoReturn:
    """Call ``main_fn(*args, **kwargs)`` and exit with its return value (None means 0).

    :class:`UserError` (including :class:`ConfigError`) and :class:`OSError` (a missing file,
    permission denied, not a folder, disk full) become a single ``error: <message>`` line on
    stderr and exit status 2; an error raised in a DataLoader worker is reduced to its own last
    line. Ctrl-C exits with 130 without a traceback. Any other exception propagates, so bugs
    keep their traceback.
    """
    try:
        code = main_fn(*args, **kwargs)
    except (UserError, OSError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
