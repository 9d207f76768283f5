"""Atomic file writes: a temporary file in the target folder, then an atomic rename."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO


def atomic_write(path: str, write: Callable[[IO], Any], binary: bool = False) -> None:
    """Calls `write(f)` on a temporary file beside `path`, then renames it to `path`.

    Readers see the old file or the complete new one, never a partial write; on any error the
    temporary file is removed and `path` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, data) -> None:
    """Writes `data` as indented JSON to `path` atomically."""
    atomic_write(path, lambda f: (json.dump(data, f, indent=1), f.write("\n")))
