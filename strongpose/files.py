"""Files written whole or not at all (the bottom of the import graph: standard library only).

    atomic_write(run / "model.weights.h5", lambda tmp: model.save_weights(str(tmp)))

:func:`atomic_write` hands the writer a fresh temporary name in the target's folder (it
keeps the target's name as its end, so suffixes such as ``.weights.h5`` that a writer
checks still hold), fsyncs what was written, moves it into place with ``os.replace``
(atomic on POSIX) and fsyncs the folder. A failure or a kill at any moment leaves the
target as it was (or absent); a failure also removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Callable

TMP_PREFIX = ".tmp-"     # temporary files: ".tmp-<pid>-<random>-<target name>"


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to the disk, where the platform can."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:        # e.g. a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: str | os.PathLike) -> Path:
    """A new name beside ``path`` for its temporary file, ending in ``path``'s name."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, fsync it, ``os.replace`` it onto
    ``path``, fsync the folder; returns ``path``.

    The temporary file exists (empty, created exclusively, permissions as ``open`` gives)
    when ``write`` is called; ``write`` may overwrite it. On any failure (``write``
    raising, e.g. ``OSError(ENOSPC)``, or the rename failing) the temporary file is
    removed, ``path`` keeps what it held (or stays absent) and the error propagates.
    The folder must exist.
    """
    path = Path(path)
    tmp = temporary_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path
