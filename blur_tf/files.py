"""Atomic writes: a temporary file (or folder) beside the target, then an atomic rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import IO, Any


def atomic_write(path: str, write: Callable[[IO], Any], binary: bool = False) -> None:
    """Calls `write(f)` on a temporary file beside `path`, then renames it to `path`.

    Readers see the old file or the complete new one, never a partial write; on any error the
    temporary file is removed and `path` is untouched. The file gets the mode `open(path, "w")`
    would give it (0666 less the umask), not the 0600 of `tempfile.mkstemp`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a write: name the file
            raise OSError(e.errno, e.strerror or str(e), path) from None
        raise


def write_json_atomic(path: str, data) -> None:
    """Writes `data` as indented JSON to `path` atomically."""
    atomic_write(path, lambda f: (json.dump(data, f, indent=1), f.write("\n")))


def check_output_directory(path: str, overwrite: bool = False) -> str:
    """ValueError naming the problem unless a folder can be written at `path`; its absolute path.

    Refused: `path` is a file, or a non-empty folder (unless `overwrite`), or the nearest
    existing ancestor is not a writable folder (missing parents are created on write).
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"output path {path} exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(
            f"output folder {path} exists and is not empty (pass overwrite to replace it)"
        )
    ancestor = os.path.dirname(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: {ancestor} is not a writable folder")
    return path


def write_directory_atomic(path: str, write: Callable[[str], Any], overwrite: bool = False) -> None:
    """Calls `write(tmp)` on a fresh temporary folder beside `path`, then renames it to `path`.

    Checked first with `check_output_directory`. On any error the temporary folder is removed
    and `path` is untouched. With `overwrite`, an existing `path` is moved aside, replaced by
    the new folder, then deleted, so `path` is always either the old or the complete new folder
    (it is briefly absent between the two renames). Without it, an empty folder is replaced.
    """
    path = check_output_directory(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(path)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{name}-")
    old = None
    try:
        write(tmp)
        if overwrite and os.path.isdir(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".old-{name}-")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(path):
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old)


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_folder(path: str) -> str:
    """`check_output_directory` for a folder written into in place (a launcher's --out_dir:
    resumed, its files replaced one by one): an existing folder must itself be writable.

    Nothing is created; ValueError naming the problem; returns the absolute path.
    """
    path = check_output_directory(path, overwrite=True)
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into {path}: not a writable folder")
    return path
