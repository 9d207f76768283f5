"""A loading-time check that the BUILD covers the source tree (see check_build_covers_sources)."""

def _path(label):
    # "//:blur_tf/x.py", ":blur_tf/x.py", "@//:…", "@@//:…" (Bazel 4 / 7+ spellings) -> path.
    return str(label).split(":")[-1]

def check_build_covers_sources(modules, tests):
    """Fails the load of the package unless its targets cover the given files.

    Call at the end of the BUILD file.

    Args:
      modules: source files (e.g. glob(["blur_tf/**/*.py"])) each of which must be in the srcs
        of some target.
      tests: test files (e.g. glob(["tests/test_*.py"])) each of which must be in the srcs of
        some *py_test.
    """
    in_srcs, in_tests = {}, {}
    for rule in native.existing_rules().values():
        for label in rule.get("srcs") or []:
            in_srcs[_path(label)] = True
            if rule["kind"].endswith("py_test"):
                in_tests[_path(label)] = True
    errors = ["%s is in no target's srcs" % f for f in modules if f not in in_srcs]
    errors += ["%s has no py_test" % f for f in tests if f not in in_tests]
    if errors:
        fail("BUILD does not cover the source tree:\n  " + "\n  ".join(errors))
