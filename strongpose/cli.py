"""What every command line of the project shares: one-line errors, ``--debug``, quiet TensorFlow.

    from strongpose import cli

    def main(argv=None):
        parser = cli.ArgumentParser(prog="tool", description=...)   # adds --debug
        args = parser.parse_args(argv)      # --help and usage errors: before TensorFlow loads
        tf = cli.import_tensorflow()        # TF_CPP_MIN_LOG_LEVEL=3, start-up lines dropped
        ...

    if __name__ == "__main__":
        sys.exit(cli.run(main, prog="tool"))

:func:`run` turns the errors bad input raises (``ValueError`` and so ``ConfigError`` and
``WeightsMismatchError``, ``OSError`` and so ``FileNotFoundError``, ``KeyError``,
TensorFlow's ``OpError``) into one line ``tool: error: message`` on stderr and exit status
2, as argparse does for a bad argument; with ``--debug`` they raise with their traceback.
Anything else is a bug and raises as usual.

This module imports the standard library only, so a command line can import it, parse its
arguments and answer ``--help`` before TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import tempfile
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

DEBUG_FLAG = "--debug"
EXIT_BAD_INPUT = 2            # argparse's status for a usage error; ours for any bad input
EXIT_INTERRUPTED = 130
_MAX_LINES = 12               # lines of an error message shown without --debug

# What TensorFlow (and XLA) print on stderr while being imported, before absl's logging is
# set up, whatever TF_CPP_MIN_LOG_LEVEL says: absl's notice, then lines in absl's format
# ("I0000 00:00:1700000000.000000  1234 port.cc:153] oneDNN custom operations are on ...",
# cpu_feature_guard's, a CUDA build's "Unable to register cuDNN factory"). Severity I, W, E
# is TF_CPP_MIN_LOG_LEVEL 0, 1, 2: a line below the level asked for is dropped.
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_ABSL_LINE = re.compile(r"([IWE])\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w.+-]+:\d+\] .*")
_CPU_GUARD_TAIL = re.compile(r"To enable the following instructions: .* rebuild TensorFlow .*")
_SEVERITY = {"I": 0, "W": 1, "E": 2}


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``--debug`` and one-line usage errors (exit status 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true",
                          help="on an error, show the full traceback instead of one line")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types :func:`run` reports in one line: what bad input raises."""
    errors: list[type[BaseException]] = [ValueError, OSError, KeyError]
    tf = sys.modules.get("tensorflow")
    op_error = getattr(getattr(tf, "errors", None), "OpError", None)
    if isinstance(op_error, type):
        errors.append(op_error)
    return tuple(errors)


def error_message(exc: BaseException) -> str:
    """``exc`` as the text after ``error:``: its message (its type too where that helps)."""
    if isinstance(exc, (ValueError, OSError)) and not type(exc).__module__.startswith("tensorflow"):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    text = text.strip() or type(exc).__name__
    lines = text.splitlines()
    if len(lines) > _MAX_LINES:
        lines = lines[:_MAX_LINES] + [f"  ... ({len(lines) - _MAX_LINES} more lines with {DEBUG_FLAG})"]
    return "\n".join(lines)


def run(main: Callable[[list[str]], Any], argv: Optional[Sequence[str]] = None, *,
        prog: Optional[str] = None) -> int:
    """Call ``main(argv)``; return its exit status, or 2 after a one-line error on bad input.

    Args:
        main: parses ``argv`` (with an :class:`ArgumentParser`) and does the work; an int it
            returns is the exit status, anything else means 0.
        argv: the arguments; None: ``sys.argv[1:]``.
        prog: the program's name in messages; None: ``sys.argv[0]``'s file name.

    With ``--debug`` among the arguments, errors raise with their traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0])
    debug = DEBUG_FLAG in args[: args.index("--")] if "--" in args else DEBUG_FLAG in args
    try:
        result = main(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except expected_errors() as exc:
        if debug:
            raise
        print(f"{prog}: error: {error_message(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# ---------------------------------------------------------------- TensorFlow
def quiet_tensorflow() -> None:
    """Ask TensorFlow for errors only (``TF_CPP_MIN_LOG_LEVEL=3``) unless the user set a level.

    Takes effect only before TensorFlow is imported; :func:`import_quietly` calls it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def is_startup_noise(line: str, level: Optional[int] = None) -> bool:
    """Whether ``line`` is a TensorFlow start-up line that log level ``level`` asks to hide.

    ``level``: like ``TF_CPP_MIN_LOG_LEVEL`` (0 all, 1 no INFO, 2 no WARNING, 3 no ERROR);
    None: the environment's.
    """
    level = _log_level() if level is None else level
    line = line.rstrip("\r\n")
    if line == _ABSL_NOTICE or _CPU_GUARD_TAIL.fullmatch(line):
        return level >= 1
    m = _ABSL_LINE.fullmatch(line)
    return bool(m) and _SEVERITY[m.group(1)] < level


def _quiet_loggers() -> None:
    """TensorFlow's and absl's Python loggers: errors only."""
    if "absl.logging" in sys.modules:
        absl_logging = sys.modules["absl.logging"]
        absl_logging.set_verbosity(absl_logging.ERROR)
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "get_logger"):
        tf.get_logger().setLevel("ERROR")


def import_quietly(name: str) -> ModuleType:
    """``importlib.import_module(name)`` without TensorFlow's start-up lines on stderr.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` (unless set), then imports ``name`` (``"tensorflow"``,
    ``"keras"``, a module that imports them) with file descriptor 2 caught in a temporary
    file; afterwards every caught line is written back to stderr except the start-up lines
    the log level hides (:func:`is_startup_noise`: absl's pre-initialisation notice, and
    absl-format log lines such as oneDNN's "custom operations are on", which TensorFlow
    prints before it reads ``TF_CPP_MIN_LOG_LEVEL``). ``TF_CPP_MIN_LOG_LEVEL=0`` set by
    the user gives a plain import: everything shows.
    """
    quiet_tensorflow()
    if name in sys.modules or _log_level() < 1:
        module = importlib.import_module(name)
        _quiet_loggers()
        return module
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable file descriptor 2
        module = importlib.import_module(name)
        _quiet_loggers()
        return module
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            module = importlib.import_module(name)
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_startup_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
    _quiet_loggers()
    return module


def import_tensorflow() -> ModuleType:
    """``import tensorflow``, quietly (:func:`import_quietly`); returns the module."""
    return import_quietly("tensorflow")
