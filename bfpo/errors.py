"""What goes wrong, and how a command line says it: one line, exit 2 for bad input, 1 for a failure.

Bad input (a config key, a data record, a missing file or model) raises :class:`BadInput`, whose
message names the file and the record, field or key. The CLIs (``bfpo.train``, ``bfpo.safe_rlhf``,
``bfpo.evaluation``, ``bfpo.notebooks``) run their work through :func:`run_cli`, which prints that
message as one line and exits 2; any other error is a failure at run time (exit 1), also one line.
``--debug`` or ``BFPO_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

log = logging.getLogger("bfpo")

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class BadInput(ValueError):
    """Input the user can fix: the message says which file and which record, field or key."""


class ConfigError(BadInput):
    """A config key with a wrong type, a value out of range, or keys that do not fit together."""

    def __init__(self, where: str, key: str | None, problem: str):
        self.where, self.key, self.problem = where, key, problem
        label = "" if not key else (f"{key}: " if key.startswith("--") else f"key {key!r}: ")
        super().__init__(f"{where}: {label}{problem}")


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given, or ``BFPO_DEBUG`` set to anything but ``0`` / empty."""
    return flag or os.environ.get("BFPO_DEBUG", "") not in ("", "0")


def one_line(err: BaseException) -> str:
    """The error's message on one line (later lines joined with ' | ')."""
    text = str(err).strip() or type(err).__name__
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def is_bad_input(err: BaseException) -> bool:
    """Bad input: a :class:`BadInput` (data records and config keys included) or a missing input file."""
    return isinstance(err, BadInput | FileNotFoundError | NotADirectoryError | IsADirectoryError)


def run_cli(prog: str, work: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``work``; turn an error into one line on stderr and the exit status (2 bad input, 1 failure)."""
    try:
        return work() or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (a re-run resumes from the last checkpoint)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place that turns any error into an exit status
        if debug_requested(debug):
            raise
        if is_bad_input(err):
            print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(
            f"{prog}: failed: {type(err).__name__}: {one_line(err)} (--debug or BFPO_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
