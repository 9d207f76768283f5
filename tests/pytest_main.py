"""Entry point for Bazel py_test targets: runs pytest on the files given as arguments.

No cache provider: the runfiles tree is Bazel's, not a place for .pytest_cache.
"""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
