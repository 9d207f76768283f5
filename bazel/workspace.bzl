"""Local repositories that let Bazel 4 (WORKSPACE mode, Debian's bazel-bootstrap) run offline.

Used only by //:WORKSPACE; Bazel 7+ reads MODULE.bazel (and the empty WORKSPACE.bzlmod) instead.

Without network, Bazel 4.2 fails on downloads it makes even for a pure-Python build. Each is
replaced by a local repository generated here:
  rules_cc, rules_java       re-export Bazel's built-in C++/Java rules (toolchain resolution and
                             @bazel_tools//tools/jdk load them)
  remote_coverage_tools      a stub: coverage is not supported
  rules_python               //python:defs.bzl re-exports the native py_* rules
  pypi                       requirements.bzl + one empty py_library per line of requirements.txt;
                             the packages come from the interpreter below, not from Bazel
  blur_tf_python             the Python toolchain: <workspace>/.venv/bin/python (made by
                             `make test`, with requirements.txt installed)
"""

def _files_repository_impl(ctx):
    for path, content in ctx.attr.files.items():
        ctx.file(path, content, executable = path.endswith(".sh"))

files_repository = repository_rule(
    implementation = _files_repository_impl,
    attrs = {"files": attr.string_dict(doc = "path in the repository -> content (*.sh executable)")},
    doc = "A repository made of the given files (no download).",
)

def _normalize(name):
    return name.lower().replace("-", "_").replace(".", "_")

def _pypi_repository_impl(ctx):
    names = []
    for line in ctx.read(ctx.attr.requirements).splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        for separator in ["[", ";", "=", "<", ">", "!", "~", " "]:
            line = line.split(separator)[0]
        names.append(_normalize(line))
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", "\n".join(
        ["# Empty stand-ins: the packages are installed in the Python toolchain's .venv."] +
        ['py_library(name = "%s", visibility = ["//visibility:public"])' % n for n in names],
    ) + "\n")
    ctx.file("requirements.bzl", """\"\"\"requirement() for Bazel 4: labels of empty stand-ins (see bazel/workspace.bzl).\"\"\"

_PACKAGES = {names}

def requirement(name):
    key = name.lower().replace("-", "_").replace(".", "_")
    if key not in _PACKAGES:
        fail("%s is not in requirements.txt" % name)
    return "@{repo}//:" + key
""".format(names = repr(names), repo = ctx.name))

pypi_repository = repository_rule(
    implementation = _pypi_repository_impl,
    attrs = {"requirements": attr.label(allow_single_file = True, mandatory = True)},
    doc = "The @pypi hub of rules_python's pip.parse, with empty libraries (no download).",
)

def _venv_python_impl(ctx):
    workspace = ctx.path(ctx.attr.workspace_file).dirname
    python = workspace.get_child(".venv").get_child("bin").get_child("python")
    if not python.exists:
        fail("No %s: create the project's virtualenv first (`make test` or `make bazel-test` " % python +
             "does, installing requirements.txt); Bazel 4 runs every target with that interpreter.")
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", """load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "venv_python",
    interpreter_path = "{python}",
    python_version = "PY3",
    stub_shebang = "#!{python}",
)

py_runtime_pair(name = "runtime_pair", py3_runtime = ":venv_python")

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(python = str(python)))

venv_python_repository = repository_rule(
    implementation = _venv_python_impl,
    attrs = {"workspace_file": attr.label(allow_single_file = True, mandatory = True)},
    local = True,
    doc = "A Python toolchain whose interpreter is the project's .venv/bin/python.",
)

_PUBLIC = 'package(default_visibility = ["//visibility:public"])\n'

def blur_tf_bazel4_repositories():
    """Declares every repository the Bazel 4 build needs, all local."""
    files_repository(
        name = "rules_python",
        files = {
            "WORKSPACE": 'workspace(name = "rules_python")\n',
            "BUILD": "",
            "python/BUILD": "",
            "python/defs.bzl": "\n".join([
                '"""The native Python rules under rules_python\'s names (Bazel 4 stand-in)."""',
                "py_library = native.py_library",
                "py_binary = native.py_binary",
                "py_test = native.py_test",
                "py_runtime = native.py_runtime",
                "",
            ]),
        },
    )
    pypi_repository(name = "pypi", requirements = "//:requirements.txt")
    venv_python_repository(name = "blur_tf_python", workspace_file = "//:WORKSPACE")
    files_repository(
        name = "rules_cc",
        files = {
            "WORKSPACE": 'workspace(name = "rules_cc")\n',
            "BUILD": "",
            "cc/BUILD": "",
            "cc/defs.bzl": _reexport("C++", [
                "cc_binary",
                "cc_import",
                "cc_library",
                "cc_proto_library",
                "cc_test",
                "cc_toolchain",
                "cc_toolchain_suite",
                "objc_import",
                "objc_library",
            ]),
        },
    )
    files_repository(
        name = "rules_java",
        files = {
            "WORKSPACE": 'workspace(name = "rules_java")\n',
            "BUILD": "",
            "java/BUILD": "",
            "java/defs.bzl": _reexport("Java", [
                "java_binary",
                "java_import",
                "java_library",
                "java_lite_proto_library",
                "java_package_configuration",
                "java_plugin",
                "java_proto_library",
                "java_runtime",
                "java_test",
                "java_toolchain",
            ]),
        },
    )
    files_repository(
        name = "remote_coverage_tools",
        files = {
            "WORKSPACE": 'workspace(name = "remote_coverage_tools")\n',
            "unsupported.sh": "echo 'coverage is not supported in this offline build' >&2; exit 1\n",
            "BUILD": _PUBLIC + "\n".join([
                'sh_binary(name = "%s", srcs = ["unsupported.sh"])' % name
                for name in ["coverage_report_generator", "lcov_merger"]
            ]) + "\n",
        },
    )

def _reexport(language, rules):
    return "\n".join(
        ['"""Bazel\'s built-in %s rules under their rules_* names (Bazel 4 stand-in)."""' % language] +
        ["%s = native.%s" % (rule, rule) for rule in rules],
    ) + "\n"
