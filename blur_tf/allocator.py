"""glibc malloc settings of this process (docs/meta-training.md, "Memory as the operating
system sees it").

TensorFlow's thread pools allocate from many glibc arenas (by default up to 8 per core).
`limit_arenas(n)` caps them (`mallopt(M_ARENA_MAX, n)`, what the `MALLOC_ARENA_MAX` variable
does at start-up); arenas are created lazily, so calling it before TensorFlow starts working
is enough. The launchers leave glibc's default (`--malloc_arenas=0`): a cap of 2 saved up to
40 MiB of peak RSS at T <= 1000 but fragmented the shared heap of a T = 10 000 segmented
meta-step without XLA (3.0 GB against 1.25 GB). Every function is a no-op (returning False)
where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_MMAP_THRESHOLD = -3  # <malloc.h>
M_ARENA_MAX = -8
DEFAULT_ARENAS = 0  # launchers' --malloc_arenas: glibc's default
FLAG_HELP = (
    "glibc malloc arenas of this process (0: glibc's default, 8 per core); a cap lets "
    "TensorFlow's threads share freed memory but can fragment the shared heap "
    "(docs/meta-training.md). MALLOC_ARENA_MAX in the environment wins."
)


@functools.cache
def _glibc():
    """The glibc handle, or None on any other C library."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _mallopt(option: int, value: int) -> bool:
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(option, value))


def limit_arenas(count: int, environ=os.environ) -> bool:
    """mallopt(M_ARENA_MAX, count); True when applied.

    `count` = 0 leaves glibc's default. A `MALLOC_ARENA_MAX` set in `environ` wins (the user's
    explicit choice): nothing is changed and False is returned.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"malloc arenas must be an int >= 0, got {count!r}")
    if count == 0 or "MALLOC_ARENA_MAX" in environ:
        return False
    return _mallopt(M_ARENA_MAX, count)


def set_mmap_threshold(size: int) -> bool:
    """mallopt(M_MMAP_THRESHOLD, size): buffers ≥ size are mapped, and unmapped when freed."""
    return _mallopt(M_MMAP_THRESHOLD, size)


def trim() -> bool:
    """malloc_trim(0): returns the free memory at the top of every arena to the system."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
