"""absl entry points (benchmark, meta_train, evaluate, …) and what they share.

Decision: a bad flag value is reported as one line, `PROGRAM: error: MESSAGE`, on stderr with
exit status 2, before any work; the flag help is printed only on --help (absl's
`app.UsageError` would print the whole help and bury the message).
"""

from __future__ import annotations

import sys


def exit_with_error(program: str, message, status: int = 2):
    """Prints `program: error: message` on stderr (one line, no flag help); exits `status`."""
    print(f"{program}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def settings_or_exit(program: str, argv, settings_from_flags, fv):
    """`settings_from_flags(fv)`; on unexpected arguments or a ValueError, one line and exit 2."""
    if len(argv) > 1:
        exit_with_error(program, f"unexpected arguments: {argv[1:]}")
    try:
        return settings_from_flags(fv)
    except ValueError as e:
        exit_with_error(program, e)


def parse_ints(values, flag: str) -> list[int]:
    """Integers of a list flag; ValueError naming `--flag` and the values otherwise."""
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--{flag} must be integers, got {list(values)}") from None
