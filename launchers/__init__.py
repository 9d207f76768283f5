"""absl entry points (benchmark, meta_train, evaluate, …) and what they share.

Decision: a bad flag value is reported as one line, `PROGRAM: error: MESSAGE`, on stderr with
exit status 2, before any work; the flag help is printed only on --help (absl's
`app.UsageError` would print the whole help and bury the message). Every launcher follows one
convention: status 2 when the command as given cannot run (a bad flag or task spec, a dataset
that is not available, an --out_dir in use by another run: every `ValueError`), status 1 when
the run failed while working (a write failed, e.g. a full disk; meta-training diverged; no
checkpoint restores), 128 + signal when stopped by a signal.

Decision: TensorFlow's C++ start-up logging (oneDNN and CUDA notices, a CUDA initialization
error on machines without a GPU) is kept quiet in the launchers, so that a one-line error is one
line: importing this package imports TensorFlow with the process's stderr held aside (shown if
the import fails) and C++ log level 3 (`TF_CPP_MIN_LOG_LEVEL`). Setting `TF_CPP_MIN_LOG_LEVEL`
yourself (e.g. `TF_CPP_MIN_LOG_LEVEL=0`) turns all of it back on. Python-side logging (absl
`logging.info`: progress, warnings) is not affected.
"""

from __future__ import annotations

import os
import sys
import tempfile


def quiet_tensorflow_start_up() -> None:
    """Imports TensorFlow quietly (module doc), unless TF_CPP_MIN_LOG_LEVEL is set."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


quiet_tensorflow_start_up()


def exit_with_error(program: str, message, status: int = 2):
    """Prints `program: error: message` on stderr (one line, no flag help); exits `status`."""
    print(f"{program}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def flag_parser(program: str):
    """`app.run(main, flags_parser=flag_parser(PROGRAM))`: a value absl itself refuses while
    parsing (a bound, a type, an unknown flag) is the same one line and status 2 as every other
    bad flag (absl would print two lines and exit 1)."""
    from absl import flags  # pylint: disable=g-import-not-at-top

    def parse(argv):
        help_as_python_m(f"launchers.{program}")
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            exit_with_error(program, e)

    return parse


def help_as_python_m(module_name: str) -> None:
    """Under a console command (`blur-evaluate`, whose `__main__` is pip's wrapper script), makes
    --help show the launcher module's docstring and flags, as `python -m launchers.X` does (absl
    reads both from `__main__` and from the flags of the module named `sys.argv[0]`)."""
    from absl import flags  # pylint: disable=g-import-not-at-top

    main, module = sys.modules["__main__"], sys.modules.get(module_name)
    if module is None or module is main:
        return
    main.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def write_error_line(error: OSError) -> str:
    """One line for a failed write: the path and the cause."""
    if error.filename:
        return f"cannot write {error.filename}: {error.strerror or error}"
    return f"a write failed: {error}"


def call_or_exit(program: str, function, *args):
    """`function(*args)`; a ValueError is one line and status 2 (the command cannot run as
    given), an OSError one line naming the path and status 1 (a write failed)."""
    try:
        return function(*args)
    except ValueError as e:
        exit_with_error(program, e)
    except OSError as e:
        exit_with_error(program, write_error_line(e), status=1)


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
