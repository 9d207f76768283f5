"""The docs stay runnable: every launcher command shown in README.md, docs/*.md and the genome
and experiment cards names a launcher that exists and only flags it defines; every page the
README links to exists; the README stays a landing page (at most 200 lines)."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [
    "README.md",
    *[
        os.path.relpath(p, ROOT)
        for folder in ("docs", "genomes", "experiments")
        for p in sorted(glob.glob(os.path.join(ROOT, folder, "*.md")))
    ],
]
COMMAND = re.compile(r"(?:python -m launchers\.([a-z_]+)\b|\bblur-([a-z][a-z-]*))")
ABSL_SPECIAL = {"flagfile", "undefok", "help", "helpfull", "helpshort", "helpxml"}


def _read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def documented_commands(text: str) -> list[tuple[str, list[str]]]:
    """(launcher module name, argument tokens) of every command in code blocks and inline code
    spans: continuation lines joined, shell comments dropped, `[--optional=X]` unbracketed."""
    spans = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    spans += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    commands = []
    for span in spans:
        for line in re.sub(r"\\\n\s*", " ", span).split("\n"):
            match = COMMAND.search(line)
            if not match or line.lstrip().startswith(("from ", "import ")):
                continue
            name = match.group(1) or match.group(2).replace("-", "_")
            rest = line[match.end() :].replace("[", " ").replace("]", " ")
            try:
                tokens = shlex.split(rest, comments=True)
            except ValueError:  # an unbalanced quote in prose: not a command
                continue
            commands.append((name, tokens))
    return commands


@pytest.fixture(scope="module")
def launcher_flags():
    """{launcher: {"flags", "help"}} from tests/docs_check.py (its own process: absl FLAGS)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.docs_check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_command_parser_finds_commands_and_their_flags():
    text = (
        "```sh\npython -m launchers.evaluate --genome=toy2d \\\n    --steps=1,5 "
        "[--seeds=3]   # a comment --not_a_flag\n```\nand `blur-meta-train --help`."
    )
    assert documented_commands(text) == [
        ("evaluate", ["--genome=toy2d", "--steps=1,5", "--seeds=3"]),
        ("meta_train", ["--help"]),
    ]


def test_every_launcher_has_a_console_command_and_a_help_text(launcher_flags):
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        scripts = dict(re.findall(r'^(blur-[a-z-]+) = "launchers\.(\w+):cli"$', f.read(), re.M))
    launchers = set(launcher_flags) - {"absl"}
    assert {"meta_train", "cma_train", "evaluate", "export", "benchmark"} <= launchers
    assert set(scripts.values()) == launchers
    assert all(command == "blur-" + name.replace("_", "-") for command, name in scripts.items())
    for name in launchers:
        assert launcher_flags[name]["help"].strip(), name
    assert "--genome:" in launcher_flags["evaluate"]["help"]


@pytest.mark.parametrize("page", PAGES)
def test_documented_commands_name_existing_launchers_and_flags(page, launcher_flags):
    base = set(launcher_flags["absl"]["flags"]) | ABSL_SPECIAL
    problems = []
    for name, tokens in documented_commands(_read(page)):
        if name not in launcher_flags:
            problems.append(f"no launcher {name!r}")
            continue
        known = base | set(launcher_flags[name]["flags"])
        for token in tokens:
            if not token.startswith("--"):
                continue
            flag = token[2:].split("=", 1)[0]
            if flag not in known and not (flag.startswith("no") and flag[2:] in known):
                problems.append(f"{name}: unknown flag --{flag}")
    assert not problems, f"{page}: {sorted(set(problems))}"


def test_readme_is_a_landing_page_whose_links_exist():
    text = _read("README.md")
    assert text.count("\n") <= 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http:", "https:", "../"))]
    assert len(local) >= 10
    missing = [link for link in local if not os.path.exists(os.path.join(ROOT, link))]
    assert not missing
    for page in glob.glob(os.path.join(ROOT, "docs", "*.md")):
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", _read(page)):
            target = os.path.normpath(os.path.join(ROOT, "docs", link))
            if target.startswith(ROOT + os.sep):  # DESIGN.md lies outside the repository
                assert os.path.exists(target), f"{page}: {link}"
