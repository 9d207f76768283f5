"""Prints, as JSON, the flags of every launcher: {name: {"flags": [...], "help": text}}.

Run by tests/test_docs.py in its own process (`python -m tests.docs_check`), since launchers
define their flags on absl's global FLAGS: each launcher is imported alone, its flags defined
as its console command does (`define_flags` when it has one), read, then removed again.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys

from absl import flags

import launchers


def launcher_names() -> list[str]:
    """Every launcher module (those with a `cli` entry point, the console command)."""
    folder = os.path.dirname(launchers.__file__)
    return sorted(
        info.name
        for info in pkgutil.iter_modules([folder])
        if "\ndef cli():" in open(os.path.join(folder, info.name + ".py")).read()
    )


def _forget(before: set[str]) -> None:
    """Removes the flags defined since `before` and unloads the launcher modules."""
    for name in set(flags.FLAGS) - set(before):
        if name in flags.FLAGS:
            delattr(flags.FLAGS, name)
    for module in [m for m in sys.modules if m.startswith("launchers.")]:
        del sys.modules[module]
        if hasattr(launchers, module.split(".")[1]):
            delattr(launchers, module.split(".")[1])


def launcher_flags(name: str) -> dict:
    before = set(flags.FLAGS)
    module = importlib.import_module(f"launchers.{name}")
    if hasattr(module, "define_flags"):
        module.define_flags(flags.FLAGS)
    result = {
        "flags": sorted(set(flags.FLAGS) - before),
        "help": (module.__doc__ or "") + flags.FLAGS.module_help(module.__name__),
    }
    _forget(before)
    return result


def main() -> None:
    base = sorted(flags.FLAGS)
    report = {"absl": {"flags": base, "help": ""}}
    for name in launcher_names():
        report[name] = launcher_flags(name)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
