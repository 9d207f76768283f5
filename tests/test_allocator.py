"""blur_tf.allocator: the launchers' glibc arena cap."""

import os
import subprocess
import sys

import pytest

from blur_tf import allocator

needs_glibc = pytest.mark.skipif(
    allocator._glibc() is None, reason="the C library is not glibc: mallopt is unavailable"
)


@pytest.mark.parametrize("count", [-1, 1.5, True, "2"])
def test_bad_count_is_refused(count):
    with pytest.raises(ValueError, match="malloc arenas"):
        allocator.limit_arenas(count, environ={})


def test_zero_and_the_environment_variable_leave_glibc_alone():
    assert allocator.limit_arenas(0, environ={}) is False
    assert allocator.limit_arenas(2, environ={"MALLOC_ARENA_MAX": "4"}) is False


@needs_glibc
def test_the_cap_bounds_the_arenas_of_many_threads():
    """16 threads allocating at once: glibc's default gives them many arenas, the cap 2."""
    program = """
import ctypes, sys, threading
from blur_tf import allocator
if sys.argv[1] != "0":
    assert allocator.limit_arenas(int(sys.argv[1]), environ={})
barrier = threading.Barrier(16)
def work():
    barrier.wait()
    for _ in range(2000):
        buffers = [bytearray(1024) for _ in range(8)]
threads = [threading.Thread(target=work) for _ in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL("libc.so.6")
libc.malloc_stats()  # stderr: one "Arena N:" block per arena
"""

    def arenas(count):
        result = subprocess.run(
            [sys.executable, "-c", program, str(count)],
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"},
        )
        return result.stderr.count("Arena ")

    assert arenas(2) <= 2
    assert arenas(0) > 2
