"""The installed package: the wheel built from pyproject.toml, installed into a fresh virtual
environment, works outside the repository (console command, shipped genome by name).

No network: the wheel is built with the setuptools of this environment (`--no-build-isolation`)
and installed with `--no-deps`; the new environment sees this environment's dependencies
(TensorFlow, …) through a `.pth` line, after its own site-packages, so `blur_tf` and `launchers`
come from the wheel and nothing from the repository is on its path.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest

from blur_tf.genome import Genome, shipped_genome_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("pyproject.toml", "README.md", "blur_tf", "launchers", "genomes")
TIMEOUT = 120  # seconds, per subprocess


def _run(args, cwd, status=0, **kwargs):
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, **kwargs
    )
    assert result.returncode == status, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, venv bin folder, a working folder outside the repository)."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"  # a copy, so that the build leaves nothing in the repository
    for name in SOURCES:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            os.makedirs(source, exist_ok=True)
            shutil.copy(src, source / name)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-cache-dir",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(tmp / "dist"),
            str(source),
        ],
        cwd=tmp,
    )
    (wheel,) = glob.glob(str(tmp / "dist" / "*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    (site,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
    with open(os.path.join(site, "zz_host_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-cache-dir",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        cwd=tmp,
    )
    outside = tmp / "elsewhere"
    outside.mkdir()
    return wheel, venv / "bin", outside


def _modules(names):
    return {n for n in names if n.endswith(".py") and "__pycache__" not in n}


def test_wheel_holds_every_module_config_and_shipped_genome(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    repo = {
        os.path.relpath(p, ROOT)
        for d in ("blur_tf", "launchers")
        for p in glob.glob(os.path.join(ROOT, d, "**", "*.py"), recursive=True)
    }
    assert _modules(repo) - names == set(), "modules missing from the wheel (pyproject packages)"
    configs = {os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/launchers/configs/*.cfg")}
    assert configs and configs <= names
    shipped = {f"blur_tf/genomes/{n}.json" for n in shipped_genome_names()}
    assert len(shipped) >= 5 and shipped <= names


def test_console_command_and_shipped_genome_outside_the_repository(installed):
    _, bin_dir, outside = installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # absl's --help exits with status 1; the text is the launcher's docstring and flags.
    help_text = _run(
        [str(bin_dir / "blur-evaluate"), "--help"], cwd=outside, status=1, env=env
    ).stdout
    assert help_text.startswith("Evaluates a genome against SGD")
    assert "--genome: genome.json path, shipped genome name" in help_text
    code = (
        "import blur_tf, launchers, numpy as np\n"
        "from blur_tf import Genome\n"
        "g = Genome.load_shipped('mnist_fast')\n"
        "print(blur_tf.__file__)\nprint(launchers.__file__)\n"
        "np.save('synapse_update.npy', np.asarray(g.synapse_update))\n"
    )
    lines = _run([str(bin_dir / "python"), "-c", code], cwd=outside, env=env).stdout.split()
    venv = os.path.dirname(str(bin_dir))
    assert all(path.startswith(venv) for path in lines[-2:]), lines  # not the repository's
    expected = Genome.load(os.path.join(ROOT, "genomes", "mnist_fast.json")).synapse_update
    np.testing.assert_array_equal(np.load(outside / "synapse_update.npy"), expected)
    bad = subprocess.run(
        [
            str(bin_dir / "blur-export"),
            "--genome=no_such_genome",
            "--task=toy.xor",
            f"--out_dir={outside / 'out'}",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "no_such_genome" in bad.stderr and "mnist_fast" in bad.stderr
